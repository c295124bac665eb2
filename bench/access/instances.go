package main

import (
	"path/filepath"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/tlsconf"
)

// instance is one Aegis the server process runs: the same models, a
// different set of access controls. Each instance is a path the harness
// measures.
type instance struct {
	name string
	// what the report says it is
	desc string

	tls      bool
	auth     string // "" (authentication disabled), "api_key" or "jwt"
	jwtCache bool   // the JWT authenticator's verified-token cache (the default)
	audit    bool
	durable  bool // audit.durable: fsync each record before its response
}

// instances, in the order the report lists them. From tls on each adds one
// thing to the one before it, except the JWT variants, which replace the
// API key, and secure-durable, which differs from secure-apikey in
// audit.durable. baseline-2 is a control: the same configuration as
// baseline in another instance (its own sessions, buffers and
// connections), so the difference between the two shows what the method
// cannot resolve.
var instances = []instance{
	{name: "baseline", desc: "plaintext; authentication and audit disabled: what bench/serving measures"},
	{name: "baseline-2", desc: "a second, identical baseline instance: its difference from baseline is the method's noise floor (an A/A test)"},
	{name: "tls", tls: true, desc: "TLS 1.3 only; authentication and audit disabled"},
	{name: "tls+apikey", tls: true, auth: "api_key", desc: "TLS, API key, authorization policy; audit disabled"},
	{name: "secure-apikey", tls: true, auth: "api_key", audit: true,
		desc: "TLS, API key, policy, audit log (record written before the response: the default)"},
	{name: "secure-jwt", tls: true, auth: "jwt", jwtCache: true, audit: true,
		desc: "as secure-apikey, but an RS256 JWT; verified-token cache on (the default)"},
	{name: "secure-jwt-nocache", tls: true, auth: "jwt", audit: true,
		desc: "as secure-jwt with auth.jwt.token_cache_size: -1 (signature checked on every request)"},
	{name: "secure-durable", tls: true, auth: "api_key", audit: true, durable: true,
		desc: "as secure-apikey with audit.durable: true (fdatasync before the response, group commit)"},
}

func lookupInstance(name string) (instance, bool) {
	for _, in := range instances {
		if in.name == name {
			return in, true
		}
	}
	return instance{}, false
}

// The identity provider the JWT instances trust (served by the server
// process on loopback) and the subject of the token the clients send.
const (
	jwtIssuer   = "https://idp.bench.aegis.test"
	jwtAudience = "aegis"
	jwtSubject  = "bench-client"
)

// policy is the authorization policy of every instance with
// authentication: a few roles, bindings and a deny rule, so that Decide
// has more than one entry to look at, as in a real deployment. API keys
// are created with the scorer role; the token's subject is bound to it.
const policy = `
roles:
  scorer:
    permissions: [infer, metadata]
    models: ["digits", "mlp"]
  reader:
    permissions: [metadata, list]
    models: ["*"]
  operator:
    permissions: [admin, audit:read, list, metadata]
    models: ["*"]
bindings:
  - role: scorer
    principals: ["jwt:` + jwtSubject + `", "group:ml-team"]
  - role: reader
    principals: ["group:analysts"]
  - role: operator
    principals: ["jwt:ops"]
deny:
  - name: contractors-no-inference
    principals: ["group:contractors"]
    permissions: [infer]
    models: ["*"]
`

// workDir layout, shared by the harness and the server process.
func repoDir(work string) string            { return filepath.Join(work, "repo") }
func pkiDir(work string) string             { return filepath.Join(work, "pki") }
func policyFile(work string) string         { return filepath.Join(work, "policy.yaml") }
func stateDir(work, instance string) string { return filepath.Join(work, instance, "state") }
func caFile(work string) string             { return filepath.Join(pkiDir(work), tlsconf.CACertFile) }

// config returns the configuration of in: config.Default, as `aegis
// serve` starts from, on ephemeral loopback ports, with in's controls.
func (in instance) config(work, lib, jwksURL string) config.Config {
	cfg := config.Default()
	cfg.ModelRepository = repoDir(work)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.ONNXRuntime.Library = lib
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.StateDir = stateDir(work, in.name)
	cfg.TLS.Plaintext = !in.tls
	if in.tls {
		cfg.TLS.CertFile = filepath.Join(pkiDir(work), tlsconf.ServerCertFile)
		cfg.TLS.KeyFile = filepath.Join(pkiDir(work), tlsconf.ServerKeyFile)
	}
	switch in.auth {
	case "":
		cfg.Auth.Disabled = true
	case "api_key":
		cfg.Auth.PolicyFile = policyFile(work)
	case "jwt":
		// API keys stay on too (the default method order: api_key, then
		// jwt), as a deployment taking both would run.
		cfg.Auth.PolicyFile = policyFile(work)
		cfg.Auth.JWT = &config.JWT{Issuer: jwtIssuer, Audiences: []string{jwtAudience}, JWKSURL: jwksURL}
		if !in.jwtCache {
			cfg.Auth.JWT.TokenCacheSize = -1
		}
	}
	// This benchmark measures TLS, authentication, authorization and the
	// audit log: no per-principal rate limits (each path uses one key at
	// full speed) and no load shedding (its clients saturate the server
	// on purpose); bench/ratelimit and bench/soak measure those.
	cfg.RateLimit.Requests, cfg.RateLimit.Elements, cfg.RateLimit.MaxConcurrent = ratelimit.Rate{}, ratelimit.Rate{}, 0
	cfg.RateLimit.Shed.Disabled = true
	cfg.Audit.Disabled = !in.audit
	cfg.Audit.Durable = in.durable
	return cfg
}
