package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

func newShedder(t *testing.T, cfg Shed) *Shedder {
	t.Helper()
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	s, err := NewShedder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const msgShed = "server overloaded, retry later"

// acquireAsync calls Acquire in a goroutine; the result arrives on the
// channel.
func acquireAsync(ctx context.Context, s *Shedder) chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		r, err := s.Acquire(ctx)
		ch <- acquired{r, err}
	}()
	return ch
}

type acquired struct {
	release func()
	err     error
}

// waitQueued waits until n requests wait in s.
func waitQueued(t *testing.T, s *Shedder, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Queued != n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d queued, want %d", s.Stats().Queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestShedderRefusesOverInFlight(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 2})
	ctx := context.Background()
	r1, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctx)
	wantRefused(t, err, apierr.Unavailable, msgShed, time.Second)
	r1()
	r1() // a second release gives nothing back
	r3, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctx)
	wantRefused(t, err, apierr.Unavailable, msgShed, time.Second)
	r2()
	r3()
	if got := s.Stats(); got != (ShedStats{Shed: 2}) {
		t.Errorf("stats %+v, want nothing in flight, 2 shed", got)
	}
}

func TestShedderQueue(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 2, QueueTimeout: 10 * time.Second})
	ctx := context.Background()
	hold, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	c := acquireAsync(ctx, s)
	waitQueued(t, s, 2)
	// A young queue, nothing refused: first in, first out.
	hold()
	got := <-b
	if got.err != nil {
		t.Fatalf("b: %v", got.err)
	}
	got.release()
	got = <-c
	if got.err != nil {
		t.Fatalf("c: %v", got.err)
	}
	got.release()
	if st := s.Stats(); st != (ShedStats{}) {
		t.Errorf("stats %+v, want zero", st)
	}
}

func TestShedderFullQueueDisplacesOldest(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 2, QueueTimeout: 10 * time.Second})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	quick, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Millisecond)
	quick() // slots are held 10 ms on average
	hold, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	c := acquireAsync(ctx, s)
	waitQueued(t, s, 2)
	clock.Advance(time.Second)
	d := acquireAsync(ctx, s)
	wantRefused(t, (<-b).err, apierr.Unavailable, msgShed, time.Second)
	waitQueued(t, s, 2)
	// Having refused a request, the gate is overloaded: the newest is
	// admitted first, and c, which has waited a second while slots are
	// held about 134 ms on average, is refused.
	hold()
	got := <-d
	if got.err != nil {
		t.Fatalf("d: %v", got.err)
	}
	got.release()
	wantRefused(t, (<-c).err, apierr.Unavailable, msgShed, time.Second)
	if st := s.Stats(); st.InFlight != 0 || st.Queued != 0 || st.Shed != 2 {
		t.Errorf("stats %+v, want nothing in flight or queued, 2 shed", st)
	}
}

func TestShedderQueueTimeout(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 1, QueueTimeout: 20 * time.Millisecond})
	hold, err := s.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer hold()
	start := time.Now()
	_, err = s.Acquire(context.Background())
	wantRefused(t, err, apierr.Unavailable, msgShed, time.Second)
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("refused after %s, before the queue timeout", d)
	}
	if st := s.Stats(); st.Queued != 0 {
		t.Errorf("%d still queued", st.Queued)
	}
}

func TestShedderContextEnds(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 1, QueueTimeout: 10 * time.Second})
	hold, err := s.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	cancel()
	got := <-ch
	wantRefused(t, got.err, apierr.Canceled, "request canceled", 0)
	hold()
	if st := s.Stats(); st != (ShedStats{}) {
		t.Errorf("stats %+v, want zero", st)
	}
}

func TestShedderAdaptiveLIFO(t *testing.T) {
	// Once the queue has stood for half the queue timeout, the newest
	// waiter is admitted first, and waiters that have waited longer than
	// requests hold their slots are refused at once.
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 3, QueueTimeout: 10 * time.Second})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	hold, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	clock.Advance(6 * time.Second)
	young := acquireAsync(ctx, s)
	waitQueued(t, s, 2)
	newest := acquireAsync(ctx, s)
	waitQueued(t, s, 3)
	hold() // held 6 s: the average hold is now 750 ms
	got := <-newest
	if got.err != nil {
		t.Fatalf("newest waiter: %v", got.err)
	}
	// The oldest waited 6 s, longer than slots are held: refused.
	wantRefused(t, (<-old).err, apierr.Unavailable, msgShed, time.Second)
	if st := s.Stats(); st.Queued != 1 || st.InFlight != 1 {
		t.Fatalf("stats %+v, want the young waiter queued and one in flight", st)
	}
	got.release()
	got = <-young
	if got.err != nil {
		t.Fatalf("young waiter: %v", got.err)
	}
	got.release()
	if st := s.Stats(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want zero in flight and queued", st)
	}
}

func TestShedderRefusesStaleSoleWaiter(t *testing.T) {
	// Overloaded, a waiter older than slots are held is refused even when
	// it is the only one: the slot stays free for a fresh request.
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 1, QueueTimeout: 10 * time.Second})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	hold, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	c := acquireAsync(ctx, s) // displaces b: overloaded from now on
	wantRefused(t, (<-b).err, apierr.Unavailable, msgShed, time.Second)
	waitQueued(t, s, 1)
	clock.Advance(time.Second)
	hold() // held 1 s; c has waited 1 s, not more: admitted
	got := <-c
	if got.err != nil {
		t.Fatalf("c: %v", got.err)
	}
	d := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	clock.Advance(100 * time.Millisecond)
	got.release() // held 100 ms: the average falls to 887.5 ms
	if st := s.Stats(); st.InFlight != 1 {
		t.Fatalf("stats %+v, want d admitted", st)
	}
	got = <-d
	if got.err != nil {
		t.Fatalf("d: %v", got.err)
	}
	e := acquireAsync(ctx, s)
	waitQueued(t, s, 1)
	clock.Advance(2 * time.Second)
	got.release() // e has waited 2 s, longer than the ~1 s average
	wantRefused(t, (<-e).err, apierr.Unavailable, msgShed, time.Second)
	if st := s.Stats(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want the slot free", st)
	}
}

func TestShedderUnderLoad(t *testing.T) {
	const maxInFlight = 4
	s := newShedder(t, Shed{MaxInFlight: maxInFlight, MaxQueue: 4, QueueTimeout: 5 * time.Millisecond})
	var running, peak, admitted, shed atomic.Int64
	var slowest atomic.Int64 // longest time to a refusal, ns
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				start := time.Now()
				release, err := s.Acquire(context.Background())
				if err != nil {
					var e *apierr.Error
					if !errors.As(err, &e) || e.Kind != apierr.Unavailable || e.RetryAfter != time.Second {
						t.Errorf("refusal %v, want Unavailable with RetryAfter", err)
						return
					}
					shed.Add(1)
					if d := int64(time.Since(start)); d > slowest.Load() {
						slowest.Store(d) // racy max; good enough for a log line
					}
					continue
				}
				n := running.Add(1)
				if n > peak.Load() {
					peak.Store(n)
				}
				if n > maxInFlight {
					t.Errorf("%d running, limit %d", n, maxInFlight)
				}
				time.Sleep(100 * time.Microsecond)
				running.Add(-1)
				admitted.Add(1)
				release()
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.InFlight != 0 || st.Queued != 0 || st.Shed != shed.Load() {
		t.Errorf("stats %+v after the load, %d shed", st, shed.Load())
	}
	if admitted.Load() == 0 || shed.Load() == 0 {
		t.Errorf("admitted %d, shed %d: want both", admitted.Load(), shed.Load())
	}
	t.Logf("admitted %d, shed %d, peak %d running, slowest refusal %s",
		admitted.Load(), shed.Load(), peak.Load(), time.Duration(slowest.Load()))
}

func TestShedderZeroAndDisabled(t *testing.T) {
	var zero Shedder
	_, err := zero.Acquire(context.Background())
	wantRefused(t, err, apierr.Unavailable, "server not ready", 0)
	var nilShedder *Shedder
	_, err = nilShedder.Acquire(context.Background())
	wantRefused(t, err, apierr.Unavailable, "server not ready", 0)
	off := newShedder(t, Shed{Disabled: true})
	for range 1000 {
		if _, err := off.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestShedderStage(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1})
	inside := make(chan struct{})
	proceed := make(chan struct{})
	h := pipeline.Chain(pipeline.HandlerFunc(func(context.Context, *pipeline.Request) (*pipeline.Response, error) {
		inside <- struct{}{}
		<-proceed
		return &pipeline.Response{}, nil
	}), s.Stage())
	done := make(chan error)
	go func() {
		_, err := h.Infer(context.Background(), &pipeline.Request{})
		done <- err
	}()
	<-inside
	_, err := h.Infer(context.Background(), &pipeline.Request{})
	wantRefused(t, err, apierr.Unavailable, msgShed, time.Second)
	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.InFlight != 0 {
		t.Errorf("%d in flight after the stage returned", st.InFlight)
	}
}

// A request that waited longer than the target before reaching the gate is
// refused once arrivals have kept waiting that long for an interval, and
// until an interval passes without one; a burst shorter than the interval,
// and requests that reach the gate in time, are served.
func TestShedderLateArrivals(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 100, MaxQueue: 0, TargetDelay: 2 * time.Millisecond, Interval: 50 * time.Millisecond})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	try := func(waited time.Duration) error {
		t.Helper()
		release, err := s.AcquireSince(ctx, clock.Now().Add(-waited))
		release()
		return err
	}
	late := func(waited time.Duration, wantShed bool, what string) {
		t.Helper()
		err := try(waited)
		if wantShed {
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Kind != apierr.Unavailable || ae.RetryAfter != time.Second || ae.Msg != msgShed {
				t.Fatalf("%s: %v, want 503 %q with Retry-After", what, err, msgShed)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v, want admitted", what, err)
		}
	}

	// An interval (arrivals every ms) with a burst: 20 ms of late
	// arrivals among those in time, fewer than half. Nothing is refused.
	for i := range 50 {
		if i >= 10 && i < 30 {
			late(10*time.Millisecond, false, "late, in a burst")
		} else {
			late(time.Millisecond, false, "in time around a burst")
		}
		clock.Advance(time.Millisecond)
	}
	// A standing queue: an interval in which most arrivals are late,
	// though every fifth is in time (the first of each batch the runtime
	// hands out). The late are admitted until the interval is up...
	for i := range 50 {
		if i%5 == 0 {
			late(time.Millisecond, false, "in time, among the late")
		} else {
			late(10*time.Millisecond, false, "late, before the interval is up")
		}
		clock.Advance(time.Millisecond)
	}
	// ... and refused from then on.
	late(10*time.Millisecond, true, "late after an interval of mostly late arrivals")
	if st := s.Stats(); st.Late != 1 || st.Shed != 1 {
		t.Fatalf("stats %+v, want 1 late, 1 shed", st)
	}
	// Overloaded: those in time are served, the late refused, even after
	// one in time.
	late(time.Millisecond, false, "in time while overloaded")
	clock.Advance(40 * time.Millisecond)
	late(3*time.Millisecond, true, "late, 40ms after the last late refusal")
	if release, err := s.AcquireSince(ctx, time.Time{}); err != nil {
		t.Fatalf("AcquireSince (arrival unknown): %v", err)
	} else {
		release()
	}
	if _, err := s.Acquire(ctx); err != nil {
		t.Fatalf("Acquire (arrival unknown): %v", err)
	}
	// An interval without late arrivals ends it. (One in time ends the
	// late streak; while overloaded it may be refused early, at random.)
	if release, err := s.AcquireSince(ctx, clock.Now()); err == nil {
		release()
	}
	clock.Advance(50 * time.Millisecond)
	late(10*time.Millisecond, false, "late, an interval after the last late refusal")
	if st := s.Stats(); st.Late != 2 || st.Shed != 2+st.Early || st.InFlight != 1 {
		// The bare Acquire above was not released.
		t.Fatalf("stats %+v, want 2 late, 2 shed, 1 in flight", st)
	}
}

// A standing queue is forgotten after an idle gap: an interval of mostly
// late arrivals followed by a whole interval without any does not make
// the first late arrival after the gap a refusal.
func TestShedderStandingQueueAfterIdle(t *testing.T) {
	for _, gap := range []time.Duration{0, 60 * time.Millisecond} {
		s := newShedder(t, Shed{MaxInFlight: 100, TargetDelay: 2 * time.Millisecond, Interval: 50 * time.Millisecond})
		clock := newFakeClock()
		s.now = clock.Now
		try := func(waited time.Duration) error {
			release, err := s.AcquireSince(context.Background(), clock.Now().Add(-waited))
			release()
			return err
		}
		// One interval of late arrivals, every ms: admitted, since the
		// test looks at whole intervals, and a standing queue found.
		for range 50 {
			if err := try(10 * time.Millisecond); err != nil {
				t.Fatalf("gap %v: late arrival in the first interval: %v, want admitted", gap, err)
			}
			clock.Advance(time.Millisecond)
		}
		clock.Advance(gap)
		err := try(10 * time.Millisecond)
		if gap == 0 && err == nil {
			t.Fatalf("late arrival right after a standing queue admitted, want refused")
		}
		if gap > 0 && err != nil {
			t.Fatalf("late arrival after an idle gap of %v: %v, want admitted", gap, err)
		}
	}
}

func TestShedderLateArrivalsOff(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 100})
	clock := newFakeClock()
	s.now = clock.Now
	for range 20 {
		release, err := s.AcquireSince(context.Background(), clock.Now().Add(-time.Second))
		if err != nil {
			t.Fatalf("target_delay 0: %v, want admitted whatever the wait", err)
		}
		release()
		clock.Advance(10 * time.Millisecond)
	}
}

// While overloaded, a growing fraction of the requests that reach the gate
// in time is refused too, so that the CPU gets slack; it falls back to
// none once late arrivals stop.
func TestShedderEarlyDrop(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1000, TargetDelay: 2 * time.Millisecond, Interval: 50 * time.Millisecond})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	try := func(waited time.Duration) bool {
		release, err := s.AcquireSince(ctx, clock.Now().Add(-waited))
		release()
		return err == nil
	}
	// Late arrivals for an interval, then refused, one every 10ms tick
	// for 200ms.
	for range 6 {
		try(10 * time.Millisecond)
		clock.Advance(10 * time.Millisecond)
	}
	for range 20 {
		if try(10 * time.Millisecond) {
			t.Fatal("late arrival admitted while overloaded")
		}
		clock.Advance(10 * time.Millisecond)
	}
	if st := s.Stats(); st.Early != 0 {
		t.Fatalf("%d early refusals before any request in time", st.Early)
	}
	// drop is now 1-(15/16)^~20 ≈ 0.7: of 400 arrivals in time (within
	// the interval after the last late refusal), most are refused.
	clock.Advance(time.Millisecond)
	admitted := 0
	for range 400 {
		if try(100 * time.Microsecond) {
			admitted++
		}
	}
	st := s.Stats()
	if admitted < 40 || admitted > 240 || st.Early != int64(400-admitted) {
		t.Fatalf("%d of 400 in time admitted while overloaded, stats %+v; want a 0.6–0.9 share refused early", admitted, st)
	}
	// An interval without late arrivals: everything in time is admitted
	// again, and drop decays to nothing within 32 ticks.
	clock.Advance(60 * time.Millisecond)
	for i := range 400 {
		if !try(100 * time.Microsecond) {
			t.Fatalf("arrival %d in time refused an interval after the last late one", i)
		}
		clock.Advance(time.Millisecond)
	}
	s.mu.Lock()
	drop := s.drop
	s.mu.Unlock()
	if drop != 0 {
		t.Fatalf("drop %v after 400ms without late arrivals, want 0", drop)
	}
}

// A request refused for want of a slot is a sign of overload too: a late
// arrival just after it is refused at once, without waiting an interval.
func TestShedderSlotRefusalCountsAsCongestion(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 0, TargetDelay: 2 * time.Millisecond, Interval: 50 * time.Millisecond})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	hold, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx); err == nil {
		t.Fatal("second request admitted with one slot and no queue")
	}
	hold()
	clock.Advance(time.Millisecond)
	release, err := s.AcquireSince(ctx, clock.Now().Add(-5*time.Millisecond))
	release()
	if err == nil {
		t.Fatal("late arrival admitted right after a refusal for want of a slot")
	}
	if st := s.Stats(); st.Late != 1 {
		t.Fatalf("stats %+v, want 1 late", st)
	}
}

// AdmitAt and ReleaseAt hold and give back the same slots as Acquire,
// with the caller's clock: the hold they report is what the adaptive
// LIFO's average hold learns from.
func TestShedderAdmitAt(t *testing.T) {
	s := newShedder(t, Shed{MaxInFlight: 1, MaxQueue: 2, QueueTimeout: 10 * time.Second})
	clock := newFakeClock()
	s.now = clock.Now
	ctx := context.Background()
	t0 := clock.Now().Add(-time.Hour) // the caller's clock, not the shedder's
	held, err := s.AdmitAt(ctx, time.Time{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !held.Equal(t0) {
		t.Errorf("held since %v, want the caller's now %v", held, t0)
	}
	// A waiter is handed the slot ReleaseAt gives back, and holds it from
	// then, by the shedder's clock.
	got := make(chan time.Time, 1)
	go func() {
		h, err := s.AdmitAt(ctx, time.Time{}, clock.Now())
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	waitQueued(t, s, 1)
	clock.Advance(3 * time.Second)
	s.ReleaseAt(held, t0.Add(2*time.Second)) // held 2 s
	h := <-got
	if !h.Equal(clock.Now()) {
		t.Errorf("waiter holds since %v, want %v", h, clock.Now())
	}
	s.mu.Lock()
	avg := s.avgHold
	s.mu.Unlock()
	if avg != 2*time.Second {
		t.Errorf("average hold %v, want the 2s ReleaseAt reported", avg)
	}
	s.ReleaseAt(h, clock.Now())
	if st := s.Stats(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want nothing in flight", st)
	}
	// Slots are counted as Acquire counts them.
	one := newShedder(t, Shed{MaxInFlight: 1})
	h1, err := one.AdmitAt(ctx, time.Time{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = one.AdmitAt(ctx, time.Time{}, t0)
	wantRefused(t, err, apierr.Unavailable, msgShed, time.Second)
	one.ReleaseAt(h1, t0)
	if _, err := one.Acquire(ctx); err != nil {
		t.Errorf("after ReleaseAt: %v", err)
	}
	// Disabled: everything admitted, nothing counted.
	off := newShedder(t, Shed{Disabled: true})
	for range 100 {
		h, err := off.AdmitAt(ctx, time.Time{}, t0)
		if err != nil {
			t.Fatal(err)
		}
		off.ReleaseAt(h, t0)
	}
	var nilShedder *Shedder
	if _, err := nilShedder.AdmitAt(ctx, time.Time{}, t0); err == nil {
		t.Error("a nil Shedder admitted")
	}
}
