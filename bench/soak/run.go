package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// step is one closed-loop step of the capacity search.
type step struct {
	clients int
	rec     *phaseRec
	rate    float64 // admitted requests/s
}

// report is the outcome of a run.
type report struct {
	opt     options
	env     envInfo
	info    childInfo
	started time.Time
	elapsed time.Duration

	steps    []step
	capacity float64 // admitted requests/s: the best step's rate
	// refusal is a closed loop of requests with a wrong key, refused (401)
	// after TLS, parsing and authentication with an audit record, as shed
	// requests are: what a refusal costs the server.
	refusal  *phaseRec
	normal   *phaseRec
	over     *phaseRec
	recovery *phaseRec // nil when opt.recovery is 0

	idle    procMem // the server before any load (after a warm-up)
	afterGC procMem // after the run and a forced collection
	final   serverStats
	// dials at the start: the clients' connections before the load
	// phases; later dials are reconnections.
	connected int
	childErr  error // the server process's exit
	loadAfter string
}

// bench holds a run's state.
type bench struct {
	opt   options
	rep   *report
	work  string
	child *childProc
	pool  []*client
}

func (b *bench) logf(format string, args ...any) {
	if b.opt.progress != nil {
		fmt.Fprintf(b.opt.progress, format+"\n", args...)
	}
}

// run performs a whole soak run.
func run(opt options) (*report, error) {
	rep := &report{opt: opt, started: time.Now()}
	serverCPU := -1
	if opt.pin {
		if err := benchutil.PinToCPU(0); err != nil {
			return nil, err
		}
		serverCPU = 1
	}
	rep.env = environment(opt.root)
	b := &bench{opt: opt, rep: rep, work: filepath.Join(opt.dir, "work")}
	if err := b.prepareWork(); err != nil {
		return nil, err
	}
	if !opt.keep {
		defer os.RemoveAll(b.work)
	}
	// The server process outlives no run: the whole run, plus margin.
	ttl := opt.duration + opt.normal + opt.recovery + 30*time.Minute
	child, err := startChild(b.work, opt.lib, serverCPU, ttl)
	if err != nil {
		return nil, err
	}
	b.child = child
	defer child.Stop()
	rep.info = child.info
	b.logf("server process %d: GOMAXPROCS %d, shed max_in_flight %d max_queue %d queue_timeout %s; audit log %s",
		child.Pid(), child.info.Procs, child.info.Shed.MaxInFlight, child.info.Shed.MaxQueue, child.info.Shed.QueueTimeout, child.info.AuditLog)

	if err := b.connect(); err != nil {
		return nil, err
	}
	if err := b.capacity(); err != nil {
		return nil, err
	}
	// Enough clients to keep the server busy: refusals are quick.
	rep.refusal = b.closedLoop(min(max(4, rep.bestStep().clients), len(b.pool)), true)
	if t := rep.refusal.all(); t.denied == 0 || t.errors > 0 {
		return nil, fmt.Errorf("refusal cost: %d refused, %d errors (%v)", t.denied, t.errors, rep.refusal.errs)
	}
	rep.normal = b.openLoop("normal", opt.light*rep.capacity, opt.normal)
	rep.over = b.openLoop("overload", opt.overload*rep.capacity, opt.duration)
	if opt.recovery > 0 {
		rep.recovery = b.openLoop("recovery", opt.light*rep.capacity, opt.recovery)
	}
	if err := child.gc(); err != nil {
		return nil, fmt.Errorf("server gc: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	if rep.afterGC, err = readProcMem(child.Pid()); err != nil {
		return nil, err
	}
	if rep.final, err = child.stats(); err != nil {
		return nil, fmt.Errorf("server stats: %w", err)
	}
	rep.childErr = child.Stop()
	rep.elapsed = time.Since(rep.started)
	rep.loadAfter = benchutil.LoadAverage()
	return rep, nil
}

// prepareWork replaces the work directory with one holding the model.
func (b *bench) prepareWork() error {
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	dir := filepath.Join(repoDir(b.work), b.opt.model, "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(b.opt.root, "testdata", "models", b.opt.model, "1", "model.onnx"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644)
}

// connect makes the client pool, checks one answer, warms the server up
// and opens every connection.
func (b *bench) connect() error {
	tlsConf, err := clientTLS(caFile(b.work))
	if err != nil {
		return err
	}
	body, err := requestBody(b.opt.model)
	if err != nil {
		return err
	}
	t := target{addr: b.child.info.HTTP, tls: tlsConf, apiKey: b.child.info.APIKey, model: b.opt.model, body: body}
	b.pool = make([]*client, b.opt.conns)
	for i := range b.pool {
		b.pool[i] = newClient(t)
	}
	if err := b.pool[0].check(); err != nil {
		return err
	}
	for _, c := range b.pool {
		c.wantLen = b.pool[0].wantLen
	}
	// Warm up: one client, closed loop.
	for end := time.Now().Add(b.opt.warmup); time.Now().Before(end); {
		if r := b.pool[0].infer(); r.outcome != admitted {
			return fmt.Errorf("warm-up: %s (%s)", r.reason, r.detail)
		}
	}
	if b.rep.idle, err = readProcMem(b.child.Pid()); err != nil {
		return err
	}
	// Open every connection, a few at a time.
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(b.pool))
	var wg sync.WaitGroup
	for _, c := range b.pool {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- c.connect()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	b.rep.connected = int(b.dials())
	return nil
}

// dials is how many connections the clients have opened so far.
func (b *bench) dials() int64 {
	var n int64
	for _, c := range b.pool {
		n += c.dials.Load()
	}
	return n
}

// bestStep is the capacity step with the highest rate.
func (r *report) bestStep() *step {
	var best *step
	for i := range r.steps {
		if best == nil || r.steps[i].rate > best.rate {
			best = &r.steps[i]
		}
	}
	return best
}

// capacitySteps are the client counts the capacity search tries.
var capacitySteps = []int{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128}

// capacity runs closed-loop steps with more and more clients until the
// rate of admitted requests has not grown by more than 3% for two steps;
// the best rate is the capacity.
func (b *bench) capacity() error {
	stale := 0
	for _, n := range capacitySteps {
		if n > min(b.opt.maxClients, len(b.pool)) {
			break
		}
		rec := b.closedLoop(n, false)
		t := rec.all()
		rate := float64(t.admitted) / rec.elapsed.Seconds()
		b.rep.steps = append(b.rep.steps, step{clients: n, rec: rec, rate: rate})
		b.logf("capacity: %3d clients: %7.0f admitted/s, %7.0f shed/s, admitted p99 %v, errors %d",
			n, rate, float64(t.shed)/rec.elapsed.Seconds(), t.adm.quantile(0.99), t.errors)
		if t.errors > 0 {
			return fmt.Errorf("capacity step with %d clients: %d errors (%v)", n, t.errors, rec.errs)
		}
		switch best := b.rep.capacity; {
		case rate > best*1.03:
			b.rep.capacity, stale = rate, 0
		case rate > best:
			b.rep.capacity = rate
			stale++
		default:
			stale++
		}
		if stale >= 2 {
			break
		}
	}
	if b.rep.capacity <= 0 {
		return fmt.Errorf("no request admitted while measuring capacity")
	}
	return nil
}
