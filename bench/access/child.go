package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/tlsconf"
)

// The server process is this same binary started with these variables set.
const (
	envChild = "AEGIS_BENCH_ACCESS_CHILD" // "1" makes the binary the server process
	envWork  = "AEGIS_BENCH_ACCESS_WORK"  // the work directory (see instances.go)
	envLib   = "AEGIS_ONNXRUNTIME_LIB"
	envCPU   = "AEGIS_BENCH_CPU"   // if set, the CPU the server process binds itself to
	envProcs = "AEGIS_BENCH_PROCS" // if set, the server process's GOMAXPROCS

	// childTTL bounds the server process's life even if the harness never
	// closes its stdin.
	childTTL = 30 * time.Minute
)

// endpoint is one running instance, as the harness needs it.
type endpoint struct {
	HTTP     string `json:"http"`
	GRPC     string `json:"grpc"`
	APIKey   string `json:"api_key,omitempty"`   // for instances that authenticate
	AuditLog string `json:"audit_log,omitempty"` // for instances that audit
}

// childInfo is the line the server process prints once every instance
// listens.
type childInfo struct {
	Instances map[string]endpoint `json:"instances"`
	Token     string              `json:"token"` // a JWT the identity provider signed
	Control   string              `json:"control"`
	// ORTVersion is the ONNX Runtime version the instances loaded.
	ORTVersion string `json:"ort_version"`
}

// isChild reports whether this process was started as the server process.
func isChild() bool { return os.Getenv(envChild) == "1" }

// runChild is the server process: a local identity provider (JWKS on
// loopback), every instance built by app.New exactly as `aegis serve` wires
// it, and a control listener for garbage collection, CPU profiles and the
// audit logs' counters. It serves until its stdin closes or childTTL
// passes, then shuts every instance down gracefully, which closes (and
// checkpoints) the audit logs.
func runChild() error {
	if c := os.Getenv(envCPU); c != "" {
		cpu, err := strconv.Atoi(c)
		if err != nil {
			return fmt.Errorf("%s: %w", envCPU, err)
		}
		if err := benchutil.PinToCPU(cpu); err != nil {
			return err
		}
	}
	if p := os.Getenv(envProcs); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return fmt.Errorf("%s: %q is not a positive number", envProcs, p)
		}
		runtime.GOMAXPROCS(n)
	}
	work, lib := os.Getenv(envWork), os.Getenv(envLib)
	if work == "" {
		return fmt.Errorf("%s not set", envWork)
	}
	if _, err := tlsconf.InitDir(pkiDir(work), nil); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := os.WriteFile(policyFile(work), []byte(policy), 0o600); err != nil {
		return err
	}
	idp, err := startIDP()
	if err != nil {
		return fmt.Errorf("identity provider: %w", err)
	}
	defer idp.close()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info := childInfo{Instances: map[string]endpoint{}, Token: idp.token}
	servers := map[string]*app.Server{}
	served := make(chan error, len(instances))
	var running sync.WaitGroup
	defer func() {
		cancel()
		running.Wait()
	}()
	for _, in := range instances {
		cfg := in.config(work, lib, idp.url)
		var ep endpoint
		if in.auth != "" {
			if ep.APIKey, err = createKey(cfg, "bench-"+in.name); err != nil {
				return fmt.Errorf("%s: %w", in.name, err)
			}
		}
		if in.audit {
			ep.AuditLog = cfg.AuditPath()
		}
		srv, err := app.New(cfg, log)
		if err != nil {
			return fmt.Errorf("start %s: %w", in.name, err)
		}
		ep.HTTP, ep.GRPC = srv.HTTPAddr(), srv.GRPCAddr()
		info.ORTVersion = srv.Library.Version
		info.Instances[in.name] = ep
		servers[in.name] = srv
		running.Add(1)
		go func() {
			defer running.Done()
			if err := srv.Serve(ctx); err != nil {
				served <- fmt.Errorf("%s: %w", in.name, err)
			}
		}()
	}

	ctl := &control{servers: servers}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctlSrv := &http.Server{Handler: ctl.mux(), ReadHeaderTimeout: 10 * time.Second}
	go ctlSrv.Serve(ln)
	defer ctlSrv.Close()
	info.Control = ln.Addr().String()
	line, _ := json.Marshal(info)
	fmt.Printf("%s\n", line)

	select {
	case <-benchutil.StdinClosed():
	case <-time.After(childTTL):
		log.Error("benchmark server process reached its time limit")
	case err := <-served:
		return fmt.Errorf("aegis stopped: %w", err)
	}
	ctl.stopProfile()
	cancel()
	running.Wait()
	select {
	case err := <-served:
		return fmt.Errorf("shutdown: %w", err)
	default:
	}
	return nil
}

// control is the harness's side door into the server process.
type control struct {
	servers map[string]*app.Server

	mu   sync.Mutex // guards prof
	prof *os.File
}

func (c *control) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) { runtime.GC() })
	m.HandleFunc("POST /profile/start", c.startProfile)
	m.HandleFunc("POST /profile/stop", func(w http.ResponseWriter, r *http.Request) {
		if err := c.stopProfile(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	// The audit log's and the gate's counters of one instance.
	m.HandleFunc("GET /audit", func(w http.ResponseWriter, r *http.Request) {
		srv, ok := c.servers[r.URL.Query().Get("instance")]
		if !ok {
			http.Error(w, "no such instance", http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(srv.AuditStatus())
	})
	return m
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
