package extraction

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"time"
)

// Status is what an admin sees of one principal or group.
type Status struct {
	Subject string `json:"subject"`
	Group   bool   `json:"group"`
	// Groups are a principal's group keys, as last observed.
	Groups []string `json:"groups,omitempty"`
	// Queries observed; Repeats were exact copies of a query still held and
	// were not scored.
	Queries uint64 `json:"queries"`
	Repeats uint64 `json:"repeats"`
	// Risk in [0, 1] (see Risk) and the action it maps to.
	Risk   float64 `json:"risk"`
	Action Action  `json:"action"`
	// Alarms lists the detectors in alarm (latched).
	Alarms     []Detector `json:"alarms,omitempty"`
	FirstAlarm time.Time  `json:"first_alarm,omitzero"`
	LastSeen   time.Time  `json:"last_seen"`

	PRADA PRADAStatus   `json:"prada"`
	KNN   KNNStatus     `json:"knn"`
	OOD   OODRateStatus `json:"ood_rate"`

	// StateBytes is the memory the subject's detectors hold, by accounting.
	StateBytes int `json:"state_bytes"`
}

// PRADAStatus is PRADA's state.
type PRADAStatus struct {
	Distances int     `json:"distances"` // |D| held
	Stored    int     `json:"stored"`    // queries held in the growing sets
	Tested    bool    `json:"tested"`
	W         float64 `json:"w"` // last Shapiro–Wilk W (1 before the first test)
	P         float64 `json:"p"`
}

// KNNStatus is the k-nearest-neighbour detector's state.
type KNNStatus struct {
	History    int `json:"history"`
	Suspicious int `json:"suspicious"` // in the window
	Scored     int `json:"scored"`     // in the window
	// Last is the last mean distance to the k nearest (-1 before the first);
	// exact below the threshold, a lower bound (at least the threshold)
	// above it: the search stops at k × threshold.
	Last float64 `json:"last"`
}

// OODRateStatus is the out-of-distribution rate detector's state.
type OODRateStatus struct {
	Rate    float64 `json:"rate"`
	Queries int     `json:"queries"` // in the window
}

// Alert reports an escalation of a principal or group.
type Alert struct {
	Time    time.Time `json:"time"`
	Subject string    `json:"subject"`
	Group   bool      `json:"group"`
	// Raised lists the detectors whose alarm this observation raised.
	Raised   []Detector `json:"raised,omitempty"`
	Risk     float64    `json:"risk"`
	Action   Action     `json:"action"`
	Previous Action     `json:"previous"`
	Status   Status     `json:"status"`
}

// statusOf computes s's status, risk and action. Worker only.
func (m *Monitor) statusOf(s *subject, now time.Time) Status {
	cfg := &m.cfg
	var progress [numDetectors]float64
	st := Status{
		Subject: s.name, Group: s.group, Queries: s.queries, Repeats: s.repeats, LastSeen: s.lastSeen,
		Groups: s.groupNames,
	}
	st.PRADA = PRADAStatus{Distances: len(s.prada.dist), Stored: len(s.prada.class), Tested: s.prada.tested, W: 1, P: 1}
	if s.prada.tested {
		st.PRADA.W, st.PRADA.P = s.prada.lastW, s.prada.lastP
	}
	st.KNN = KNNStatus{History: s.knn.rows, Suspicious: s.knn.win.yes, Scored: s.knn.win.count, Last: -1}
	if !math.IsNaN(s.knn.last) {
		st.KNN.Last = s.knn.last
	}
	st.OOD = OODRateStatus{Rate: s.ood.rate(), Queries: s.ood.win.count}
	if !cfg.PRADA.Disabled {
		progress[DetectorPRADA] = s.prada.progress(&cfg.PRADA)
	}
	if !cfg.KNN.Disabled {
		progress[DetectorKNN] = s.knn.progress(&cfg.KNN)
	}
	if !cfg.OODRate.Disabled {
		progress[DetectorOODRate] = s.ood.progress(m.oodKmin)
	}
	for d := range numDetectors {
		if s.alarmed[d] {
			st.Alarms = append(st.Alarms, d)
			if st.FirstAlarm.IsZero() || s.alarmSince[d].Before(st.FirstAlarm) {
				st.FirstAlarm = s.alarmSince[d]
			}
		}
	}
	st.Risk = Risk(s.alarmed, progress)
	st.Action = cfg.Policy.Action(st.Risk)
	st.StateBytes = s.bytes()
	return st
}

// bytes is the subject's memory by accounting.
func (s *subject) bytes() int {
	return subjectFixedBytes + s.knn.bytes() + s.prada.bytes()
}

// Status returns the state of a principal (or, with group, a group) once
// every observation queued before the call has been handled. The worker
// makes it on request (the admin API's and metrics' reads are rare; an
// observation only updates the lock-free action). For a principal,
// Action is its own; Decision also folds in its groups'.
func (m *Monitor) Status(name string, group bool) (Status, bool) {
	table := &m.principals
	if group {
		table = &m.groups
	}
	var st Status
	found := false
	m.inWorker(func() {
		if v, ok := table.Load(name); ok {
			st, found = m.statusOf(v.(*subject), m.now()), true
		}
	})
	return st, found
}

// Snapshot returns every tracked principal's and group's status, riskiest
// first, as Status does.
func (m *Monitor) Snapshot() []Status {
	var out []Status
	m.inWorker(func() {
		now := m.now()
		visit := func(_, v any) bool {
			out = append(out, m.statusOf(v.(*subject), now))
			return true
		}
		m.principals.Range(visit)
		m.groups.Range(visit)
	})
	slices.SortFunc(out, func(a, b Status) int {
		if c := cmp.Compare(b.Risk, a.Risk); c != 0 {
			return c
		}
		return cmp.Compare(a.Subject, b.Subject)
	})
	return out
}

// Stats are the Monitor's counters, for metrics.
type Stats struct {
	Observed      uint64 // observations handled
	Dropped       uint64 // observations dropped: the queue was full, or after Close
	Rejected      uint64 // inputs of the wrong length
	AlertsDropped uint64 // alerts dropped: nobody was reading Alerts fast enough
	Untracked     uint64 // observations of subjects there was no room for
	Evicted       uint64 // subjects forgotten to make room
	Subjects      int64  // principals and groups tracked
	Queued        int    // observations waiting
}

// Stats returns the counters.
func (m *Monitor) Stats() Stats {
	return Stats{
		Observed: m.stats.observed.Load(), Dropped: m.stats.dropped.Load(), Rejected: m.stats.rejected.Load(),
		AlertsDropped: m.stats.alertsDropped.Load(), Untracked: m.stats.untracked.Load(),
		Evicted: m.stats.evicted.Load(), Subjects: m.stats.subjects.Load(), Queued: len(m.queue),
	}
}

// NetGroup is the group key of a client address's network: "net:" and the
// /24 of an IPv4 address or the /48 of an IPv6 one, so that principals
// calling from one network are also watched together.
func NetGroup(addr netip.Addr) string {
	if !addr.IsValid() {
		return "net:invalid"
	}
	addr = addr.Unmap()
	bits := 48
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return "net:invalid"
	}
	return "net:" + p.String()
}

// TenantGroup is the group key of a tenant: "tenant:" and its name.
func TenantGroup(tenant string) string { return "tenant:" + tenant }
