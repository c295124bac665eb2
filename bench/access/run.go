package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/audit"
)

// cellKey names one cell: a workload, transport, client count and
// instance.
type cellKey struct {
	work    int // index into report.work
	tr      transport
	clients int
	inst    string
}

// cell holds one sample per round.
type cell struct{ samples []sample }

// group is the cells measured together, round after round.
type group struct {
	work    int
	tr      transport
	clients int
	paths   []string
	others  float64 // CPUs busy with other work meanwhile; -1 if unknown
}

// report is the outcome of a run.
type report struct {
	opt       options
	env       envInfo
	work      []*workload
	groups    []group
	cells     map[cellKey]*cell
	profiles  []string
	logs      []logCheck
	auditErr  error // the first audit log that failed its check
	elapsed   time.Duration
	loadAfter string
}

// commitPaths are the paths of the group-commit part.
var commitPaths = []string{"baseline", "secure-apikey", "secure-durable"}

// bench holds a run's state.
type bench struct {
	opt   options
	rep   *report
	work  string // the work directory of this run (opt.dir/work)
	child *childProc
	info  childInfo
	tls   *tls.Config
	ctl   *http.Client
	// requests sent to each instance, and how many of them were meant to
	// be refused (no credential): the audit logs must account for each.
	sent, refused map[string]int
}

func (b *bench) logf(format string, args ...any) {
	if b.opt.progress != nil {
		fmt.Fprintf(b.opt.progress, format+"\n", args...)
	}
}

// run performs a whole benchmark run.
func run(opt options) (*report, error) {
	start := time.Now()
	if opt.pin {
		if err := benchutil.PinToCPU(0); err != nil {
			return nil, err
		}
	}
	rep := &report{opt: opt, env: environment(opt.root, opt.dir), cells: map[cellKey]*cell{}}
	b := &bench{opt: opt, rep: rep, work: filepath.Join(opt.dir, "work"), ctl: &http.Client{Timeout: requestTimeout},
		sent: map[string]int{}, refused: map[string]int{}}

	for _, spec := range []struct {
		model string
		batch int
	}{{"digits", 1}, {"mlp", 1}, {"mlp", 64}} {
		if spec.batch > 1 && !opt.batched {
			continue
		}
		w, err := newWorkload(opt.root, spec.model, spec.batch)
		if err != nil {
			return nil, err
		}
		w.requests, w.warmup = opt.requests1, opt.warmup1
		if spec.batch > 1 {
			w.requests, w.warmup = opt.requestsN, opt.warmupN
		}
		rep.work = append(rep.work, w)
	}
	if err := b.prepareWork(); err != nil {
		return nil, err
	}
	child, err := startChild(b.work, opt.lib, opt.pin, opt.serverProcs)
	if err != nil {
		return nil, err
	}
	b.child, b.info = child, child.info
	defer child.Stop()
	rep.env.ortVersion = b.info.ORTVersion
	b.logf("server process %d: %d instances; audit logs under %s", child.Pid(), len(b.info.Instances), b.work)
	if b.tls, err = clientTLS(caFile(b.work)); err != nil {
		return nil, err
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	var all []string
	for _, in := range instances {
		all = append(all, in.name)
	}
	for wi := range rep.work {
		for _, tr := range []transport{restJSON, grpcRaw} {
			if !opt.parts["main"] {
				continue
			}
			if err := b.runGroup(group{work: wi, tr: tr, clients: 1, paths: all}, start); err != nil {
				return nil, err
			}
		}
	}
	// Group commit: the MLP at batch 1 with more clients than one (and
	// with one, if the main part did not measure it).
	commitClients := opt.clients
	if !opt.parts["main"] {
		commitClients = append([]int{1}, commitClients...)
	}
	for wi, w := range rep.work {
		if w.model != "mlp" || w.batch != 1 || !opt.parts["commit"] {
			continue
		}
		for _, c := range commitClients {
			g := group{work: wi, tr: restJSON, clients: c, paths: commitPaths}
			if err := b.runGroup(g, start); err != nil {
				return nil, err
			}
		}
	}
	if opt.profileRequests > 0 && opt.parts["profiles"] {
		if rep.profiles, err = b.profile(); err != nil {
			return nil, err
		}
	}
	if err := child.Stop(); err != nil {
		return nil, fmt.Errorf("server process: %w", err)
	}
	rep.logs, rep.auditErr = b.checkLogs()
	rep.elapsed = time.Since(start)
	rep.loadAfter = benchutil.LoadAverage()
	return rep, nil
}

// prepareWork replaces the work directory with one holding the models.
func (b *bench) prepareWork() error {
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	for _, w := range b.rep.work {
		dir := filepath.Join(repoDir(b.work), w.model, "1")
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(filepath.Join(b.opt.root, "testdata", "models", w.model, "1", "model.onnx"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// clientTLS trusts the server process's CA, TLS 1.3 only.
func clientTLS(ca string) (*tls.Config, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// target is how a client reaches instance over tr, with its credential.
func (b *bench) target(inst string, tr transport) target {
	in, _ := lookupInstance(inst)
	ep := b.info.Instances[inst]
	t := target{addr: ep.HTTP}
	if tr == grpcRaw {
		t.addr = ep.GRPC
	}
	if in.tls {
		t.tls = b.tls
	}
	switch in.auth {
	case "api_key":
		t.authorization = "Bearer " + ep.APIKey
	case "jwt":
		t.authorization = "Bearer " + b.info.Token
	}
	return t
}

// runGroup measures g's paths for every round, forward in odd rounds and
// backward in even ones.
func (b *bench) runGroup(g group, start time.Time) error {
	w := b.rep.work[g.work]
	snap := benchutil.TakeCPUSnap(b.child.Pid())
	for r := range b.opt.rounds {
		for i := range g.paths {
			p := g.paths[i]
			if r%2 == 1 {
				p = g.paths[len(g.paths)-1-i]
			}
			s, err := b.measure(w, g.tr, g.clients, p, w.requests, nil)
			if err != nil {
				return fmt.Errorf("%s, %s, %d client(s), %s: %w", w, g.tr, g.clients, p, err)
			}
			k := cellKey{g.work, g.tr, g.clients, p}
			if b.rep.cells[k] == nil {
				b.rep.cells[k] = &cell{}
			}
			b.rep.cells[k].samples = append(b.rep.cells[k].samples, s)
		}
	}
	g.others = snap.OthersSince(benchutil.TakeCPUSnap(b.child.Pid()))
	b.rep.groups = append(b.rep.groups, g)
	base := b.rep.cells[cellKey{g.work, g.tr, g.clients, g.paths[0]}]
	last := b.rep.cells[cellKey{g.work, g.tr, g.clients, g.paths[len(g.paths)-1]}]
	b.logf("%-14s %-9s clients %d: %s p50 %v, %s p50 %v; other load %.2f CPUs (%.0fs)", w, g.tr, g.clients,
		g.paths[0], median(base, p50), g.paths[len(g.paths)-1], median(last, p50), g.others, time.Since(start).Seconds())
	return nil
}

// measure runs one cell once. extra, if set, runs after the warm-up, just
// before the measured requests (it starts a profile).
func (b *bench) measure(w *workload, tr transport, clients int, inst string, requests int, extra func() error) (sample, error) {
	t := b.target(inst, tr)
	newDriver := func() (driver, error) {
		if tr == grpcRaw {
			return newGRPCDriver(t, w, w.grpcRespLen)
		}
		return newRESTDriver(t, w, w.jsonRespLen)
	}
	in, _ := lookupInstance(inst)
	var st0, st1 audit.Stats
	var io0, io1 ioCounts
	// Start every measurement from a freshly collected heap on both sides.
	before := func() error {
		runtime.GC()
		if err := b.control(http.MethodPost, "/gc", nil, nil); err != nil {
			return err
		}
		if in.audit {
			var err error
			if st0, err = b.auditStats(inst); err != nil {
				return err
			}
		}
		if extra != nil {
			if err := extra(); err != nil {
				return err
			}
		}
		io0 = readIO(b.child.Pid())
		return nil
	}
	after := func() error {
		io1 = readIO(b.child.Pid())
		if !in.audit {
			return nil
		}
		var err error
		st1, err = b.auditStats(inst)
		return err
	}
	s, err := measure(newDriver, clients, w.warmup, requests, before, after, func(n int) { b.sent[inst] += n })
	if err != nil {
		return s, err
	}
	if io0.ok && io1.ok {
		s.syscr, s.syscw = io1.syscr-io0.syscr, io1.syscw-io0.syscw
	}
	if in.audit {
		s.records = (st1.Records - st1.Checkpoints) - (st0.Records - st0.Checkpoints)
		s.batches = st1.Batches - st0.Batches
		if int(s.records) != s.requests {
			return s, fmt.Errorf("audit log took %d records during %d measured requests", s.records, s.requests)
		}
	}
	return s, nil
}

// ioCounts are a process's read and write system call counts
// (/proc/<pid>/io).
type ioCounts struct {
	syscr, syscw uint64
	ok           bool
}

func readIO(pid int) ioCounts {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return ioCounts{}
	}
	var c ioCounts
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "syscr":
			c.syscr, n = x, n+1
		case "syscw":
			c.syscw, n = x, n+1
		}
	}
	c.ok = n == 2
	return c
}
