package tlsconf

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// TestGRPC serves the standard health service with grpc-go over the
// Manager's configuration for "h2", with mutual TLS required, and checks
// the connection both ends see.
func TestGRPC(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.mtls(ClientAuthRequire), nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var callers []string // SPIFFE IDs the server saw, through PeerChain
	identify := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		id := "(none)"
		if pr, ok := peer.FromContext(ctx); ok {
			if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
				if chain := PeerChain(&info.State); chain != nil {
					id, _ = SPIFFEID(chain[0])
				}
			}
		}
		mu.Lock()
		callers = append(callers, id)
		mu.Unlock()
		return next(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(m.TLSConfig("h2"))), grpc.UnaryInterceptor(identify))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	alice := p.client(t, ClientID{SPIFFEID: aliceID})
	check := func(t *testing.T, cc *tls.Config) (*peer.Peer, error) {
		t.Helper()
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var pr peer.Peer
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&pr))
		if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %s, want SERVING", resp.Status)
		}
		return &pr, err
	}

	t.Run("client certificate, TLS 1.3, h2", func(t *testing.T) {
		cc := p.clientConfig()
		cc.ServerName = "" // grpc-go names the server from the address: 127.0.0.1
		cc.Certificates = []tls.Certificate{alice}
		pr, err := check(t, cc)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		info, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok {
			t.Fatalf("AuthInfo is %T, want credentials.TLSInfo", pr.AuthInfo)
		}
		if info.State.Version != tls.VersionTLS13 || info.State.NegotiatedProtocol != "h2" {
			t.Errorf("connection: %s %q, want TLS 1.3 \"h2\"", tls.VersionName(info.State.Version), info.State.NegotiatedProtocol)
		}
		if got := leafSHA256(info.State); got != m.Status().SHA256 {
			t.Errorf("server presented %s, want %s", got, m.Status().SHA256)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(callers) != 1 || callers[0] != aliceID {
			t.Errorf("server saw callers %q, want [%s]", callers, aliceID)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cc := p.clientConfig()
		cc.ServerName = ""
		if _, err := check(t, cc); err == nil {
			t.Fatal("Check succeeded without a client certificate")
		}
	})
	t.Run("client limited to TLS 1.2", func(t *testing.T) {
		cc := p.clientConfig()
		cc.ServerName = ""
		cc.Certificates = []tls.Certificate{alice}
		cc.MaxVersion = tls.VersionTLS12
		_, err := check(t, cc)
		if err == nil || !strings.Contains(err.Error(), "version") {
			t.Fatalf("Check: %v, want a protocol version error", err)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if len(callers) != 1 {
		t.Errorf("the service was reached %d times, want once", len(callers))
	}
}

// TestOneManagerBothListeners: the same Manager serves an HTTP/1.1-capable
// REST listener and an h2-only gRPC listener, and grpc-go refuses a
// connection that negotiated no protocol.
func TestOneManagerBothListeners(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rest := m.TLSConfig()
	creds := credentials.NewTLS(m.TLSConfig("h2"))
	if got := strings.Join(rest.NextProtos, ","); got != "h2,http/1.1" {
		t.Errorf("REST NextProtos = %s, want h2,http/1.1", got)
	}
	if got := creds.Info().SecurityProtocol; got != "tls" {
		t.Errorf("gRPC credentials protocol %q", got)
	}

	// An HTTP/1.1-only TLS client reaching the gRPC port: crypto/tls
	// completes the handshake without ALPN, and grpc-go's server
	// handshake refuses it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	handshake := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			handshake <- err
			return
		}
		_, _, err = creds.ServerHandshake(c)
		c.Close()
		handshake <- err
	}()
	cc := p.clientConfig()
	cc.NextProtos = []string{"http/1.1"}
	if c, err := tls.Dial("tcp", ln.Addr().String(), cc); err == nil {
		c.Close()
	}
	select {
	case err := <-handshake:
		if err == nil || !strings.Contains(err.Error(), "ALPN") {
			t.Errorf("grpc-go server handshake: %v, want an ALPN refusal", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no server handshake")
	}
}
