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
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/oip/pb"
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
	Control   string `json:"control"`
}

// isChild reports whether this process was started as the server process.
func isChild() bool { return os.Getenv(envChild) == "1" }

// runChild is the server process: Aegis, exactly as `aegis serve` wires it
// (app.New with the default configuration), the two floor servers, and a
// control listener through which the harness loads the floors' fixed
// responses and starts and stops CPU profiles. It serves until its stdin
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

	fr := &floorREST{fixed: map[restKey]*fixedREST{}}
	// The same http.Server settings as internal/app gives Aegis.
	floorHTTP := &http.Server{
		Handler:           fr,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	// The same message limits as Aegis's gRPC server; no interceptor.
	fg := &floorGRPC{fixed: map[grpcKey]*pb.ModelInferResponse{}}
	floorGRPCSrv := grpc.NewServer(grpc.MaxRecvMsgSize(int(cfg.Limits.MaxBodyBytes)), grpc.MaxSendMsgSize(int(cfg.Limits.MaxBodyBytes)*4))
	pb.RegisterGRPCInferenceServiceServer(floorGRPCSrv, fg)
	ctl := &control{rest: fr, grpc: fg}
	ctlSrv := &http.Server{Handler: ctl.mux(), ReadHeaderTimeout: 10 * time.Second}

	var lns [3]net.Listener
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	go floorHTTP.Serve(lns[0])
	go floorGRPCSrv.Serve(lns[1])
	go ctlSrv.Serve(lns[2])

	line, _ := json.Marshal(addrs{
		AegisHTTP: srv.HTTPAddr(), AegisGRPC: srv.GRPCAddr(),
		FloorHTTP: lns[0].Addr().String(), FloorGRPC: lns[1].Addr().String(),
		Control: lns[2].Addr().String(),
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
	floorGRPCSrv.Stop()
	floorHTTP.Close()
	ctlSrv.Close()
	return <-served
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
	hdrLen        string // binary extension header; "" for JSON
}

// floorREST is the do-nothing REST server: it reads the whole request body
// into a pooled buffer, as Aegis does, and answers with a fixed response of
// exactly the size Aegis answers the same request with.
type floorREST struct {
	mu    sync.RWMutex // guards fixed
	fixed map[restKey]*fixedREST
	bufs  sync.Pool
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
	f.mu.RLock()
	fx := f.fixed[restKey{path: r.URL.Path, size: len(body)}]
	f.mu.RUnlock()
	if fx == nil {
		http.Error(w, "no fixed response for this request", http.StatusNotFound)
		return
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

type grpcKey struct {
	model string
	batch int64
}

// floorGRPC is the do-nothing gRPC server: grpc-go decodes the request, and
// ModelInfer returns a prebuilt response of the size Aegis returns.
type floorGRPC struct {
	pb.UnimplementedGRPCInferenceServiceServer
	mu    sync.RWMutex // guards fixed
	fixed map[grpcKey]*pb.ModelInferResponse
}

var _ pb.GRPCInferenceServiceServer = (*floorGRPC)(nil)

func (f *floorGRPC) ModelInfer(_ context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	k := grpcKey{model: r.ModelName}
	if len(r.Inputs) > 0 && len(r.Inputs[0].Shape) > 0 {
		k.batch = r.Inputs[0].Shape[0]
	}
	f.mu.RLock()
	resp := f.fixed[k]
	f.mu.RUnlock()
	if resp == nil {
		return nil, status.Error(codes.NotFound, "no fixed response for this request")
	}
	return resp, nil
}

// control is the harness's side door into the server process.
type control struct {
	rest *floorREST
	grpc *floorGRPC

	mu   sync.Mutex // guards prof
	prof *os.File
}

func (c *control) mux() http.Handler {
	m := http.NewServeMux()
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

func (c *control) setREST(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("size"))
	body, rerr := io.ReadAll(r.Body)
	if err != nil || rerr != nil {
		http.Error(w, "bad size or body", http.StatusBadRequest)
		return
	}
	fx := &fixedREST{body: body, contentType: q.Get("type"), contentLength: strconv.Itoa(len(body)), hdrLen: q.Get("hdr")}
	c.rest.mu.Lock()
	c.rest.fixed[restKey{path: q.Get("path"), size: size}] = fx
	c.rest.mu.Unlock()
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
	c.grpc.mu.Lock()
	c.grpc.fixed[grpcKey{model: q.Get("model"), batch: batch}] = resp
	c.grpc.mu.Unlock()
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
