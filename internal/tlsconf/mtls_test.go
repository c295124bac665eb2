package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

const aliceID = "spiffe://aegis.test/client/alice"

func TestClientAuth(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t) // a CA the server does not trust, with the same name
	valid := p.client(t, ClientID{SPIFFEID: aliceID, CommonName: "alice"})
	foreign := other.client(t, ClientID{SPIFFEID: aliceID, CommonName: "alice"})
	// The server's own certificate chains to the right CA but is not for
	// client authentication.
	serverAsClient, err := tls.LoadX509KeyPair(p.cfg.CertFile, p.cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		mode   string
		cert   *tls.Certificate // presented by the client; nil: none
		wantOK bool
		wantID string // SPIFFE ID of PeerChain's leaf; "" with wantOK: nil chain
	}{
		{"require, no certificate", ClientAuthRequire, nil, false, ""},
		{"require, certificate from another CA", ClientAuthRequire, &foreign, false, ""},
		{"require, server-only certificate", ClientAuthRequire, &serverAsClient, false, ""},
		{"require, valid certificate", ClientAuthRequire, &valid, true, aliceID},
		{"optional, no certificate", ClientAuthOptional, nil, true, ""},
		{"optional, certificate from another CA", ClientAuthOptional, &foreign, false, ""},
		{"optional, server-only certificate", ClientAuthOptional, &serverAsClient, false, ""},
		{"optional, valid certificate", ClientAuthOptional, &valid, true, aliceID},
		// With none the server asks for no certificate and the client
		// sends none.
		{"none, valid certificate", ClientAuthNone, &valid, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := p.cfg
			if tc.mode != ClientAuthNone {
				cfg = p.mtls(tc.mode)
			}
			m, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := serveRaw(t, m.TLSConfig())
			cc := p.clientConfig()
			if tc.cert != nil {
				// Present the certificate whatever CAs the server
				// names, as a hostile client would.
				cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return tc.cert, nil
				}
			}
			_, server, err := srv.dial(t, cc)
			if ok := err == nil && server.err == nil; ok != tc.wantOK {
				t.Fatalf("handshake ok = %v (client %v, server %v), want %v", ok, err, server.err, tc.wantOK)
			}
			if !tc.wantOK {
				return
			}
			chain := PeerChain(&server.state)
			if tc.wantID == "" {
				if chain != nil {
					t.Fatalf("PeerChain = %d certificates, want nil", len(chain))
				}
				return
			}
			if len(chain) != 2 {
				t.Fatalf("PeerChain = %d certificates, want leaf and CA", len(chain))
			}
			if !chain[1].Equal(p.caCert) {
				t.Errorf("chain ends at %s, want the test CA", chain[1].Subject)
			}
			if id, ok := SPIFFEID(chain[0]); !ok || id != tc.wantID {
				t.Errorf("SPIFFEID = %q, %v; want %q", id, ok, tc.wantID)
			}
			if chain[0].Subject.CommonName != "alice" {
				t.Errorf("CN = %q, want alice", chain[0].Subject.CommonName)
			}
		})
	}
}

func TestPeerChain(t *testing.T) {
	p := newPKI(t)
	c := p.client(t, ClientID{SPIFFEID: aliceID})
	tests := []struct {
		name  string
		state *tls.ConnectionState
		want  int // certificates
	}{
		{"not TLS", nil, 0},
		{"no client certificate", &tls.ConnectionState{}, 0},
		// Presented but not verified: never passed on.
		{"unverified certificate", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}, 0},
		{"verified chain", &tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{c.Leaf},
			VerifiedChains:   [][]*x509.Certificate{{c.Leaf, p.caCert}},
		}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PeerChain(tc.state); len(got) != tc.want {
				t.Errorf("PeerChain = %d certificates, want %d", len(got), tc.want)
			}
		})
	}
}

func TestSPIFFEID(t *testing.T) {
	tests := []struct {
		uris []string
		want string // "" for none
	}{
		{[]string{"spiffe://aegis.test/client/alice"}, "spiffe://aegis.test/client/alice"},
		{[]string{"spiffe://aegis.test"}, "spiffe://aegis.test"},
		{nil, ""},
		{[]string{"https://aegis.test/alice"}, ""},
		{[]string{"spiffe://aegis.test:8443/alice"}, ""},
		{[]string{"spiffe://user@aegis.test/alice"}, ""},
		{[]string{"spiffe://aegis.test/alice?x=1"}, ""},
		{[]string{"spiffe://aegis.test/alice#f"}, ""},
		{[]string{"spiffe://Aegis.Test/alice"}, ""},
		{[]string{"spiffe:///alice"}, ""},
		{[]string{"spiffe://aegis.test/a", "spiffe://aegis.test/b"}, ""},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.uris, ","), func(t *testing.T) {
			c := &x509.Certificate{}
			for _, s := range tc.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
			got, ok := SPIFFEID(c)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("SPIFFEID = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
