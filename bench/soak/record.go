package main

import (
	"math"
	"sync"
	"time"
)

// second is what happened to the requests due in one second of a phase
// (counted by when they were due, however late they finished).
type second struct {
	offered  int64 // arrivals due
	drops    int64 // arrivals that found every client busy: never sent
	admitted int64
	shed     int64
	limited  int64
	denied   int64 // 401, in a phase that expects them
	errors   int64
	adm, ref hist // latency of admitted and of refused (429/503, expected 401) requests
	// The same, to when the kernel received the end of the answer (where
	// it timestamped it): without this process's own wait to read it.
	admWire, refWire hist
}

// sample is a reading of the server process.
type sample struct {
	at    time.Duration // since the phase started
	mem   procMem
	stats serverStats
	err   error  // of the control request; mem is still valid
	ticks uint64 // the server process's CPU time so far, in clock ticks; 0 if unread
}

// phaseRec collects a phase's results. Its methods are safe for
// concurrent use.
type phaseRec struct {
	name string
	// expectDenied counts 401s as refusals, not errors: the phase sends a
	// wrong key on purpose.
	expectDenied bool
	start        time.Time
	rate         float64 // offered requests/s; 0 for closed loop
	length       time.Duration

	mu      sync.Mutex
	secs    []*second         // guarded by mu
	lag     hist              // when a client began a request after it was due; guarded by mu
	errs    map[string]int64  // failures by reason; guarded by mu
	detail  map[string]string // an example of each reason; guarded by mu
	samples []sample          // guarded by mu

	// Set when the phase ends.
	elapsed   time.Duration
	dials     int64   // TCP connections opened by the clients during the phase
	serverCPU float64 // CPUs the server process used, on average
	clientCPU float64 // CPUs this process used
	otherCPU  float64 // CPUs other processes used (or time stolen); -1 if unknown
	gc        gcUse
}

func newPhaseRec(name string, rate float64, length time.Duration) *phaseRec {
	return &phaseRec{name: name, rate: rate, length: length, errs: map[string]int64{}, detail: map[string]string{}}
}

// secLocked returns the second of a request due at, growing secs.
func (p *phaseRec) secLocked(at time.Time) *second {
	i := max(0, int(at.Sub(p.start)/time.Second))
	for len(p.secs) <= i {
		p.secs = append(p.secs, &second{})
	}
	return p.secs[i]
}

// arrival counts an arrival due at; dropped if no client was free.
func (p *phaseRec) arrival(at time.Time, dropped bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.secLocked(at)
	s.offered++
	if dropped {
		s.drops++
	}
}

// done records the result of a request due at and begun lag after.
func (p *phaseRec) done(at time.Time, lag time.Duration, r result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.secLocked(at)
	p.lag.add(lag)
	switch r.outcome {
	case admitted:
		s.admitted++
		s.adm.add(r.latency)
		s.admWire.addWire(r)
	case shed, limited:
		if r.outcome == shed {
			s.shed++
		} else {
			s.limited++
		}
		s.ref.add(r.latency)
		s.refWire.addWire(r)
	case denied:
		if !p.expectDenied {
			s.errors++
			p.errs[r.reason]++
			break
		}
		s.denied++
		s.ref.add(r.latency)
		s.refWire.addWire(r)
	default:
		s.errors++
		p.errs[r.reason]++
		if _, ok := p.detail[r.reason]; !ok {
			p.detail[r.reason] = r.detail
		}
	}
}

func (p *phaseRec) addSample(s sample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples = append(p.samples, s)
}

// totals is a phase summed over a range of seconds.
type totals struct {
	seconds                                                 int
	offered, drops, admitted, shed, limited, denied, errors int64
	adm, ref                                                hist
	admWire, refWire                                        hist
}

// sum adds up seconds [from, to) (clamped to the phase).
func (p *phaseRec) sum(from, to int) *totals {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := &totals{}
	for i := max(0, from); i < min(to, len(p.secs)); i++ {
		s := p.secs[i]
		t.seconds++
		t.offered += s.offered
		t.drops += s.drops
		t.admitted += s.admitted
		t.shed += s.shed
		t.limited += s.limited
		t.denied += s.denied
		t.errors += s.errors
		t.adm.merge(&s.adm)
		t.ref.merge(&s.ref)
		t.admWire.merge(&s.admWire)
		t.refWire.merge(&s.refWire)
	}
	return t
}

// all sums the whole phase.
func (p *phaseRec) all() *totals { return p.sum(0, math.MaxInt) }

func (t *totals) refused() int64 { return t.shed + t.limited }

// sent is how many requests reached the server.
func (t *totals) sent() int64 { return t.offered - t.drops }

// addWire adds r's latency to the kernel's receipt of its answer, if known.
func (h *hist) addWire(r result) {
	if r.wire > 0 {
		h.add(r.wire)
	}
}
