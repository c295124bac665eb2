package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	over := r.over.all()
	pinned := "unpinned"
	if r.opt.pin {
		pinned = "pinned to CPU 1 (the clients to CPU 0)"
	}
	p("# Overload on the real server (bench/soak)\n\n")
	p("Run of `%s` at commit %s, %s, %v in all; load average %s before, %s after.\n",
		r.opt.command, r.env.revision, r.started.UTC().Format(time.RFC3339), r.elapsed.Round(time.Second), r.env.loadBefore, r.loadAfter)
	p("Machine: %d CPUs (%s), Linux %s, %s, ONNX Runtime %s.\n\n", r.env.cpus, r.env.cpuModel, r.env.kernel, r.env.goVersion, r.info.ORTVersion)
	p("Server: one process %s, GOMAXPROCS %d, built by internal/app from config.Default: TLS 1.3, API key and "+
		"authorization policy, audit log (not durable); shed max_in_flight %d, max_queue %d, queue_timeout %v, "+
		"retry_after %v, target_delay %v, interval %v; per-principal limits off. Model %s, batch 1, REST JSON. Clients: %d keep-alive HTTP/1.1 "+
		"connections, one request at a time each.\n\n",
		pinned, r.info.Procs, r.info.Shed.MaxInFlight, r.info.Shed.MaxQueue, r.info.Shed.QueueTimeout, r.info.Shed.RetryAfter,
		r.info.Shed.TargetDelay, r.info.Shed.Interval, r.opt.model, r.opt.conns)

	if busy := r.othersBusy(); busy != "" {
		p("**Other work on the machine used %s: the figures are not reliable; rerun on a quieter machine.**\n\n", busy)
	}
	p("## Verdicts\n\n| target | measured | verdict |\n|---|---|---|\n")
	for _, v := range r.verdicts() {
		verdict := "PASS"
		if !v.ok {
			verdict = "**MISSED**"
		}
		p("| %s | %s | %s |\n", v.target, v.measured, verdict)
	}

	p("\n## Capacity (closed loop)\n\nEach step: %v of warm-up, then %v measured. Capacity: **%.0f requests/s** admitted.\n\n",
		r.opt.stepWarm, r.opt.stepLen, r.capacity)
	p("| clients | admitted/s | 503/s | admitted p50 | admitted p99 | server CPUs | client CPUs | other CPUs |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.steps {
		t := s.rec.all()
		p("| %d | %.0f | %.0f | %v | %v | %.2f | %.2f | %s |\n", s.clients, s.rate, float64(t.shed)/s.rec.elapsed.Seconds(),
			d(t.adm.quantile(0.5)), d(t.adm.quantile(0.99)), s.rec.serverCPU, s.rec.clientCPU, other(s.rec.otherCPU))
	}

	p("\n## Open-loop phases\n\nPoisson arrivals; an arrival that finds all %d connections busy is dropped by the client (never sent). "+
		"Latency is from sending a request to the end of its response; *lag* is how late a client began a request after it was due.\n\n", r.opt.conns)
	p("| phase | offered/s | sent/s | admitted/s | 503/s | 429/s | errors | drops | admitted p50 | p99 | p99.9 | refused p50 | p99 | lag p99 | reconnects | server CPUs | client CPUs | other CPUs |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ph := range []*phaseRec{r.normal, r.over, r.recovery} {
		if ph == nil {
			continue
		}
		t, s := ph.all(), ph.elapsed.Seconds()
		p("| %s (%.2g× capacity, %v) | %.0f | %.0f | %.0f | %.1f | %.1f | %d | %d | %s | %s | %s | %s | %s | %v | %d | %.2f | %.2f | %s |\n",
			ph.name, ph.rate/r.capacity, ph.length, float64(t.offered)/s, float64(t.sent())/s, float64(t.admitted)/s,
			float64(t.shed)/s, float64(t.limited)/s, t.errors, t.drops,
			lat(&t.adm, 0.5), lat(&t.adm, 0.99), lat(&t.adm, 0.999),
			lat(&t.ref, 0.5), lat(&t.ref, 0.99), d(ph.lag.quantile(0.99)), ph.dials, ph.serverCPU, ph.clientCPU, other(ph.otherCPU))
	}
	if n, _ := r.errorCount(); n > 0 {
		p("\nErrors:\n\n")
		for _, ph := range r.phases() {
			for reason, c := range ph.errs {
				p("- %s: %d × %s (e.g. %q)\n", ph.name, c, reason, ph.detail[reason])
			}
		}
	}

	p("\n## Where the time goes\n\n")
	if ca, cr, ok := r.costs(); ok {
		t := r.refusal.all()
		p("Server CPU per admitted request, at capacity: %v. Per refusal: %v (%.0f%% of an admitted request), measured "+
			"with %s for %v: %.0f refusals/s (401, p50 %v, p99 %v) on %.2f server CPUs. A request with a known key id and a "+
			"wrong secret takes the shed path's steps (TLS, parsing, the same key hash, an audit record, an error answer) "+
			"without the gate. Refusing the surplus of %g× capacity (%.0f requests/s) takes about %.2f CPUs.\n\n",
			d(ca), d(cr), 100*float64(cr)/float64(ca), r.refusal.name, r.refusal.elapsed,
			float64(t.denied)/r.refusal.elapsed.Seconds(), d(t.ref.quantile(0.5)), d(t.ref.quantile(0.99)), r.refusal.serverCPU,
			r.opt.overload, (r.opt.overload-1)*r.capacity, (r.opt.overload-1)*r.capacity*cr.Seconds())
	}
	if g, t := r.over.gc, r.over.all(); g.ok && t.sent() > 0 {
		p("Garbage: during the overload the server allocated %.1f KiB per request sent (admitted or refused) and collected "+
			"%.1f times a second; the collector used %.2f CPUs (the runtime's estimate).", float64(g.alloc)/float64(t.sent())/1024,
			float64(g.cycles)/r.over.elapsed.Seconds(), g.cpu)
		if r.refusal != nil {
			if rg, rt := r.refusal.gc, r.refusal.all(); rg.ok && rt.denied > 0 {
				p(" A refusal in the closed loop allocated %.1f KiB.", float64(rg.alloc)/float64(rt.denied)/1024)
			}
		}
		p("\n\n")
	}
	p("A request's goroutine waits for a CPU (the runtime's scheduling latency) before it reads the request, "+
		"authenticates it and reaches the gate; the gate sees only what gets that far. Run-queue wait p99 per second, "+
		"over the phases (median of seconds; worst second): %s.\n", r.schedSummary())

	m := memoryTrend(r.over)
	p("\n## Server memory\n\n")
	p("VmRSS after the warm-up, before any load: %s; at the start of the overload %s, at %v %s, min %s, max %s, at the end %s; "+
		"trend from %v to the end %+.2f MiB/min. After the recovery phase and a forced garbage collection "+
		"(debug.FreeOSMemory): %s (RssAnon %s).\n\n",
		mib(r.idle.rss), mib(m.start), m.refAt.Round(time.Second), mib(m.ref), mib(m.min), mib(m.max), mib(m.end),
		m.refAt.Round(time.Second), m.slope/(1<<20), mib(r.afterGC.rss), mib(r.afterGC.rssAnon))
	p("During the overload: RssAnon %s – %s, Go heap objects %s – %s, goroutines %d – %d, threads %d – %d.\n",
		mib(m.anonMin), mib(m.anonMax), mib(m.heapMin), mib(m.heapMax), m.gorMin, m.gorMax, m.thrMin, m.thrMax)

	p("\n## Server counters\n\n")
	first, last := r.over.firstLastStats()
	p("Overload phase, from the server's own counters: %d admitted by the gate, %d shed (the clients counted %d × 503); "+
		"audit records %d (checkpoints %d).\n",
		last.Gate.Admitted-first.Gate.Admitted, last.Gate.Shed-first.Gate.Shed, over.shed,
		last.Audit.Records-first.Audit.Records, last.Audit.Checkpoints-first.Audit.Checkpoints)
	f := r.final
	p("Whole run: gate admitted %d, shed %d, refused unauthenticated %d, refused (audit) %d; audit log %d records in %d writes, "+
		"%d checkpoints, %d rotations, %d lost, %d write failures, healthy %v. Server process exit: %s.\n",
		f.Gate.Admitted, f.Gate.Shed, f.Gate.RefusedUnauthenticated, f.Gate.RefusedAudit, f.Audit.Records, f.Audit.Batches,
		f.Audit.Checkpoints, f.Audit.Rotations, f.Audit.Lost, f.Audit.WriteFailures, f.AuditHealthy, errText(r.childErr))

	w := window(r.over.elapsed)
	p("\n## Overload timeline (per %v)\n\nRates per second over each window; latencies of the requests due in it; server readings at its end.\n\n", w)
	p("| t | offered/s | admitted/s | 503/s | 429/s | errors | drops | admitted p50 | p99 | refused p50 | p99 | VmRSS | RssAnon | heap | goroutines | run-queue wait p99 |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	ws := int(w / time.Second)
	for from := 0; from < int(r.over.elapsed.Seconds()+0.5); from += ws {
		t := r.over.sum(from, from+ws)
		if t.seconds == 0 {
			break
		}
		s := float64(t.seconds)
		x, ok := r.over.sampleAt(time.Duration(from+t.seconds) * time.Second)
		rss, anon, heap, gor, sched := "", "", "", "", ""
		if ok {
			rss, anon = mib(x.mem.rss), mib(x.mem.rssAnon)
			if x.err == nil {
				heap, gor, sched = mib(x.stats.HeapBytes), fmt.Sprint(x.stats.Goroutines), fmt.Sprint(d(x.stats.SchedP99))
			}
		}
		p("| %ds | %.0f | %.0f | %.0f | %.0f | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			from+t.seconds, float64(t.offered)/s, float64(t.admitted)/s, float64(t.shed)/s, float64(t.limited)/s, t.errors, t.drops,
			lat(&t.adm, 0.5), lat(&t.adm, 0.99), lat(&t.ref, 0.5), lat(&t.ref, 0.99), rss, anon, heap, gor, sched)
	}
	return b.String()
}

// csv is the per-second record of every open-loop phase and every
// capacity step.
func (r *report) csv() string {
	var b strings.Builder
	b.WriteString("phase,second,offered,dropped,admitted,shed_503,limited_429,errors," +
		"admitted_p50_us,admitted_p99_us,refused_p50_us,refused_p99_us,refused_received_p50_us,refused_received_p99_us," +
		"vmrss_mib,rssanon_mib,heap_mib,goroutines,threads,runqueue_wait_p99_us,server_cpus\n")
	for _, ph := range r.phases() {
		n := int(ph.elapsed.Seconds() + 0.5)
		for i := range n {
			t := ph.sum(i, i+1)
			if t.seconds == 0 {
				break
			}
			fmt.Fprintf(&b, "%s,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d", strings.ReplaceAll(ph.name, ",", ""), i+1,
				t.offered, t.drops, t.admitted, t.shed, t.limited, t.errors,
				t.adm.quantile(0.5).Microseconds(), t.adm.quantile(0.99).Microseconds(),
				t.ref.quantile(0.5).Microseconds(), t.ref.quantile(0.99).Microseconds(),
				t.refWire.quantile(0.5).Microseconds(), t.refWire.quantile(0.99).Microseconds())
			if x, ok := ph.sampleAt(time.Duration(i+1) * time.Second); ok {
				fmt.Fprintf(&b, ",%.1f,%.1f,%.1f,%d,%d,%d", float64(x.mem.rss)/(1<<20), float64(x.mem.rssAnon)/(1<<20),
					float64(x.stats.HeapBytes)/(1<<20), x.stats.Goroutines, x.mem.threads, x.stats.SchedP99.Microseconds())
			} else {
				b.WriteString(",,,,,,")
			}
			if cpus, ok := ph.cpusBetween(time.Duration(i)*time.Second, time.Duration(i+1)*time.Second); ok {
				fmt.Fprintf(&b, ",%.2f\n", cpus)
			} else {
				b.WriteString(",\n")
			}
		}
	}
	return b.String()
}

// sampleAt is the last sample taken at or before at (plus half a second
// of slack for the sampler's timing).
func (p *phaseRec) sampleAt(at time.Duration) (sample, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var got sample
	ok := false
	for _, s := range p.samples {
		if s.at > at+500*time.Millisecond {
			break
		}
		got, ok = s, true
	}
	return got, ok
}

// cpusBetween is the CPUs the server process used, on average, between
// the samples nearest to from and to (see sampleAt).
func (p *phaseRec) cpusBetween(from, to time.Duration) (float64, bool) {
	a, ok1 := p.sampleAt(from)
	z, ok2 := p.sampleAt(to)
	if !ok1 || !ok2 || a.ticks == 0 || z.ticks < a.ticks || z.at <= a.at {
		return 0, false
	}
	return float64(z.ticks-a.ticks) / benchutil.UserHZ / (z.at - a.at).Seconds(), true
}

// firstLastStats are the server's counters at the start and the end of the
// phase.
func (p *phaseRec) firstLastStats() (serverStats, serverStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples) == 0 {
		return serverStats{}, serverStats{}
	}
	return p.samples[0].stats, p.samples[len(p.samples)-1].stats
}

// costs are the server's CPU time per admitted request, at the best
// capacity step, and per refusal, in the wrong-key closed loop.
func (r *report) costs() (adm, ref time.Duration, ok bool) {
	best := r.bestStep()
	if best == nil || best.rate <= 0 || best.rec.serverCPU <= 0 || r.refusal == nil {
		return 0, 0, false
	}
	t := r.refusal.all()
	if t.denied == 0 {
		return 0, 0, false
	}
	perSec := float64(t.denied) / r.refusal.elapsed.Seconds()
	return time.Duration(best.rec.serverCPU / best.rate * float64(time.Second)),
		time.Duration(r.refusal.serverCPU / perSec * float64(time.Second)), true
}

// schedSummary gives, per open-loop phase, the median and the worst of the
// per-second p99 run-queue waits.
func (r *report) schedSummary() string {
	var parts []string
	for _, ph := range []*phaseRec{r.normal, r.over, r.recovery} {
		if ph == nil {
			continue
		}
		ph.mu.Lock()
		var xs []float64
		worst := time.Duration(0)
		// The first reading covers the time before the phase.
		for i, s := range ph.samples {
			if i == 0 || s.err != nil {
				continue
			}
			xs = append(xs, float64(s.stats.SchedP99))
			worst = max(worst, s.stats.SchedP99)
		}
		ph.mu.Unlock()
		if len(xs) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %v (%v)", ph.name, d(time.Duration(benchutil.Median(xs))), d(worst)))
	}
	return strings.Join(parts, ", ")
}

// maxOthers is how many CPUs other processes may use during a measured
// phase before the report calls its figures unreliable (the clients and
// the server each have one of the 2 CPUs).
const maxOthers = 0.25

// othersBusy names the phases during which other work used more than
// maxOthers CPUs, "" if none.
func (r *report) othersBusy() string {
	var parts []string
	for _, ph := range r.phases() {
		if ph.otherCPU > maxOthers {
			parts = append(parts, fmt.Sprintf("%.2f CPUs during %s", ph.otherCPU, ph.name))
		}
	}
	return strings.Join(parts, ", ")
}

// window is the timeline's row length: at most about 20 rows.
func window(run time.Duration) time.Duration {
	for _, w := range []time.Duration{1, 2, 5, 10, 15, 30, 60, 120, 300, 600} {
		if run/(w*time.Second) <= 20 {
			return w * time.Second
		}
	}
	return 1800 * time.Second
}

// lat is quantile q of h for a table: "–" when h is empty.
func lat(h *hist, q float64) string {
	if h.count() == 0 {
		return "–"
	}
	return fmt.Sprint(d(h.quantile(q)))
}

func other(x float64) string {
	if x < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", x)
}

func errText(err error) string {
	if err == nil {
		return "clean"
	}
	return err.Error()
}
