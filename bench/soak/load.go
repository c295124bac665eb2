package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// closedLoop runs n clients, each sending its next request as soon as
// the last one is answered, for stepWarm and then stepLen, recording the
// latter. With denied, the requests carry a wrong key.
func (b *bench) closedLoop(n int, denied bool) *phaseRec {
	name := fmt.Sprintf("closed loop, %d clients", n)
	if denied {
		name = fmt.Sprintf("closed loop, %d clients, wrong key", n)
	}
	rec := newPhaseRec(name, 0, b.opt.stepLen)
	rec.expectDenied = denied
	rec.start = time.Now().Add(b.opt.stepWarm)
	end := rec.start.Add(b.opt.stepLen)
	var wg sync.WaitGroup
	for _, c := range b.pool[:n] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				due := time.Now()
				if !due.Before(end) {
					return
				}
				var r result
				if denied {
					r = c.inferDenied()
				} else {
					r = c.infer()
				}
				if !due.Before(rec.start) {
					rec.arrival(due, false)
					rec.done(due, 0, r)
				}
			}
		}()
	}
	time.Sleep(time.Until(rec.start))
	mark := b.cpuMark()
	dials := b.dials()
	wg.Wait()
	rec.elapsed = b.opt.stepLen
	b.finish(rec, mark, dials)
	return rec
}

// openLoop offers rate requests/s for length, in Poisson arrivals: each
// arrival goes to a free client, or, if every client is busy, is dropped
// (counted, never sent). Nothing waits for the server: the arrivals do not
// slow down when it does.
func (b *bench) openLoop(name string, rate float64, length time.Duration) *phaseRec {
	rec := newPhaseRec(name, rate, length)
	b.logf("%s: %.0f requests/s for %s over %d connections", name, rate, length, len(b.pool))
	jobs := make(chan time.Time)
	var wg sync.WaitGroup
	for _, c := range b.pool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for due := range jobs {
				t0 := time.Now()
				rec.done(due, t0.Sub(due), c.infer())
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // every client waiting for work
	rng := rand.New(rand.NewPCG(b.opt.seed, uint64(len(name))))
	mark := b.cpuMark()
	dials := b.dials()
	rec.start = time.Now()
	stop := b.sampler(rec)
	end := rec.start.Add(length)
	progress := rec.start.Add(time.Minute)
	for due := rec.start; ; {
		due = due.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case jobs <- due:
			rec.arrival(due, false)
		default:
			rec.arrival(due, true)
		}
		if due.After(progress) {
			b.logf("%s: %s of %s", name, due.Sub(rec.start).Round(time.Second), length)
			progress = progress.Add(time.Minute)
		}
	}
	rec.elapsed = time.Since(rec.start)
	close(jobs)
	wg.Wait()
	stop()
	b.finish(rec, mark, dials)
	t := rec.all()
	b.logf("%s: offered %d, dropped %d, admitted %d, shed %d, limited %d, errors %d; admitted p99 %v (received %v), refused p50 %v p99 %v (received %v %v of %d)",
		name, t.offered, t.drops, t.admitted, t.shed, t.limited, t.errors, t.adm.quantile(0.99), t.admWire.quantile(0.99),
		t.ref.quantile(0.5), t.ref.quantile(0.99), t.refWire.quantile(0.5), t.refWire.quantile(0.99), t.refWire.count())
	return rec
}

// sampler reads the server process's memory and counters every second
// (and once at once) into rec until the returned function is called,
// which takes a last reading.
func (b *bench) sampler(rec *phaseRec) (stop func()) {
	take := func() {
		at := time.Since(rec.start)
		m, err := readProcMem(b.child.Pid())
		if err != nil {
			return
		}
		ticks, _ := benchutil.ProcTicks(b.child.Pid())
		st, err := b.child.stats()
		rec.addSample(sample{at: at, mem: m, stats: st, err: err, ticks: ticks})
	}
	take()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				take()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		take()
	}
}

// cpuMark is a reading of CPU time used, for a phase's figures.
type cpuMark struct {
	at     time.Time
	server uint64 // the server process's CPU time, in ticks
	self   uint64 // this process's
	snap   benchutil.CPUSnap
	stats  serverStats // the server's counters; zero if unread
	ok     bool        // stats were read
}

func (b *bench) cpuMark() cpuMark {
	m := cpuMark{at: time.Now(), snap: benchutil.TakeCPUSnap(b.child.Pid())}
	m.server, _ = benchutil.ProcTicks(b.child.Pid())
	m.self, _ = benchutil.ProcTicks(os.Getpid())
	st, err := b.child.stats()
	m.stats, m.ok = st, err == nil
	return m
}

// finish fills in rec's CPU figures and reconnections since mark and dials.
func (b *bench) finish(rec *phaseRec, mark cpuMark, dials int64) {
	now := b.cpuMark()
	secs := now.at.Sub(mark.at).Seconds()
	rec.serverCPU = float64(now.server-mark.server) / benchutil.UserHZ / secs
	rec.clientCPU = float64(now.self-mark.self) / benchutil.UserHZ / secs
	rec.otherCPU = mark.snap.OthersSince(now.snap)
	rec.dials = b.dials() - dials
	if mark.ok && now.ok && now.stats.AllocBytes >= mark.stats.AllocBytes {
		rec.gc = gcUse{
			ok:     true,
			alloc:  now.stats.AllocBytes - mark.stats.AllocBytes,
			cycles: now.stats.GCCycles - mark.stats.GCCycles,
			cpu:    (now.stats.GCCPU - mark.stats.GCCPU) / secs,
		}
	}
}

// gcUse is what the server's heap and collector did over a phase.
type gcUse struct {
	ok     bool
	alloc  uint64  // bytes allocated
	cycles uint64  // collections completed
	cpu    float64 // CPUs the collector used, on average (the runtime's estimate)
}
