// Package app wires Aegis together: configuration to components to
// servers. Every backend is named here, and nowhere registers itself.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/deploy"
	"github.com/aegis-inference/aegis/internal/doctor"
	"github.com/aegis-inference/aegis/internal/infer"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/monitor"
	"github.com/aegis-inference/aegis/internal/netstamp"
	"github.com/aegis-inference/aegis/internal/oip"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tlsconf"
	"github.com/aegis-inference/aegis/internal/transport/adminapi"
	"github.com/aegis-inference/aegis/internal/transport/grpcapi"
	"github.com/aegis-inference/aegis/internal/transport/httpapi"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// Server is a running Aegis: the registry and both transports.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	Registry *repository.Registry
	Library  onnx.LibraryInfo

	ready    atomic.Bool
	stopping atomic.Bool // set once shutdown begins; readiness stays false
	inFlight atomic.Int64
	http     *http.Server
	grpc     *grpc.Server
	httpLn   net.Listener
	grpcLn   net.Listener
	store    *state.Bolt // nil without state_dir
	custody  keys.Custody
	tls      *tlsconf.Manager // nil when plaintext
	access   *accessParts
	limiter  *ratelimit.Limiter // nil when authentication is disabled
	monitors *monitor.Monitors  // nil when extraction monitoring is off
	// wmRecorder stores watermarked answers; nil without state_dir.
	wmRecorder *watermark.Recorder
}

// New loads ONNX Runtime and the models, and binds both listeners. It does
// not serve until Serve.
func New(cfg config.Config, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	lib, err := onnx.Init(onnx.LibraryOptions{Path: cfg.ONNXRuntime.Library, AllowUnpinned: cfg.ONNXRuntime.AllowUnpinned})
	if err != nil {
		return nil, err
	}
	if !lib.Pinned {
		log.Warn("serving with an ONNX Runtime library that is not the pinned build", "path", lib.Path, "sha256", lib.Digest)
	}
	log.Info("onnx runtime loaded", "path", lib.Path, "version", lib.Version, "sha256", lib.Digest)
	if _, err := doctor.Startup(doctor.Env{Config: cfg, Library: &lib}, cfg.Strict, log); err != nil {
		return nil, err
	}
	custody, err := loadCustody(cfg.Keys, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		// A custody holds a token session (PKCS#11): release it if the
		// server does not start.
		if c, ok := custody.(io.Closer); ok && err != nil {
			c.Close()
		}
	}()
	if custody != nil {
		// Plaintext weights will sit in this process: no core dumps, no
		// ptrace by other processes of the same user.
		if err := seal.HardenProcess(); err != nil {
			return nil, err
		}
		log.Info("key custody ready; process hardened", "custody", custody.Describe())
	}
	policy, err := deploy.Load(cfg.Deploy)
	if err != nil {
		return nil, err
	}
	var store *state.Bolt
	if cfg.StateDir != "" {
		if store, err = state.OpenBolt(cfg.StateDir); err != nil {
			return nil, err
		}
	}
	ropts := repository.Options{
		Runtime: cfg.Runtime, QueueTimeout: cfg.Limits.QueueTimeout, Custody: custody,
		Policy: policy, Logger: log,
	}
	if store != nil {
		ropts.Versions = store
		if ropts.WatermarkKey, err = watermark.LoadOrCreateKey(filepath.Join(cfg.StateDir, "watermark-key")); err != nil {
			store.Close()
			return nil, fmt.Errorf("watermark key: %w", err)
		}
	}
	reg, err := repository.Load(cfg.ModelRepository, ropts)
	if err != nil {
		if store != nil {
			store.Close()
		}
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, Registry: reg, Library: lib, store: store, custody: custody}
	fail := func(err error) (*Server, error) {
		if s.wmRecorder != nil {
			s.wmRecorder.Close()
		}
		if s.limiter != nil {
			s.limiter.Close()
		}
		if s.access != nil {
			s.access.close()
		}
		reg.Close()
		if store != nil {
			store.Close()
		}
		return nil, err
	}
	if !cfg.TLS.Plaintext {
		t := cfg.TLS
		if s.tls, err = tlsconf.New(tlsconf.Config{
			CertFile: t.CertFile, KeyFile: t.KeyFile, MinVersion: t.MinVersion,
			ClientAuth: t.ClientAuth, ClientCAFile: t.ClientCAFile, ReloadInterval: t.ReloadInterval,
		}, log); err != nil {
			return fail(fmt.Errorf("tls: %w", err))
		}
	} else {
		log.Warn("TLS is off (tls.plaintext): requests and credentials travel in clear")
	}
	if s.access, err = buildAccess(context.Background(), cfg, store, log); err != nil {
		return fail(err)
	}

	limits := oip.Limits{
		MaxInputs:      cfg.Limits.MaxInputs,
		MaxTensorBytes: cfg.Limits.MaxTensorBytes,
		MaxDepth:       cfg.Limits.MaxJSONDepth,
		MaxRank:        oip.DefaultLimits().MaxRank,
	}
	stages := []pipeline.Stage{pipeline.Count(&s.inFlight)}
	if cfg.Auth.Disabled {
		log.Warn("rate limits and quotas are keyed by principal: off while authentication is disabled")
	} else {
		lopts := ratelimit.Options{Logger: log}
		if store != nil {
			lopts.DB = store.DB()
		}
		if s.limiter, err = ratelimit.New(cfg.RateLimit, lopts); err != nil {
			return fail(err)
		}
		stages = append(stages, s.limiter.Stage())
	}
	if !cfg.Extraction.Disabled {
		s.monitors = newMonitors(cfg.Extraction, s.access.gate, log)
		stages = append(stages, s.monitors.Stage())
	}
	// Output hardening and the watermark, innermost: they shape what the
	// model answered before it is encoded and its audit hash taken.
	guard := &outguard.Guard{Policy: func(t pipeline.Target) outguard.Policy {
		if v, ok := t.(*repository.Version); ok {
			return v.Outguard()
		}
		return outguard.Full()
	}}
	if store != nil {
		if s.wmRecorder, err = watermark.NewRecorder(store.DB(), watermark.RecorderOptions{Log: log}); err != nil {
			return fail(err)
		}
		guard.Marker = &watermark.Service{Recorder: s.wmRecorder, Models: func(t pipeline.Target) *watermark.Watermarker {
			if v, ok := t.(*repository.Version); ok {
				return v.Watermarker()
			}
			return nil
		}}
	}
	stages = append(stages, guard.Stage)
	handler := pipeline.Chain(&infer.Handler{Registry: reg}, stages...)

	s.http = &http.Server{
		Handler: httpapi.New(httpapi.Options{
			Registry: reg, Handler: handler, Limits: limits,
			MaxBodyBytes: cfg.Limits.MaxBodyBytes,
			Ready:        &s.ready, Gate: s.access.gate, Admin: s.adminAPI(), Logger: log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext:       netstamp.ConnContext,
	}
	// The listeners stamp what they read with when it arrived, for the
	// gate's shedding of requests that waited too long to reach it.
	var grpcStamp *netstamp.Listener // set below, before serving
	arrived := func(peer string) time.Time { return grpcStamp.Arrived(peer) }
	gopts := grpcapi.ServerOptions(cfg.Limits.MaxBodyBytes, s.access.gate, log, arrived)
	if s.tls != nil {
		s.http.TLSConfig = s.tls.TLSConfig()
		gopts = append(gopts, grpc.Creds(auditedCreds{credentials.NewTLS(s.tls.TLSConfig("h2")), s.access.gate, log}))
		s.http.ErrorLog = stdlog.New(httpErrorLog{s.access.gate, log}, "", 0)
	}
	s.grpc = grpc.NewServer(gopts...)
	pb.RegisterGRPCInferenceServiceServer(s.grpc, grpcapi.New(grpcapi.Options{
		Registry: reg, Handler: handler, Limits: limits,
		Ready: &s.ready, Gate: s.access.gate, Logger: log,
	}))

	if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return fail(fmt.Errorf("http listen: %w", err))
	}
	if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		s.httpLn.Close()
		return fail(fmt.Errorf("grpc listen: %w", err))
	}
	grpcStamp = netstamp.Listen(s.grpcLn)
	s.httpLn, s.grpcLn = netstamp.Listen(s.httpLn), grpcStamp
	if s.tls != nil {
		s.httpLn = tls.NewListener(s.httpLn, s.http.TLSConfig)
	}
	return s, nil
}

// loadCustody opens the configured key custody, or returns nil when none is
// configured.
func loadCustody(k config.Keys, log *slog.Logger) (keys.Custody, error) {
	switch {
	case k.IdentityFile != "":
		c, err := keys.LoadIdentityFile(k.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("keys.identity_file: %w", err)
		}
		return c, nil
	case k.PKCS11 != nil:
		c, err := keys.OpenPKCS11(keys.PKCS11Config{
			Module: k.PKCS11.Module, TokenLabel: k.PKCS11.TokenLabel, KeyLabel: k.PKCS11.KeyLabel,
			KeyID: k.PKCS11.KeyID, PINEnv: k.PKCS11.PINEnv, Mechanism: k.PKCS11.Mechanism,
		})
		if err != nil {
			return nil, fmt.Errorf("keys.pkcs11: %w", err)
		}
		return c, nil
	case k.PassphraseEnv != "":
		pass := os.Getenv(k.PassphraseEnv)
		if pass == "" {
			return nil, fmt.Errorf("keys.passphrase_env: $%s is empty", k.PassphraseEnv)
		}
		log.Warn("decrypting models with a passphrase: for development only")
		return keys.NewPassphrase(pass)
	}
	return nil, nil
}

// Reload rescans the model repository now (the admin trigger; SIGHUP in
// `aegis serve`). A version that fails leaves the one serving in place.
func (s *Server) Reload() (repository.ReloadResult, error) {
	res, err := s.Registry.Reload()
	if err == nil && !s.stopping.Load() {
		s.ready.Store(len(s.Registry.Models()) > 0)
	}
	return res, err
}

// adminAPI returns the admin API's handler.
func (s *Server) adminAPI() http.Handler {
	o := adminapi.Options{
		ReloadModels: func() (any, error) { return s.Reload() },
		Logger:       s.log,
	}
	if s.access.keys != nil {
		o.Keys = s.access.keys
	}
	if s.access.authz != nil && s.access.policy != "" {
		o.ReloadPolicy = s.ReloadPolicy
	}
	if s.access.audit != nil {
		o.AuditStatus = func() any { return s.AuditStatus() }
	}
	if s.monitors != nil {
		o.ExtractionStatus = func() any { return s.monitors.Status() }
	}
	o.Metrics = s.Metrics
	o.VerifyWatermark = func(ctx context.Context, req adminapi.WatermarkRequest) (any, error) {
		return s.VerifyWatermark(ctx, req.Model, req.Inputs, req.Labels, req.Scores)
	}
	return adminapi.New(o)
}

// ErrNoPolicy is ReloadPolicy's error when no policy file is configured.
var ErrNoPolicy = errors.New("no policy file configured")

// ReloadTLS reads the certificate files again now (they are also polled).
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return nil
	}
	return s.tls.Reload()
}

// ReloadPolicy reads the authorization policy file again; a file that
// fails to load leaves the current policy in force.
func (s *Server) ReloadPolicy() (string, error) {
	if s.access.authz == nil || s.access.policy == "" {
		return "", ErrNoPolicy
	}
	if err := s.access.authz.Reload(); err != nil {
		return "", err
	}
	return s.access.authz.Policy().Digest(), nil
}

// AuditStatus is what GET /admin/v1/audit/status reports.
type AuditStatus struct {
	Healthy bool        `json:"healthy"`
	Log     audit.Stats `json:"log"`
	Gate    any         `json:"gate"`
}

// AuditStatus reports the audit log's and the gate's counters.
func (s *Server) AuditStatus() AuditStatus {
	st := AuditStatus{Gate: s.access.gate.Stats()}
	if l := s.access.audit; l != nil {
		st.Healthy = l.Healthy() == nil
		st.Log = l.Stats()
	}
	return st
}

// InFlight returns the number of inference requests in the pipeline.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// HTTPHandler is the REST API's handler, for measuring it in process
// without the network.
func (s *Server) HTTPHandler() http.Handler { return s.http.Handler }

// HTTPAddr is the bound REST address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// Serve serves until ctx is done, then shuts down gracefully: it stops
// accepting, lets in-flight requests finish (up to the shutdown timeout),
// and frees the models.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	if s.tls != nil {
		go s.tls.Run(ctx)
	}
	go func() { errc <- s.http.Serve(s.httpLn) }()
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	s.ready.Store(len(s.Registry.Models()) > 0)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if s.cfg.WatchRepository {
		go func() {
			if err := s.Registry.Watch(watchCtx, s.cfg.ReloadDebounce); err != nil {
				s.log.Error("cannot watch the model repository; reload with SIGHUP", "err", err)
			}
		}()
	}
	s.log.Info("serving", "http", s.HTTPAddr(), "grpc", s.GRPCAddr(), "models", len(s.Registry.Models()))

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	stopWatch() // no reload may start once shutdown has begun
	s.shutdown()
	return err
}

func (s *Server) shutdown() {
	s.stopping.Store(true)
	s.ready.Store(false)
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
		s.http.Close()
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
	}
	s.Registry.Close()
	if s.monitors != nil {
		s.monitors.Close()
	}
	if s.wmRecorder != nil {
		s.wmRecorder.Close()
	}
	if s.limiter != nil {
		s.limiter.Close() // writes quota counters a last time
	}
	s.access.close()
	if s.store != nil {
		s.store.Close()
	}
	if c, ok := s.custody.(io.Closer); ok {
		c.Close()
	}
	s.log.Info("stopped")
}
