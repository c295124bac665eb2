package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit/redistest"
)

func TestRequestRate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.Requests = Rate{PerSecond: 2, Burst: 3} // one request per 500 ms
		l := e.limiter(cfg)
		alice, bob := principal("key:alice"), principal("key:bob")

		for i := range 3 {
			if err := admit(l, alice, "m"); err != nil {
				t.Fatalf("request %d of the burst: %v", i+1, err)
			}
		}
		wantRefused(t, admit(l, alice, "m"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)
		// Other principals and other models (without an override) are
		// separate, and shared respectively.
		if err := admit(l, bob, "m"); err != nil {
			t.Errorf("bob: %v", err)
		}
		wantRefused(t, admit(l, alice, "other"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)

		e.clock.Advance(200 * time.Millisecond)
		wantRefused(t, admit(l, alice, "m"), apierr.ResourceExhausted, msgRate, 300*time.Millisecond)
		e.clock.Advance(300 * time.Millisecond)
		if err := admit(l, alice, "m"); err != nil {
			t.Fatalf("after the refill: %v", err)
		}
		wantRefused(t, admit(l, alice, "m"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)

		// Idle for long enough, the bucket is full again, and no fuller.
		e.clock.Advance(time.Hour)
		for i := range 3 {
			if err := admit(l, alice, "m"); err != nil {
				t.Fatalf("after an hour, request %d: %v", i+1, err)
			}
		}
		wantRefused(t, admit(l, alice, "m"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)
	})
}

func TestElementRate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.Elements = Rate{PerSecond: 100, Burst: 64} // 10 ms per element
		l := e.limiter(cfg)
		ctx, p := context.Background(), principal("key:alice")

		if err := l.Charge(ctx, p, "m", 60); err != nil {
			t.Fatal(err)
		}
		// 4 left: 10 more need 6 × 10 ms.
		wantRefused(t, l.Charge(ctx, p, "m", 10), apierr.ResourceExhausted, msgElements, 60*time.Millisecond)
		if err := l.Charge(ctx, p, "m", 4); err != nil {
			t.Fatalf("the rest of the burst: %v", err)
		}
		e.clock.Advance(100 * time.Millisecond)
		if err := l.Charge(ctx, p, "m", 10); err != nil {
			t.Fatalf("after 100 ms: %v", err)
		}
		// A batch over the burst can never pass: no RetryAfter.
		e.clock.Advance(time.Hour)
		wantRefused(t, l.Charge(ctx, p, "m", 65), apierr.ResourceExhausted,
			"batch of 65 elements exceeds the limit of 64 per request", 0)
		for _, n := range []int64{0, -1} {
			if err := l.Charge(ctx, p, "m", n); err != nil {
				t.Errorf("Charge(%d): %v", n, err)
			}
		}
	})
}

func TestScopeMaxRateNarrows(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.Requests = Rate{PerSecond: 100, Burst: 100}
		cfg.Models = map[string]ModelLimits{"big": {Requests: &Rate{PerSecond: 100, Burst: 100}}}
		l := e.limiter(cfg)
		scoped := &pipeline.Principal{ID: "key:scoped", Scopes: pipeline.Scopes{MaxRate: 2}}

		// max_rate 2: a burst of 2 (one second's worth), then one per
		// 500 ms, over all models together.
		if err := admit(l, scoped, "m"); err != nil {
			t.Fatal(err)
		}
		if err := admit(l, scoped, "big"); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, scoped, "m"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)
		wantRefused(t, admit(l, scoped, "big"), apierr.ResourceExhausted, msgRate, 500*time.Millisecond)
		e.clock.Advance(500 * time.Millisecond)
		if err := admit(l, scoped, "big"); err != nil {
			t.Fatal(err)
		}
		// An unscoped principal keeps the configured rate.
		for i := range 100 {
			if err := admit(l, principal("key:free"), "m"); err != nil {
				t.Fatalf("unscoped request %d: %v", i+1, err)
			}
		}

		// A scope above the configured rate does not widen it.
		cfg.Requests = Rate{PerSecond: 1, Burst: 1}
		cfg.Models = nil
		l = e.limiter(cfg)
		wide := &pipeline.Principal{ID: "key:wide", Scopes: pipeline.Scopes{MaxRate: 1000}}
		if err := admit(l, wide, "m"); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, wide, "m"), apierr.ResourceExhausted, msgRate, time.Second)
	})
}

func TestModelOverrides(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.Requests = Rate{PerSecond: 1, Burst: 2}
		cfg.Elements = Rate{PerSecond: 10, Burst: 10}
		cfg.Models = map[string]ModelLimits{
			"big":  {Requests: &Rate{PerSecond: 1, Burst: 1}, Elements: &Rate{PerSecond: 1, Burst: 4}},
			"free": {Requests: &Rate{}}, // no request limit for this model
		}
		l := e.limiter(cfg)
		ctx, p := context.Background(), principal("key:alice")

		if err := admit(l, p, "big"); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, p, "big"), apierr.ResourceExhausted, msgRate, time.Second)
		// big has its own bucket: the default one is untouched.
		for i := range 2 {
			if err := admit(l, p, "small"); err != nil {
				t.Fatalf("default bucket, request %d: %v", i+1, err)
			}
		}
		wantRefused(t, admit(l, p, "small"), apierr.ResourceExhausted, msgRate, time.Second)
		for i := range 50 {
			if err := admit(l, p, "free"); err != nil {
				t.Fatalf("unlimited model, request %d: %v", i+1, err)
			}
		}
		// Elements: big's burst is 4; "free" keeps the default elements.
		wantRefused(t, l.Charge(ctx, p, "big", 5), apierr.ResourceExhausted,
			"batch of 5 elements exceeds the limit of 4 per request", 0)
		if err := l.Charge(ctx, p, "big", 4); err != nil {
			t.Fatal(err)
		}
		if err := l.Charge(ctx, p, "free", 10); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, l.Charge(ctx, p, "small", 1), apierr.ResourceExhausted, msgElements, 100*time.Millisecond)
	})
}

func TestConcurrency(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConcurrent = 2
	e := newEnv(t, BackendMemory, nil)
	l := e.limiter(cfg)
	ctx, alice := context.Background(), principal("key:alice")

	r1, err := l.Admit(ctx, alice, "m")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Admit(ctx, alice, "other")
	if err != nil {
		t.Fatal(err)
	}
	r3, err := l.Admit(ctx, alice, "m")
	wantRefused(t, err, apierr.ResourceExhausted, msgConcurrency, concurrencyRetry)
	r3() // the no-op release of a refusal
	if err := admit(l, principal("key:bob"), "m"); err != nil {
		t.Errorf("bob: %v", err)
	}
	r1()
	r1() // a second release gives nothing back
	if got := l.conc.inFlight("key:alice"); got != 1 {
		t.Errorf("after release: got %d in flight, want 1", got)
	}
	r4, err := l.Admit(ctx, alice, "m")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	wantRefused(t, admit(l, alice, "m"), apierr.ResourceExhausted, msgConcurrency, concurrencyRetry)
	r2()
	r4()
	if got := l.conc.inFlight("key:alice"); got != 0 {
		t.Errorf("all released: got %d in flight, want 0", got)
	}
	for i := range l.conc.shards {
		if n := len(l.conc.shards[i].n); n != 0 {
			t.Errorf("shard %d keeps %d idle principals", i, n)
		}
	}
}

func TestConcurrencyRefundedOnRateRefusal(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConcurrent = 1
	cfg.Requests = Rate{PerSecond: 1, Burst: 1}
	l := newEnv(t, BackendMemory, nil).limiter(cfg)
	p := principal("key:alice")
	if err := admit(l, p, "m"); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
	if got := l.conc.inFlight(p.ID); got != 0 {
		t.Errorf("got %d in flight after a rate refusal, want 0", got)
	}
}

func TestRefusalConsumesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		t.Run("rate refusals do not count against quotas", func(t *testing.T) {
			cfg := baseConfig()
			cfg.Requests = Rate{PerSecond: 1, Burst: 1}
			cfg.DailyRequests = 2
			l := e.limiter(cfg)
			p := principal("key:alice")
			if err := admit(l, p, "m"); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
			}
			e.clock.Advance(time.Second)
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("second of the daily two: %v", err)
			}
			e.clock.Advance(time.Second)
			wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgDaily, 12*time.Hour-2*time.Second)
		})
		t.Run("quota refusals do not take tokens", func(t *testing.T) {
			cfg := baseConfig()
			cfg.Requests = Rate{PerSecond: 1.0 / 3600, Burst: 2}
			cfg.Models = map[string]ModelLimits{"big": {DailyRequests: 1}}
			l := e.limiter(cfg)
			p := principal("key:bob")
			if err := admit(l, p, "big"); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				wantRefused(t, admit(l, p, "big"), apierr.ResourceExhausted, msgModelDaily, -1)
			}
			if err := admit(l, p, "small"); err != nil {
				t.Fatalf("the burst's second token: %v", err)
			}
			wantRefused(t, admit(l, p, "small"), apierr.ResourceExhausted, msgRate, -1)
		})
	})
}

func TestTwoLimitersShareState(t *testing.T) {
	// Two Limiters on one Redis are two replicas: they share limits.
	e := newEnv(t, BackendRedis, redistest.StartT(t))
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 4}
	cfg.DailyRequests = 6
	a, b := e.limiter(cfg), e.limiter(cfg)
	p := principal("key:alice")
	for i := range 4 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if err := admit(l, p, "m"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	wantRefused(t, admit(a, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
	wantRefused(t, admit(b, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
	e.clock.Advance(2 * time.Second)
	if err := admit(b, p, "m"); err != nil {
		t.Fatal(err)
	}
	if err := admit(a, p, "m"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10 * time.Second)
	wantRefused(t, admit(a, p, "m"), apierr.ResourceExhausted, msgDaily, 12*time.Hour-12*time.Second)
}

func TestConcurrentDecisionsAreExact(t *testing.T) {
	// 8 goroutines race 400 requests for one principal's limits: exactly
	// the limit is admitted, whatever the interleaving (on Redis, whatever
	// the batches).
	forEachBackend(t, func(t *testing.T, e *env) {
		for _, tc := range []struct {
			name         string
			burst, daily int64
			want         int64
		}{{"burst", 200, 1000, 200}, {"quota", 300, 250, 250}} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := baseConfig()
				cfg.Requests = Rate{PerSecond: 1, Burst: tc.burst} // the fake clock stands still
				cfg.DailyRequests = tc.daily
				l := e.limiter(cfg)
				p := principal("key:" + tc.name)
				var admitted atomic.Int64
				var wg sync.WaitGroup
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range 50 {
							if err := admit(l, p, "m"); err == nil {
								admitted.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				if admitted.Load() != tc.want {
					t.Errorf("admitted %d of 400, want %d", admitted.Load(), tc.want)
				}
			})
		}
	})
}
