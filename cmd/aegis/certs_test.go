package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/tlsconf"
)

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	certs := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := run(append([]string{"certs"}, args...), &out, &errb)
		return out.String(), errb.String(), err
	}

	out, msgs, err := certs("init", "--dir", dir, "--hosts", "localhost,127.0.0.1", "--hosts", "aegis.internal")
	if err != nil {
		t.Fatalf("certs init: %v\n%s", err, msgs)
	}
	if !strings.Contains(msgs, "created local CA") || !strings.Contains(msgs, "issued server certificate") {
		t.Errorf("first init said %q", msgs)
	}
	if !strings.Contains(out, "cert_file: "+filepath.Join(dir, tlsconf.ServerCertFile)) {
		t.Errorf("init printed %q, want the cert_file to configure", out)
	}
	before, err := os.ReadFile(filepath.Join(dir, tlsconf.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	_, msgs, err = certs("init", "--dir", dir, "--hosts", "aegis.internal")
	if err != nil || !strings.Contains(msgs, "kept server certificate") {
		t.Fatalf("second init: %v %q, want the certificate kept", err, msgs)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, tlsconf.ServerCertFile)); !bytes.Equal(before, after) {
		t.Error("second init rewrote the server certificate")
	}

	const id = "spiffe://aegis.test/client/alice"
	prefix := filepath.Join(t.TempDir(), "alice")
	out, _, err = certs("client", "--dir", dir, "--spiffe-id", id, "--out", prefix)
	if err != nil || strings.TrimSpace(out) != prefix+".crt" {
		t.Fatalf("certs client: %v, printed %q", err, out)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("client key: %v, mode %v; want 0600", err, fi.Mode())
	}

	// What init and client wrote is what the server and its clients use.
	m, err := tlsconf.New(tlsconf.Config{
		CertFile: filepath.Join(dir, tlsconf.ServerCertFile), KeyFile: filepath.Join(dir, tlsconf.ServerKeyFile),
		ClientAuth: tlsconf.ClientAuthRequire, ClientCAFile: filepath.Join(dir, tlsconf.CACertFile),
	}, nil)
	if err != nil {
		t.Fatalf("serving the init output: %v", err)
	}
	if got := strings.Join(m.Status().DNSNames, ","); got != "localhost,aegis.internal" {
		t.Errorf("server DNS names %s, want localhost,aegis.internal", got)
	}
	caCert, _, err := tlsconf.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(prefix + ".crt")
	if err != nil {
		t.Fatal(err)
	}
	client, err := x509.ParseCertificate(pemBody(t, b))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if got, ok := tlsconf.SPIFFEID(client); !ok || got != id {
		t.Errorf("client SPIFFE ID %q, want %q", got, id)
	}

	bad := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "usage"},
		{"unknown subcommand", []string{"renew"}, `unknown certs command "renew"`},
		{"init without dir", []string{"init"}, "usage: aegis certs init"},
		{"client without identity", []string{"client", "--dir", dir}, "usage: aegis certs client"},
		{"client over existing files", []string{"client", "--dir", dir, "--cn", "alice", "--out", prefix}, "exists"},
		{"client with a non-SPIFFE URI", []string{"client", "--dir", dir, "--spiffe-id", "https://x/y", "--out", prefix + "2"}, "scheme must be spiffe"},
		{"client without a CA", []string{"client", "--dir", t.TempDir(), "--cn", "bob"}, "load CA"},
		{"init with a bad host", []string{"init", "--dir", t.TempDir(), "--hosts", "a b"}, "not a DNS name"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := certs(tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("certs %q: %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
	if err := run([]string{"certs", "init", "--help"}, io.Discard, io.Discard); err == nil {
		t.Error("--help: want flag.ErrHelp")
	}
}

func pemBody(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatal("no certificate PEM")
	}
	return block.Bytes
}
