package ratelimit

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// Shedder is the global admission gate: at most MaxInFlight requests run
// at once, at most MaxQueue more wait, each for at most QueueTimeout, and
// every other request is refused at once with Unavailable (503) and
// RetryAfter. Admission and release are O(1) under one mutex; a waiting
// request waits in its own goroutine (there is no goroutine per waiter
// besides it).
//
// While the queue comes and goes it is first in, first out, and a request
// waits at most QueueTimeout. The gate is overloaded when the queue has
// not been empty for half the timeout (a standing queue, as CoDel calls
// it) or it has refused a request within the last timeout. Then the
// newest waiter is admitted first (adaptive LIFO), and waiters that have
// waited longer than requests take to run (a moving average of how long
// slots are held) are refused at once, since their latency would at least
// double (even if that leaves a slot free for the next arrival). Admitted
// requests thus wait little, and refused ones learn it quickly. An
// arrival at a full queue displaces the oldest waiter, which is refused at
// once.
//
// Most of a saturated server's queue is in front of the gate, though:
// requests wait in socket buffers and for a CPU before their goroutines
// parse them and reach it. AcquireSince is told when the request arrived
// at the host; once most arrivals in an Interval have waited longer than
// TargetDelay (a standing queue, not a burst), every request that waited
// longer is refused at once, and a controlled share of the others
// (tooLate), until an Interval passes without a late one. Refusing costs a
// fraction of serving, so the queue drains until requests reach the gate
// within the target again: the admitted wait little, the refused hear so
// within milliseconds. (CoDel's standing-queue test looks at the minimum
// wait over an interval instead; here that minimum stays low under
// overload, since the runtime hands the network's ready connections out
// in batches whose first requests are fresh.)
//
// The zero Shedder, and a nil one, refuse everything.
type Shedder struct {
	disabled    bool
	maxInFlight int
	maxQueue    int
	timeout     time.Duration
	retryAfter  time.Duration
	target      time.Duration // TargetDelay; 0: off
	interval    time.Duration
	now         func() time.Time

	mu        sync.Mutex
	inFlight  int           // guarded by mu
	queue     waiterList    // guarded by mu
	busySince time.Time     // when the queue last stopped being empty; guarded by mu
	avgHold   time.Duration // moving average of how long slots are held; guarded by mu
	lastShed  time.Time     // when a request was last refused; guarded by mu
	winStart  time.Time     // start of the current Interval of the standing-queue test; guarded by mu
	winAll    int           // arrivals that reached the gate in it; guarded by mu
	winLate   int           // those of them that waited longer than target; guarded by mu
	standing  bool          // most arrivals in the last whole Interval were late; guarded by mu
	lastLate  time.Time     // when a late request was last refused; guarded by mu
	tickStart time.Time     // start of the current tick of drop's control; guarded by mu
	tickLate  bool          // a late request was refused this tick; guarded by mu
	drop      float64       // the fraction of requests in time refused while overloaded; guarded by mu
	late      atomic.Int64  // requests refused for their wait before the gate
	early     atomic.Int64  // requests in time refused while overloaded
	pool      sync.Pool     // of *waiter
	shed      atomic.Int64  // requests refused, for Stats
}

// ShedStats are a Shedder's counters.
type ShedStats struct {
	InFlight int   // requests running
	Queued   int   // requests waiting
	Shed     int64 // requests refused since the Shedder was made
	// Late counts the refused (in Shed) for having waited longer than
	// TargetDelay before reaching the gate.
	Late int64
	// Early counts the refused (in Shed) in time while overloaded, to
	// give the CPU slack.
	Early int64
}

// NewShedder returns the gate cfg describes; when cfg.Disabled, one that
// admits everything.
func NewShedder(cfg Shed) (*Shedder, error) {
	if cfg.Disabled {
		return &Shedder{disabled: true}, nil
	}
	if err := cfg.validate("shed"); err != nil {
		return nil, err
	}
	return &Shedder{
		maxInFlight: cfg.MaxInFlight,
		maxQueue:    cfg.MaxQueue,
		timeout:     cfg.QueueTimeout,
		retryAfter:  cfg.RetryAfter,
		target:      cfg.TargetDelay,
		interval:    cfg.Interval,
		now:         time.Now,
	}, nil
}

// waiter is a request waiting for a slot.
type waiter struct {
	ch         chan bool // receives true when given a slot, false when displaced
	enqueued   time.Time
	prev, next *waiter
	queued     bool // in the queue; guarded by Shedder.mu
}

// waiterList is a doubly linked list of waiters, oldest first.
type waiterList struct {
	head, tail *waiter
	n          int
}

func (l *waiterList) pushBack(w *waiter) {
	w.prev, w.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.n++
	w.queued = true
}

func (l *waiterList) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	l.n--
}

var (
	errShed      = &apierr.Error{Kind: apierr.Unavailable, Msg: "server overloaded, retry later"}
	errNoShedder = apierr.New(apierr.Unavailable, "server not ready")
)

func (s *Shedder) overloaded() *apierr.Error {
	s.shed.Add(1)
	e := *errShed
	e.RetryAfter = s.retryAfter
	return &e
}

// Acquire admits a request, waiting for a slot if the queue has room. It
// returns the function that gives the slot back, which must be called
// once the request is done (later calls do nothing), or an error: an
// *apierr.Error of kind Unavailable with RetryAfter when shed, or the
// context's error (as an *apierr.Error) if ctx ends first.
func (s *Shedder) Acquire(ctx context.Context) (release func(), err error) {
	return s.AcquireSince(ctx, time.Time{})
}

// AcquireSince is Acquire for a request that arrived at the host at
// arrived (the zero time: unknown), which may be refused for having
// waited too long already (see Shedder).
func (s *Shedder) AcquireSince(ctx context.Context, arrived time.Time) (release func(), err error) {
	if s != nil && s.disabled {
		return func() {}, nil
	}
	held, err := s.admit(ctx, arrived, time.Time{})
	if err != nil {
		return func() {}, err
	}
	return s.releaser(held), nil
}

// AdmitAt is AcquireSince for a caller that reads the clock itself and
// gives the slot back with ReleaseAt, exactly once, rather than through a
// release function (which costs an allocation): now is the current time.
// It returns when the slot was taken (now, or later after a wait in the
// queue), for ReleaseAt. A Shedder that admits everything returns the
// zero time.
func (s *Shedder) AdmitAt(ctx context.Context, arrived, now time.Time) (held time.Time, err error) {
	if s != nil && s.disabled {
		return time.Time{}, nil
	}
	return s.admit(ctx, arrived, now)
}

// ReleaseAt gives back the slot AdmitAt took at held; now is the current
// time.
func (s *Shedder) ReleaseAt(held, now time.Time) {
	if s == nil || s.disabled {
		return
	}
	s.releaseSlot(now.Sub(held))
}

// admit takes a slot for a request that arrived at the host at arrived
// (zero: unknown) and returns when it was taken; now is the current time,
// or zero to read the clock under the lock (tooLate's ticks then see
// times in order; a caller's clock may run a few microseconds behind,
// which they tolerate).
func (s *Shedder) admit(ctx context.Context, arrived, now time.Time) (time.Time, error) {
	if s == nil || s.maxInFlight == 0 {
		return time.Time{}, errNoShedder
	}
	s.mu.Lock()
	if now.IsZero() {
		now = s.now()
	}
	if s.target > 0 && !arrived.IsZero() && s.tooLate(arrived, now) {
		s.mu.Unlock()
		return time.Time{}, s.overloaded()
	}
	if s.inFlight < s.maxInFlight {
		s.inFlight++
		s.mu.Unlock()
		return now, nil
	}
	if s.maxQueue == 0 {
		s.congested(s.now())
		s.mu.Unlock()
		return time.Time{}, s.overloaded()
	}
	w, _ := s.pool.Get().(*waiter)
	if w == nil {
		w = &waiter{ch: make(chan bool, 1)}
	}
	w.enqueued = s.now()
	if s.queue.n == 0 {
		s.busySince = w.enqueued
	}
	if s.queue.n >= s.maxQueue {
		old := s.queue.head
		s.queue.remove(old)
		old.ch <- false
		s.congested(w.enqueued)
	}
	s.queue.pushBack(w)
	s.mu.Unlock()

	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	var admitted, done bool
	select {
	case admitted = <-w.ch:
		done = true
	case <-timer.C:
	case <-ctx.Done():
	}
	if !done {
		s.mu.Lock()
		if w.queued {
			s.queue.remove(w)
			s.congested(s.now())
		} else {
			// Given a slot or displaced just now: the answer is in ch.
			admitted = <-w.ch
		}
		s.mu.Unlock()
	}
	enqueued := w.enqueued
	s.pool.Put(w)
	if now := s.now(); admitted && s.target > 0 && now.Sub(enqueued) > s.target {
		s.mu.Lock()
		s.congested(now)
		s.mu.Unlock()
	}
	switch {
	case admitted && ctx.Err() != nil:
		s.releaseSlot(0)
		return time.Time{}, ctxError(ctx.Err())
	case admitted:
		return s.now(), nil
	case ctx.Err() != nil:
		return time.Time{}, ctxError(ctx.Err())
	}
	return time.Time{}, s.overloaded()
}

// tooLate decides whether a request that arrived at arrived is refused
// for the wait before the gate; s.mu is held.
//
// A standing queue is an Interval in which more than half the arrivals
// that reached the gate had waited longer than TargetDelay (and that was
// not followed by a whole Interval without arrivals). While there is
// one, or a late request was refused within the last Interval, the
// late are refused. So is a fraction (drop) of those in time: refusing
// only the late keeps the CPU busy to the brim (refusals cost too), and a
// runtime that never runs out of work polls the network only every 10ms,
// so every arrival waits. drop rises by 1/16 of what is left every tick
// (Interval/5) that refused a late request and falls by 1/32 every tick
// that did not, until the CPU has slack and arrivals reach the gate in
// time again.
func (s *Shedder) tooLate(arrived, now time.Time) bool {
	if tick := s.interval / 5; now.Sub(s.tickStart) >= tick {
		if s.tickLate {
			s.drop += (1 - s.drop) / 16
		} else {
			s.drop = max(0, s.drop-1.0/32)
		}
		s.tickStart, s.tickLate = now, false
	}
	if d := now.Sub(s.winStart); d >= s.interval {
		// The verdict on the interval that just ended, unless a whole
		// interval without arrivals followed it: an idle gap drains any
		// queue.
		s.standing = 2*s.winLate > s.winAll && d < 2*s.interval
		s.winStart, s.winAll, s.winLate = now, 0, 0
	}
	s.winAll++
	if now.Sub(arrived) <= s.target {
		if s.drop > 0 && now.Sub(s.lastLate) < s.interval && rand.Float64() < s.drop {
			s.lastShed = now
			s.early.Add(1)
			return true
		}
		return false
	}
	s.winLate++
	if s.standing || now.Sub(s.lastLate) < s.interval {
		s.lastLate, s.lastShed, s.tickLate = now, now, true
		s.late.Add(1)
		return true
	}
	return false
}

// congested records a sign of overload at now: a request refused for
// want of a slot, or one that waited longer than TargetDelay for one.
// With TargetDelay set it counts as a late refusal (see tooLate): slots
// held long behind a busy CPU are the same queue seen from behind the
// gate. s.mu is held.
func (s *Shedder) congested(now time.Time) {
	s.lastShed = now
	if s.target > 0 {
		s.lastLate, s.tickLate = now, true
	}
}

// releaser returns the release function of a slot taken at start.
func (s *Shedder) releaser(start time.Time) func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			s.releaseSlot(s.now().Sub(start))
		}
	}
}

// releaseSlot hands a slot that was held for held (0: unknown) to a
// waiter, or frees it.
func (s *Shedder) releaseSlot(held time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case held <= 0:
	case s.avgHold == 0:
		s.avgHold = held
	default:
		s.avgHold += (held - s.avgHold) / 8
	}
	if s.queue.n == 0 {
		s.inFlight--
		return
	}
	w := s.queue.head
	if now := s.now(); now.Sub(s.busySince) >= s.timeout/2 || now.Sub(s.lastShed) < s.timeout {
		// Overloaded. Refuse those that have waited longer than
		// requests take to run, admit the newest.
		limit := s.timeout / 2
		if s.avgHold > 0 {
			limit = min(limit, s.avgHold)
		}
		for s.queue.n > 0 && now.Sub(s.queue.head.enqueued) > limit {
			old := s.queue.head
			s.queue.remove(old)
			old.ch <- false
			s.congested(now)
		}
		if s.queue.n == 0 {
			s.inFlight-- // the slot waits for a fresh request
			return
		}
		w = s.queue.tail
	}
	s.queue.remove(w)
	w.ch <- true
}

// Stats returns the gate's counters.
func (s *Shedder) Stats() ShedStats {
	if s == nil {
		return ShedStats{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return ShedStats{InFlight: s.inFlight, Queued: s.queue.n, Shed: s.shed.Load(), Late: s.late.Load(), Early: s.early.Load()}
}

// Stage returns a pipeline stage that holds a slot for the rest of the
// chain. Prefer calling Acquire in the transport before the request body
// is read, so that shed requests cost no memory.
func (s *Shedder) Stage() pipeline.Stage {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
			release, err := s.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			defer release()
			return next.Infer(ctx, req)
		})
	}
}

// ctxError is the error for a request whose context ended.
func ctxError(err error) error {
	if err == context.DeadlineExceeded {
		return apierr.Wrap(apierr.DeadlineExceeded, err, "deadline exceeded")
	}
	return apierr.Wrap(apierr.Canceled, err, "request canceled")
}
