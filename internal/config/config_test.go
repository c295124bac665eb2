package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "aegis.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOverridesDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, `
model_repository: /srv/models
http_addr: 127.0.0.1:9000
log: {format: json, level: debug}
limits:
  max_body_bytes: 1048576
  queue_timeout: 5s
runtime: {sessions: 2}
state_dir: /var/lib/aegis
tls: {cert_file: /etc/aegis/server.crt, key_file: /etc/aegis/server.key}
auth: {policy_file: /etc/aegis/policy.yaml}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ModelRepository != "/srv/models" || cfg.HTTPAddr != "127.0.0.1:9000" || cfg.GRPCAddr != "127.0.0.1:8001" {
		t.Errorf("addresses: %+v", cfg)
	}
	if cfg.Limits.MaxBodyBytes != 1<<20 || cfg.Limits.QueueTimeout != 5*time.Second || cfg.Limits.MaxInputs != 64 {
		t.Errorf("limits: %+v", cfg.Limits)
	}
	if cfg.Runtime.Sessions != 2 || cfg.Log.Format != "json" {
		t.Errorf("runtime/log: %+v %+v", cfg.Runtime, cfg.Log)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
	if cfg.TLS.MinVersion != "1.3" || cfg.TLS.ClientAuth != "none" || cfg.Audit.Durable || cfg.Auth.Disabled {
		t.Errorf("security defaults: %+v %+v %+v", cfg.TLS, cfg.Audit, cfg.Auth)
	}
	if got := cfg.AuditPath(); got != "/var/lib/aegis/audit/audit.log" {
		t.Errorf("audit path %q", got)
	}
	if got := cfg.PepperPath(); got != "/var/lib/aegis/apikey-pepper" {
		t.Errorf("pepper path %q", got)
	}
}

func TestLoadIsStrict(t *testing.T) {
	for name, body := range map[string]string{
		"unknown top-level field": "model_repository: x\nhttp_adr: 1.2.3.4:5\n",
		"unknown nested field":    "limits:\n  max_body: 10\n",
		"two documents":           "model_repository: x\n---\nmodel_repository: y\n",
		"wrong type":              "limits:\n  max_inputs: many\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(writeConfig(t, body)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestValidateNamesTheField(t *testing.T) {
	tests := []struct {
		field string
		edit  func(*Config)
	}{
		{"model_repository", func(c *Config) { c.ModelRepository = "" }},
		{"http_addr", func(c *Config) { c.HTTPAddr = "localhost" }},
		{"grpc_addr", func(c *Config) { c.GRPCAddr = c.HTTPAddr }},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }},
		{"log.level", func(c *Config) { c.Log.Level = "loud" }},
		{"limits.max_body_bytes", func(c *Config) { c.Limits.MaxBodyBytes = 10 }},
		{"limits.max_tensor_bytes", func(c *Config) { c.Limits.MaxTensorBytes = 0 }},
		{"limits.max_inputs", func(c *Config) { c.Limits.MaxInputs = 0 }},
		{"limits.max_json_depth", func(c *Config) { c.Limits.MaxJSONDepth = 100000 }},
		{"limits.queue_timeout", func(c *Config) { c.Limits.QueueTimeout = 0 }},
		{"onnxruntime.library", func(c *Config) { c.ONNXRuntime.Library = "" }},
		{"runtime.sessions", func(c *Config) { c.Runtime.Sessions = -1 }},
		{"shutdown_timeout", func(c *Config) { c.ShutdownTimeout = 0 }},
		{"tls", func(c *Config) { c.TLS.CertFile = "" }},
		{"tls.plaintext", func(c *Config) { c.TLS.Plaintext = true }},
		{"tls.min_version", func(c *Config) { c.TLS.MinVersion = "1.1" }},
		{"tls.client_auth", func(c *Config) { c.TLS.ClientAuth = "maybe" }},
		{"tls.client_ca_file", func(c *Config) { c.TLS.ClientAuth = "require" }},
		{"auth.methods", func(c *Config) { c.Auth.Methods = []string{"basic"} }},
		{"auth.methods", func(c *Config) { c.Auth.Methods = []string{"jwt"} }},
		{"auth.methods", func(c *Config) { c.Auth.Methods = []string{"mtls"} }},
		{"auth.disabled", func(c *Config) { c.Auth.Disabled = true }},
		{"auth.jwt.issuer", func(c *Config) { c.Auth.JWT = &JWT{Audiences: []string{"a"}, JWKSFile: "k"} }},
		{"auth.jwt.algorithms", func(c *Config) {
			c.Auth.JWT = &JWT{Issuer: "i", Audiences: []string{"a"}, JWKSFile: "k", Algorithms: []string{"HS256"}}
		}},
		{"auth.jwt.algorithms", func(c *Config) {
			c.Auth.JWT = &JWT{Issuer: "i", Audiences: []string{"a"}, JWKSFile: "k", Algorithms: []string{"none"}}
		}},
		{"auth.jwt", func(c *Config) { c.Auth.JWT = &JWT{Issuer: "i", Audiences: []string{"a"}} }},
		{"audit.checkpoint_every", func(c *Config) { c.Audit.CheckpointEvery = 0 }},
		{"state_dir", func(c *Config) { c.StateDir = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.field, func(t *testing.T) {
			c := Default()
			c.ModelRepository, c.StateDir = "/m", "/s"
			c.TLS.CertFile, c.TLS.KeyFile, c.Auth.PolicyFile = "/c", "/k", "/p"
			if err := c.Validate(); err != nil {
				t.Fatalf("base config refused: %v", err)
			}
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Errorf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte("model_repository: x\nlimits: {max_inputs: 3}\n"))
	f.Add([]byte("runtime:\n  sessions: 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		if err := DecodeStrict(b, &c); err != nil {
			return
		}
		_ = c.Validate() // must not panic
	})
}
