// Package config holds Aegis's server configuration: Default, then a strict
// Load (unknown fields are errors), then Validate, whose errors name the
// field and the bad value.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/aegis-inference/aegis/internal/extraction"
	"github.com/aegis-inference/aegis/internal/ratelimit"
)

// Config is the whole server configuration.
type Config struct {
	// ModelRepository is the directory of models: DIR/<model>/<version>/model.onnx.
	ModelRepository string `yaml:"model_repository"`
	HTTPAddr        string `yaml:"http_addr"`
	GRPCAddr        string `yaml:"grpc_addr"`

	Log         Log         `yaml:"log"`
	Limits      Limits      `yaml:"limits"`
	ONNXRuntime ONNXRuntime `yaml:"onnxruntime"`
	// Runtime holds the default session settings; a model's own
	// config.yaml overrides them.
	Runtime Runtime `yaml:"runtime"`
	// Keys says where the key that decrypts models is kept.
	Keys Keys `yaml:"keys"`
	// Deploy is the default deployment policy; a model's config.yaml may
	// replace it.
	Deploy Deploy `yaml:"deploy"`
	// WatchRepository reloads models when files in the repository change.
	WatchRepository bool `yaml:"watch_repository"`
	// ReloadDebounce is how long repository changes must be quiet before
	// a reload.
	ReloadDebounce time.Duration `yaml:"reload_debounce"`
	// Strict refuses to start unless every environment check (aegis
	// doctor) is ok: warnings fail too.
	Strict bool `yaml:"strict"`
	// Sandbox sets no_new_privs and a seccomp filter before serving.
	Sandbox bool `yaml:"sandbox"`
	// StateDir holds what must survive restarts (deployed versions for
	// anti-rollback).
	StateDir string `yaml:"state_dir"`

	// ShutdownTimeout bounds how long a graceful shutdown waits for
	// in-flight requests.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// TLS secures both listeners; on unless plaintext is asked for.
	TLS TLS `yaml:"tls"`
	// Auth says who may call: authenticators, the authorization policy.
	Auth Auth `yaml:"auth"`
	// Audit records every request, allowed or denied.
	Audit Audit `yaml:"audit"`
	// RateLimit limits each principal's requests, batch elements,
	// concurrency and quotas, and sheds load globally (docs/ratelimit.md).
	RateLimit ratelimit.Config `yaml:"ratelimit"`
	// Extraction monitors models whose config.yaml has an extraction
	// section (docs/extraction-detection.md).
	Extraction Extraction `yaml:"extraction"`
}

// Extraction configures extraction monitoring.
type Extraction struct {
	// Disabled turns monitoring off for every model.
	Disabled bool `yaml:"disabled"`
	// Policy maps a principal's risk to actions: alert, throttle, degrade
	// (label only), block. A threshold above 1 never applies.
	Policy extraction.Policy `yaml:"policy"`
	// GroupByNetwork and GroupByTenant also watch principals together by
	// client network (/24, /48) and by identity provider group, since
	// attackers split their queries over many accounts.
	GroupByNetwork bool `yaml:"group_by_network"`
	GroupByTenant  bool `yaml:"group_by_tenant"`
	// ThrottleRetry is the Retry-After given to a throttled principal.
	ThrottleRetry time.Duration `yaml:"throttle_retry"`
	// WebhookURL, when set, receives every alert as a JSON POST.
	WebhookURL string `yaml:"webhook_url"`
}

// TLS configures transport security for the REST and gRPC listeners.
type TLS struct {
	// Plaintext serves both listeners without TLS. Only when asked for:
	// aegis doctor flags it and strict mode refuses it.
	Plaintext bool `yaml:"plaintext"`
	// CertFile and KeyFile are the server's PEM certificate chain and key
	// (mode 0600); both are reloaded when they change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.3" (the default) or "1.2" (AEAD suites only).
	MinVersion string `yaml:"min_version"`
	// ClientAuth is "none", "optional" (verified if presented) or
	// "require" (mTLS).
	ClientAuth string `yaml:"client_auth"`
	// ClientCAFile holds the CA certificates client certificates must
	// chain to.
	ClientCAFile string `yaml:"client_ca_file"`
	// ReloadInterval is how often the files are checked for changes.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// Auth configures authentication and authorization.
type Auth struct {
	// Disabled serves every request as the principal "anonymous" with
	// every permission. Development only: doctor flags it, strict mode
	// refuses it.
	Disabled bool `yaml:"disabled"`
	// Methods are the authenticators, in the order they are tried:
	// "mtls", "api_key", "jwt". The first that recognises a credential
	// decides. Empty means mtls (when client certificates are requested),
	// then api_key, then jwt (when configured).
	Methods []string `yaml:"methods"`
	// PolicyFile is the authorization policy: roles, bindings and deny
	// rules. Without one every request is denied.
	PolicyFile string `yaml:"policy_file"`
	// PepperFile is the key API key secrets are hashed with (32 bytes,
	// mode 0600; created if missing). Default: state_dir/apikey-pepper.
	PepperFile string `yaml:"pepper_file"`
	// JWT accepts bearer tokens from an OIDC provider.
	JWT *JWT `yaml:"jwt"`
}

// JWT configures bearer tokens from an OIDC identity provider.
type JWT struct {
	Issuer    string   `yaml:"issuer"`
	Audiences []string `yaml:"audiences"`
	// JWKSURL or JWKSFile: where the provider's public keys are.
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// Algorithms allowed; default RS256 and ES256. Never "none" or HMAC.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew tolerated on exp, nbf and iat; default 60s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// RefreshInterval is how often the JWKS is fetched again; default 5m.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// SubjectClaim (default "sub") names the principal: "jwt:<value>".
	SubjectClaim string `yaml:"subject_claim"`
	// GroupsClaim (default "groups") lists groups, bound as "group:<name>".
	GroupsClaim string `yaml:"groups_claim"`
	// RolesClaim names a claim whose values RoleMap turns into roles.
	RolesClaim string              `yaml:"roles_claim"`
	RoleMap    map[string][]string `yaml:"role_map"`
	// ScopeClaim names an OAuth-style scope claim whose "model:<pattern>"
	// entries narrow the token to those models.
	ScopeClaim string `yaml:"scope_claim"`
	// TokenCacheSize is how many verified tokens are remembered until they
	// expire (default 10000; negative turns the cache off).
	TokenCacheSize int `yaml:"token_cache_size"`
}

// Audit configures the audit log.
type Audit struct {
	// Disabled turns the audit log off. Development only: doctor flags it,
	// strict mode refuses it.
	Disabled bool `yaml:"disabled"`
	// Path is the current log file; rotated files sit beside it. Default:
	// state_dir/audit/audit.log.
	Path string `yaml:"path"`
	// Durable fsyncs every record before its response is sent (concurrent
	// records share one fsync). Otherwise a record is handed to the
	// operating system before its response is sent.
	Durable bool `yaml:"durable"`
	// MaxFileBytes rotates the file past this size; default 256 MiB.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// CheckpointEvery and CheckpointInterval: a signed checkpoint after
	// this many records or this long, whichever comes first.
	CheckpointEvery    int           `yaml:"checkpoint_every"`
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// KeyDir holds the Ed25519 key checkpoints are signed with
	// (audit-signing.key, its public key audit-signing.pub for verifiers)
	// and the key tensors are hashed with (audit-hmac.key); created on
	// first start. Default: state_dir.
	KeyDir string `yaml:"key_dir"`
}

// Log configures structured logging.
type Log struct {
	Format string `yaml:"format"` // "text" or "json"
	Level  string `yaml:"level"`  // "debug", "info", "warn", "error"
}

// Limits bound what one request may cost.
type Limits struct {
	// MaxBodyBytes is the largest REST body, and the largest gRPC message.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxTensorBytes is the most bytes a request's input tensors may decode to.
	MaxTensorBytes int64 `yaml:"max_tensor_bytes"`
	// MaxInputs is the most input tensors one request may carry.
	MaxInputs int `yaml:"max_inputs"`
	// MaxJSONDepth is the deepest nesting accepted in a JSON body.
	MaxJSONDepth int `yaml:"max_json_depth"`
	// QueueTimeout is the longest a request waits for a free session slot;
	// past it the request is refused as unavailable (503), shedding load.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
}

// Keys configures key custody for encrypted models (model.onnx.age).
type Keys struct {
	// IdentityFile is an age identity file (mode 0600 or stricter).
	IdentityFile string `yaml:"identity_file"`
	// PassphraseEnv names an environment variable holding a passphrase
	// for scrypt-encrypted models. Development only.
	PassphraseEnv string `yaml:"passphrase_env"`
	// PKCS11 keeps the key on a PKCS#11 token (an HSM); the token unwraps
	// file keys and the private key never leaves it.
	PKCS11 *PKCS11 `yaml:"pkcs11"`
}

// PKCS11 names an RSA key on a PKCS#11 token.
type PKCS11 struct {
	// Module is the absolute path of the PKCS#11 library.
	Module     string `yaml:"module"`
	TokenLabel string `yaml:"token_label"`
	KeyLabel   string `yaml:"key_label"`
	// KeyID is the key's CKA_ID in hex (optional).
	KeyID string `yaml:"key_id"`
	// PINEnv names the environment variable holding the user PIN.
	PINEnv string `yaml:"pin_env"`
	// Mechanism is rsa-pkcs-oaep (the default: the token does the whole
	// unwrap) or rsa-x509 (for tokens such as SoftHSM2 2.6 that lack
	// OAEP with SHA-256 and a label).
	Mechanism string `yaml:"mechanism"`
}

// Deploy is a deployment policy: which models may serve.
type Deploy struct {
	// RequireSignature refuses models without a valid model.sig.
	RequireSignature bool `yaml:"require_signature"`
	// TrustedKeys are PEM public key files (key method).
	TrustedKeys []string `yaml:"trusted_keys"`
	// TrustedCAs are PEM CA certificate files (certificate method).
	TrustedCAs []string `yaml:"trusted_cas"`
	// TrustedIdentities, when set, restrict certificate signers to these
	// names: "email:...", "uri:...", "dns:..." or "subject:<DN>".
	TrustedIdentities []string `yaml:"trusted_identities"`
	// SigstoreTrustedRoot is a Sigstore trusted_root.json (Fulcio CAs,
	// Rekor keys, CT logs, TSAs) for keyless signatures, used offline.
	SigstoreTrustedRoot string `yaml:"sigstore_trusted_root"`
	// KeylessIdentities are the keyless signers accepted; none means
	// keyless signatures are refused.
	KeylessIdentities []KeylessIdentity `yaml:"keyless_identities"`
	// IgnorePaths are left out of signature checks, besides the
	// signature's own.
	IgnorePaths []string `yaml:"ignore_paths"`
	// AllowUnsignedFiles accepts files a signature does not list.
	AllowUnsignedFiles bool `yaml:"allow_unsigned_files"`
	// AntiRollback refuses a version lower than the highest ever deployed
	// (remembered in state_dir).
	AntiRollback bool `yaml:"anti_rollback"`
	// PinnedDigests pins versions to the SHA-256 of their plaintext model
	// (per-model config only): version -> hex digest.
	PinnedDigests map[string]string `yaml:"pinned_digests"`
}

// KeylessIdentity is a keyless (Sigstore) signer: the certificate's SAN,
// exactly or as an anchored regular expression, and its OIDC issuer.
type KeylessIdentity struct {
	SAN       string `yaml:"san"`
	SANRegexp string `yaml:"san_regexp"`
	Issuer    string `yaml:"issuer"`
}

// ONNXRuntime says which ONNX Runtime library to load.
type ONNXRuntime struct {
	// Library is the path of libonnxruntime.so.
	Library string `yaml:"library"`
	// AllowUnpinned loads a library whose SHA-256 is not the pinned one.
	AllowUnpinned bool `yaml:"allow_unpinned"`
}

// Runtime tunes ONNX Runtime sessions.
type Runtime struct {
	Sessions       int `yaml:"sessions"`
	Concurrency    int `yaml:"concurrency"`
	IntraOpThreads int `yaml:"intra_op_threads"`
	InterOpThreads int `yaml:"inter_op_threads"`
	// DisablePrepacking turns off ONNX Runtime's weight prepacking: less
	// memory during and after loading large models.
	DisablePrepacking bool `yaml:"disable_prepacking"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		ModelRepository: "",
		HTTPAddr:        "127.0.0.1:8000",
		GRPCAddr:        "127.0.0.1:8001",
		Log:             Log{Format: "text", Level: "info"},
		Limits: Limits{
			MaxBodyBytes:   64 << 20,
			MaxTensorBytes: 256 << 20,
			MaxInputs:      64,
			MaxJSONDepth:   48,
			QueueTimeout:   10 * time.Second,
		},
		ONNXRuntime:     ONNXRuntime{Library: "build/onnxruntime/libonnxruntime.so.1"},
		WatchRepository: true,
		ReloadDebounce:  500 * time.Millisecond,
		ShutdownTimeout: 30 * time.Second,
		TLS:             TLS{MinVersion: "1.3", ClientAuth: "none", ReloadInterval: 5 * time.Second},
		Audit: Audit{
			MaxFileBytes:       256 << 20,
			CheckpointEvery:    1000,
			CheckpointInterval: time.Minute,
		},
		RateLimit: ratelimit.Default(),
		Extraction: Extraction{
			Policy:         extraction.DefaultPolicy(),
			GroupByNetwork: true,
			GroupByTenant:  true,
			ThrottleRetry:  time.Second,
		},
	}
}

// Load reads a YAML file over Default(). Unknown fields are errors.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	if err := DecodeStrict(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// DecodeStrict decodes YAML into v, refusing unknown fields and more than
// one document. An empty document leaves v unchanged.
func DecodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	if c.ModelRepository == "" {
		return errors.New("model_repository: must be set")
	}
	for name, addr := range map[string]string{"http_addr": c.HTTPAddr, "grpc_addr": c.GRPCAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s: %q is not HOST:PORT", name, addr)
		}
	}
	if c.HTTPAddr == c.GRPCAddr && !strings.HasSuffix(c.HTTPAddr, ":0") {
		return fmt.Errorf("grpc_addr: %q is also http_addr", c.GRPCAddr)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	l := c.Limits
	switch {
	case l.MaxBodyBytes < 1024:
		return fmt.Errorf("limits.max_body_bytes: %d is below 1024", l.MaxBodyBytes)
	case l.MaxTensorBytes < 1:
		return fmt.Errorf("limits.max_tensor_bytes: %d must be positive", l.MaxTensorBytes)
	case l.MaxInputs < 1:
		return fmt.Errorf("limits.max_inputs: %d must be positive", l.MaxInputs)
	case l.MaxJSONDepth < 8 || l.MaxJSONDepth > 1024:
		return fmt.Errorf("limits.max_json_depth: %d is not within 8..1024", l.MaxJSONDepth)
	case l.QueueTimeout <= 0:
		return fmt.Errorf("limits.queue_timeout: %s must be positive", l.QueueTimeout)
	}
	if c.ONNXRuntime.Library == "" {
		return errors.New("onnxruntime.library: must be set")
	}
	set := 0
	for _, on := range []bool{c.Keys.IdentityFile != "", c.Keys.PassphraseEnv != "", c.Keys.PKCS11 != nil} {
		if on {
			set++
		}
	}
	if set > 1 {
		return errors.New("keys: set one of identity_file, passphrase_env, pkcs11")
	}
	if err := c.Deploy.Validate("deploy"); err != nil {
		return err
	}
	if c.Deploy.AntiRollback && c.StateDir == "" {
		return errors.New("state_dir: must be set for deploy.anti_rollback")
	}
	if err := c.Runtime.Validate("runtime"); err != nil {
		return err
	}
	if c.ReloadDebounce < 10*time.Millisecond || c.ReloadDebounce > time.Minute {
		return fmt.Errorf("reload_debounce: %s is not within 10ms..1m", c.ReloadDebounce)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: %s must be positive", c.ShutdownTimeout)
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if err := c.Auth.Validate(c.TLS); err != nil {
		return err
	}
	if err := c.Audit.Validate(); err != nil {
		return err
	}
	if err := c.RateLimit.Validate("ratelimit"); err != nil {
		return err
	}
	if !c.Extraction.Disabled {
		if err := c.Extraction.Policy.Validate(); err != nil {
			return fmt.Errorf("extraction.%w", err)
		}
		if u := c.Extraction.WebhookURL; u != "" && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
			return fmt.Errorf("extraction.webhook_url: %q is not an http(s) URL", u)
		}
	}
	needState := (!c.Auth.Disabled && c.Auth.PepperFile == "") ||
		(!c.Audit.Disabled && (c.Audit.Path == "" || c.Audit.KeyDir == ""))
	if needState && c.StateDir == "" {
		return errors.New("state_dir: must be set for API keys and the audit log (or set their files)")
	}
	return nil
}

// PepperPath is the API key pepper file: auth.pepper_file, or
// state_dir/apikey-pepper.
func (c *Config) PepperPath() string { return orState(c.Auth.PepperFile, c.StateDir, "apikey-pepper") }

// AuditPath is the audit log: audit.path, or state_dir/audit/audit.log.
func (c *Config) AuditPath() string {
	return orState(c.Audit.Path, c.StateDir, filepath.Join("audit", "audit.log"))
}

// AuditKeyDir is the directory of the audit keys: audit.key_dir, or
// state_dir.
func (c *Config) AuditKeyDir() string { return orState(c.Audit.KeyDir, c.StateDir, "") }

func orState(set, stateDir, name string) string {
	if set != "" || stateDir == "" {
		return set
	}
	if name == "" {
		return stateDir
	}
	return filepath.Join(stateDir, name)
}

// Validate checks the TLS settings.
func (t TLS) Validate() error {
	if t.Plaintext {
		if t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" {
			return errors.New("tls.plaintext: cannot be set with cert_file, key_file or client_ca_file")
		}
		return nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return errors.New("tls: set cert_file and key_file (aegis certs init makes a local CA), or tls.plaintext: true")
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		return fmt.Errorf("tls.min_version: %q is not 1.2 or 1.3", t.MinVersion)
	}
	switch t.ClientAuth {
	case "none":
	case "optional", "require":
		if t.ClientCAFile == "" {
			return fmt.Errorf("tls.client_ca_file: must be set for client_auth %s", t.ClientAuth)
		}
	default:
		return fmt.Errorf("tls.client_auth: %q is not none, optional or require", t.ClientAuth)
	}
	if t.ReloadInterval < 100*time.Millisecond {
		return fmt.Errorf("tls.reload_interval: %s is below 100ms", t.ReloadInterval)
	}
	return nil
}

// AuthMethods are the authenticator names auth.methods accepts.
var AuthMethods = []string{"mtls", "api_key", "jwt"}

// Validate checks the authentication settings.
func (a Auth) Validate(t TLS) error {
	if a.Disabled {
		if len(a.Methods) > 0 || a.JWT != nil || a.PolicyFile != "" {
			return errors.New("auth.disabled: cannot be set with methods, jwt or policy_file")
		}
		return nil
	}
	seen := map[string]bool{}
	for _, m := range a.Methods {
		if !slices.Contains(AuthMethods, m) {
			return fmt.Errorf("auth.methods: %q is not one of %s", m, strings.Join(AuthMethods, ", "))
		}
		if seen[m] {
			return fmt.Errorf("auth.methods: %q twice", m)
		}
		seen[m] = true
	}
	if seen["jwt"] && a.JWT == nil {
		return errors.New("auth.methods: jwt needs auth.jwt")
	}
	if seen["mtls"] && (t.Plaintext || t.ClientAuth == "none") {
		return errors.New("auth.methods: mtls needs tls.client_auth optional or require")
	}
	if j := a.JWT; j != nil {
		switch {
		case j.Issuer == "":
			return errors.New("auth.jwt.issuer: must be set")
		case len(j.Audiences) == 0:
			return errors.New("auth.jwt.audiences: must be set")
		case (j.JWKSURL == "") == (j.JWKSFile == ""):
			return errors.New("auth.jwt: set one of jwks_url, jwks_file")
		case j.JWKSURL != "" && !strings.HasPrefix(j.JWKSURL, "https://") && !strings.HasPrefix(j.JWKSURL, "http://"):
			return fmt.Errorf("auth.jwt.jwks_url: %q is not an http(s) URL", j.JWKSURL)
		case j.ClockSkew < 0 || j.ClockSkew > 10*time.Minute:
			return fmt.Errorf("auth.jwt.clock_skew: %s is not within 0..10m", j.ClockSkew)
		case j.RefreshInterval < 0:
			return fmt.Errorf("auth.jwt.refresh_interval: %s is negative", j.RefreshInterval)
		}
		for _, alg := range j.Algorithms {
			switch alg {
			case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
			default:
				return fmt.Errorf("auth.jwt.algorithms: %q is not an asymmetric JWS algorithm", alg)
			}
		}
	}
	return nil
}

// Validate checks the audit settings.
func (a Audit) Validate() error {
	if a.Disabled {
		return nil
	}
	switch {
	case a.MaxFileBytes < 4096:
		return fmt.Errorf("audit.max_file_bytes: %d is below 4096", a.MaxFileBytes)
	case a.CheckpointEvery < 1:
		return fmt.Errorf("audit.checkpoint_every: %d must be positive", a.CheckpointEvery)
	case a.CheckpointInterval < time.Second:
		return fmt.Errorf("audit.checkpoint_interval: %s is below 1s", a.CheckpointInterval)
	}
	return nil
}

// Validate checks a deployment policy.
func (d Deploy) Validate(prefix string) error {
	if d.RequireSignature && len(d.TrustedKeys) == 0 && len(d.TrustedCAs) == 0 && len(d.KeylessIdentities) == 0 {
		return fmt.Errorf("%s.require_signature: set trusted_keys, trusted_cas or keyless_identities", prefix)
	}
	if (len(d.KeylessIdentities) > 0) != (d.SigstoreTrustedRoot != "") {
		return fmt.Errorf("%s.keyless_identities: set together with sigstore_trusted_root", prefix)
	}
	for i, k := range d.KeylessIdentities {
		if k.Issuer == "" || (k.SAN == "") == (k.SANRegexp == "") {
			return fmt.Errorf("%s.keyless_identities[%d]: set issuer and one of san, san_regexp", prefix, i)
		}
	}
	if len(d.TrustedIdentities) > 0 && len(d.TrustedCAs) == 0 {
		return fmt.Errorf("%s.trusted_identities: needs trusted_cas", prefix)
	}
	for _, id := range d.TrustedIdentities {
		if !strings.Contains(id, ":") {
			return fmt.Errorf("%s.trusted_identities: %q is not kind:value (email:, uri:, dns:, subject:)", prefix, id)
		}
	}
	for v, dg := range d.PinnedDigests {
		if len(dg) != 64 || strings.Trim(dg, "0123456789abcdef") != "" {
			return fmt.Errorf("%s.pinned_digests[%s]: %q is not a lowercase hex SHA-256", prefix, v, dg)
		}
	}
	return nil
}

// Validate checks session settings; 0 means the default.
func (r Runtime) Validate(prefix string) error {
	for name, v := range map[string]int{
		"sessions": r.Sessions, "concurrency": r.Concurrency,
		"intra_op_threads": r.IntraOpThreads, "inter_op_threads": r.InterOpThreads,
	} {
		if v < 0 || v > 256 {
			return fmt.Errorf("%s.%s: %d is not within 0..256", prefix, name, v)
		}
	}
	return nil
}

// Merge returns r with o's non-zero fields on top.
func (r Runtime) Merge(o Runtime) Runtime {
	if o.Sessions != 0 {
		r.Sessions = o.Sessions
	}
	if o.Concurrency != 0 {
		r.Concurrency = o.Concurrency
	}
	if o.IntraOpThreads != 0 {
		r.IntraOpThreads = o.IntraOpThreads
	}
	if o.InterOpThreads != 0 {
		r.InterOpThreads = o.InterOpThreads
	}
	if o.DisablePrepacking {
		r.DisablePrepacking = true
	}
	return r
}
