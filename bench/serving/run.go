package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"

	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// pathKind is one way of running an inference.
type pathKind int

const (
	pathBare pathKind = iota
	pathFloorJSON
	pathFloorJSONORT
	pathAegisJSON
	pathFloorBin
	pathFloorBinORT
	pathAegisBin
	pathFloorGRPC
	pathFloorGRPCORT
	pathAegisGRPC
	numPaths
)

var pathNames = [numPaths]string{
	pathBare:         "bare",
	pathFloorJSON:    "floor-rest-json",
	pathFloorJSONORT: "floor-rest-json+ort",
	pathAegisJSON:    "aegis-rest-json",
	pathFloorBin:     "floor-rest-binary",
	pathFloorBinORT:  "floor-rest-binary+ort",
	pathAegisBin:     "aegis-rest-binary",
	pathFloorGRPC:    "floor-grpc",
	pathFloorGRPCORT: "floor-grpc+ort",
	pathAegisGRPC:    "aegis-grpc-raw",
}

func (p pathKind) String() string { return pathNames[p] }

// floor returns the transport floor a path is set against, or -1.
func (p pathKind) floor() pathKind {
	switch p {
	case pathAegisJSON, pathFloorJSONORT:
		return pathFloorJSON
	case pathAegisBin, pathFloorBinORT:
		return pathFloorBin
	case pathAegisGRPC, pathFloorGRPCORT:
		return pathFloorGRPC
	}
	return -1
}

// withORT returns the floor-running-the-model an Aegis path is set
// against, or -1.
func (p pathKind) withORT() pathKind {
	switch p {
	case pathAegisJSON:
		return pathFloorJSONORT
	case pathAegisBin:
		return pathFloorBinORT
	case pathAegisGRPC:
		return pathFloorGRPCORT
	}
	return -1
}

// cell is one model, batch, client count and path, with one sample per
// round.
type cell struct {
	model   string
	batch   int
	clients int
	path    pathKind
	samples []sample
}

// group is the cells of one model, batch and client count, measured
// together, round after round.
type group struct {
	model          string
	batch, clients int
	others         float64 // CPUs busy with other work meanwhile; -1 if unknown
}

// report is the outcome of a run.
type report struct {
	opt       options
	env       envInfo
	cells     []*cell
	groups    []group
	profiles  []string
	elapsed   time.Duration
	loadAfter string // /proc/loadavg when the run ended
}

// bench holds a run's state.
type bench struct {
	opt      options
	sessions map[string]*onnx.Session
	work     []*workload
	child    *benchutil.Child
	addrs    addrs
	ctl      *http.Client
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
		if err := pinToCPU(0); err != nil {
			return nil, err
		}
	}
	info, err := onnx.Init(onnx.LibraryOptions{Path: opt.lib})
	if err != nil {
		return nil, err
	}
	b := &bench{opt: opt, sessions: map[string]*onnx.Session{}, ctl: &http.Client{Timeout: requestTimeout}}
	defer b.closeSessions()
	rep := &report{opt: opt, env: environment(opt.root, info)}

	if err := b.prepare(); err != nil {
		return nil, err
	}
	repo, err := os.MkdirTemp("", "aegis-bench-models-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(repo)
	if err := b.copyModels(repo); err != nil {
		return nil, err
	}
	if err := b.startChild(repo); err != nil {
		return nil, err
	}
	defer b.stopChild()
	if err := b.capture(); err != nil {
		return nil, err
	}

	for _, w := range b.work {
		for _, clients := range opt.clients {
			snap := benchutil.TakeCPUSnap(b.child.Pid())
			cells := make([]*cell, numPaths)
			for p := range numPaths {
				cells[p] = &cell{model: w.model.name, batch: w.batch, clients: clients, path: p}
			}
			for r := 0; r < opt.rounds; r++ {
				// Alternate the order of paths between rounds so no path
				// always runs first or last.
				for i := range numPaths {
					p := i
					if r%2 == 1 {
						p = numPaths - 1 - i
					}
					s, err := b.measure(w, clients, p, b.requests(w), nil)
					if err != nil {
						return nil, fmt.Errorf("%s batch %d clients %d %s: %w", w.model.name, w.batch, clients, p, err)
					}
					cells[p].samples = append(cells[p].samples, s)
				}
			}
			others := snap.OthersSince(benchutil.TakeCPUSnap(b.child.Pid()))
			b.logf("%-6s batch %-3d clients %d: bare p50 %v, aegis grpc p50 %v, rest-json p50 %v; other load %.2f CPUs (%.0fs)",
				w.model.name, w.batch, clients, median(cells[pathBare], p50), median(cells[pathAegisGRPC], p50),
				median(cells[pathAegisJSON], p50), others, time.Since(start).Seconds())
			rep.cells = append(rep.cells, cells...)
			rep.groups = append(rep.groups, group{model: w.model.name, batch: w.batch, clients: clients, others: others})
		}
	}
	if opt.profileDir != "" {
		if rep.profiles, err = b.profile(); err != nil {
			return nil, err
		}
	}
	rep.elapsed = time.Since(start)
	rep.loadAfter = benchutil.LoadAverage()
	return rep, nil
}

func (b *bench) requests(w *workload) int {
	if w.batch == 1 {
		return b.opt.requests1
	}
	return b.opt.requestsN
}

func (b *bench) warmup(w *workload) int {
	if w.batch == 1 {
		return b.opt.warmup1
	}
	return b.opt.warmupN
}

// prepare creates the bare sessions and the workloads, and runs each
// workload once on bare ONNX Runtime to get the outputs every path must
// reproduce.
func (b *bench) prepare() error {
	for _, name := range b.opt.models {
		m, _ := lookupModel(name)
		model, err := os.ReadFile(filepath.Join(b.opt.root, "testdata", "models", name, "1", "model.onnx"))
		if err != nil {
			return err
		}
		s, err := onnx.NewSession(model, onnx.Options{})
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		b.sessions[name] = s
		for _, batch := range b.opt.batches {
			w, err := newWorkload(b.opt.root, m, batch)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			res, err := s.Run(context.Background(), []*tensor.Tensor{&w.input})
			if err != nil {
				return fmt.Errorf("%s batch %d: bare run: %w", name, batch, err)
			}
			w.want = map[string][]float64{}
			for i := range res.Outputs {
				v, err := tensorValues(&res.Outputs[i])
				if err != nil {
					res.Release()
					return err
				}
				w.want[res.Outputs[i].Name] = v
			}
			res.Release()
			b.work = append(b.work, w)
		}
	}
	return nil
}

func (b *bench) closeSessions() {
	for _, s := range b.sessions {
		s.Close()
	}
}

// measure runs one cell once. before, if set, runs after the warm-up, just
// before the measured requests.
func (b *bench) measure(w *workload, clients int, p pathKind, requests int, before func() error) (sample, error) {
	var newDriver func() (driver, error)
	switch p {
	case pathBare:
		newDriver = func() (driver, error) {
			return &bareDriver{s: b.sessions[w.model.name], in: []*tensor.Tensor{&w.input}}, nil
		}
	case pathFloorJSON, pathFloorJSONORT, pathAegisJSON:
		addr := b.httpAddr(p)
		newDriver = func() (driver, error) {
			return newRESTDriver(addr, inferPath(w.model.name), w.jsonBody, -1, w.jsonRespLen)
		}
	case pathFloorBin, pathFloorBinORT, pathAegisBin:
		addr := b.httpAddr(p)
		newDriver = func() (driver, error) {
			return newRESTDriver(addr, inferPath(w.model.name), w.binBody, w.binHdr, w.binRespLen)
		}
	case pathFloorGRPC, pathFloorGRPCORT, pathAegisGRPC:
		addr := b.addrs.AegisGRPC
		switch p {
		case pathFloorGRPC:
			addr = b.addrs.FloorGRPC
		case pathFloorGRPCORT:
			addr = b.addrs.FloorGRPCORT
		}
		newDriver = func() (driver, error) { return newGRPCDriver(addr, w.grpcReq, w.grpcRespLen) }
	}
	// Start every measurement from a freshly collected heap on both sides.
	settle := func() error {
		runtime.GC()
		if err := b.control("/gc", nil, nil); err != nil {
			return err
		}
		if before != nil {
			return before()
		}
		return nil
	}
	return measure(newDriver, clients, b.warmup(w), requests, settle)
}

// httpAddr is the REST server a path talks to.
func (b *bench) httpAddr(p pathKind) string {
	switch p {
	case pathFloorJSON, pathFloorBin:
		return b.addrs.FloorHTTP
	case pathFloorJSONORT, pathFloorBinORT:
		return b.addrs.FloorHTTPORT
	}
	return b.addrs.AegisHTTP
}

// profile captures the server process's CPU profile while it serves one
// client: the MLP (or the first model) at batch 1 over REST JSON and gRPC
// raw, and the floors (plain and running the model) on the same requests
// for comparison; then, with a tenth of the requests, the largest batch over
// gRPC raw and REST binary against the floor running the model.
func (b *bench) profile() ([]string, error) {
	pick := func(batch int) *workload {
		var w *workload
		for _, x := range b.work {
			if x.batch == batch && (w == nil || x.model.name == "mlp") {
				w = x
			}
		}
		return w
	}
	type job struct {
		w        *workload
		path     pathKind
		requests int
	}
	var jobs []job
	if w := pick(1); w != nil {
		for _, p := range []pathKind{pathAegisJSON, pathAegisGRPC, pathFloorJSONORT, pathFloorGRPCORT, pathFloorJSON, pathFloorGRPC} {
			jobs = append(jobs, job{w, p, b.opt.profileRequests})
		}
	}
	if big := slices.Max(b.opt.batches); big > 1 {
		if w := pick(big); w != nil {
			for _, p := range []pathKind{pathAegisGRPC, pathFloorGRPCORT, pathAegisBin, pathFloorBinORT} {
				jobs = append(jobs, job{w, p, max(1, b.opt.profileRequests/10)})
			}
			// JSON at batch 64 parses 50,176 numbers a request: fewer.
			for _, p := range []pathKind{pathAegisJSON, pathFloorJSONORT} {
				jobs = append(jobs, job{w, p, max(1, b.opt.profileRequests/50)})
			}
		}
	}
	dir := b.opt.profileDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(b.opt.root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, j := range jobs {
		file := filepath.Join(dir, fmt.Sprintf("%s-b%d-%s.prof", j.w.model.name, j.w.batch, j.path))
		start := func() error { return b.control("/profile/start", url.Values{"file": {file}}, nil) }
		s, err := b.measure(j.w, 1, j.path, j.requests, start)
		if stopErr := b.control("/profile/stop", nil, nil); err == nil {
			err = stopErr
		}
		if err != nil {
			return nil, fmt.Errorf("profile %s batch %d: %w", j.path, j.w.batch, err)
		}
		b.logf("profiled %s batch %d: %d requests, p50 %v -> %s", j.path, j.w.batch, s.requests, s.p50(), file)
		files = append(files, file)
	}
	return files, nil
}
