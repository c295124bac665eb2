package ratelimit

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit/redistest"
)

// redisClient is a plain client of srv, for looking at what the store
// wrote.
func redisClient(t *testing.T, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisKeyLayout(t *testing.T) {
	srv := redistest.StartT(t)
	e := newEnv(t, BackendRedis, srv)
	e.prefix = "p:"
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 5}
	cfg.Elements = Rate{PerSecond: 100, Burst: 100}
	cfg.DailyRequests = 10
	cfg.MonthlyRequests = 100
	cfg.Models = map[string]ModelLimits{"big": {Requests: &Rate{PerSecond: 1, Burst: 1}, DailyRequests: 3}}
	l := e.limiter(cfg)
	p := &pipeline.Principal{ID: "key:alice", Scopes: pipeline.Scopes{MaxRate: 10}}
	if err := admit(l, p, "big"); err != nil {
		t.Fatal(err)
	}
	if err := admit(l, p, "small"); err != nil {
		t.Fatal(err)
	}
	if err := l.Charge(context.Background(), p, "big", 7); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := redisClient(t, srv)
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{
		"p:{key:alice}:el",
		"p:{key:alice}:qd:20400131",
		"p:{key:alice}:qd:20400131:big",
		"p:{key:alice}:qm:204001",
		"p:{key:alice}:rq",
		"p:{key:alice}:rq:big",
		"p:{key:alice}:sc",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("keys\n got %q\nwant %q", keys, want)
	}
	for _, k := range keys {
		if ttl := c.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("%s: PTTL %s, want an expiry", k, ttl)
		}
	}
	if got := c.Get(ctx, "p:{key:alice}:qd:20400131").Val(); got != "2" {
		t.Errorf("daily counter %s, want 2", got)
	}
	// The request bucket: the theoretical arrival time, in µs, one
	// second (one request) past now.
	if got, want := c.Get(ctx, "p:{key:alice}:rq").Val(), "2211624001000000"; got != want && got != want+".0" {
		t.Errorf("request bucket TAT %s, want %s", got, want)
	}
}

func TestRedisServerClock(t *testing.T) {
	// With the real clock, the script reads Redis's clock.
	srv := redistest.StartT(t)
	cfg := baseConfig()
	cfg.Backend = BackendRedis
	cfg.Redis.Addr = srv.Addr
	cfg.Requests = Rate{PerSecond: 1, Burst: 2}
	l, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.store.(*redisStore).now != nil {
		t.Fatal("store does not use the server's clock")
	}
	p := principal("key:alice")
	for range 2 {
		if err := admit(l, p, "m"); err != nil {
			t.Fatal(err)
		}
	}
	err = admit(l, p, "m")
	var e *apierr.Error
	if !errors.As(err, &e) || e.Kind != apierr.ResourceExhausted || e.RetryAfter <= 0 || e.RetryAfter > time.Second {
		t.Fatalf("third request: got %v (RetryAfter %v), want ResourceExhausted within 1s", err, e)
	}
}

func TestRedisScriptFlushed(t *testing.T) {
	// EVALSHA fails with NOSCRIPT when Redis lost its script cache; the
	// store falls back to EVAL.
	srv := redistest.StartT(t)
	e := newEnv(t, BackendRedis, srv)
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 3}
	l := e.limiter(cfg)
	p := principal("key:alice")
	if err := admit(l, p, "m"); err != nil {
		t.Fatal(err)
	}
	if err := redisClient(t, srv).ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := admit(l, p, "m"); err != nil {
			t.Fatalf("after SCRIPT FLUSH: %v", err)
		}
	}
	wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
}

func TestRedisUnreachableAtStart(t *testing.T) {
	srv := redistest.StartT(t)
	srv.Stop() // a port nothing listens on
	e := newEnv(t, BackendRedis, srv)
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 1}
	l := e.limiter(cfg) // starts anyway: Redis may come up later
	wantRefused(t, admit(l, principal("key:alice"), "m"), apierr.Unavailable, msgStore, storeRetry)
}

// waitAdmitted retries Admit until it does not fail as Unavailable.
func waitAdmitted(t *testing.T, l *Limiter, p *pipeline.Principal) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := admit(l, p, "m")
		var e *apierr.Error
		if !errors.As(err, &e) || e.Kind != apierr.Unavailable || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRedisLoss(t *testing.T) {
	t.Run("deny", func(t *testing.T) {
		srv := redistest.StartT(t)
		e := newEnv(t, BackendRedis, srv)
		cfg := baseConfig()
		cfg.Requests = Rate{PerSecond: 1, Burst: 3}
		cfg.Elements = Rate{PerSecond: 1, Burst: 10}
		cfg.MaxConcurrent = 5
		cfg.Redis.RetryInterval = 20 * time.Millisecond
		l := e.limiter(cfg)
		p := principal("key:alice")
		for range 3 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatal(err)
			}
		}
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)

		srv.Stop()
		err := admit(l, p, "m")
		wantRefused(t, err, apierr.Unavailable, msgStore, storeRetry)
		if errors.Unwrap(err) == nil {
			t.Error("the refusal carries no cause for the log")
		}
		wantRefused(t, l.Charge(context.Background(), p, "m", 1), apierr.Unavailable, msgStore, storeRetry)
		// Failing fast while Redis is down: no call waits for a timeout.
		start := time.Now()
		for range 100 {
			wantRefused(t, admit(l, p, "m"), apierr.Unavailable, msgStore, storeRetry)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("100 refusals took %s", d)
		}
		if got := l.conc.inFlight(p.ID); got != 0 {
			t.Errorf("refusals hold %d concurrency slots", got)
		}

		// Redis comes back empty (no persistence): limits start afresh,
		// the full burst is there again.
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := waitAdmitted(t, l, p); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
		for range 2 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("after the restart: %v", err)
			}
		}
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
	})
	t.Run("allow", func(t *testing.T) {
		srv := redistest.StartT(t)
		e := newEnv(t, BackendRedis, srv)
		cfg := baseConfig()
		cfg.Requests = Rate{PerSecond: 1, Burst: 1}
		cfg.MaxConcurrent = 1
		cfg.OnStoreError = StoreErrorAllow
		l := e.limiter(cfg)
		p := principal("key:alice")
		if err := admit(l, p, "m"); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgRate, time.Second)
		srv.Stop()
		for range 10 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("with Redis down and on_store_error allow: %v", err)
			}
		}
		// The concurrency limit is local: it still holds.
		release, err := l.Admit(context.Background(), p, "m")
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgConcurrency, concurrencyRetry)
		release()
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		// Limits apply again once Redis is back.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := admit(l, p, "m")
			var e *apierr.Error
			if errors.As(err, &e) && e.Kind == apierr.ResourceExhausted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("limits not enforced 10 s after Redis came back: last %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestRedisLossUnderLoad(t *testing.T) {
	// Redis dies and comes back while 8 goroutines make decisions: every
	// answer is an admission, a 429 or a 503 (never anything else), there
	// are 503s while it is down and admissions again once it is back.
	srv := redistest.StartT(t)
	e := newEnv(t, BackendRedis, srv)
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1e6, Burst: 1000}
	cfg.DailyRequests = 1 << 40
	cfg.Redis.RetryInterval = 20 * time.Millisecond
	l := e.limiter(cfg)

	var admitted, exhausted, unavailable, other atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := principal("key:" + string(rune('a'+g)))
			for !stop.Load() {
				err := admit(l, p, "m")
				var ae *apierr.Error
				switch {
				case err == nil:
					admitted.Add(1)
				case errors.As(err, &ae) && ae.Kind == apierr.ResourceExhausted:
					exhausted.Add(1)
				case errors.As(err, &ae) && ae.Kind == apierr.Unavailable && ae.RetryAfter > 0:
					unavailable.Add(1)
				default:
					other.Add(1)
					t.Errorf("unexpected answer %v", err)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	waitFor := func(what string, c *atomic.Int64, from int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.Load() < from+10 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("no %s within 10 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("admissions before the loss", &admitted, 0)
	srv.Stop()
	waitFor("503s while Redis is down", &unavailable, unavailable.Load())
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor("admissions after the restart", &admitted, admitted.Load())
	stop.Store(true)
	wg.Wait()
	t.Logf("admitted %d, 429 %d, 503 %d, other %d", admitted.Load(), exhausted.Load(), unavailable.Load(), other.Load())
}

func TestRedisCallerContext(t *testing.T) {
	// A caller whose context ends is answered at once, admitted or not.
	srv := redistest.StartT(t)
	e := newEnv(t, BackendRedis, srv)
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 10}
	l := e.limiter(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Admit(ctx, principal("key:alice"), "m")
	wantRefused(t, err, apierr.Canceled, "request canceled", 0)
	// A timeout is not Redis's failure: it does not stop other decisions.
	if err := admit(l, principal("key:alice"), "m"); err != nil {
		t.Fatal(err)
	}
	// After Close, decisions fail (closed) rather than hang.
	l.Close()
	done := make(chan error, 1)
	go func() { done <- admit(l, principal("key:alice"), "m") }()
	select {
	case err := <-done:
		wantRefused(t, err, apierr.Unavailable, msgStore, storeRetry)
	case <-time.After(5 * time.Second):
		t.Fatal("Admit after Close hangs")
	}
}

func TestRedisBatchSeesEarlierDecisions(t *testing.T) {
	// Two decisions on one key in one script call: the second sees the
	// first's bucket and counter.
	srv := redistest.StartT(t)
	e := newEnv(t, BackendRedis, srv)
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 2}
	cfg.DailyRequests = 2
	l := e.limiter(cfg)
	s := l.store.(*redisStore)
	decision := func() *call {
		c := checks{principal: "key:alice"}
		r := l.def.requests
		c.addBucket(bucketCheck{kind: kindRequests, interval: r.interval, tolerance: r.tolerance(), cost: 1})
		c.addQuota(quotaCheck{period: periodDay, limit: 2})
		keys, args := s.request(&c)
		return &call{keys: keys, args: args, done: make(chan struct{}, 1)}
	}
	batch := []*call{decision(), decision(), decision()}
	s.batches.exec(batch)
	for i, want := range []bool{true, true, false} {
		if c := batch[i]; c.err != nil || (c.res == 0) != want {
			t.Errorf("decision %d: reply %d, %v; want admitted %v", i+1, c.res, c.err, want)
		}
	}
	if got := redisClient(t, srv).Get(context.Background(), e.prefix+"{key:alice}:qd:20400131").Val(); got != "2" {
		t.Errorf("daily counter %s, want 2", got)
	}
}
