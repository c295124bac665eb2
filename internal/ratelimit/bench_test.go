package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// hotConfig limits requests and elements, with daily and monthly quotas,
// high enough that benchmarks are admitted.
func hotConfig() Config {
	cfg := baseConfig()
	cfg.Requests = Rate{PerSecond: 1e9, Burst: 1 << 20}
	cfg.Elements = Rate{PerSecond: 1e9, Burst: 1 << 20}
	cfg.DailyRequests = 1 << 60
	cfg.MonthlyRequests = 1 << 60
	return cfg
}

func principals(n int) []*pipeline.Principal {
	ps := make([]*pipeline.Principal, n)
	for i := range ps {
		ps[i] = principal(fmt.Sprintf("key:%08d", i))
	}
	return ps
}

func TestMemoryDecisionsDoNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	e := newEnv(t, BackendMemory, nil)
	l := e.limiter(hotConfig())
	ctx, p := context.Background(), principal("key:alice")
	admit(l, p, "m") // create the keys
	if n := testing.AllocsPerRun(1000, func() {
		release, err := l.Admit(ctx, p, "m")
		if err != nil {
			t.Fatal(err)
		}
		release()
	}); n != 0 {
		t.Errorf("Admit: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if err := l.Charge(ctx, p, "m", 8); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Charge: %v allocations, want 0", n)
	}
}

func benchmarkAdmit(b *testing.B, cfg Config, e *env) {
	l := e.limiter(cfg)
	ps := principals(10000)
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := int(seq.Add(7919))
		for pb.Next() {
			i++
			release, err := l.Admit(ctx, ps[i%len(ps)], "m")
			if err != nil {
				b.Fatalf("%v %+v", err, err)
			}
			release()
		}
	})
}

// BenchmarkMemoryAdmit: a request bucket and two quotas per decision,
// 10000 principals, real clock.
func BenchmarkMemoryAdmit(b *testing.B) {
	benchmarkAdmit(b, hotConfig(), newEnvB(b, BackendMemory))
}

// BenchmarkMemoryAdmitConcurrency adds the per-principal concurrency
// limit (its release function is one allocation).
func BenchmarkMemoryAdmitConcurrency(b *testing.B) {
	cfg := hotConfig()
	cfg.MaxConcurrent = 100
	benchmarkAdmit(b, cfg, newEnvB(b, BackendMemory))
}

func BenchmarkMemoryCharge(b *testing.B) {
	l := newEnvB(b, BackendMemory).limiter(hotConfig())
	ps := principals(10000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx, i := context.Background(), 0
		for pb.Next() {
			i++
			if err := l.Charge(ctx, ps[i%len(ps)], "m", 16); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkShedder(b *testing.B) {
	s, err := NewShedder(Shed{MaxInFlight: 1 << 20, RetryAfter: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			release, err := s.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
}

// newEnvB is newEnv for benchmarks, on the real clock.
func newEnvB(b *testing.B, backend string) *env {
	e := &env{t: b, backend: backend, dbPath: b.TempDir() + "/state.db"}
	e.openDB()
	b.Cleanup(func() { e.db.Close() })
	return e
}
