package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGeneratedFiles(t *testing.T) {
	p := newPKI(t)
	c, err := IssueClient(p.dir, "alice", p.caCert, p.caKey, ClientID{SPIFFEID: aliceID})
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{
		CACertFile: 0o644, CAKeyFile: 0o600,
		ServerCertFile: 0o644, ServerKeyFile: 0o600,
		"alice.crt": 0o644, "alice.key": 0o600,
	}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(p.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", name, got, want)
		}
	}

	server, err := tlsLeaf(p.cfg.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	tests := []struct {
		name     string
		cert     *x509.Certificate
		usage    x509.ExtKeyUsage
		validity time.Duration
	}{
		{"server", server, x509.ExtKeyUsageServerAuth, ServerValidity},
		{"client", c, x509.ExtKeyUsageClientAuth, ClientValidity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("does not verify for %v: %v", tc.usage, err)
			}
			if got := tc.cert.NotAfter.Sub(tc.cert.NotBefore); got != tc.validity+backdate {
				t.Errorf("valid for %s, want %s", got, tc.validity+backdate)
			}
			pub, ok := tc.cert.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("key %T, want ECDSA P-256", tc.cert.PublicKey)
			}
		})
	}
	for _, h := range DefaultHosts {
		if err := server.VerifyHostname(h); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if !p.caCert.IsCA || !p.caCert.MaxPathLenZero || p.caCert.NotAfter.Sub(p.caCert.NotBefore) != CAValidity+backdate {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v, validity %s", p.caCert.IsCA, p.caCert.MaxPathLenZero, p.caCert.NotAfter.Sub(p.caCert.NotBefore))
	}
	if id, ok := SPIFFEID(c); !ok || id != aliceID {
		t.Errorf("client SPIFFEID = %q, %v", id, ok)
	}

	// Loading the CA back gives the same certificate and a matching key.
	caCert, caKey, err := LoadCA(p.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.Equal(p.caCert) || !caKey.Public().(*ecdsa.PublicKey).Equal(p.caCert.PublicKey) {
		t.Error("LoadCA returned another CA")
	}
}

func tlsLeaf(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertificates(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func TestIssueRefusals(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name string
		err  func() error
		want string
		is   error
	}{
		{"CA over an existing CA", func() error { _, _, err := GenerateCA(p.dir, "again"); return err }, "", fs.ErrExist},
		{"client without identity", func() error {
			_, err := IssueClient(p.dir, "x", p.caCert, p.caKey, ClientID{})
			return err
		}, "SPIFFE ID or a common name", nil},
		{"client over existing files", func() error {
			if _, err := IssueClient(p.dir, "dup", p.caCert, p.caKey, ClientID{CommonName: "dup"}); err != nil {
				return err
			}
			_, err := IssueClient(p.dir, "dup", p.caCert, p.caKey, ClientID{CommonName: "dup"})
			return err
		}, "", fs.ErrExist},
		{"client with an https URI", func() error {
			_, err := IssueClient(p.dir, "y", p.caCert, p.caKey, ClientID{SPIFFEID: "https://example.com/alice"})
			return err
		}, "scheme must be spiffe", nil},
		{"client file name with a slash", func() error {
			_, err := IssueClient(p.dir, "a/b", p.caCert, p.caKey, ClientID{CommonName: "a"})
			return err
		}, "bad file name", nil},
		{"server with a bad host", func() error {
			_, err := IssueServer(t.TempDir(), p.caCert, p.caKey, []string{"bad host"})
			return err
		}, "not a DNS name or IP address", nil},
		{"CA key readable by others", func() error {
			if err := os.Chmod(filepath.Join(p.dir, CAKeyFile), 0o644); err != nil {
				return err
			}
			defer os.Chmod(filepath.Join(p.dir, CAKeyFile), 0o600)
			_, _, err := LoadCA(p.dir)
			return err
		}, "", ErrInsecureKeyFile},
		{"server certificate as a CA", func() error {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, CACertFile), readFile(t, p.cfg.CertFile), 0o644)
			writeFile(t, filepath.Join(dir, CAKeyFile), readFile(t, p.cfg.KeyFile), 0o600)
			_, _, err := LoadCA(dir)
			return err
		}, "not a CA certificate", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatal("succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestInitDir(t *testing.T) {
	now := time.Now()
	dir := filepath.Join(t.TempDir(), "tls")
	all := []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile}
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, f := range all {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err == nil {
				m[f] = string(b)
			}
		}
		return m
	}

	res, err := initDir(dir, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if !res.CACreated || !res.ServerIssued || res.Reason != "no server certificate" {
		t.Fatalf("first run: %+v, want CA created and server issued", res)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, mode %v; want 0700", err, fi.Mode())
	}
	first := snapshot()
	if len(first) != len(all) {
		t.Fatalf("files after the first run: %d, want %d", len(first), len(all))
	}

	steps := []struct {
		name       string
		prepare    func(t *testing.T)
		hosts      []string
		at         time.Time
		wantIssued bool
		wantReason string
	}{
		{"again: nothing to do", nil, nil, now, false, ""},
		{"same hosts named explicitly", nil, []string{"localhost", "127.0.0.1"}, now, false, ""},
		{"a new host", nil, []string{"localhost", "aegis.internal"}, now, true, "does not cover aegis.internal"},
		{"back to the defaults", nil, nil, now, true, "does not cover 127.0.0.1"},
		{"61 days on: expires within 30 days", nil, nil, now.Add(61 * 24 * time.Hour), true, "expires"},
		{"key made readable by others", func(t *testing.T) {
			if err := os.Chmod(filepath.Join(dir, ServerKeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}, nil, now.Add(61 * 24 * time.Hour), true, "0644"},
		{"server key lost", func(t *testing.T) {
			if err := os.Remove(filepath.Join(dir, ServerKeyFile)); err != nil {
				t.Fatal(err)
			}
		}, nil, now.Add(61 * 24 * time.Hour), true, "key_file"},
		{"200 days on: expired", nil, nil, now.Add(200 * 24 * time.Hour), true, "expire"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.prepare != nil {
				st.prepare(t)
			}
			before := snapshot()
			res, err := initDir(dir, st.hosts, st.at)
			if err != nil {
				t.Fatal(err)
			}
			after := snapshot()
			if res.CACreated || after[CACertFile] != first[CACertFile] || after[CAKeyFile] != first[CAKeyFile] {
				t.Error("the CA changed")
			}
			if res.ServerIssued != st.wantIssued || !strings.Contains(res.Reason, st.wantReason) {
				t.Errorf("issued %v (%q), want %v (%q)", res.ServerIssued, res.Reason, st.wantIssued, st.wantReason)
			}
			changed := after[ServerCertFile] != before[ServerCertFile]
			if changed != st.wantIssued {
				t.Errorf("server certificate changed: %v, want %v", changed, st.wantIssued)
			}
			if _, err := newManager(Config{CertFile: filepath.Join(dir, ServerCertFile), KeyFile: filepath.Join(dir, ServerKeyFile)}, nil, func() time.Time { return st.at }); err != nil {
				t.Errorf("the result does not load: %v", err)
			}
		})
	}

	t.Run("expired CA is an error, not replaced", func(t *testing.T) {
		before := snapshot()
		_, err := initDir(dir, nil, now.Add(400*24*time.Hour))
		if !errors.Is(err, ErrExpired) {
			t.Errorf("initDir: %v, want ErrExpired", err)
		}
		if after := snapshot(); after[CACertFile] != before[CACertFile] {
			t.Error("the CA was replaced")
		}
	})
	t.Run("half a CA is an error", func(t *testing.T) {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, CACertFile), []byte(first[CACertFile]), 0o644)
		if _, err := InitDir(d, nil); err == nil || !strings.Contains(err.Error(), "only one of") {
			t.Errorf("InitDir: %v, want a half-CA error", err)
		}
	})
}
