package app

import (
	"maps"
	"slices"

	"github.com/aegis-inference/aegis/internal/metrics"
)

// Metrics returns the server's counters in the Prometheus text format, as
// GET /admin/v1/metrics serves them: requests admitted and refused (by
// reason), the load-shedding gate, the audit log, input validation's
// violations, and extraction monitoring, with every watched principal's
// and group's risk score (docs/configuration.md, "Metrics").
func (s *Server) Metrics() []byte {
	var w metrics.Writer
	g := s.access.gate.Stats()
	w.Value("aegis_requests_in_flight", "Inference requests inside the pipeline now.", metrics.Gauge, float64(s.inFlight.Load()))
	w.Value("aegis_requests_admitted_total", "Requests admitted past authentication and the load-shedding gate.", metrics.Counter, float64(g.Admitted))
	w.Family("aegis_requests_refused_total", "Requests refused before any handler: without an accepted credential, "+
		"by the load-shedding gate (503), or because the audit log could not record them.", metrics.Counter)
	w.Sample("aegis_requests_refused_total", float64(g.RefusedUnauthenticated), "reason", "unauthenticated")
	w.Sample("aegis_requests_refused_total", float64(g.Shed), "reason", "shed")
	w.Sample("aegis_requests_refused_total", float64(g.RefusedAudit), "reason", "audit")
	w.Value("aegis_tls_handshakes_refused_total", "Connections refused in the TLS handshake.", metrics.Counter, float64(g.RefusedTLS))

	if sh := s.access.shed; sh != nil {
		st := sh.Stats()
		w.Value("aegis_shed_slots_in_use", "Requests holding one of the gate's slots.", metrics.Gauge, float64(st.InFlight))
		w.Value("aegis_shed_queued", "Requests waiting for a slot.", metrics.Gauge, float64(st.Queued))
		w.Family("aegis_shed_refused_total", "Requests the gate refused: late (waited past target_delay before reaching it), "+
			"early (in time, while overloaded) or full (no slot or queue room in time).", metrics.Counter)
		w.Sample("aegis_shed_refused_total", float64(st.Late), "reason", "late")
		w.Sample("aegis_shed_refused_total", float64(st.Early), "reason", "early")
		w.Sample("aegis_shed_refused_total", float64(max(0, st.Shed-st.Late-st.Early)), "reason", "full")
	}

	if l := s.access.audit; l != nil {
		st := l.Stats()
		w.Value("aegis_audit_healthy", "1 while the audit log can be written.", metrics.Gauge, metrics.Bool(l.Healthy() == nil))
		w.Value("aegis_audit_records_total", "Audit log lines written, of every type.", metrics.Counter, float64(st.Records))
		w.Value("aegis_audit_lost_total", "Request records refused because the audit log could not be written.", metrics.Counter, float64(st.Lost))
		w.Value("aegis_audit_write_failures_total", "Failed audit log writes.", metrics.Counter, float64(st.WriteFailures))
	}

	w.Family("aegis_validation_violations_total", "Input values that broke a model's validation rules, whatever the "+
		"rule's action (reject, flag or count), by model version and input.", metrics.Counter)
	for _, m := range s.Registry.Models() {
		for _, v := range m.Versions {
			vs := v.Checker().Violations()
			for _, input := range slices.Sorted(maps.Keys(vs)) {
				w.Sample("aegis_validation_violations_total", float64(vs[input]), "model", m.Name, "version", v.Version(), "input", input)
			}
		}
	}

	if s.monitors == nil {
		return w.Bytes()
	}
	models := s.monitors.Status()["models"]
	w.Family("aegis_extraction_risk", "Extraction risk score in [0, 1] of each principal and group watched, per model.", metrics.Gauge)
	for _, ms := range models {
		for _, st := range ms.Subjects {
			w.Sample("aegis_extraction_risk", st.Risk, "model", ms.Model, "subject", st.Subject, "kind", kind(st.Group))
		}
	}
	w.Family("aegis_extraction_action", "The action the risk maps to: 0 none, 1 alert, 2 throttle, 3 degrade, 4 block.", metrics.Gauge)
	for _, ms := range models {
		for _, st := range ms.Subjects {
			w.Sample("aegis_extraction_action", float64(st.Action), "model", ms.Model, "subject", st.Subject, "kind", kind(st.Group))
		}
	}
	w.Family("aegis_extraction_alerts_total", "Extraction alerts raised, per model.", metrics.Counter)
	for _, ms := range models {
		w.Sample("aegis_extraction_alerts_total", float64(ms.AlertsRaised), "model", ms.Model)
	}
	w.Family("aegis_extraction_observations_total", "Queries handed to the extraction monitor: handled, dropped "+
		"(its queue was full), rejected (wrong length) or untracked (no room for the subject).", metrics.Counter)
	for _, ms := range models {
		for _, o := range []struct {
			outcome string
			n       uint64
		}{{"handled", ms.Stats.Observed}, {"dropped", ms.Stats.Dropped}, {"rejected", ms.Stats.Rejected}, {"untracked", ms.Stats.Untracked}} {
			w.Sample("aegis_extraction_observations_total", float64(o.n), "model", ms.Model, "outcome", o.outcome)
		}
	}
	w.Family("aegis_extraction_subjects", "Principals and groups the extraction monitor tracks, per model.", metrics.Gauge)
	for _, ms := range models {
		w.Sample("aegis_extraction_subjects", float64(ms.Stats.Subjects), "model", ms.Model)
	}
	return w.Bytes()
}

func kind(group bool) string {
	if group {
		return "group"
	}
	return "principal"
}
