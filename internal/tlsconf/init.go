package tlsconf

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// DemoCAName is the name InitDir gives the CA it creates.
const DemoCAName = "Aegis local demo CA"

// InitResult says what InitDir did.
type InitResult struct {
	CACreated    bool
	ServerIssued bool
	// Reason says why the server certificate was issued ("" if the one in
	// place was kept).
	Reason string
}

// InitDir makes sure dir holds the local CA and a server certificate for
// hosts (DefaultHosts if none), and is safe to run again: it creates the CA
// only if dir has none, and issues the server certificate only if there is
// none, or the one there does not load (key mismatch, insecure key file),
// does not chain to the CA, does not cover every host, or expires within
// ExpiryWarning. An existing CA that does not load, or has expired, is an
// error: InitDir never replaces a CA clients may trust.
func InitDir(dir string, hosts []string) (InitResult, error) {
	return initDir(dir, hosts, time.Now())
}

func initDir(dir string, hosts []string, now time.Time) (InitResult, error) {
	var res InitResult
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	caCert, caKey, err := ensureCA(dir, now, &res)
	if err != nil {
		return res, err
	}
	res.Reason = serverCertProblem(dir, caCert, hosts, now)
	if res.Reason == "" {
		return res, nil
	}
	if _, err := issueServer(dir, caCert, caKey, hosts, now); err != nil {
		return res, err
	}
	res.ServerIssued = true
	return res, nil
}

func ensureCA(dir string, now time.Time, res *InitResult) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Lstat(certPath)
	_, keyErr := os.Lstat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		res.CACreated = true
		return generateCA(dir, DemoCAName, now)
	case certErr != nil || keyErr != nil:
		return nil, nil, fmt.Errorf("%s holds only one of %s and %s (or cannot be read): remove it to start over", dir, CACertFile, CAKeyFile)
	}
	caCert, caKey, err := LoadCA(dir)
	if err != nil {
		return nil, nil, err
	}
	if now.After(caCert.NotAfter) {
		return nil, nil, fmt.Errorf("CA %s: %w: remove %s and %s to make a new CA, then reissue every certificate", certPath, ErrExpired, CACertFile, CAKeyFile)
	}
	return caCert, caKey, nil
}

// serverCertProblem says why dir's server certificate must be issued again,
// or "" if it is fine.
func serverCertProblem(dir string, caCert *x509.Certificate, hosts []string, now time.Time) string {
	cfg := Config{CertFile: filepath.Join(dir, ServerCertFile), KeyFile: filepath.Join(dir, ServerKeyFile)}
	_, certErr := os.Lstat(cfg.CertFile)
	_, keyErr := os.Lstat(cfg.KeyFile)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		return "no server certificate"
	}
	s, err := load(cfg, now)
	if err != nil {
		return err.Error()
	}
	leaf := s.cert.Leaf
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Sprintf("server certificate does not verify against the CA: %v", err)
	}
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			return fmt.Sprintf("server certificate does not cover %s", h)
		}
	}
	if expiryLevel(leaf.NotAfter, now) != expiryOK {
		return fmt.Sprintf("server certificate expires %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return ""
}
