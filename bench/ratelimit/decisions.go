package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/ratelimit/redistest"
)

// benchConfig limits requests and elements and has daily and monthly
// quotas, all high enough that every decision is an admission: Admit
// checks a request bucket and two counters (three keys, one script call).
func benchConfig() ratelimit.Config {
	cfg := ratelimit.Default()
	cfg.Requests = ratelimit.Rate{PerSecond: 1e6, Burst: 1e6}
	cfg.DailyRequests = 1 << 50
	cfg.MonthlyRequests = 1 << 50
	cfg.MaxConcurrent = 0
	return cfg
}

// result is one measured run.
type result struct {
	ops      int
	elapsed  time.Duration
	p50, p99 time.Duration
	failed   int    // decisions that were not admissions
	firstErr error  // the first of them
	others   string // CPUs busy with other work meanwhile
	cpu      string // CPUs used by this process and by redis-server
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r result) String() string {
	s := fmt.Sprintf("%9.0f/s  p50 %7s  p99 %7s  (%d in %s; other load %s CPUs%s)",
		r.rate(), round(r.p50), round(r.p99), r.ops, r.elapsed.Round(time.Millisecond), r.others, r.cpu)
	if r.failed > 0 {
		s += fmt.Sprintf("  %d NOT ADMITTED, first: %v", r.failed, r.firstErr)
	}
	return s
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Microsecond {
		return d.Round(10 * time.Nanosecond)
	}
	return d.Round(time.Microsecond)
}

// cpuTicks returns the CPU time of pid ("self" for this process), in
// 1/100 s.
func cpuTicks(pid string) int {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

func others(s benchutil.CPUSnap, pids ...int) string {
	v := s.OthersSince(benchutil.TakeCPUSnap(pids...))
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", v)
}

// redisBenchmark runs redis-benchmark's one-line EVAL against addr.
func redisBenchmark(srv *redistest.Server, conns, n int) (result, error) {
	snap := benchutil.TakeCPUSnap(srv.Pid())
	srv0, start := cpuTicks(strconv.Itoa(srv.Pid())), time.Now()
	cmd := exec.Command("redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port),
		"-c", strconv.Itoa(conns), "-n", strconv.Itoa(n), "--csv", "EVAL", "return 1", "0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark: %v: %s", err, stderr.String())
	}
	// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 2 || len(rows[1]) < 7 {
		return result{}, fmt.Errorf("redis-benchmark output %q", out)
	}
	rps, err1 := strconv.ParseFloat(rows[1][1], 64)
	p50, err2 := strconv.ParseFloat(rows[1][4], 64)
	p99, err3 := strconv.ParseFloat(rows[1][6], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return result{}, fmt.Errorf("redis-benchmark output %q", out)
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	cpu := fmt.Sprintf("; redis-server %.2f CPUs", float64(cpuTicks(strconv.Itoa(srv.Pid()))-srv0)/time.Since(start).Seconds()/100)
	// redis-benchmark's own rate excludes its connection set-up; use it.
	return result{ops: n, elapsed: time.Duration(float64(n) / rps * float64(time.Second)), p50: ms(p50), p99: ms(p99),
		others: others(snap, srv.Pid()), cpu: cpu}, nil
}

// admitFor has conns goroutines call Admit for d, over the principals in
// turn, and measures every call.
func admitFor(l *ratelimit.Limiter, conns int, d time.Duration, ps []*pipeline.Principal, pids ...int) result {
	snap := benchutil.TakeCPUSnap(pids...)
	self0 := cpuTicks("self")
	var srv0 int
	if len(pids) > 0 {
		srv0 = cpuTicks(strconv.Itoa(pids[0]))
	}
	lats := make([][]time.Duration, conns)
	fails := make([]int, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for g := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			lat := make([]time.Duration, 0, 1<<16)
			for i := g; ; i += conns {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				release, err := l.Admit(ctx, ps[i%len(ps)], "m")
				lat = append(lat, time.Since(t0))
				release()
				if err != nil {
					if fails[g] == 0 {
						errs[g] = err
					}
					fails[g]++
				}
			}
			lats[g] = lat
		}()
	}
	wg.Wait()
	r := result{elapsed: time.Since(start), others: others(snap, pids...)}
	secs := r.elapsed.Seconds() * 100
	r.cpu = fmt.Sprintf("; this process %.2f CPUs", float64(cpuTicks("self")-self0)/secs)
	if len(pids) > 0 {
		r.cpu += fmt.Sprintf(", redis-server %.2f", float64(cpuTicks(strconv.Itoa(pids[0]))-srv0)/secs)
	}
	var all []time.Duration
	for g := range conns {
		all = append(all, lats[g]...)
		r.failed += fails[g]
		if r.firstErr == nil {
			r.firstErr = errs[g]
		}
	}
	slices.Sort(all)
	r.ops = len(all)
	r.p50, r.p99 = benchutil.Percentile(all, 0.50), benchutil.Percentile(all, 0.99)
	return r
}

func principals(n int) []*pipeline.Principal {
	ps := make([]*pipeline.Principal, n)
	for i := range ps {
		ps[i] = &pipeline.Principal{ID: fmt.Sprintf("key:bench%06d", i)}
	}
	return ps
}

func redisDecisions(o options) error {
	srv, err := redistest.Start()
	if err != nil {
		return err
	}
	defer srv.Close()
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		return fmt.Errorf("redis-benchmark not found: run scripts/install-deps.sh")
	}
	newLimiter := func(cfg ratelimit.Config, prefix string) (*ratelimit.Limiter, error) {
		cfg.Backend = ratelimit.BackendRedis
		cfg.Redis.Addr = srv.Addr
		cfg.Redis.KeyPrefix = prefix
		if o.pool > 0 {
			cfg.Redis.PoolSize = o.pool
		}
		return ratelimit.New(cfg, ratelimit.Options{})
	}
	// full: a request bucket and daily and monthly quotas (three keys);
	// plain: the default configuration's decision, the request bucket
	// alone (one key).
	full, err := newLimiter(benchConfig(), "full:")
	if err != nil {
		return err
	}
	defer full.Close()
	plainCfg := benchConfig()
	plainCfg.DailyRequests, plainCfg.MonthlyRequests = 0, 0
	plain, err := newLimiter(plainCfg, "plain:")
	if err != nil {
		return err
	}
	defer plain.Close()
	ps := principals(o.principals)
	admitFor(full, o.conns, 300*time.Millisecond, ps) // connections, script cache
	admitFor(plain, o.conns, 300*time.Millisecond, ps)

	pool := benchConfig().Redis.PoolSize
	if o.pool > 0 {
		pool = o.pool
	}
	fmt.Printf("## Redis decisions vs redis-benchmark (redis-server %s on 127.0.0.1)\n\n", redisVersion())
	fmt.Printf("redis-benchmark: %d connections. Limiter: %d goroutines calling Admit over %d principals, "+
		"%d connections (redis.pool_size), each carrying the decisions waiting when it is free in one EVALSHA; "+
		"full = request bucket + daily + monthly counters (3 keys), plain = request bucket (the default configuration).\n\n",
		o.conns, o.conns, o.principals, pool)
	fmt.Println("```")
	var ratios, plainRatios []float64
	var worst time.Duration
	for round := 1; round <= o.rounds; round++ {
		rb, err := redisBenchmark(srv, o.conns, o.requests)
		if err != nil {
			return err
		}
		lr := admitFor(full, o.conns, rb.elapsed, ps, srv.Pid())
		pr := admitFor(plain, o.conns, rb.elapsed, ps, srv.Pid())
		ratios = append(ratios, lr.rate()/rb.rate())
		plainRatios = append(plainRatios, pr.rate()/rb.rate())
		worst = max(worst, lr.p99, pr.p99)
		fmt.Printf("round %d  redis-benchmark EVAL \"return 1\" 0  %s\n", round, rb)
		fmt.Printf("round %d  Limiter.Admit full  (redis)     %s  ratio %.2f\n", round, lr, lr.rate()/rb.rate())
		fmt.Printf("round %d  Limiter.Admit plain (redis)     %s  ratio %.2f\n", round, pr, pr.rate()/rb.rate())
		for _, r := range []result{lr, pr} {
			if r.failed > 0 {
				fmt.Printf("round %d: %d decisions were not admissions: %v\n", round, r.failed, r.firstErr)
			}
		}
	}
	fmt.Printf("median ratio: full %.2f, plain %.2f (target ≥ 0.50); worst p99 %s (target ≤ 1ms)\n",
		benchutil.Median(ratios), benchutil.Median(plainRatios), worst.Round(time.Microsecond))
	fmt.Println("```")
	fmt.Println()
	fmt.Printf("Command: redis-benchmark -h 127.0.0.1 -p PORT -c %d -n %d --csv EVAL \"return 1\" 0\n\n", o.conns, o.requests)
	return nil
}

// memoryDecisions measures the memory backend, quotas in a bbolt file.
func memoryDecisions(o options) error {
	ps := principals(o.principals)
	dir, err := os.MkdirTemp("", "bench-ratelimit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	mem, err := ratelimit.New(benchConfig(), ratelimit.Options{DB: db})
	if err != nil {
		return err
	}
	defer mem.Close()
	admitFor(mem, o.conns, 200*time.Millisecond, ps)
	fmt.Printf("## Memory decisions (%d goroutines, quotas flushed to bbolt every second)\n\n```\n", o.conns)
	for round := 1; round <= o.rounds; round++ {
		r := admitFor(mem, o.conns, time.Second, ps)
		fmt.Printf("round %d  Limiter.Admit (memory)  %s\n", round, r)
	}
	fmt.Println("```")
	fmt.Println()
	return nil
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "?"
	}
	for _, f := range bytes.Fields(out) {
		if v, ok := bytes.CutPrefix(f, []byte("v=")); ok {
			return string(v)
		}
	}
	return "?"
}
