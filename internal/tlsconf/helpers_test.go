package tlsconf

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// pki is a local CA in a temporary directory, with a server certificate
// for localhost, 127.0.0.1 and ::1.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  crypto.Signer
	pool   *x509.CertPool // holds caCert
	cfg    Config         // serves dir's server certificate, TLS 1.3, no client auth
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey, err := GenerateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := IssueServer(dir, caCert, caKey, nil); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &pki{
		dir: dir, caCert: caCert, caKey: caKey, pool: pool,
		cfg: Config{
			CertFile:       filepath.Join(dir, ServerCertFile),
			KeyFile:        filepath.Join(dir, ServerKeyFile),
			ReloadInterval: 20 * time.Millisecond,
		},
	}
}

// client issues a client certificate for id and returns it loaded.
func (p *pki) client(t *testing.T, id ClientID) tls.Certificate {
	t.Helper()
	name := "client-" + hex.EncodeToString(randBytes(t, 4))
	if _, err := IssueClient(p.dir, name, p.caCert, p.caKey, id); err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mtls returns p.cfg with client authentication mode and p's CA as the
// client CA bundle.
func (p *pki) mtls(mode string) Config {
	c := p.cfg
	c.ClientAuth = mode
	c.ClientCAFile = filepath.Join(p.dir, CACertFile)
	return c
}

// clientConfig trusts p's CA and names localhost.
func (p *pki) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: "localhost"}
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuffer collects a Manager's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startManager starts a Manager for cfg whose Run loop stops with the test.
func startManager(t *testing.T, cfg Config, log *slog.Logger) *Manager {
	t.Helper()
	m, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// handshake is what the server side of one connection saw.
type handshake struct {
	state tls.ConnectionState
	err   error
}

// rawServer accepts TLS connections on loopback, reports each server-side
// handshake on results and, after a successful one, writes "ok\n".
type rawServer struct {
	addr    string
	results chan handshake
}

func serveRaw(t *testing.T, cfg *tls.Config) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String(), results: make(chan handshake, 64)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, cfg)
				err := tc.Handshake()
				s.results <- handshake{tc.ConnectionState(), err}
				if err == nil {
					tc.Write([]byte("ok\n"))
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return s
}

// dial connects with cfg and reads the server's "ok": with TLS 1.3 a
// client's handshake completes before the server has checked the client's
// certificate, so a refusal shows on the first read. It returns the
// client's view of the connection and the server's.
func (s *rawServer) dial(t *testing.T, cfg *tls.Config) (client tls.ConnectionState, server handshake, err error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.addr, cfg)
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var line string
		line, err = bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ok\n" {
			err = errors.New("server did not answer ok")
		}
		client = c.ConnectionState()
		c.Close()
	}
	select {
	case server = <-s.results:
	case <-time.After(5 * time.Second):
		t.Fatal("no server-side handshake result")
	}
	return client, server, err
}

// leafSHA256 is the fingerprint of the certificate a server presented.
func leafSHA256(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	sum := sha256.Sum256(st.PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

// eventually polls cond until it holds or five seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := writeFileAtomic(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
