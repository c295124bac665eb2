package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func TestZeroLimiterRefuses(t *testing.T) {
	var zero Limiter
	var nilLimiter *Limiter
	for name, l := range map[string]*Limiter{"zero": &zero, "nil": nilLimiter} {
		t.Run(name, func(t *testing.T) {
			release, err := l.Admit(context.Background(), principal("key:a"), "m")
			wantRefused(t, err, apierr.Unavailable, msgStore, 0)
			release()
			wantRefused(t, l.Charge(context.Background(), principal("key:a"), "m", 1), apierr.Unavailable, msgStore, 0)
			if err := l.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNewRefusesQuotasWithoutDatabase(t *testing.T) {
	cfg := baseConfig()
	cfg.DailyRequests = 10
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "state database") {
		t.Errorf("got %v, want an error about the state database", err)
	}
	cfg.Redis.PasswordEnv = "AEGIS_TEST_UNSET_PASSWORD"
	cfg.Backend = BackendRedis
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "AEGIS_TEST_UNSET_PASSWORD") {
		t.Errorf("got %v, want an error naming the unset variable", err)
	}
}

func TestAnonymousShareLimits(t *testing.T) {
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 2}
	l := newEnv(t, BackendMemory, nil).limiter(cfg)
	if err := admit(l, nil, "m"); err != nil {
		t.Fatal(err)
	}
	if err := admit(l, &pipeline.Principal{}, "m"); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, admit(l, nil, "m"), apierr.ResourceExhausted, msgRate, time.Second)
}

func TestUnknownModelsAddNoKeys(t *testing.T) {
	// Limits are keyed by configured model names only: a client naming
	// many models costs no state.
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1000, Burst: 1000}
	cfg.Elements = Rate{PerSecond: 1000, Burst: 1000}
	l := newEnv(t, BackendMemory, nil).limiter(cfg)
	p := principal("key:alice")
	for i := range 500 {
		model := fmt.Sprintf("no-such-model-%d", i)
		if err := admit(l, p, model); err != nil {
			t.Fatal(err)
		}
		if err := l.Charge(context.Background(), p, model, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.store.(*memStore).keys(); n != 2 {
		t.Errorf("got %d keys, want 2 (requests and elements)", n)
	}
}

func (m *memStore) keys() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		counted := 0
		for _, ps := range sh.principals {
			counted += len(ps.buckets) + len(ps.quotas)
		}
		if counted != sh.keys {
			panic(fmt.Sprintf("shard %d: %d keys counted, %d recorded", i, counted, sh.keys))
		}
		n += sh.keys
		sh.mu.Unlock()
	}
	return n
}

func TestMemoryStoreBounded(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   apierr.Kind // of the refusal; 0: admitted
	}{{StoreErrorDeny, apierr.Unavailable}, {StoreErrorAllow, 0}} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEnv(t, BackendMemory, nil)
			cfg := baseConfig()
			cfg.Requests = Rate{PerSecond: 1, Burst: 10}
			cfg.MaxKeys = 1024 // 16 keys per shard
			cfg.OnStoreError = tc.policy
			l := e.limiter(cfg)
			// Fill the store with keys that hold debt.
			full := false
			for i := 0; i < 4096 && !full; i++ {
				err := admit(l, principal(fmt.Sprintf("key:%d", i)), "m")
				if err != nil {
					if tc.want == 0 {
						t.Fatalf("allow: %v", err)
					}
					wantRefused(t, err, tc.want, msgStore, storeRetry)
					full = true
				}
			}
			if tc.want != 0 && !full {
				t.Fatal("4096 principals never filled 1024 keys")
			}
			if n := l.store.(*memStore).keys(); n > 1024 {
				t.Errorf("%d keys held, limit 1024", n)
			}
			// Once their debt is paid, keys are forgotten and room is
			// made.
			e.clock.Advance(11 * time.Second)
			for i := range 200 {
				if err := admit(l, principal(fmt.Sprintf("key:new%d", i)), "m"); err != nil {
					t.Fatalf("after the keys expired: %v", err)
				}
			}
		})
	}
}

func TestRefusalMessagesSayNothingOfOthers(t *testing.T) {
	// Every public message is one of a fixed set, naming no principal,
	// count or other state.
	for _, msg := range []string{msgRate, msgElements, msgConcurrency, msgDaily, msgMonthly, msgModelDaily, msgModelMonth, msgStore} {
		if strings.ContainsAny(msg, "0123456789:{") {
			t.Errorf("message %q carries data", msg)
		}
	}
}

func TestLimiterStage(t *testing.T) {
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 2}
	cfg.Elements = Rate{PerSecond: 1, Burst: 8}
	cfg.MaxConcurrent = 1
	l := newEnv(t, BackendMemory, nil).limiter(cfg)
	var inFlight int
	h := pipeline.Chain(pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
		inFlight = l.conc.inFlight("key:alice")
		return &pipeline.Response{}, nil
	}), l.Stage())
	ctx := pipeline.WithPrincipal(context.Background(), principal("key:alice"))
	req := func(batch int64) *pipeline.Request {
		r := &pipeline.Request{Model: "m"}
		r.Inputs = append(r.Inputs, tensorOfBatch(batch))
		return r
	}
	if _, err := h.Infer(ctx, req(5)); err != nil {
		t.Fatal(err)
	}
	if inFlight != 1 || l.conc.inFlight("key:alice") != 0 {
		t.Errorf("in flight %d inside, %d after; want 1 and 0", inFlight, l.conc.inFlight("key:alice"))
	}
	_, err := h.Infer(ctx, req(5)) // 3 elements left
	wantRefused(t, err, apierr.ResourceExhausted, msgElements, 2*time.Second)
	// The refused request spent nothing: the burst's second request is
	// still there, and elements are left for it.
	if _, err := h.Infer(ctx, req(1)); err != nil {
		t.Fatalf("second request after a refusal for elements: %v", err)
	}
	_, err = h.Infer(ctx, req(1))
	wantRefused(t, err, apierr.ResourceExhausted, msgRate, time.Second)
	_, err = h.Infer(ctx, req(9)) // over the element burst: refused before any store
	wantRefused(t, err, apierr.ResourceExhausted, "batch of 9 elements exceeds the limit of 8 per request", 0)
}

func tensorOfBatch(batch int64) tensor.Tensor {
	return tensor.Tensor{Name: "x", Shape: []int64{batch, 3}}
}

func TestScopeMaxRateExtremes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxRate float64
		admits  int // of 3 at once
	}{
		{"a request a century is a request a day", 1e-10, 1},
		{"NaN is the slowest rate", math.NaN(), 1},
		{"infinity narrows nothing", math.Inf(1), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Requests = Rate{PerSecond: 100, Burst: 3}
			l := newEnv(t, BackendMemory, nil).limiter(cfg)
			p := &pipeline.Principal{ID: "key:odd", Scopes: pipeline.Scopes{MaxRate: tc.maxRate}}
			n := 0
			for range 3 {
				if admit(l, p, "m") == nil {
					n++
				}
			}
			if n != tc.admits {
				t.Errorf("admitted %d of 3, want %d", n, tc.admits)
			}
		})
	}
}

func TestChargeStage(t *testing.T) {
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1, Burst: 1}
	cfg.Elements = Rate{PerSecond: 1, Burst: 8}
	l := newEnv(t, BackendMemory, nil).limiter(cfg)
	h := pipeline.Chain(pipeline.HandlerFunc(func(context.Context, *pipeline.Request) (*pipeline.Response, error) {
		return &pipeline.Response{}, nil
	}), l.ChargeStage())
	ctx := pipeline.WithPrincipal(context.Background(), principal("key:alice"))
	req := &pipeline.Request{Model: "m", Inputs: []tensor.Tensor{tensorOfBatch(5)}}
	// Requests are not counted here (the transport's Admit does that):
	// only elements.
	if _, err := h.Infer(ctx, req); err != nil {
		t.Fatal(err)
	}
	_, err := h.Infer(ctx, req)
	wantRefused(t, err, apierr.ResourceExhausted, msgElements, 2*time.Second)
	if err := admit(l, principal("key:alice"), "m"); err != nil {
		t.Errorf("the request bucket was charged: %v", err)
	}
}
