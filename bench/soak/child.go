package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/tlsconf"
	"gopkg.in/yaml.v3"
)

// The server process is this same binary started with these variables set.
const (
	envChild = "AEGIS_SOAK_CHILD" // "1" makes the binary the server process
	envWork  = "AEGIS_SOAK_WORK"  // the work directory
	envTTL   = "AEGIS_SOAK_TTL"   // the most the server process lives (a Go duration)
	envLib   = "AEGIS_ONNXRUNTIME_LIB"
	envCPU   = "AEGIS_BENCH_CPU"       // if set, the CPU the server process binds itself to
	envShed  = "AEGIS_SOAK_SHED"       // if set, YAML decoded over the default shed settings (-shed)
	envProf  = "AEGIS_SOAK_CPUPROFILE" // if set, the server process writes a CPU profile of its life here (-cpuprofile)
)

// policy lets the harness's API key (role scorer) infer on the fixture
// models, with a few more entries so that Decide looks at more than one.
const policy = `
roles:
  scorer:
    permissions: [infer, metadata]
    models: ["digits", "mlp"]
  reader:
    permissions: [metadata, list]
    models: ["*"]
bindings:
  - role: reader
    principals: ["group:analysts"]
deny:
  - name: contractors-no-inference
    principals: ["group:contractors"]
    permissions: [infer]
    models: ["*"]
`

// Work directory layout, shared by the harness and the server process.
func repoDir(work string) string    { return filepath.Join(work, "repo") }
func pkiDir(work string) string     { return filepath.Join(work, "pki") }
func policyFile(work string) string { return filepath.Join(work, "policy.yaml") }
func stateDir(work string) string   { return filepath.Join(work, "state") }
func caFile(work string) string     { return filepath.Join(pkiDir(work), tlsconf.CACertFile) }

// childInfo is the line the server process prints once it listens.
type childInfo struct {
	HTTP       string         `json:"http"`
	APIKey     string         `json:"api_key"`
	Control    string         `json:"control"`
	AuditLog   string         `json:"audit_log"`
	ORTVersion string         `json:"ort_version"`
	Procs      int            `json:"gomaxprocs"`
	Shed       ratelimit.Shed `json:"shed"`
}

// serverStats is what the control listener reports, cheap enough to ask
// for every second: no stop-the-world.
type serverStats struct {
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"` // live and not yet swept heap objects
	// Cumulative since the process started: bytes allocated on the heap,
	// garbage collections completed, and the CPU time the collector
	// spent (the runtime's estimate, /cpu/classes/gc/total:cpu-seconds).
	AllocBytes uint64  `json:"alloc_bytes"`
	GCCycles   uint64  `json:"gc_cycles"`
	GCCPU      float64 `json:"gc_cpu_seconds"`
	// SchedP50 and SchedP99 are quantiles of how long goroutines waited
	// to run since the previous reading (the runtime's
	// /sched/latencies:seconds, whose buckets are coarse: upper bounds).
	SchedP50 time.Duration `json:"sched_p50"`
	SchedP99 time.Duration `json:"sched_p99"`
	// The audit log's and the gate's counters (app.Server.AuditStatus).
	AuditHealthy bool         `json:"audit_healthy"`
	Audit        audit.Stats  `json:"audit"`
	Gate         access.Stats `json:"gate"`
}

// isChild reports whether this process was started as the server process.
func isChild() bool { return os.Getenv(envChild) == "1" }

// serverConfig is config.Default, as `aegis serve` starts from, with TLS,
// API key authentication under policy, and the audit log: the defaults of
// a production server. Only the per-principal limits are off (one key
// sends all the load, and what is measured is the replica's gate), and the
// listeners are on ephemeral loopback ports.
func serverConfig(work, lib string) config.Config {
	cfg := config.Default()
	cfg.ModelRepository = repoDir(work)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = lib
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.StateDir = stateDir(work)
	cfg.TLS.CertFile = filepath.Join(pkiDir(work), tlsconf.ServerCertFile)
	cfg.TLS.KeyFile = filepath.Join(pkiDir(work), tlsconf.ServerKeyFile)
	cfg.Auth.PolicyFile = policyFile(work)
	cfg.RateLimit.Requests, cfg.RateLimit.Elements, cfg.RateLimit.MaxConcurrent = ratelimit.Rate{}, ratelimit.Rate{}, 0
	if y := os.Getenv(envShed); y != "" {
		if sh, err := shedConfig(y); err == nil {
			cfg.RateLimit.Shed = sh
		}
	}
	return cfg
}

// shedConfig decodes y strictly over the default shed settings.
func shedConfig(y string) (ratelimit.Shed, error) {
	sh := ratelimit.Default().Shed
	dec := yaml.NewDecoder(strings.NewReader(y))
	dec.KnownFields(true)
	if err := dec.Decode(&sh); err != nil {
		return sh, err
	}
	return sh, nil
}

// createKey makes an API key with the scorer role in cfg's state
// directory, as `aegis keys create --offline` does before the server
// starts.
func createKey(cfg config.Config) (string, error) {
	return app.CreateKeyOffline(cfg, "soak", []string{"scorer"}, pipeline.Scopes{}, 0)
}

// runChild is the server process: one Aegis built by app.New exactly as
// `aegis serve` wires it, and a control listener for its counters. It
// serves until its stdin closes or its time limit passes, then shuts down
// gracefully.
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
	ttl, err := time.ParseDuration(os.Getenv(envTTL))
	if err != nil {
		return fmt.Errorf("%s: %w", envTTL, err)
	}
	if path := os.Getenv(envProf); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
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
	cfg := serverConfig(work, lib)
	key, err := createKey(cfg)
	if err != nil {
		return fmt.Errorf("api key: %w", err)
	}
	// The default level (info), as `aegis serve` logs: what a server logs
	// per refused request under overload is part of what is measured.
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := app.New(cfg, log)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctl := &http.Server{Handler: controlMux(srv), ReadHeaderTimeout: 10 * time.Second}
	go ctl.Serve(ln)
	defer ctl.Close()

	line, _ := json.Marshal(childInfo{
		HTTP: srv.HTTPAddr(), APIKey: key, Control: ln.Addr().String(), AuditLog: cfg.AuditPath(),
		ORTVersion: srv.Library.Version, Procs: runtime.GOMAXPROCS(0), Shed: cfg.RateLimit.Shed,
	})
	fmt.Printf("%s\n", line)

	select {
	case <-benchutil.StdinClosed():
	case <-time.After(ttl):
		log.Error("soak server process reached its time limit", "ttl", ttl)
	case err := <-served:
		return fmt.Errorf("aegis stopped: %w", err)
	}
	cancel()
	if err := <-served; err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// controlMux is the harness's side door into the server process.
func controlMux(srv *app.Server) http.Handler {
	m := http.NewServeMux()
	var sched schedDelta
	m.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/sched/latencies:seconds"},
			{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
		metrics.Read(s)
		as := srv.AuditStatus()
		gate, _ := as.Gate.(access.Stats)
		st := serverStats{Goroutines: runtime.NumGoroutine(), AuditHealthy: as.Healthy, Audit: as.Log, Gate: gate}
		if s[0].Value.Kind() == metrics.KindUint64 {
			st.HeapBytes = s[0].Value.Uint64()
		}
		if s[2].Value.Kind() == metrics.KindUint64 && s[3].Value.Kind() == metrics.KindUint64 && s[4].Value.Kind() == metrics.KindFloat64 {
			st.AllocBytes, st.GCCycles, st.GCCPU = s[2].Value.Uint64(), s[3].Value.Uint64(), s[4].Value.Float64()
		}
		if s[1].Value.Kind() == metrics.KindFloat64Histogram {
			st.SchedP50, st.SchedP99 = sched.next(s[1].Value.Float64Histogram())
		}
		json.NewEncoder(w).Encode(st)
	})
	// A full collection that returns what it can to the operating system:
	// what is left is what the server holds.
	m.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) { debug.FreeOSMemory() })
	return m
}

// schedDelta turns the runtime's cumulative histogram of how long
// goroutines waited to run into quantiles of the waits since the last
// call: how long a request's goroutine waits for a CPU before it can even
// reach the gate.
type schedDelta struct {
	mu   sync.Mutex
	prev []uint64 // guarded by mu
}

func (d *schedDelta) next(h *metrics.Float64Histogram) (p50, p99 time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delta := make([]uint64, len(h.Counts))
	var n uint64
	for i, c := range h.Counts {
		delta[i] = c
		if i < len(d.prev) {
			delta[i] -= d.prev[i]
		}
		n += delta[i]
	}
	d.prev = append(d.prev[:0], h.Counts...)
	q := func(f float64) time.Duration {
		rank := uint64(float64(n)*f + 0.9999999)
		var seen uint64
		for i, c := range delta {
			if seen += c; seen >= rank && c > 0 {
				// Bucket i spans Buckets[i] to Buckets[i+1]: its upper bound.
				ub := h.Buckets[i+1]
				if math.IsInf(ub, 1) {
					ub = h.Buckets[i]
				}
				return time.Duration(ub * float64(time.Second))
			}
		}
		return 0
	}
	if n == 0 {
		return 0, 0
	}
	return q(0.5), q(0.99)
}
