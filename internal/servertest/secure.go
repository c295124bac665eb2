package servertest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tlsconf"
)

// Secure describes the files of a secured test server: its PKI, state
// directory and policy.
type Secure struct {
	Dir      string // everything lives under here
	PKI      string // CA and server certificate (tlsconf.InitDir)
	CAFile   string
	StateDir string
	Policy   string
}

// SecureConfig returns a configuration for a loopback test server on
// ephemeral ports serving repo as a production server would: TLS 1.3 with
// a certificate from a CA made for the test, API key authentication, the
// given authorization policy (YAML), and the audit log in the state
// directory.
func SecureConfig(tb testing.TB, repo, policy string) (config.Config, *Secure) {
	tb.Helper()
	dir := tb.TempDir()
	s := &Secure{Dir: dir, PKI: filepath.Join(dir, "pki"), StateDir: filepath.Join(dir, "state"), Policy: filepath.Join(dir, "policy.yaml")}
	if _, err := tlsconf.InitDir(s.PKI, nil); err != nil {
		tb.Fatal(err)
	}
	s.CAFile = filepath.Join(s.PKI, tlsconf.CACertFile)
	if err := os.WriteFile(s.Policy, []byte(policy), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg := config.Default()
	cfg.ModelRepository = repo
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = LibraryPath(tb)
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.StateDir = s.StateDir
	cfg.TLS.CertFile = filepath.Join(s.PKI, tlsconf.ServerCertFile)
	cfg.TLS.KeyFile = filepath.Join(s.PKI, tlsconf.ServerKeyFile)
	cfg.TLS.ReloadInterval = 200 * time.Millisecond
	cfg.Auth.PolicyFile = s.Policy
	return cfg, s
}

// CreateKey makes an API key directly in cfg's state directory, as
// `aegis keys create --offline` does; the server must not be running.
func CreateKey(tb testing.TB, cfg config.Config, name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) string {
	tb.Helper()
	key, err := app.CreateKeyOffline(cfg, name, roles, scopes, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

// ClientTLS returns a client TLS configuration trusting the test CA, with
// an optional client certificate.
func (s *Secure) ClientTLS(tb testing.TB, cert *tls.Certificate) *tls.Config {
	tb.Helper()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		tb.Fatal("no CA certificate")
	}
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Present the certificate whatever CAs the server names, as an
		// attacker would (crypto/tls would otherwise send none).
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}
