package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The local CA is for the demo and tests: a production deployment uses
// certificates from its own PKI (see docs/tls.md).

// File names of the local CA and server certificate inside their directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Validity of what the local CA issues. Certificates are valid from five
// minutes before they are made, for clocks slightly behind.
const (
	CAValidity     = 365 * 24 * time.Hour
	ServerValidity = 90 * 24 * time.Hour
	ClientValidity = 90 * 24 * time.Hour
	backdate       = 5 * time.Minute
)

// DefaultHosts are the names a server certificate covers when given none.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// ClientID is what a client certificate identifies: a SPIFFE ID (the URI
// SAN), a common name, or both. One must be set.
type ClientID struct {
	SPIFFEID   string
	CommonName string
}

// GenerateCA makes an ECDSA P-256 CA valid for CAValidity, named name, and
// writes dir/ca.crt and dir/ca.key (0600), creating dir (0700) if needed.
// It refuses to overwrite either file.
func GenerateCA(dir, name string) (*x509.Certificate, crypto.Signer, error) {
	return generateCA(dir, name, time.Now())
}

func generateCA(dir, name string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if name == "" {
		return nil, nil, errors.New("generate CA: empty name")
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, nil, fmt.Errorf("generate CA: %s: %w", p, fs.ErrExist)
		}
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	cert, key, err := issue(tmpl, nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA: %w", err)
	}
	if err := writePair(certPath, keyPath, cert, key); err != nil {
		return nil, nil, fmt.Errorf("generate CA: %w", err)
	}
	return cert, key, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key, refusing a key file group or
// others may access and a key that is not the certificate's.
func LoadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	f, err := readFiles(Config{CertFile: certPath, KeyFile: keyPath})
	if err != nil {
		return nil, nil, fmt.Errorf("load CA %s: %w", dir, err)
	}
	pair, err := keyPair(f.cert, f.key)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA %s: %w", dir, err)
	}
	if !pair.Leaf.IsCA {
		return nil, nil, fmt.Errorf("load CA %s: %s is not a CA certificate", dir, certPath)
	}
	return pair.Leaf, pair.PrivateKey.(crypto.Signer), nil
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses; DefaultHosts if none), valid for ServerValidity, and writes
// dir/server.crt and dir/server.key (0600). Each file is replaced
// atomically (written aside, then renamed into place), so a running
// Manager reads either the old or the new file, never a partial one.
func IssueServer(dir string, caCert *x509.Certificate, caKey crypto.Signer, hosts []string) (*x509.Certificate, error) {
	return issueServer(dir, caCert, caKey, hosts, time.Now())
}

func issueServer(dir string, caCert *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time) (*x509.Certificate, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(ServerValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if validDNSName(h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		} else {
			return nil, fmt.Errorf("issue server certificate: %q is not a DNS name or IP address", h)
		}
	}
	cert, key, err := issue(tmpl, caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writePair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile), cert, key); err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	return cert, nil
}

// IssueClient issues a client certificate for id, valid for ClientValidity,
// and writes dir/name.crt and dir/name.key (0600). It refuses to overwrite
// either file.
func IssueClient(dir, name string, caCert *x509.Certificate, caKey crypto.Signer, id ClientID) (*x509.Certificate, error) {
	return issueClient(dir, name, caCert, caKey, id, time.Now())
}

func issueClient(dir, name string, caCert *x509.Certificate, caKey crypto.Signer, id ClientID, now time.Time) (*x509.Certificate, error) {
	if id.SPIFFEID == "" && id.CommonName == "" {
		return nil, errors.New("issue client certificate: set a SPIFFE ID or a common name")
	}
	if name == "" || strings.ContainsRune(name, filepath.Separator) {
		return nil, fmt.Errorf("issue client certificate: bad file name %q", name)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.CommonName},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(ClientValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if id.SPIFFEID != "" {
		u, err := url.Parse(id.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("issue client certificate: %w", err)
		}
		if err := validSPIFFEID(u); err != nil {
			return nil, fmt.Errorf("issue client certificate: %q: %w", id.SPIFFEID, err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("issue client certificate: %s: %w", p, fs.ErrExist)
		}
	}
	cert, key, err := issue(tmpl, caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("issue client certificate: %w", err)
	}
	if err := writePair(certPath, keyPath, cert, key); err != nil {
		return nil, fmt.Errorf("issue client certificate: %w", err)
	}
	return cert, nil
}

// issue makes a P-256 key and a certificate for it from tmpl, signed by
// parent (self-signed when parent is nil).
func issue(tmpl, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1)) // positive, never zero
	if parent == nil {
		parent, parentKey = tmpl, key
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter // not beyond the CA
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// writePair writes the key (0600) and then the certificate (0644), each
// atomically.
func writePair(certPath, keyPath string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

// writeFileAtomic writes data to a new file beside path with mode perm and
// renames it to path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// validDNSName accepts host names (letters, digits, '-', '.'), with an
// optional leading "*." wildcard label.
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
