package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// The server process is this same binary started with these variables set.
const (
	envChild = "AEGIS_BENCH_CHILD" // "1" makes the binary the server process
	envRepo  = "AEGIS_BENCH_REPO"  // model repository the server loads
	envLib   = "AEGIS_ONNXRUNTIME_LIB"

	// childTTL bounds the server process's life even if the harness never
	// closes its stdin.
	childTTL = 30 * time.Minute
)

// headerLength is the binary extension's header naming the JSON length.
const headerLength = "Inference-Header-Content-Length"

// addrs is the line the server process prints once it listens.
type addrs struct {
	AegisHTTP string `json:"aegis_http"`
	AegisGRPC string `json:"aegis_grpc"`
	FloorHTTP string `json:"floor_http"`
	FloorGRPC string `json:"floor_grpc"`
	// The floors again, but running the model on ONNX Runtime (on a
	// prebuilt input) before they answer.
	FloorHTTPORT string `json:"floor_http_ort"`
	FloorGRPCORT string `json:"floor_grpc_ort"`
	Control      string `json:"control"`
}

// isChild reports whether this process was started as the server process.
func isChild() bool { return os.Getenv(envChild) == "1" }

// runChild is the server process: Aegis, exactly as `aegis serve` wires it
// (app.New with the default configuration), the floor servers (REST and
// gRPC, each plain and running the model), and a control listener through
// which the harness loads the floors' fixed responses and starts and stops
// CPU profiles. It serves until its stdin
// closes (the harness exited or is done) or childTTL passes.
func runChild() error {
	cfg := config.Default()
	cfg.ModelRepository = os.Getenv(envRepo)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = os.Getenv(envLib)
	cfg.ShutdownTimeout = 10 * time.Second
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := app.New(cfg, log)
	if err != nil {
		return fmt.Errorf("start aegis: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	fixed := &fixedSet{rest: map[restKey]*fixedREST{}, grpc: map[grpcKey]*pb.ModelInferResponse{}, ort: map[grpcKey]*ortJob{}}
	// The same http.Server settings as internal/app gives Aegis, and the
	// same gRPC message limits (but no interceptor).
	newHTTP := func(runORT bool) *http.Server {
		return &http.Server{
			Handler:           &floorREST{fixed: fixed, runORT: runORT},
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
		}
	}
	newGRPC := func(runORT bool) *grpc.Server {
		g := grpc.NewServer(grpc.MaxRecvMsgSize(int(cfg.Limits.MaxBodyBytes)), grpc.MaxSendMsgSize(int(cfg.Limits.MaxBodyBytes)*4))
		pb.RegisterGRPCInferenceServiceServer(g, &floorGRPC{fixed: fixed, runORT: runORT})
		return g
	}
	httpSrvs := []*http.Server{newHTTP(false), newHTTP(true)}
	grpcSrvs := []*grpc.Server{newGRPC(false), newGRPC(true)}
	ctl := &control{fixed: fixed, repo: cfg.ModelRepository}
	defer ctl.closeSessions()
	ctlSrv := &http.Server{Handler: ctl.mux(), ReadHeaderTimeout: 10 * time.Second}

	var lns [5]net.Listener
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	go httpSrvs[0].Serve(lns[0])
	go httpSrvs[1].Serve(lns[1])
	go grpcSrvs[0].Serve(lns[2])
	go grpcSrvs[1].Serve(lns[3])
	go ctlSrv.Serve(lns[4])

	line, _ := json.Marshal(addrs{
		AegisHTTP: srv.HTTPAddr(), AegisGRPC: srv.GRPCAddr(),
		FloorHTTP: lns[0].Addr().String(), FloorHTTPORT: lns[1].Addr().String(),
		FloorGRPC: lns[2].Addr().String(), FloorGRPCORT: lns[3].Addr().String(),
		Control: lns[4].Addr().String(),
	})
	fmt.Printf("%s\n", line)

	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case <-time.After(childTTL):
		log.Warn("benchmark server process reached its time limit")
	case err := <-served:
		return fmt.Errorf("aegis stopped: %w", err)
	}
	ctl.stopProfile()
	cancel()
	for _, g := range grpcSrvs {
		g.Stop()
	}
	for _, h := range httpSrvs {
		h.Close()
	}
	ctlSrv.Close()
	return <-served
}

// fixedSet holds the floors' fixed answers and ONNX Runtime jobs, loaded
// by the harness through the control listener before any measurement.
type fixedSet struct {
	mu   sync.RWMutex // guards the maps
	rest map[restKey]*fixedREST
	grpc map[grpcKey]*pb.ModelInferResponse
	ort  map[grpcKey]*ortJob
}

// restKey picks a fixed response by request path and body size (the JSON and
// binary bodies of each model and batch all differ in size).
type restKey struct {
	path string
	size int
}

type fixedREST struct {
	body          []byte
	contentType   string
	contentLength string
	hdrLen        string  // binary extension header; "" for JSON
	ort           *ortJob // the model run for the same request
}

// grpcKey picks a fixed response by model and batch size.
type grpcKey struct {
	model string
	batch int64
}

// ortJob is one model run on a prebuilt input: what Aegis's engine does for
// a request, without any of the protocol work.
type ortJob struct {
	s  *onnx.Session
	in []*tensor.Tensor
}

func (j *ortJob) run(ctx context.Context) error {
	res, err := j.s.Run(ctx, j.in)
	if err != nil {
		return err
	}
	res.Release()
	return nil
}

// floorREST is the do-nothing REST server: it reads the whole request body
// into a pooled buffer, as Aegis does, and answers with a fixed response of
// exactly the size Aegis answers the same request with. With runORT it
// first runs the model on a prebuilt input.
type floorREST struct {
	fixed  *fixedSet
	runORT bool
	bufs   sync.Pool
}

func (f *floorREST) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bufp, _ := f.bufs.Get().(*[]byte)
	if bufp == nil {
		b := make([]byte, 0, 16<<10)
		bufp = &b
	}
	defer f.bufs.Put(bufp)
	body, err := readAllInto(r.Body, (*bufp)[:0])
	*bufp = body[:0]
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	f.fixed.mu.RLock()
	fx := f.fixed.rest[restKey{path: r.URL.Path, size: len(body)}]
	f.fixed.mu.RUnlock()
	if fx == nil || (f.runORT && fx.ort == nil) {
		http.Error(w, "no fixed response for this request", http.StatusNotFound)
		return
	}
	if f.runORT {
		if err := fx.ort.run(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	h := w.Header()
	h.Set("Content-Type", fx.contentType)
	h.Set("Content-Length", fx.contentLength)
	if fx.hdrLen != "" {
		h.Set(headerLength, fx.hdrLen)
	}
	w.WriteHeader(http.StatusOK)
	w.Write(fx.body)
}

// floorGRPC is the do-nothing gRPC server: grpc-go decodes the request, and
// ModelInfer returns a prebuilt response of the size Aegis returns. With
// runORT it first runs the model on a prebuilt input.
type floorGRPC struct {
	pb.UnimplementedGRPCInferenceServiceServer
	fixed  *fixedSet
	runORT bool
}

var _ pb.GRPCInferenceServiceServer = (*floorGRPC)(nil)

func (f *floorGRPC) ModelInfer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	k := grpcKey{model: r.ModelName}
	if len(r.Inputs) > 0 && len(r.Inputs[0].Shape) > 0 {
		k.batch = r.Inputs[0].Shape[0]
	}
	f.fixed.mu.RLock()
	resp, job := f.fixed.grpc[k], f.fixed.ort[k]
	f.fixed.mu.RUnlock()
	if resp == nil || (f.runORT && job == nil) {
		return nil, status.Error(codes.NotFound, "no fixed response for this request")
	}
	if f.runORT {
		if err := job.run(ctx); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return resp, nil
}

// control is the harness's side door into the server process.
type control struct {
	fixed *fixedSet
	repo  string

	mu       sync.Mutex // guards prof and sessions
	prof     *os.File
	sessions map[string]*onnx.Session
}

func (c *control) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /floor/ort", c.setORT)
	m.HandleFunc("POST /floor/rest", c.setREST)
	m.HandleFunc("POST /floor/grpc", c.setGRPC)
	m.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) { runtime.GC() })
	m.HandleFunc("POST /profile/start", c.startProfile)
	m.HandleFunc("POST /profile/stop", func(w http.ResponseWriter, r *http.Request) {
		if err := c.stopProfile(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return m
}

// setORT prepares the model run for model and batch: a session of the
// model (its own, with the same default options as Aegis's) and the input
// tensor, FP32 named "input", whose bytes are the body and whose shape is
// the comma-separated shape parameter.
func (c *control) setORT(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	model := q.Get("model")
	batch, err := strconv.ParseInt(q.Get("batch"), 10, 64)
	if err != nil || !validModel(model) {
		http.Error(w, "bad model or batch", http.StatusBadRequest)
		return
	}
	var shape []int64
	for _, f := range strings.Split(q.Get("shape"), ",") {
		d, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			http.Error(w, "bad shape", http.StatusBadRequest)
			return
		}
		shape = append(shape, d)
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	s, err := c.session(model)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: shape, Data: alignedBytes(len(data))}
	copy(in.Data, data)
	c.fixed.mu.Lock()
	c.fixed.ort[grpcKey{model: model, batch: batch}] = &ortJob{s: s, in: []*tensor.Tensor{in}}
	c.fixed.mu.Unlock()
}

func validModel(name string) bool {
	for _, m := range modelSpecs {
		if m.name == name {
			return true
		}
	}
	return false
}

func (c *control) session(model string) (*onnx.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sessions[model]; ok {
		return s, nil
	}
	b, err := os.ReadFile(filepath.Join(c.repo, model, "1", "model.onnx"))
	if err != nil {
		return nil, err
	}
	s, err := onnx.NewSession(b, onnx.Options{})
	if err != nil {
		return nil, err
	}
	if c.sessions == nil {
		c.sessions = map[string]*onnx.Session{}
	}
	c.sessions[model] = s
	return s, nil
}

func (c *control) closeSessions() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sessions {
		s.Close()
	}
	c.sessions = nil
}

func (c *control) setREST(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("size"))
	batch, berr := strconv.ParseInt(q.Get("batch"), 10, 64)
	body, rerr := io.ReadAll(r.Body)
	if err != nil || berr != nil || rerr != nil {
		http.Error(w, "bad size, batch or body", http.StatusBadRequest)
		return
	}
	fx := &fixedREST{body: body, contentType: q.Get("type"), contentLength: strconv.Itoa(len(body)), hdrLen: q.Get("hdr")}
	c.fixed.mu.Lock()
	fx.ort = c.fixed.ort[grpcKey{model: q.Get("model"), batch: batch}]
	c.fixed.rest[restKey{path: q.Get("path"), size: size}] = fx
	c.fixed.mu.Unlock()
}

func (c *control) setGRPC(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	batch, err := strconv.ParseInt(q.Get("batch"), 10, 64)
	body, rerr := io.ReadAll(r.Body)
	resp := &pb.ModelInferResponse{}
	if err != nil || rerr != nil || proto.Unmarshal(body, resp) != nil {
		http.Error(w, "bad batch or body", http.StatusBadRequest)
		return
	}
	c.fixed.mu.Lock()
	c.fixed.grpc[grpcKey{model: q.Get("model"), batch: batch}] = resp
	c.fixed.mu.Unlock()
}

func (c *control) startProfile(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prof != nil {
		http.Error(w, "a profile is already running", http.StatusConflict)
		return
	}
	f, err := os.Create(r.URL.Query().Get("file"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	c.prof = f
}

func (c *control) stopProfile() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prof == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := c.prof.Close()
	c.prof = nil
	return err
}

// readAllInto reads r to the end into buf, growing it as needed.
func readAllInto(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
