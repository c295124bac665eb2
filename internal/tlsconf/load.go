package tlsconf

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// maxFileBytes bounds every file a Manager reads.
const maxFileBytes = 1 << 20

// digest identifies the contents of the certificate, key and CA files.
type digest [sha256.Size]byte

// snapshot is one loaded set of files. It is never changed once loaded.
type snapshot struct {
	cert     *tls.Certificate    // Leaf is set
	pool     *x509.CertPool      // nil without client authentication
	cas      []*x509.Certificate // what pool holds
	digest   digest
	loadedAt time.Time
}

// files is what one read of the configured files returned.
type files struct {
	cert, key, ca []byte
}

func (f files) digest() digest {
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.ca} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return digest(h.Sum(nil))
}

// pollDigest hashes the files as they are now, without checking them: a
// missing or unreadable file hashes as empty. It is how Run notices a
// change; load then reads and checks the files properly.
func pollDigest(cfg Config) digest {
	read := func(path string) []byte {
		if path == "" {
			return nil
		}
		b, _ := readLimited(path)
		return b
	}
	return files{read(cfg.CertFile), read(cfg.KeyFile), read(cfg.ClientCAFile)}.digest()
}

// readFiles reads the configured files, refusing a key file that is not
// private to its owner. Links are followed, so a Kubernetes secret volume
// (links swapped atomically) works; the mode checked is the target's.
func readFiles(cfg Config) (files, error) {
	var f files
	var err error
	if f.cert, err = readLimited(cfg.CertFile); err != nil {
		return f, fmt.Errorf("cert_file: %w", err)
	}
	if f.key, err = readKeyFile(cfg.KeyFile); err != nil {
		return f, fmt.Errorf("key_file: %w", err)
	}
	if cfg.ClientCAFile != "" {
		if f.ca, err = readLimited(cfg.ClientCAFile); err != nil {
			return f, fmt.Errorf("client_ca_file: %w", err)
		}
	}
	return f, nil
}

func readLimited(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return readAllLimited(fh, path)
}

func readAllLimited(r io.Reader, path string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileBytes)
	}
	return b, nil
}

// readKeyFile checks the mode of the file it opened (not of the path, which
// may have changed since) and reads it.
func readKeyFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInsecureKeyFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600 or stricter", ErrInsecureKeyFile, path, perm)
	}
	return readAllLimited(fh, path)
}

// load reads and checks the configured files.
func load(cfg Config, now time.Time) (*snapshot, error) {
	f, err := readFiles(cfg)
	if err != nil {
		return nil, err
	}
	return parse(cfg, f, now)
}

func parse(cfg Config, f files, now time.Time) (*snapshot, error) {
	cert, err := keyPair(f.cert, f.key)
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("cert_file %s: %w (not after %s)", cfg.CertFile, ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if !usableForServer(leaf) {
		return nil, fmt.Errorf("cert_file %s: extended key usage does not include server authentication", cfg.CertFile)
	}
	s := &snapshot{cert: cert, digest: f.digest(), loadedAt: now}
	if cfg.ClientCAFile != "" {
		cas, err := parseCertificates(f.ca)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file %s: %w", cfg.ClientCAFile, err)
		}
		s.pool = x509.NewCertPool()
		for _, c := range cas {
			s.pool.AddCert(c)
		}
		s.cas = cas
	}
	return s, nil
}

func usableForServer(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// keyPair parses a certificate chain (leaf first) and its key, and checks
// that the key is the leaf's. Its errors never quote the key.
func keyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, ErrKeyMismatch
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// parseCertificates parses a PEM bundle of one or more certificates.
// Anything else in the bundle (another block type, text after the last
// block) is an error, so a truncated or mixed-up file is noticed.
func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%d bytes after the last PEM certificate are not PEM", len(bytes.TrimSpace(rest)))
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// parsePrivateKey parses the first private key block of a PEM file (PKCS #8,
// PKCS #1 or SEC 1; an "EC PARAMETERS" block before it is skipped).
// Encrypted keys and RSA keys under 2048 bits are refused.
func parsePrivateKey(b []byte) (crypto.Signer, error) {
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["Proc-Type"]; encrypted {
				return nil, errors.New("encrypted PEM keys are not supported")
			}
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PEM keys are not supported")
		default:
			return nil, fmt.Errorf("PEM block is %q, want a private key", block.Type)
		}
		if err != nil {
			// The parsers' errors describe the structure, not the key.
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("RSA key of %d bits, want 2048 or more", k.N.BitLen())
			}
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}
