package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// issue makes a certificate for tmpl signed by parent (self-signed if
// parent is nil) and returns it parsed, with its key.
func issue(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(time.Hour).Truncate(time.Second)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func uris(t testing.TB, raw ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

func TestMTLS(t *testing.T) {
	subject := pkix.Name{CommonName: "batch-client", Organization: []string{"Acme"}}
	tests := []struct {
		name    string
		subject pkix.Name
		uris    []string
		id      string
		reason  string
	}{
		{name: "spiffe id", subject: subject, uris: []string{"spiffe://prod.acme.example/ns/ml/sa/batch"}, id: "spiffe://prod.acme.example/ns/ml/sa/batch"},
		{name: "spiffe id and an https uri", uris: []string{"https://acme.example/x", "spiffe://acme.example/svc"}, id: "spiffe://acme.example/svc"},
		{name: "no uri: subject DN", subject: subject, id: "cert:CN=batch-client,O=Acme"},
		{name: "only a non-spiffe uri: subject DN", subject: subject, uris: []string{"https://acme.example/x"}, id: "cert:CN=batch-client,O=Acme"},
		{name: "two spiffe ids", subject: subject, uris: []string{"spiffe://acme.example/a", "spiffe://acme.example/b"}, reason: reasonMTLSManySPIFFE},
		{name: "the same spiffe id twice", uris: []string{"spiffe://acme.example/a", "spiffe://acme.example/a"}, reason: reasonMTLSManySPIFFE},
		{name: "spiffe id with a port", uris: []string{"spiffe://acme.example:443/a"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with a query", uris: []string{"spiffe://acme.example/a?admin=1"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with user info", uris: []string{"spiffe://admin@acme.example/a"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with upper case trust domain", uris: []string{"spiffe://ACME.example/a"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with a dot-dot segment", uris: []string{"spiffe://acme.example/a/../admin"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with an empty segment", uris: []string{"spiffe://acme.example/a//b"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id with an escaped slash", uris: []string{"spiffe://acme.example/a%2Fb"}, reason: reasonMTLSBadSPIFFE},
		{name: "spiffe id without trust domain", uris: []string{"spiffe:///a"}, reason: reasonMTLSBadSPIFFE},
		{name: "no identity at all", reason: reasonMTLSNoIdentity},
		{name: "subject with a newline", subject: pkix.Name{CommonName: "a\nCN=admin"}, reason: reasonMTLSBadSubject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, _ := issue(t, &x509.Certificate{Subject: tt.subject, URIs: uris(t, tt.uris...)}, nil, nil)
			p, err := MTLS{}.Authenticate(context.Background(), Credentials{PeerCertificates: []*x509.Certificate{cert}})
			if tt.reason != "" {
				if got := reasonOf(err); got != tt.reason || p != nil {
					t.Errorf("got %q, want %q", got, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != tt.id || p.Method != pipeline.MethodMTLS || !p.Expires.Equal(cert.NotAfter) {
				t.Errorf("got %+v, want ID %q, Method mtls, Expires %v", p, tt.id, cert.NotAfter)
			}
		})
	}
}

func TestMTLSNoCertificate(t *testing.T) {
	for _, chain := range [][]*x509.Certificate{nil, {}, {nil}} {
		if _, err := (MTLS{}).Authenticate(context.Background(), Credentials{PeerCertificates: chain, Authorization: "Bearer x"}); err != ErrNoCredential {
			t.Errorf("chain %v: got %v, want ErrNoCredential", chain, err)
		}
	}
}

// The authenticator reads what a real TLS handshake verified: a client
// certificate issued by the client CA, over loopback.
func TestMTLSOverTLS(t *testing.T) {
	ca, caKey := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "client CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, nil)
	server, serverKey := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "aegis"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, caKey)
	client, clientKey := issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "c"}, URIs: uris(t, "spiffe://acme.example/batch"),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan Credentials, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			close(got)
			return
		}
		cs := tc.ConnectionState()
		got <- Credentials{PeerCertificates: cs.VerifiedChains[0]}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	creds, ok := <-got
	if !ok {
		t.Fatal("server handshake failed")
	}
	p, err := MTLS{}.Authenticate(context.Background(), creds)
	if err != nil || p.ID != "spiffe://acme.example/batch" {
		t.Errorf("got %+v, %v; want spiffe://acme.example/batch", p, err)
	}
}
