package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tlsconf"
	"github.com/aegis-inference/aegis/internal/transport/adminapi"
)

// The models every instance serves: the two victims, and the digits demo
// model the per-request overhead is measured on.
const (
	victimLogreg  = "digits_logreg"
	victimMLP     = "digits_mlp"
	overheadModel = "digits"
)

var servedModels = []string{victimLogreg, victimMLP, overheadModel}

func isVictim(m string) bool { return m == victimLogreg || m == victimMLP }

// authzPolicy is the authorization policy of every instance: clients
// (attackers and benign alike: the server cannot tell them apart) may run
// the models; the operator reads the admin API.
const authzPolicy = `
roles:
  client:
    permissions: [infer, metadata]
    models: ["digits", "digits_logreg", "digits_mlp"]
  operator:
    permissions: [admin, audit:read, list, metadata]
    models: ["*"]
`

// servers starts Aegis instances in this process, each as `aegis serve`
// builds it (internal/app), on loopback with TLS 1.3 from a CA made for
// the run, API keys, the authorization policy and the audit log, plus one
// policy's configuration.
type servers struct {
	work   string // everything lives under here
	root   string // repository root
	lib    string // ONNX Runtime library
	pki    string
	tls    *tls.Config
	client *http.Client                // trusts the run's CA
	from   map[netip.Addr]*http.Client // clients bound to a source address
	n      int                         // instances started, for directory names
	keep   bool                        // keep instance directories (audit logs)
	log    *slog.Logger
}

func newServers(work, root, lib string, keep bool) (*servers, error) {
	s := &servers{work: work, root: root, lib: lib, pki: filepath.Join(work, "pki"), keep: keep, from: map[netip.Addr]*http.Client{},
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if _, err := tlsconf.InitDir(s.pki, nil); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	pem, err := os.ReadFile(filepath.Join(s.pki, tlsconf.CACertFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no CA certificate")
	}
	if err := os.WriteFile(filepath.Join(work, "authz.yaml"), []byte(authzPolicy), 0o600); err != nil {
		return nil, err
	}
	s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	s.client = s.httpClient(nil)
	return s, nil
}

// httpClient returns a client trusting the run's CA whose connections
// come from local (any loopback address; nil for the system's choice).
func (s *servers) httpClient(local net.Addr) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: local}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			TLSClientConfig:     s.tls.Clone(),
			MaxIdleConnsPerHost: 64,
		},
		Timeout: 30 * time.Second,
	}
}

// clientFrom returns the client whose connections come from addr, one
// per address.
func (s *servers) clientFrom(addr netip.Addr) *http.Client {
	if c, ok := s.from[addr]; ok {
		return c
	}
	c := s.httpClient(&net.TCPAddr{IP: addr.AsSlice()})
	s.from[addr] = c
	return c
}

// instance is one running server.
type instance struct {
	policy   *policy
	srv      *app.Server
	url      string // https://127.0.0.1:port
	dir      string
	operator string       // API key with the operator role
	audit    string       // the audit log's path
	client   *http.Client // the operator's, and clients' from the default address
	servers  *servers
	stateDir string
	cancel   context.CancelFunc
	done     chan error
	halted   bool
	haltErr  error
	keep     bool
}

// start starts an instance under p. An error that comes from the policy
// (the server refuses its configuration, or a victim does not load under
// it) is a *policyError.
// start starts an instance under p; tune, if given, adjusts its
// configuration after the policy's.
func (s *servers) start(p *policy, tune ...func(*config.Config)) (*instance, error) {
	s.n++
	dir := filepath.Join(s.work, fmt.Sprintf("%03d-%s", s.n, p.name))
	repo := filepath.Join(dir, "models")
	for _, m := range servedModels {
		b, err := os.ReadFile(filepath.Join(s.root, "testdata", "models", m, "1", "model.onnx"))
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(repo, m, "1"), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(repo, m, "1", "model.onnx"), b, 0o644); err != nil {
			return nil, err
		}
		mc, err := p.modelConfig(m)
		if err != nil {
			return nil, &policyError{fmt.Errorf("models.%s: %w", m, err)}
		}
		if mc != nil {
			if err := os.WriteFile(filepath.Join(repo, m, "config.yaml"), mc, 0o644); err != nil {
				return nil, err
			}
		}
	}
	cfg := config.Default()
	cfg.ModelRepository = repo
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = s.lib
	cfg.WatchRepository = false
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.TLS.CertFile = filepath.Join(s.pki, tlsconf.ServerCertFile)
	cfg.TLS.KeyFile = filepath.Join(s.pki, tlsconf.ServerKeyFile)
	cfg.Auth.PolicyFile = filepath.Join(s.work, "authz.yaml")
	if err := p.apply(&cfg); err != nil {
		return nil, &policyError{err}
	}
	for _, f := range tune {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, &policyError{err}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	op, err := createKey(cfg, "operator", "operator")
	if err != nil {
		return nil, fmt.Errorf("operator key: %w", err)
	}
	// Every goroutine of the instance carries its policy as a profiler
	// label (-cpuprofile: go tool pprof -tagfocus policy=NAME).
	labels := pprof.Labels("policy", p.name)
	var srv *app.Server
	pprof.Do(context.Background(), labels, func(context.Context) { srv, err = app.New(cfg, s.log) })
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	if f := srv.Registry.Failures(); len(f) > 0 {
		srv.Serve(canceled())
		return nil, &policyError{fmt.Errorf("model did not load: %v", f[0])}
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{policy: p, srv: srv, url: "https://" + srv.HTTPAddr(), dir: dir, operator: op,
		audit: cfg.AuditPath(), client: s.client, servers: s, stateDir: cfg.StateDir, cancel: cancel, done: make(chan error, 1), keep: s.keep}
	pprof.Do(ctx, labels, func(ctx context.Context) {
		go func() { in.done <- srv.Serve(ctx) }()
	})
	return in, nil
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// policyError is a refusal of the policy's configuration.
type policyError struct{ err error }

func (e *policyError) Error() string { return e.err.Error() }
func (e *policyError) Unwrap() error { return e.err }

// halt shuts the server down gracefully (its state store and audit log
// closed) and leaves its files; it returns the same result every time.
func (in *instance) halt() error {
	if in.halted {
		return in.haltErr
	}
	in.halted = true
	in.cancel()
	select {
	case in.haltErr = <-in.done:
	case <-time.After(30 * time.Second):
		in.haltErr = errors.New("server did not stop within 30s")
	}
	return in.haltErr
}

// stop halts the instance and, unless kept, removes its files.
func (in *instance) stop() error {
	err := in.halt()
	if !in.keep {
		os.RemoveAll(in.dir)
	}
	return err
}

// createKey makes an API key in cfg's state directory before the server
// starts, as `aegis keys create --offline` does.
func createKey(cfg config.Config, name, role string) (string, error) {
	return app.CreateKeyOffline(cfg, name, []string{role}, pipeline.Scopes{}, 0)
}

// newClient creates an API key with the client role and the policy's key
// scopes through the admin API, as an operator would hand one out. Its
// requests come from 127.0.0.1.
func (in *instance) newClient(name string) (*client, error) {
	return in.newClientFrom(name, netip.Addr{})
}

// newClientFrom is newClient for a client whose requests come from the
// loopback address from (the zero Addr: the default).
func (in *instance) newClientFrom(name string, from netip.Addr) (*client, error) {
	body, _ := json.Marshal(adminapi.CreateKeyRequest{Name: name, Roles: []string{"client"}, Scopes: in.policy.KeyScopes})
	var resp adminapi.CreateKeyResponse
	if err := in.admin(context.Background(), http.MethodPost, "/admin/v1/keys", body, &resp); err != nil {
		return nil, fmt.Errorf("create key %s: %w", name, err)
	}
	hc := in.client
	if from.IsValid() {
		hc = in.servers.clientFrom(from)
	}
	return &client{in: in, hc: hc, key: resp.Key, principal: "key:" + resp.Record.ID, name: name}, nil
}

// errNotFound is an admin endpoint the server does not have.
var errNotFound = errors.New("not found")

// admin calls the admin API with the operator's key and decodes the JSON
// answer into out (if not nil).
func (in *instance) admin(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, in.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+in.operator)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := in.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotFound
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%s %s: status %d: %.200s", method, path, resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}
