package extraction

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkObserve is the request path's cost: copying the row and
// queueing it. The queue is drained (untimed) every 4,096 observations, so
// that none is dropped; the worker runs concurrently, as in the server.
func BenchmarkObserve(b *testing.B) {
	cfg := testConfig(b)
	m := newMonitor(b, cfg)
	qs := benignStream(rand.New(rand.NewPCG(1, 1)), 512)
	groups := []string{"tenant:a", "net:127.0.0.0/24"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i%4096 == 0 {
			b.StopTimer()
			m.Flush()
			b.StartTimer()
		}
		q := qs[i%len(qs)]
		m.Observe("key:bench", groups, q.x, q.label)
	}
	b.StopTimer()
	m.Flush()
	if d := m.Stats().Dropped; d != 0 {
		b.Fatalf("%d dropped", d)
	}
}

// BenchmarkDecision is the request path's other cost.
func BenchmarkDecision(b *testing.B) {
	m := newMonitor(b, testConfig(b))
	q := benignStream(rand.New(rand.NewPCG(1, 1)), 1)[0]
	m.Observe("key:bench", []string{"tenant:a", "net:127.0.0.0/24"}, q.x, q.label)
	m.Flush()
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Decision("key:bench")
	}
}

// BenchmarkProcess is the worker's cost per observation of a principal in
// two groups (three subjects updated), with full histories.
func BenchmarkProcess(b *testing.B) {
	for _, kind := range []string{"benign", "uniform"} {
		b.Run(kind, func(b *testing.B) {
			cfg := testConfig(b)
			m := newMonitor(b, cfg)
			rng := rand.New(rand.NewPCG(2, 2))
			qs := benignStream(rng, 4000)
			if kind == "uniform" {
				qs = uniformStream(rng, 4000)
			}
			msg := &message{principal: "key:bench", groups: []string{"tenant:a", "net:127.0.0.0/24"}}
			// Fill the histories first; the worker goroutine is idle, and
			// process is called from here alone.
			m.Flush()
			for _, q := range qs[:2000] {
				msg.x, msg.label = q.x, q.label
				m.process(msg)
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				q := qs[2000+i%2000]
				msg.x, msg.label = q.x, q.label
				m.process(msg)
				i++
			}
		})
	}
}

func BenchmarkShapiroWilk(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 3))
			x := make([]float64, n)
			for i := range x {
				x[i] = rng.NormFloat64()
			}
			var s swScratch
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.test(x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
