package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/aegis-inference/aegis/internal/oip/pb"
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
	child    *exec.Cmd
	stdin    io.WriteCloser
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
			snap := takeCPUSnap(b.child.Process.Pid)
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
			others := snap.othersSince(takeCPUSnap(b.child.Process.Pid))
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
	rep.loadAfter = loadAverage()
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

// copyModels puts the benchmarked fixture models (and nothing else) in repo.
func (b *bench) copyModels(repo string) error {
	for _, name := range b.opt.models {
		src := filepath.Join(b.opt.root, "testdata", "models", name, "1", "model.onnx")
		dir := filepath.Join(repo, name, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startChild starts the server process and waits for its addresses.
func (b *bench) startChild(repo string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"=1", envRepo+"="+repo, envLib+"="+b.opt.lib)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start server process: %w", err)
	}
	b.child, b.stdin = cmd, stdin
	got := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			line := sc.Bytes()
			if !found && bytes.HasPrefix(line, []byte(`{"aegis_http"`)) {
				found = true
				got <- json.Unmarshal(line, &b.addrs)
			}
		}
		if !found {
			got <- errors.New("server process exited before it listened")
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			b.stopChild()
			return err
		}
	case <-time.After(2 * time.Minute):
		b.stopChild()
		return errors.New("server process did not listen within 2 minutes")
	}
	b.logf("server process %d: aegis http %s grpc %s, floor http %s grpc %s",
		cmd.Process.Pid, b.addrs.AegisHTTP, b.addrs.AegisGRPC, b.addrs.FloorHTTP, b.addrs.FloorGRPC)
	return nil
}

// stopChild closes the server process's stdin, which makes it shut down,
// and kills it (by its handle) if it has not exited within 30 seconds.
func (b *bench) stopChild() {
	if b.child == nil {
		return
	}
	b.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- b.child.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.child.Process.Kill()
		<-done
	}
	b.child = nil
}

// control posts to the server process's control listener.
func (b *bench) control(path string, q url.Values, body []byte) error {
	u := "http://" + b.addrs.Control + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := b.ctl.Post(u, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s: status %d: %s", path, resp.StatusCode, msg)
	}
	return nil
}

func inferPath(model string) string { return "/v2/models/" + model + "/infer" }

// capture sends every workload once to Aegis in each encoding, checks the
// outputs against bare ONNX Runtime, records the response sizes, and gives
// the responses to the floors as their fixed answers.
func (b *bench) capture() error {
	hc := &http.Client{Timeout: requestTimeout}
	conn, err := grpc.NewClient(b.addrs.AegisGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	for _, w := range b.work {
		name := fmt.Sprintf("%s batch %d", w.model.name, w.batch)
		shape := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(w.input.Shape)), ","), "[]")
		q := url.Values{"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)}, "shape": {shape}}
		if err := b.control("/floor/ort", q, w.input.Data); err != nil {
			return err
		}
		for _, bin := range []bool{false, true} {
			body, hdrLen := w.jsonBody, -1
			if bin {
				body, hdrLen = w.binBody, w.binHdr
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+b.addrs.AegisHTTP+inferPath(w.model.name), bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if bin {
				req.Header.Set("Content-Type", "application/octet-stream")
				req.Header.Set(headerLength, strconv.Itoa(hdrLen))
			}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: aegis REST status %d: %s", name, resp.StatusCode, got)
			}
			respHdr := -1
			if h := resp.Header.Get(headerLength); h != "" {
				if respHdr, err = strconv.Atoi(h); err != nil {
					return fmt.Errorf("%s: bad %s %q", name, headerLength, h)
				}
			}
			if bin != (respHdr >= 0) {
				return fmt.Errorf("%s: binary request answered with %s %q", name, headerLength, resp.Header.Get(headerLength))
			}
			outs, err := restOutputs(got, respHdr)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := checkOutputs(w.want, outs); err != nil {
				return fmt.Errorf("%s: aegis REST (binary %v): %w", name, bin, err)
			}
			q := url.Values{
				"path": {inferPath(w.model.name)}, "size": {strconv.Itoa(len(body))}, "type": {resp.Header.Get("Content-Type")},
				"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)},
			}
			if bin {
				q.Set("hdr", strconv.Itoa(respHdr))
				w.binRespLen = len(got)
			} else {
				w.jsonRespLen = len(got)
			}
			if err := b.control("/floor/rest", q, got); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		gr, err := gc.ModelInfer(ctx, w.grpcReq)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		outs, err := grpcOutputs(gr)
		if err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		if err := checkOutputs(w.want, outs); err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		w.grpcRespLen = grpcRawBytes(gr)
		msg, err := proto.Marshal(gr)
		if err != nil {
			return err
		}
		if err := b.control("/floor/grpc", url.Values{"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)}}, msg); err != nil {
			return err
		}
	}
	return nil
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

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// envInfo describes the machine a run happened on.
type envInfo struct {
	cpus       int
	gomaxprocs int
	cpuModel   string
	kernel     string
	goVersion  string
	ortVersion string
	loadBefore string // /proc/loadavg when the run started
	revision   string // git commit, and whether internal/ had local changes
}

func environment(root string, info onnx.LibraryInfo) envInfo {
	e := envInfo{
		cpus:       runtime.NumCPU(),
		gomaxprocs: runtime.GOMAXPROCS(0),
		goVersion:  runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		ortVersion: info.Version,
		cpuModel:   "unknown",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	e.loadBefore = loadAverage()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	e.revision = "unknown"
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		e.revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "internal", "cmd").Output(); err == nil && len(st) > 0 {
			e.revision += " with uncommitted changes in internal/ or cmd/"
		}
	}
	return e
}
