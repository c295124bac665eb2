package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/oip/pb"
)

// The server process is this same binary started with these variables set.
const (
	envChild = "AEGIS_BENCH_CHILD" // "1" makes the binary the server process
	envRepo  = "AEGIS_BENCH_REPO"  // model repository the server loads
	envLib   = "AEGIS_ONNXRUNTIME_LIB"
	envCPU   = "AEGIS_BENCH_CPU" // if set, the CPU the server process binds itself to

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
	if c := os.Getenv(envCPU); c != "" {
		cpu, err := strconv.Atoi(c)
		if err != nil {
			return fmt.Errorf("%s: %w", envCPU, err)
		}
		if err := pinToCPU(cpu); err != nil {
			return err
		}
	}
	cfg := config.Default()
	cfg.ModelRepository = os.Getenv(envRepo)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = os.Getenv(envLib)
	cfg.ShutdownTimeout = 10 * time.Second
	// The serving benchmark measures the protocol path: no TLS, no
	// authentication, no audit (bench/access measures those), no load
	// shedding (bench/soak does): its clients saturate the server on
	// purpose, and on a contended machine the gate would refuse them.
	cfg.TLS.Plaintext, cfg.Auth.Disabled, cfg.Audit.Disabled = true, true, true
	cfg.RateLimit.Shed.Disabled = true
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

	select {
	case <-benchutil.StdinClosed():
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
