package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit"
)

// sim is a server: slots sessions, each serving one request at a time
// for service, requests waiting for a slot in an unbounded queue (as the
// session pool's waiters do), each request holding a body buffer of
// bodyBytes from the moment it is admitted.
type sim struct {
	slots     chan struct{}
	service   time.Duration
	bodyBytes int
	shed      *ratelimit.Shedder // nil: no shedding
	limiter   *ratelimit.Limiter
}

var sink atomic.Pointer[[]byte]

// phases are where an admitted request spent its time.
type phases struct{ gate, slot, service time.Duration }

// serve handles one request as the recommended wiring does: the
// principal's limits first (cheap, before the body is read), then the
// global gate, then the body and the session slot.
func (s *sim) serve(p *pipeline.Principal) (phases, error) {
	var ph phases
	release, err := s.limiter.Admit(context.Background(), p, "m")
	if err != nil {
		return ph, err
	}
	defer release()
	t0 := time.Now()
	if s.shed != nil {
		release, err := s.shed.Acquire(context.Background())
		if err != nil {
			return ph, err
		}
		defer release()
	}
	t1 := time.Now()
	body := make([]byte, s.bodyBytes) // the request body, read once admitted
	body[0] = 1
	s.slots <- struct{}{}
	t2 := time.Now()
	time.Sleep(s.service)
	<-s.slots
	t3 := time.Now()
	sink.Store(&body)
	ph.gate, ph.slot, ph.service = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)
	return ph, nil
}

// loadResult is one open-loop run.
type loadResult struct {
	sent, ok, tooMany, unavailable int
	okP50, okP99                   time.Duration
	refusedP99                     time.Duration
	gateP99, slotP99, serviceP99   time.Duration // phases of admitted requests
	heapStart, heapMax, heapEnd    uint64
	goroutinesMax                  int
	others                         string
}

// load sends rate requests per second for d, each in its own goroutine
// (as a server's connection goroutines), spread over 100 principals.
func load(s *sim, rate float64, d time.Duration) loadResult {
	ps := principals(100)
	var mu sync.Mutex
	var okLat, refusedLat, gate, slot, service []time.Duration
	var r loadResult
	var wg sync.WaitGroup
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapStart = ms.HeapInuse
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // heap and goroutines every 50 ms
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				r.heapMax = max(r.heapMax, ms.HeapInuse)
				r.goroutinesMax = max(r.goroutinesMax, runtime.NumGoroutine())
			}
		}
	}()
	snap := benchutil.TakeCPUSnap()
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	for now := range tick.C {
		if now.Sub(start) >= d {
			break
		}
		due := int(now.Sub(start).Seconds() * rate)
		for ; r.sent < due; r.sent++ {
			wg.Add(1)
			go func(p *pipeline.Principal) {
				defer wg.Done()
				t0 := time.Now()
				ph, err := s.serve(p)
				lat := time.Since(t0)
				var ae *apierr.Error
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					r.ok++
					okLat = append(okLat, lat)
					gate, slot, service = append(gate, ph.gate), append(slot, ph.slot), append(service, ph.service)
				case errors.As(err, &ae) && ae.Kind == apierr.ResourceExhausted:
					r.tooMany++
					refusedLat = append(refusedLat, lat)
				default:
					r.unavailable++
					refusedLat = append(refusedLat, lat)
				}
			}(ps[r.sent%len(ps)])
		}
	}
	tick.Stop()
	wg.Wait()
	r.others = others(snap)
	close(stopSampling)
	<-sampled
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.heapEnd = ms.HeapInuse
	slices.Sort(okLat)
	slices.Sort(refusedLat)
	r.okP50, r.okP99 = benchutil.Percentile(okLat, 0.5), benchutil.Percentile(okLat, 0.99)
	r.refusedP99 = benchutil.Percentile(refusedLat, 0.99)
	for _, x := range []struct {
		lat []time.Duration
		p99 *time.Duration
	}{{gate, &r.gateP99}, {slot, &r.slotP99}, {service, &r.serviceP99}} {
		slices.Sort(x.lat)
		*x.p99 = benchutil.Percentile(x.lat, 0.99)
	}
	return r
}

func (r loadResult) String() string {
	mb := func(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	d := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("sent %6d  200 %6d  429 %5d  503 %6d  | admitted p50 %7s p99 %7s (p99 gate %s, slot %s, service %s) | refusals p99 %7s | heap MiB %s→max %s→%s, goroutines max %d | other load %s CPUs",
		r.sent, r.ok, r.tooMany, r.unavailable,
		d(r.okP50), d(r.okP99), d(r.gateP99), d(r.slotP99), d(r.serviceP99), d(r.refusedP99),
		mb(r.heapStart), mb(r.heapMax), mb(r.heapEnd), r.goroutinesMax, r.others)
}

func overload(o options) error {
	slots := runtime.GOMAXPROCS(0)
	capacity := float64(slots) / o.service.Seconds()
	cfg := ratelimit.Default() // the default shedding: 2 × GOMAXPROCS in flight, as many waiting, 10 ms
	// 100 principals share the load evenly; each may use twice its fair
	// share of the capacity. At 3× capacity a third of each one's requests
	// are over its rate (429), and the rest is still twice what the server
	// can do (503 for half of it).
	perPrincipal := 2 * capacity / 100
	cfg.Requests = ratelimit.Rate{PerSecond: perPrincipal, Burst: int64(perPrincipal)}
	cfg.MaxConcurrent = 0
	lim, err := ratelimit.New(cfg, ratelimit.Options{})
	if err != nil {
		return err
	}
	defer lim.Close()
	newSim := func(shed bool) (*sim, error) {
		s := &sim{slots: make(chan struct{}, slots), service: o.service, bodyBytes: 64 << 10, limiter: lim}
		if shed {
			sh, err := ratelimit.NewShedder(cfg.Shed)
			if err != nil {
				return nil, err
			}
			s.shed = sh
		}
		return s, nil
	}
	fmt.Printf("## Overload (simulated server: %d slots × %s = %.0f requests/s; 64 KiB body per admitted request)\n\n", slots, o.service, capacity)
	fmt.Printf("Shedder: max_in_flight %d, max_queue %d, queue_timeout %s (Default()). 100 principals, each limited to %.0f requests/s (twice its share).\n\n```\n",
		cfg.Shed.MaxInFlight, cfg.Shed.MaxQueue, cfg.Shed.QueueTimeout, perPrincipal)
	withShed, err := newSim(true)
	if err != nil {
		return err
	}
	normal := load(withShed, capacity/2, o.loadFor)
	fmt.Printf("0.5× capacity, shedding   %s\n", normal)
	over := load(withShed, 3*capacity, o.loadFor)
	fmt.Printf("3× capacity,   shedding   %s\n", over)
	noShed, err := newSim(false)
	if err != nil {
		return err
	}
	fmt.Printf("3× capacity,   no shedder %s\n", load(noShed, 3*capacity, time.Second))
	fmt.Println("```")
	fmt.Printf("\nadmitted p99 at 3× / at 0.5×: %.2f (target ≤ 2); refusals p99 %s\n\n",
		float64(over.okP99)/float64(normal.okP99), over.refusedP99.Round(10*time.Microsecond))
	return nil
}
