package tlsconf

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVersions(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name       string
		minVersion string // server
		clientMax  uint16
		wantOK     bool
		want       uint16 // negotiated version
	}{
		{"default server, any client: TLS 1.3", "", 0, true, tls.VersionTLS13},
		{"default server refuses a TLS 1.2 client", "", tls.VersionTLS12, false, 0},
		{"default server refuses a TLS 1.1 client", "", tls.VersionTLS11, false, 0},
		{"1.2 server, any client: TLS 1.3", Version12, 0, true, tls.VersionTLS13},
		{"1.2 server accepts a TLS 1.2 client", Version12, tls.VersionTLS12, true, tls.VersionTLS12},
		{"1.2 server refuses a TLS 1.1 client", Version12, tls.VersionTLS11, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := p.cfg
			cfg.MinVersion = tc.minVersion
			m, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := serveRaw(t, m.TLSConfig())
			cc := p.clientConfig()
			cc.MinVersion = tls.VersionTLS10
			cc.MaxVersion = tc.clientMax
			got, server, err := srv.dial(t, cc)
			if tc.wantOK {
				if err != nil || server.err != nil {
					t.Fatalf("handshake: client %v, server %v; want success", err, server.err)
				}
				if got.Version != tc.want {
					t.Errorf("version = %s, want %s", tls.VersionName(got.Version), tls.VersionName(tc.want))
				}
				return
			}
			if err == nil || server.err == nil {
				t.Fatalf("handshake succeeded (client %v, server %v, version %s); want it refused", err, server.err, tls.VersionName(got.Version))
			}
			if !strings.Contains(server.err.Error(), "version") {
				t.Errorf("server error = %v, want a protocol version error", server.err)
			}
		})
	}
}

func TestTLS12CipherSuites(t *testing.T) {
	p := newPKI(t)
	ecdsaCfg := p.cfg
	ecdsaCfg.MinVersion = Version12
	rsaCfg := rsaServerConfig(t, p)
	rsaCfg.MinVersion = Version12

	tests := []struct {
		name   string
		server Config
		suites []uint16 // all the client offers, TLS 1.2 only
		wantOK bool
	}{
		{"ECDHE-ECDSA AES-128-GCM", ecdsaCfg, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"ECDHE-ECDSA AES-256-GCM", ecdsaCfg, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}, true},
		{"ECDHE-ECDSA ChaCha20-Poly1305", ecdsaCfg, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"ECDHE-ECDSA CBC-SHA", ecdsaCfg, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}, false},
		{"ECDHE-ECDSA CBC-SHA256", ecdsaCfg, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}, false},
		{"ECDHE-RSA AES-128-GCM", rsaCfg, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, true},
		{"ECDHE-RSA ChaCha20-Poly1305", rsaCfg, []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"ECDHE-RSA CBC-SHA", rsaCfg, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}, false},
		{"RSA key exchange AES-GCM", rsaCfg, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}, false},
		{"RSA key exchange CBC", rsaCfg, []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.server, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := serveRaw(t, m.TLSConfig())
			cc := p.clientConfig()
			cc.MaxVersion = tls.VersionTLS12
			cc.CipherSuites = tc.suites
			got, server, err := srv.dial(t, cc)
			if ok := err == nil && server.err == nil; ok != tc.wantOK {
				t.Fatalf("handshake ok = %v (client %v, server %v), want %v", ok, err, server.err, tc.wantOK)
			}
			if tc.wantOK && got.CipherSuite != tc.suites[0] {
				t.Errorf("suite = %s, want %s", tls.CipherSuiteName(got.CipherSuite), tls.CipherSuiteName(tc.suites[0]))
			}
		})
	}

	// The refusals above are this package's doing: Go's own defaults
	// still accept ECDHE CBC-SHA suites.
	t.Run("control: Go's default server accepts CBC-SHA", func(t *testing.T) {
		pair, err := tls.LoadX509KeyPair(p.cfg.CertFile, p.cfg.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		srv := serveRaw(t, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}})
		cc := p.clientConfig()
		cc.MaxVersion = tls.VersionTLS12
		cc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		if _, server, err := srv.dial(t, cc); err != nil || server.err != nil {
			t.Fatalf("handshake: client %v, server %v; want Go's defaults to accept CBC-SHA", err, server.err)
		}
	})
}

// rsaServerConfig writes a 2048-bit RSA server certificate for localhost
// signed by p's CA.
func rsaServerConfig(t *testing.T, p *pki) Config {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.cfg
	cfg.CertFile = filepath.Join(p.dir, "rsa.crt")
	cfg.KeyFile = filepath.Join(p.dir, "rsa.key")
	writeFile(t, cfg.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	writeFile(t, cfg.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return cfg
}

// TestHTTPServer serves net/http with the Manager's configuration: HTTP/2
// and HTTP/1.1 clients are served over TLS 1.3, and a plain-HTTP request
// to the port gets net/http's 400 without disturbing the server.
func TestHTTPServer(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello "+r.Proto)
		}),
		TLSConfig: m.TLSConfig(),
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	addr := ln.Addr().String()

	get := func(t *testing.T, c *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.TLS != nil && resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("TLS version %s, want TLS 1.3", tls.VersionName(resp.TLS.Version))
		}
		return resp.StatusCode, string(b)
	}
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(), ForceAttemptHTTP2: true}}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientConfig(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	plain := &http.Client{Transport: &http.Transport{}}

	tests := []struct {
		name     string
		client   *http.Client
		url      string
		wantCode int
		wantBody string
	}{
		{"HTTP/2 over TLS", h2, "https://" + addr + "/", 200, "hello HTTP/2.0"},
		{"HTTP/1.1 over TLS", h1, "https://" + addr + "/", 200, "hello HTTP/1.1"},
		{"plain HTTP to the TLS port", plain, "http://" + addr + "/", 400, "Client sent an HTTP request to an HTTPS server.\n"},
		{"still serving after plain HTTP", h2, "https://" + addr + "/", 200, "hello HTTP/2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.client, tc.url)
			if code != tc.wantCode || body != tc.wantBody {
				t.Errorf("got %d %q, want %d %q", code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

func TestALPN(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		server []string // TLSConfig's arguments
		client []string
		want   string // negotiated; "" with wantOK false: refused
		wantOK bool
	}{
		{"REST default, h2 client", nil, []string{"h2", "http/1.1"}, "h2", true},
		{"REST default, HTTP/1.1 client", nil, []string{"http/1.1"}, "http/1.1", true},
		{"REST default, no ALPN", nil, nil, "", true},
		{"gRPC h2, h2 client", []string{"h2"}, []string{"h2"}, "h2", true},
		// crypto/tls lets an HTTP/1.1 client on as if it had no ALPN
		// (Go issue 46310); grpc-go then refuses the connection for
		// lacking h2 (TestGRPC).
		{"gRPC h2, HTTP/1.1-only client: no protocol", []string{"h2"}, []string{"http/1.1"}, "", true},
		{"gRPC h2 refuses other protocols", []string{"h2"}, []string{"spdy/3"}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveRaw(t, m.TLSConfig(tc.server...))
			cc := p.clientConfig()
			cc.NextProtos = tc.client
			got, server, err := srv.dial(t, cc)
			if ok := err == nil && server.err == nil; ok != tc.wantOK {
				t.Fatalf("handshake ok = %v (client %v, server %v), want %v", ok, err, server.err, tc.wantOK)
			}
			if got.NegotiatedProtocol != tc.want {
				t.Errorf("negotiated %q, want %q", got.NegotiatedProtocol, tc.want)
			}
		})
	}
}
