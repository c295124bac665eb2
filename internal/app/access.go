package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/authz"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// accessParts are the components behind the gate, kept for the admin API
// and for closing.
type accessParts struct {
	gate   *access.Gate
	keys   *authn.KeyStore // nil unless API keys are on
	jwt    *authn.JWT      // nil unless JWTs are on
	authz  *authz.Authorizer
	policy string // policy file, "" for deny-all
	audit  *audit.Log
	shed   *ratelimit.Shedder // nil when shedding is off
}

// close releases what the parts hold; the audit log last, so that it
// records to the end.
func (p *accessParts) close() {
	if p.keys != nil {
		p.keys.Close()
	}
	if p.jwt != nil {
		p.jwt.Close()
	}
	if p.audit != nil {
		p.audit.Close()
	}
}

// authMethods returns the authenticators in the order they are tried.
func authMethods(cfg config.Config) []string {
	if len(cfg.Auth.Methods) > 0 {
		return cfg.Auth.Methods
	}
	var m []string
	if !cfg.TLS.Plaintext && cfg.TLS.ClientAuth != "none" {
		m = append(m, "mtls")
	}
	m = append(m, "api_key")
	if cfg.Auth.JWT != nil {
		m = append(m, "jwt")
	}
	return m
}

// buildAccess makes the gate from the configuration: authenticators in
// order, the policy, the audit log.
func buildAccess(ctx context.Context, cfg config.Config, store *state.Bolt, log *slog.Logger) (_ *accessParts, err error) {
	p := &accessParts{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	opts := access.Options{Logger: log, Disabled: cfg.Auth.Disabled}
	if cfg.Auth.Disabled {
		log.Warn("authentication is disabled: every request is served as \"anonymous\" with every permission")
	} else {
		for _, m := range authMethods(cfg) {
			switch m {
			case "mtls":
				opts.Authn = append(opts.Authn, authn.MTLS{})
			case "api_key":
				if store == nil {
					return nil, errors.New("auth: API keys need state_dir")
				}
				pepper, err := authn.LoadOrCreatePepper(cfg.PepperPath())
				if err != nil {
					return nil, fmt.Errorf("auth.pepper_file: %w", err)
				}
				if p.keys, err = authn.OpenKeyStore(store.DB(), pepper); err != nil {
					return nil, fmt.Errorf("api keys: %w", err)
				}
				opts.Authn = append(opts.Authn, p.keys)
			case "jwt":
				j := cfg.Auth.JWT
				jc := authn.JWTConfig{
					Issuer: j.Issuer, Audiences: j.Audiences, JWKSURL: j.JWKSURL, JWKSFile: j.JWKSFile,
					Algorithms: j.Algorithms, ClockSkew: j.ClockSkew, SubjectClaim: j.SubjectClaim,
					GroupsClaim: j.GroupsClaim, RolesClaim: j.RolesClaim, RoleMap: j.RoleMap,
					RefreshInterval: j.RefreshInterval, ScopeClaim: j.ScopeClaim, TokenCacheSize: j.TokenCacheSize,
				}
				if p.jwt, err = authn.NewJWT(ctx, jc, log); err != nil {
					return nil, fmt.Errorf("auth.jwt: %w", err)
				}
				opts.Authn = append(opts.Authn, p.jwt)
			}
		}
		p.policy = cfg.Auth.PolicyFile
		if p.policy == "" {
			log.Warn("no authorization policy (auth.policy_file): every request will be denied")
			p.authz = authz.New(nil)
		} else if p.authz, err = authz.Load(p.policy); err != nil {
			return nil, fmt.Errorf("auth.policy_file: %w", err)
		}
		opts.Authz = p.authz
		log.Info("authentication on", "methods", authMethods(cfg), "policy", p.policy)
	}
	// The durable log's group commit counts the requests in flight, which
	// the gate made below knows.
	var gate *access.Gate
	siblings := func() int { return gate.InFlight() }
	if cfg.Audit.Disabled {
		log.Warn("the audit log is disabled")
	} else {
		if p.audit, opts.Hasher, err = openAudit(cfg, siblings, log); err != nil {
			return nil, err
		}
		opts.Sink = auditSink{p.audit}
	}
	if !cfg.RateLimit.Shed.Disabled {
		sh, err := ratelimit.NewShedder(cfg.RateLimit.Shed)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.shed: %w", err)
		}
		opts.Shed, p.shed = sh, sh
	}
	gate = access.New(opts)
	p.gate = gate
	return p, nil
}

// openAudit opens the audit log, creating its keys on first use.
func openAudit(cfg config.Config, siblings func() int, log *slog.Logger) (*audit.Log, access.Hasher, error) {
	dir := cfg.AuditKeyDir()
	signPath := filepath.Join(dir, audit.SigningKeyFile)
	if _, err := os.Stat(signPath); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, err
		}
		if err := audit.GenerateKey(dir); err != nil {
			return nil, nil, fmt.Errorf("audit keys: %w", err)
		}
		log.Info("created the audit keys", "dir", dir, "public", filepath.Join(dir, audit.PublicKeyFile))
	}
	signer, err := audit.LoadSigningKey(signPath)
	if err != nil {
		return nil, nil, fmt.Errorf("audit.key_dir: %w", err)
	}
	hk, err := audit.LoadHMACKey(filepath.Join(dir, audit.HMACKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("audit.key_dir: %w", err)
	}
	h, err := audit.NewHasher(hk)
	if err != nil {
		return nil, nil, err
	}
	path := cfg.AuditPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	l, err := audit.Open(audit.Config{
		Path: path, Durable: cfg.Audit.Durable, MaxFileBytes: cfg.Audit.MaxFileBytes,
		CheckpointEvery: cfg.Audit.CheckpointEvery, CheckpointInterval: cfg.Audit.CheckpointInterval,
		SigningKey: signer, Logger: log, Siblings: siblings,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	log.Info("audit log open", "path", path, "durable", cfg.Audit.Durable)
	return l, hasher{h}, nil
}

type hasher struct{ h *audit.Hasher }

func (h hasher) Hash(ts []tensor.Tensor) string {
	s, _ := h.h.Sum(ts)
	return s
}

// auditSink adapts the audit log to the gate.
type auditSink struct{ l *audit.Log }

func (s auditSink) Healthy() error { return s.l.Healthy() }

func (s auditSink) Write(r *access.Record) error { return s.l.Write(auditRecord(r)) }

// Append queues a refusal's record without waiting for the write.
func (s auditSink) Append(r *access.Record) error { return s.l.Append(auditRecord(r)) }

func auditRecord(r *access.Record) *audit.Record {
	return &audit.Record{
		Time: r.Time, RequestID: r.RequestID, Principal: r.Principal, Auth: r.Auth, Client: r.Client,
		Transport: r.Transport, Action: r.Action, Model: r.Model, Version: r.Version,
		Decision: r.Decision, Rule: r.Rule, InputHMAC: r.InputHMAC, OutputHMAC: r.OutputHMAC,
		InputBytes: r.InputBytes, OutputBytes: r.OutputBytes, Status: r.Status, Error: r.Error,
		Flags: r.Flags, LatencyMicros: r.Latency.Microseconds(),
	}
}

func (s auditSink) Event(kind, principal, detail string) error {
	return s.l.Event(&audit.Event{Kind: kind, Principal: principal, Detail: detail})
}

// CreateKeyOffline makes an API key directly in cfg's state directory, as
// `aegis keys create --offline` does; the server must not be running (the
// store is locked while it does). It returns the key, shown only now.
func CreateKeyOffline(cfg config.Config, name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) (string, error) {
	st, err := state.OpenBolt(cfg.StateDir)
	if err != nil {
		return "", err
	}
	defer st.Close()
	pepper, err := authn.LoadOrCreatePepper(cfg.PepperPath())
	if err != nil {
		return "", err
	}
	ks, err := authn.OpenKeyStore(st.DB(), pepper)
	if err != nil {
		return "", err
	}
	defer ks.Close()
	key, _, err := ks.Create(name, roles, scopes, ttl)
	return key, err
}
