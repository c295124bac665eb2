package tlsconf

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// presented dials srv and returns the fingerprint of the certificate the
// server presented.
func presented(t *testing.T, p *pki, srv *rawServer) string {
	t.Helper()
	got, server, err := srv.dial(t, p.clientConfig())
	if err != nil || server.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, server.err)
	}
	return leafSHA256(got)
}

// issueAside issues a new server certificate into a fresh directory and
// returns its cert and key paths.
func issueAside(t *testing.T, p *pki) (certPath, keyPath, sha string) {
	t.Helper()
	dir := t.TempDir()
	c, err := IssueServer(dir, p.caCert, p.caKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile), fingerprint(c)
}

func TestReloadRenameIntoPlace(t *testing.T) {
	p := newPKI(t)
	var logs logBuffer
	m := startManager(t, p.cfg, logs.logger())
	srv := serveRaw(t, m.TLSConfig())
	old := presented(t, p, srv)
	if old != m.Status().SHA256 {
		t.Fatalf("presented %s, Status says %s", old, m.Status().SHA256)
	}

	// The key first, then the certificate, long enough apart that the
	// mismatched pair is tried (and refused) in between.
	newCert, newKey, want := issueAside(t, p)
	if err := os.Rename(newKey, p.cfg.KeyFile); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * p.cfg.ReloadInterval)
	if err := os.Rename(newCert, p.cfg.CertFile); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new certificate", func() bool { return presented(t, p, srv) == want })
	st := m.Status()
	if st.SHA256 != want || st.Reloads < 1 {
		t.Errorf("Status: sha256 %s, reloads %d; want %s, at least 1", st.SHA256, st.Reloads, want)
	}
	if st.LastReloadError != "" {
		t.Errorf("LastReloadError = %q after the pair was complete, want none", st.LastReloadError)
	}
	if !strings.Contains(logs.String(), "tls certificate reloaded") {
		t.Errorf("no reload logged:\n%s", logs.String())
	}
}

// TestReloadSymlinkSwap rotates files the way Kubernetes updates a secret
// volume: the configured paths are links through "..data", which is
// swapped to a new directory in one rename.
func TestReloadSymlinkSwap(t *testing.T) {
	p := newPKI(t)
	vol := t.TempDir()
	version := func(name, certPath, keyPath string) {
		t.Helper()
		d := filepath.Join(vol, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, "tls.crt"), readFile(t, certPath), 0o644)
		writeFile(t, filepath.Join(d, "tls.key"), readFile(t, keyPath), 0o600)
	}
	swap := func(name string) {
		t.Helper()
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", p.cfg.CertFile, p.cfg.KeyFile)
	swap("..v1")
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(vol, f)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := p.cfg
	cfg.CertFile, cfg.KeyFile = filepath.Join(vol, "tls.crt"), filepath.Join(vol, "tls.key")
	m := startManager(t, cfg, nil)
	srv := serveRaw(t, m.TLSConfig())
	old := presented(t, p, srv)

	newCert, newKey, want := issueAside(t, p)
	if want == old {
		t.Fatal("the new certificate is the old one")
	}
	version("..v2", newCert, newKey)
	swap("..v2")
	eventually(t, "the new certificate", func() bool { return presented(t, p, srv) == want })
	if err := os.RemoveAll(filepath.Join(vol, "..v1")); err != nil {
		t.Fatal(err)
	}
	if got := presented(t, p, srv); got != want {
		t.Errorf("after removing the old version: presented %s, want %s", got, want)
	}
}

// TestReloadClientCAs: a new CA bundle applies to new handshakes.
func TestReloadClientCAs(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	cfg := p.mtls(ClientAuthRequire)
	cfg.ClientCAFile = filepath.Join(t.TempDir(), "clients.pem")
	writeFile(t, cfg.ClientCAFile, readFile(t, filepath.Join(p.dir, CACertFile)), 0o644)
	m := startManager(t, cfg, nil)
	srv := serveRaw(t, m.TLSConfig())
	cc := p.clientConfig()
	cc.Certificates = []tls.Certificate{other.client(t, ClientID{SPIFFEID: aliceID})}

	if _, server, err := srv.dial(t, cc); err == nil || server.err == nil {
		t.Fatal("a client of the other CA got in before the bundle named it")
	}
	both := append(readFile(t, filepath.Join(p.dir, CACertFile)), readFile(t, filepath.Join(other.dir, CACertFile))...)
	writeFile(t, cfg.ClientCAFile, both, 0o644)
	eventually(t, "the new CA bundle", func() bool { return len(m.Status().ClientCAs) == 2 })
	if _, server, err := srv.dial(t, cc); err != nil || server.err != nil {
		t.Fatalf("after adding its CA: client %v, server %v; want success", err, server.err)
	}
}

func TestReloadBrokenKeepsCurrent(t *testing.T) {
	p := newPKI(t)
	otherCert, otherKey, _ := issueAside(t, p)
	expiredDir := t.TempDir()
	if _, err := issueServer(expiredDir, p.caCert, p.caKey, nil, time.Now().Add(-100*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		cert, key []byte
		keyMode   os.FileMode
		want      error // errors.Is; nil: any error
	}{
		{"key of another certificate", readFile(t, p.cfg.CertFile), readFile(t, otherKey), 0o600, ErrKeyMismatch},
		{"certificate of another key", readFile(t, otherCert), readFile(t, p.cfg.KeyFile), 0o600, ErrKeyMismatch},
		{"unparseable certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), readFile(t, p.cfg.KeyFile), 0o600, nil},
		{"empty key", readFile(t, p.cfg.CertFile), nil, 0o600, nil},
		{"key readable by others", readFile(t, otherCert), readFile(t, otherKey), 0o644, ErrInsecureKeyFile},
		{"key readable by group", readFile(t, otherCert), readFile(t, otherKey), 0o640, ErrInsecureKeyFile},
		{"expired certificate", readFile(t, filepath.Join(expiredDir, ServerCertFile)), readFile(t, filepath.Join(expiredDir, ServerKeyFile)), 0o600, ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			var logs logBuffer
			m := startManager(t, p.cfg, logs.logger())
			srv := serveRaw(t, m.TLSConfig())
			old := presented(t, p, srv)

			writeFile(t, p.cfg.CertFile, tc.cert, 0o644)
			writeFile(t, p.cfg.KeyFile, tc.key, tc.keyMode)
			// The Run loop notices and records the failure...
			eventually(t, "a reload error in Status", func() bool { return m.Status().LastReloadError != "" })
			// ...and so does an explicit reload, with a checkable error.
			err := m.Reload()
			if err == nil {
				t.Fatal("Reload succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Reload: %v, want %v", err, tc.want)
			}
			if got := presented(t, p, srv); got != old {
				t.Errorf("presented %s after a broken reload, want the old %s", got, old)
			}
			st := m.Status()
			if st.SHA256 != old || st.Reloads != 0 {
				t.Errorf("Status: sha256 %s, reloads %d; want the old %s, 0", st.SHA256, st.Reloads, old)
			}
			assertNoKeyMaterial(t, logs.String(), tc.key, readFile(t, otherKey))

			// A good pair afterwards is taken, and clears the error.
			newCert, newKey, want := issueAside(t, p)
			writeFile(t, p.cfg.KeyFile, readFile(t, newKey), 0o600)
			writeFile(t, p.cfg.CertFile, readFile(t, newCert), 0o644)
			eventually(t, "the fixed certificate", func() bool { return presented(t, p, srv) == want })
			eventually(t, "the error to clear", func() bool { return m.Status().LastReloadError == "" })
		})
	}
}

// assertNoKeyMaterial fails if any line of a PEM key's body is in logs.
func assertNoKeyMaterial(t *testing.T, logs string, keys ...[]byte) {
	t.Helper()
	if logs == "" {
		t.Fatal("nothing logged")
	}
	for _, k := range keys {
		for _, line := range bytes.Split(k, []byte("\n")) {
			if len(line) >= 16 && !bytes.HasPrefix(line, []byte("-----")) && strings.Contains(logs, string(line)) {
				t.Fatalf("key material in the log:\n%s", logs)
			}
		}
	}
}

func TestNew(t *testing.T) {
	p := newPKI(t)
	good := p.cfg
	dir := t.TempDir()
	path := func(name string, data []byte, mode os.FileMode) string {
		pth := filepath.Join(dir, name)
		writeFile(t, pth, data, mode)
		return pth
	}
	expiredDir := t.TempDir()
	if _, err := issueServer(expiredDir, p.caCert, p.caKey, nil, time.Now().Add(-100*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueClient(p.dir, "bob", p.caCert, p.caKey, ClientID{CommonName: "bob"}); err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := filepath.Join(p.dir, "bob.crt"), filepath.Join(p.dir, "bob.key")
	linkedKey := filepath.Join(dir, "linked.key")
	if err := os.Symlink(good.KeyFile, linkedKey); err != nil {
		t.Fatal(err)
	}

	with := func(f func(*Config)) Config { c := good; f(&c); return c }
	tests := []struct {
		name string
		cfg  Config
		want error  // errors.Is; nil with wantMsg: any error
		msg  string // in the error; "" and want nil: success
	}{
		{"good", good, nil, ""},
		{"key through a link", with(func(c *Config) { c.KeyFile = linkedKey }), nil, ""},
		{"key mode 0644", with(func(c *Config) { c.KeyFile = path("k644", readFile(t, good.KeyFile), 0o644) }), ErrInsecureKeyFile, "0644"},
		{"key mode 0604", with(func(c *Config) { c.KeyFile = path("k604", readFile(t, good.KeyFile), 0o604) }), ErrInsecureKeyFile, "0604"},
		{"key mode 0400", with(func(c *Config) { c.KeyFile = path("k400", readFile(t, good.KeyFile), 0o400) }), nil, ""},
		{"key is a directory", with(func(c *Config) { c.KeyFile = dir }), ErrInsecureKeyFile, "regular"},
		{"missing key", with(func(c *Config) { c.KeyFile = filepath.Join(dir, "nope") }), os.ErrNotExist, "key_file"},
		{"expired", with(func(c *Config) {
			c.CertFile = filepath.Join(expiredDir, ServerCertFile)
			c.KeyFile = filepath.Join(expiredDir, ServerKeyFile)
		}), ErrExpired, "cert_file"},
		{"client certificate as server certificate", with(func(c *Config) {
			c.CertFile, c.KeyFile = clientCert, clientKey
		}), nil, "server authentication"},
		{"mismatched key", with(func(c *Config) { c.KeyFile = clientKey }), ErrKeyMismatch, ""},
		{"no files", Config{}, nil, "must be set"},
		{"require without a CA file", with(func(c *Config) { c.ClientAuth = ClientAuthRequire }), nil, "tls.client_ca_file"},
		{"CA file with a key in it", with(func(c *Config) {
			c.ClientAuth = ClientAuthRequire
			c.ClientCAFile = good.KeyFile
		}), nil, "want CERTIFICATE"},
		{"CA file with trailing junk", with(func(c *Config) {
			c.ClientAuth = ClientAuthRequire
			c.ClientCAFile = path("ca-junk.pem", append(readFile(t, filepath.Join(p.dir, CACertFile)), "junk"...), 0o644)
		}), nil, "not PEM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.cfg, nil)
			if tc.want == nil && tc.msg == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if m.Status().SHA256 == "" {
					t.Error("Status has no certificate")
				}
				return
			}
			if err == nil {
				t.Fatal("New succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("New: %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("New: %v, want it to mention %q", err, tc.msg)
			}
		})
	}
}

func TestExpiryWarnings(t *testing.T) {
	p := newPKI(t)
	start := time.Now()
	// Issued 80 days ago: 10 days left of 90.
	if _, err := issueServer(p.dir, p.caCert, p.caKey, nil, start.Add(-80*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	now := start
	m, err := newManager(p.cfg, logs.logger(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "expires soon"); n != 1 {
		t.Errorf("%d warnings at load, want 1:\n%s", n, logs.String())
	}
	st := m.Status()
	if !st.ExpiresSoon(now) || st.Expired(now) {
		t.Errorf("ExpiresSoon %v, Expired %v; want true, false", st.ExpiresSoon(now), st.Expired(now))
	}
	m.checkExpiry(now)
	if n := strings.Count(logs.String(), "expires soon"); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
	now = start.Add(11 * 24 * time.Hour)
	m.checkExpiry(now)
	m.checkExpiry(now)
	if n := strings.Count(logs.String(), "has expired"); n != 1 {
		t.Errorf("%d expiry errors, want 1:\n%s", n, logs.String())
	}
	if !m.Status().Expired(now) {
		t.Error("Status does not say expired")
	}
	// A reload now refuses the expired files and keeps serving them.
	if err := m.Reload(); !errors.Is(err, ErrExpired) {
		t.Errorf("Reload: %v, want ErrExpired", err)
	}
}

func TestStatus(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.mtls(ClientAuthOptional), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	checks := []struct {
		name      string
		got, want any
	}{
		{"subject", st.Subject, "CN=localhost"},
		{"issuer", st.Issuer, "CN=test CA"},
		{"dns names", strings.Join(st.DNSNames, ","), "localhost"},
		{"ip addresses", strings.Join(st.IPAddresses, ","), "127.0.0.1,::1"},
		{"min version", st.MinVersion, "1.3"},
		{"client auth", st.ClientAuth, "optional"},
		{"client CAs", strings.Join(st.ClientCAs, ","), "CN=test CA"},
		{"validity", st.NotAfter.Sub(st.NotBefore).Round(time.Minute), ServerValidity + backdate},
		{"reload error", st.LastReloadError, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestPollWaitsForStableFiles steps the Run loop's poll by hand: a change
// is read only once it has stayed the same for one poll, contents that
// failed are not retried, and a completed pair is taken.
func TestPollWaitsForStableFiles(t *testing.T) {
	p := newPKI(t)
	m, err := New(p.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := m.Status().SHA256
	newCert, newKey, want := issueAside(t, p)
	var pending digest
	type state struct {
		attempted bool
		sha       string
		failed    bool
	}
	steps := []struct {
		name   string
		change func()
		want   state
	}{
		{"unchanged", nil, state{false, old, false}},
		{"key replaced: wait", func() { writeFile(t, p.cfg.KeyFile, readFile(t, newKey), 0o600) }, state{false, old, false}},
		{"key stable: tried, mismatched", nil, state{true, old, true}},
		{"stable, failed: not retried", func() { m.mu.Lock(); m.lastAttempt = time.Time{}; m.mu.Unlock() }, state{false, old, true}},
		{"certificate replaced: wait", func() { writeFile(t, p.cfg.CertFile, readFile(t, newCert), 0o644) }, state{false, old, true}},
		{"pair stable: taken", nil, state{true, want, false}},
		{"unchanged again", func() { m.mu.Lock(); m.lastAttempt = time.Time{}; m.mu.Unlock() }, state{false, want, false}},
	}
	for _, st := range steps {
		if st.change != nil {
			st.change()
		}
		m.poll(&pending)
		s := m.Status()
		got := state{!s.LastReloadAt.IsZero(), s.SHA256, s.LastReloadError != ""}
		if got != st.want {
			t.Errorf("%s: got %+v, want %+v", st.name, got, st.want)
		}
	}
}
