package main

import (
	"fmt"
	"math"
	"time"
)

// Targets, from the acceptance criterion: at three times capacity the
// server sheds with 429/503 within a few milliseconds, admitted requests
// keep a p99 within 2× of normal, and memory stays flat.
const (
	maxRefusalP99 = 5 * time.Millisecond // "a few milliseconds"
	maxP99Ratio   = 2.0                  // admitted p99 under overload / normal p99
	maxRSSDrift   = 0.10                 // end, and the fitted trend, within 10% of the reference
	// refMark is when the memory reference is read: a minute into the
	// overload (a quarter of it, if it is shorter than 4 minutes), once
	// pools, buffers and the heap goal have grown to the load.
	refMark = time.Minute
	// minOffered is the share of the overload the clients must actually
	// send for the run to show anything.
	minOffered = 0.95
)

// memTrend is the server's resident size over the overload phase.
type memTrend struct {
	start, ref, min, max, end uint64 // VmRSS, bytes
	refAt                     time.Duration
	// slope is the least-squares trend of VmRSS from refAt to the end, in
	// bytes per minute; growth is that trend over the same span as a
	// share of ref.
	slope, growth    float64
	drift            float64 // (end − ref) / ref
	anonMin, anonMax uint64
	heapMin, heapMax uint64
	gorMin, gorMax   int
	thrMin, thrMax   int
	samples          int
}

func (m memTrend) flat() bool {
	return m.samples > 2 && math.Abs(m.drift) <= maxRSSDrift && m.growth <= maxRSSDrift
}

// memoryTrend analyses the samples of rec (taken every second).
func memoryTrend(rec *phaseRec) memTrend {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := rec.samples
	var m memTrend
	if len(s) == 0 {
		return m
	}
	m.samples = len(s)
	m.refAt = min(refMark, rec.length/4)
	m.start, m.end = s[0].mem.rss, s[len(s)-1].mem.rss
	m.min, m.max = s[0].mem.rss, s[0].mem.rss
	m.anonMin, m.anonMax = s[0].mem.rssAnon, s[0].mem.rssAnon
	m.heapMin, m.heapMax = s[0].stats.HeapBytes, s[0].stats.HeapBytes
	m.gorMin, m.gorMax = s[0].stats.Goroutines, s[0].stats.Goroutines
	m.thrMin, m.thrMax = s[0].mem.threads, s[0].mem.threads
	ref := -1
	for i, x := range s {
		m.min, m.max = min(m.min, x.mem.rss), max(m.max, x.mem.rss)
		m.anonMin, m.anonMax = min(m.anonMin, x.mem.rssAnon), max(m.anonMax, x.mem.rssAnon)
		m.thrMin, m.thrMax = min(m.thrMin, x.mem.threads), max(m.thrMax, x.mem.threads)
		if x.err == nil {
			m.heapMin, m.heapMax = min(m.heapMin, x.stats.HeapBytes), max(m.heapMax, x.stats.HeapBytes)
			m.gorMin, m.gorMax = min(m.gorMin, x.stats.Goroutines), max(m.gorMax, x.stats.Goroutines)
		}
		if ref < 0 && x.at >= m.refAt {
			ref = i
		}
	}
	if ref < 0 {
		ref = len(s) - 1
	}
	m.ref, m.refAt = s[ref].mem.rss, s[ref].at
	if m.ref > 0 {
		m.drift = (float64(m.end) - float64(m.ref)) / float64(m.ref)
	}
	// Least squares over [ref, end].
	tail := s[ref:]
	if len(tail) >= 2 {
		var sx, sy, sxx, sxy float64
		for _, x := range tail {
			t := x.at.Minutes()
			y := float64(x.mem.rss)
			sx, sy, sxx, sxy = sx+t, sy+y, sxx+t*t, sxy+t*y
		}
		n := float64(len(tail))
		if d := n*sxx - sx*sx; d > 0 {
			m.slope = (n*sxy - sx*sy) / d
		}
		span := (tail[len(tail)-1].at - tail[0].at).Minutes()
		if m.ref > 0 {
			m.growth = m.slope * span / float64(m.ref)
		}
	}
	return m
}

// verdict is one target's outcome.
type verdict struct {
	target   string
	measured string
	ok       bool
}

// verdicts judges the run against the targets.
func (r *report) verdicts() []verdict {
	over, normal := r.over.all(), r.normal.all()
	secs := r.over.elapsed.Seconds()
	var v []verdict

	sentX := float64(over.sent()) / secs / r.capacity
	// Who is to blame for drops: clients that fell behind the arrivals,
	// or a server slow to answer, which keeps every connection waiting.
	blame := "every connection was waiting for an answer (the clients kept up: lag p99 %v, %.2f CPUs)"
	if r.over.lag.quantile(0.99) > maxRefusalP99 || r.over.clientCPU > 0.9 {
		blame = "the clients fell behind (lag p99 %v, %.2f CPUs): the run does not show the server at this load"
	}
	measured := fmt.Sprintf("sent %.0f/s = %.2f× capacity (%.0f/s); %d client-side drops (%.2f%%)",
		float64(over.sent())/secs, sentX, r.capacity, over.drops, pct(over.drops, over.offered))
	if over.drops > 0 {
		measured += ": " + fmt.Sprintf(blame, d(r.over.lag.quantile(0.99)), r.over.clientCPU)
	}
	v = append(v, verdict{
		target:   fmt.Sprintf("%g× capacity sent: a free connection for ≥ %.0f%% of arrivals", r.opt.overload, 100*minOffered),
		measured: measured,
		ok:       sentX >= minOffered*r.opt.overload,
	})
	v = append(v, verdict{
		target: "sheds at overload (429/503)",
		measured: fmt.Sprintf("%d of %d sent refused (%.1f%%): %d × 503, %d × 429",
			over.refused(), over.sent(), pct(over.refused(), over.sent()), over.shed, over.limited),
		ok: over.refused() > 0 && over.admitted > 0,
	})
	v = append(v, verdict{
		target: fmt.Sprintf("refusals within a few ms (p99 ≤ %v)", maxRefusalP99),
		measured: fmt.Sprintf("p50 %v, p99 %v, p99.9 %v, max %v", d(over.ref.quantile(0.5)), d(over.ref.quantile(0.99)), d(over.ref.quantile(0.999)), d(over.ref.max)) +
			received(&over.refWire, over.refused()),
		ok: over.ref.count() > 0 && over.ref.quantile(0.99) <= maxRefusalP99,
	})
	ratio := math.Inf(1)
	if p := normal.adm.quantile(0.99); p > 0 {
		ratio = float64(over.adm.quantile(0.99)) / float64(p)
	}
	v = append(v, verdict{
		target:   fmt.Sprintf("admitted p99 at %g× within %g× of normal (%g×)", r.opt.overload, maxP99Ratio, r.opt.light),
		measured: fmt.Sprintf("%v against %v: %.2f×", d(over.adm.quantile(0.99)), d(normal.adm.quantile(0.99)), ratio),
		ok:       ratio <= maxP99Ratio,
	})
	m := memoryTrend(r.over)
	v = append(v, verdict{
		target: fmt.Sprintf("memory flat (VmRSS at the end and its trend within %.0f%% of the %v mark)", 100*maxRSSDrift, m.refAt.Round(time.Second)),
		measured: fmt.Sprintf("%s → %s at %v → %s at the end (%+.1f%%); min %s, max %s; trend %+.2f MiB/min (%+.1f%% over the run)",
			mib(m.start), mib(m.ref), m.refAt.Round(time.Second), mib(m.end), 100*m.drift, mib(m.min), mib(m.max), m.slope/(1<<20), 100*m.growth),
		ok: m.flat(),
	})
	errs, where := r.errorCount()
	v = append(v, verdict{
		target:   "no errors besides 429 and 503",
		measured: fmt.Sprintf("%d%s", errs, where),
		ok:       errs == 0 && r.final.Audit.Lost == 0 && r.final.Audit.WriteFailures == 0 && r.childErr == nil,
	})
	return v
}

// errorCount is the failed requests of every phase, and where they were.
func (r *report) errorCount() (int64, string) {
	var n int64
	where := ""
	for _, p := range r.phases() {
		if e := p.all().errors; e > 0 {
			n += e
			where += fmt.Sprintf("; %d in %s", e, p.name)
		}
	}
	if r.final.Audit.Lost > 0 || r.final.Audit.WriteFailures > 0 {
		where += fmt.Sprintf("; audit log: %d records lost, %d write failures", r.final.Audit.Lost, r.final.Audit.WriteFailures)
	}
	if r.childErr != nil {
		where += fmt.Sprintf("; server process: %v", r.childErr)
	}
	return n, where
}

// phases are every recorded phase, in order.
func (r *report) phases() []*phaseRec {
	var ps []*phaseRec
	for _, s := range r.steps {
		ps = append(ps, s.rec)
	}
	if r.refusal != nil {
		ps = append(ps, r.refusal)
	}
	ps = append(ps, r.normal, r.over)
	if r.recovery != nil {
		ps = append(ps, r.recovery)
	}
	return ps
}

// missed names the targets the run missed.
func (r *report) missed() []string {
	var out []string
	for _, v := range r.verdicts() {
		if !v.ok {
			out = append(out, v.target)
		}
	}
	return out
}

func pct(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// received describes the latencies to the kernel's receipt of the answers
// (of n requests): the same figure without the clients' own wait to read
// them, so that a slow harness shows.
func received(h *hist, n int64) string {
	if h.count() == 0 {
		return ""
	}
	return fmt.Sprintf("; to the kernel's receipt of the answer (without the clients' wait to read it, %d of %d stamped): p50 %v, p99 %v",
		h.count(), n, d(h.quantile(0.5)), d(h.quantile(0.99)))
}

// d rounds a latency for reading.
func d(x time.Duration) time.Duration {
	switch {
	case x >= time.Second:
		return x.Round(time.Millisecond)
	case x >= time.Millisecond:
		return x.Round(10 * time.Microsecond)
	}
	return x.Round(time.Microsecond)
}
