package tlsconf

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestValidate(t *testing.T) {
	on := Config{CertFile: "s.crt", KeyFile: "s.key"}
	with := func(f func(*Config)) Config { c := on; f(&c); return c }
	tests := []struct {
		name string
		cfg  Config
		want string // in the error; "" for none
	}{
		{"off", Config{}, ""},
		{"off, defaults", Default(), ""},
		{"on, defaults", on, ""},
		{"min_version 1.2", with(func(c *Config) { c.MinVersion = "1.2" }), ""},
		{"min_version 1.1", with(func(c *Config) { c.MinVersion = "1.1" }), `tls.min_version: "1.1"`},
		{"min_version 1.0", with(func(c *Config) { c.MinVersion = "TLS1.0" }), "tls.min_version"},
		{"client_auth bogus", with(func(c *Config) { c.ClientAuth = "request" }), `tls.client_auth: "request"`},
		{"require with CA", with(func(c *Config) { c.ClientAuth = "require"; c.ClientCAFile = "ca.pem" }), ""},
		{"optional with CA", with(func(c *Config) { c.ClientAuth = "optional"; c.ClientCAFile = "ca.pem" }), ""},
		{"require without CA", with(func(c *Config) { c.ClientAuth = "require" }), "tls.client_ca_file: must be set"},
		{"optional without CA", with(func(c *Config) { c.ClientAuth = "optional" }), "tls.client_ca_file: must be set"},
		{"CA without client_auth", with(func(c *Config) { c.ClientCAFile = "ca.pem" }), "client_auth is none"},
		{"cert without key", Config{CertFile: "s.crt"}, "tls.key_file"},
		{"key without cert", Config{KeyFile: "s.key"}, "tls.cert_file"},
		{"mTLS without a certificate", Config{ClientAuth: "require", ClientCAFile: "ca.pem"}, "needs cert_file"},
		{"reload_interval too short", with(func(c *Config) { c.ReloadInterval = time.Millisecond }), "tls.reload_interval"},
		{"reload_interval negative", with(func(c *Config) { c.ReloadInterval = -time.Second }), "tls.reload_interval"},
		{"reload_interval too long", with(func(c *Config) { c.ReloadInterval = 2 * time.Hour }), "tls.reload_interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("tls")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigYAML(t *testing.T) {
	in := `
cert_file: /etc/aegis/tls/tls.crt
key_file: /etc/aegis/tls/tls.key
min_version: "1.2"
client_auth: require
client_ca_file: /etc/aegis/tls/clients.pem
reload_interval: 30s
`
	got := Default()
	dec := yaml.NewDecoder(strings.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := Config{
		CertFile: "/etc/aegis/tls/tls.crt", KeyFile: "/etc/aegis/tls/tls.key",
		MinVersion: "1.2", ClientAuth: "require", ClientCAFile: "/etc/aegis/tls/clients.pem",
		ReloadInterval: 30 * time.Second,
	}
	if got != want {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	if err := got.Validate("tls"); err != nil {
		t.Error(err)
	}
	dec = yaml.NewDecoder(strings.NewReader("certfile: x\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err == nil {
		t.Error("unknown field certfile decoded")
	}
}

// FuzzParseCertificates: the certificate and CA bundle parser never panics,
// and returns either an error or at least one certificate.
func FuzzParseCertificates(f *testing.F) {
	p := newPKIForFuzz(f)
	f.Add(p)
	f.Add(append(append([]byte{}, p...), p...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := parseCertificates(b)
		if err != nil {
			if certs != nil {
				t.Fatal("certificates returned with an error")
			}
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		for _, c := range certs {
			if len(c.Raw) == 0 {
				t.Fatal("empty certificate")
			}
		}
	})
}

func newPKIForFuzz(f *testing.F) []byte {
	f.Helper()
	dir := f.TempDir()
	if _, _, err := GenerateCA(dir, "fuzz CA"); err != nil {
		f.Fatal(err)
	}
	b, err := readLimited(dir + "/" + CACertFile)
	if err != nil {
		f.Fatal(err)
	}
	return bytes.Clone(b)
}

// FuzzParsePrivateKey: the key parser never panics, and returns either an
// error or a key.
func FuzzParsePrivateKey(f *testing.F) {
	dir := f.TempDir()
	if _, _, err := GenerateCA(dir, "fuzz CA"); err != nil {
		f.Fatal(err)
	}
	key, err := readLimited(dir + "/" + CAKeyFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(key)
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parsePrivateKey(b)
		if (k == nil) == (err == nil) {
			t.Fatalf("key %v, error %v: want exactly one", k, err)
		}
	})
}
