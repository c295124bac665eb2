// Package servertest starts a real Aegis server on loopback for tests and
// benchmarks, and provides protocol clients that speak to it the way
// external clients do: REST with JSON or binary tensor data, and gRPC with
// typed or raw contents. One test body can run over every transport.
package servertest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
)

// RepoRoot returns the repository's top directory (where go.mod is).
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// LibraryPath returns the ONNX Runtime library for tests: AEGIS_ONNXRUNTIME_LIB
// if set, else the one `make setup` installs.
func LibraryPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("AEGIS_ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(tb), "build", "onnxruntime", "libonnxruntime.so.1")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("ONNX Runtime library missing (%v): run `make setup`", err)
	}
	return p
}

// InitRuntime loads the pinned ONNX Runtime library for in-process tests.
func InitRuntime(tb testing.TB) onnx.LibraryInfo {
	tb.Helper()
	info, err := onnx.Init(onnx.LibraryOptions{Path: LibraryPath(tb)})
	if err != nil {
		tb.Fatalf("init onnx runtime: %v", err)
	}
	return info
}

// Models returns the fixture model repository.
func Models(tb testing.TB) string {
	return filepath.Join(RepoRoot(tb), "testdata", "models")
}

// Server is a running server.
type Server struct {
	*app.Server
	HTTPURL string // http://127.0.0.1:port
	cancel  context.CancelFunc
	done    chan error
}

// Config returns a configuration for a loopback test server on ephemeral
// ports serving repo, with TLS, authentication and the audit log off: an
// open server for protocol tests. Tests of access control use Secure.
func Config(tb testing.TB, repo string) config.Config {
	cfg := config.Default()
	cfg.TLS.Plaintext = true
	cfg.Auth.Disabled = true
	cfg.Audit.Disabled = true
	// Protocol tests send bursts of concurrent requests; shedding has its
	// own tests.
	cfg.RateLimit.Shed.Disabled = true
	cfg.ModelRepository = repo
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = LibraryPath(tb)
	cfg.ShutdownTimeout = 10 * time.Second
	return cfg
}

// Start starts a server with cfg and stops it when the test ends.
func Start(tb testing.TB, cfg config.Config) *Server {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return StartLogged(tb, cfg, log)
}

// StartLogged is Start with the server logging to log.
func StartLogged(tb testing.TB, cfg config.Config, log *slog.Logger) *Server {
	tb.Helper()
	srv, err := app.New(cfg, log)
	if err != nil {
		tb.Fatalf("start server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	scheme := "https://"
	if cfg.TLS.Plaintext {
		scheme = "http://"
	}
	s := &Server{Server: srv, HTTPURL: scheme + srv.HTTPAddr(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx) }()
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("server stopped with error: %v", err)
		}
	})
	return s
}

// Stop shuts the server down gracefully and returns Serve's result. It is
// safe to call more than once.
func (s *Server) Stop() error {
	s.cancel()
	select {
	case err, ok := <-s.done:
		if ok {
			close(s.done)
		}
		return err
	case <-time.After(30 * time.Second):
		return errors.New("server did not stop within 30s")
	}
}
