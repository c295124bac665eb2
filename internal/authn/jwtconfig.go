package authn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// JWTConfig configures the JWT authenticator. Zero durations and sizes
// take the defaults named on each field. The yaml tags are the suggested
// names under the server configuration's "jwt:" section.
type JWTConfig struct {
	// Issuer is the exact "iss" every token must carry. Required.
	Issuer string `yaml:"issuer"`
	// Audiences lists accepted "aud" values: a token must name at least
	// one. Required.
	Audiences []string `yaml:"audiences"`

	// JWKSURL is where the provider publishes its signing keys (its
	// discovery document's jwks_uri). https, or http to a loopback
	// address only. Set exactly one of JWKSURL and JWKSFile.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSFile is a local JWK Set file, reloaded when it changes.
	JWKSFile string `yaml:"jwks_file"`

	// Algorithms allows signature algorithms. Default ["RS256", "ES256"].
	// Only asymmetric ones may be listed (RS*, PS*, ES*, EdDSA); "none"
	// and HS* are refused: the keys come from a public JWKS.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew is the leeway when checking exp, nbf and iat. Default 60s;
	// at most 5m.
	ClockSkew time.Duration `yaml:"clock_skew"`

	// SubjectClaim holds the subject; the principal is "jwt:<value>".
	// Default "sub".
	SubjectClaim string `yaml:"subject_claim"`
	// GroupsClaim holds the caller's groups, a string or an array of
	// strings. Default "groups"; absent from a token means no groups.
	GroupsClaim string `yaml:"groups_claim"`
	// RolesClaim, if set, holds values (a string or an array of strings)
	// that RoleMap turns into roles. Values RoleMap does not list grant
	// nothing.
	RolesClaim string `yaml:"roles_claim"`
	// RoleMap maps a RolesClaim value to the roles it grants.
	RoleMap map[string][]string `yaml:"role_map"`
	// ScopeClaim, if set, holds OAuth-style scopes (a space-separated
	// string or an array of strings). Each "model:<pattern>" entry (path.Match
	// syntax) is added to the principal's Scopes.Models, narrowing the
	// token to those models; other entries are ignored.
	ScopeClaim string `yaml:"scope_claim"`

	// RefreshInterval is how often the key set is fetched again from
	// JWKSURL (default 5m) or JWKSFile is checked for changes (default
	// 1s). At least 1s.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MinRefreshInterval is the least time between two fetches caused by
	// tokens with an unknown kid. Default 10s.
	MinRefreshInterval time.Duration `yaml:"min_refresh_interval"`
	// FetchTimeout bounds one JWKS fetch. Default 5s.
	FetchTimeout time.Duration `yaml:"fetch_timeout"`
	// MaxJWKSBytes caps the JWKS document. Default 1 MiB.
	MaxJWKSBytes int64 `yaml:"max_jwks_bytes"`
	// TokenCacheSize is how many verified tokens are remembered (by
	// SHA-256) until they expire, sparing their signature check. Default
	// 10000; negative turns the cache off.
	TokenCacheSize int `yaml:"token_cache_size"`
}

const (
	defaultClockSkew          = 60 * time.Second
	maxClockSkew              = 5 * time.Minute
	defaultURLRefresh         = 5 * time.Minute
	defaultFileRefresh        = time.Second
	minRefresh                = time.Second
	defaultMinRefreshInterval = 10 * time.Second
	defaultFetchTimeout       = 5 * time.Second
	defaultMaxJWKSBytes       = 1 << 20
	defaultTokenCacheSize     = 10000
)

// allowedAlgorithms are the algorithms JWTConfig.Algorithms may list.
var allowedAlgorithms = map[string]bool{
	string(jose.RS256): true, string(jose.RS384): true, string(jose.RS512): true,
	string(jose.PS256): true, string(jose.PS384): true, string(jose.PS512): true,
	string(jose.ES256): true, string(jose.ES384): true, string(jose.ES512): true,
	string(jose.EdDSA): true,
}

// withDefaults returns c with zero fields set to their defaults.
func (c JWTConfig) withDefaults() JWTConfig {
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{string(jose.RS256), string(jose.ES256)}
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = defaultClockSkew
	}
	if c.SubjectClaim == "" {
		c.SubjectClaim = "sub"
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = "groups"
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = defaultURLRefresh
		if c.JWKSFile != "" {
			c.RefreshInterval = defaultFileRefresh
		}
	}
	if c.MinRefreshInterval == 0 {
		c.MinRefreshInterval = defaultMinRefreshInterval
	}
	if c.FetchTimeout == 0 {
		c.FetchTimeout = defaultFetchTimeout
	}
	if c.MaxJWKSBytes == 0 {
		c.MaxJWKSBytes = defaultMaxJWKSBytes
	}
	if c.TokenCacheSize == 0 {
		c.TokenCacheSize = defaultTokenCacheSize
	}
	return c
}

// Validate checks c (with defaults applied) and names the first bad field.
func (c JWTConfig) Validate() error {
	c = c.withDefaults()
	if c.Issuer == "" {
		return errors.New("jwt.issuer: must be set")
	}
	if len(c.Audiences) == 0 {
		return errors.New("jwt.audiences: must list at least one audience")
	}
	for _, a := range c.Audiences {
		if a == "" {
			return errors.New(`jwt.audiences: "" is not an audience`)
		}
	}
	switch {
	case c.JWKSURL != "" && c.JWKSFile != "":
		return errors.New("jwt: set one of jwks_url and jwks_file, not both")
	case c.JWKSURL == "" && c.JWKSFile == "":
		return errors.New("jwt: set jwks_url or jwks_file")
	case c.JWKSURL != "":
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			return fmt.Errorf("jwt.jwks_url: %q %w", c.JWKSURL, err)
		}
	}
	for _, a := range c.Algorithms {
		if !allowedAlgorithms[a] {
			return fmt.Errorf("jwt.algorithms: %q is not allowed (only RS*, PS*, ES* and EdDSA; never none or HS*)", a)
		}
	}
	switch {
	case c.ClockSkew < 0 || c.ClockSkew > maxClockSkew:
		return fmt.Errorf("jwt.clock_skew: %s is not within 0..%s", c.ClockSkew, maxClockSkew)
	case c.RefreshInterval < minRefresh:
		return fmt.Errorf("jwt.refresh_interval: %s is below %s", c.RefreshInterval, minRefresh)
	case c.MinRefreshInterval < 0:
		return fmt.Errorf("jwt.min_refresh_interval: %s is negative", c.MinRefreshInterval)
	case c.FetchTimeout < 0:
		return fmt.Errorf("jwt.fetch_timeout: %s is negative", c.FetchTimeout)
	case c.MaxJWKSBytes < 0:
		return fmt.Errorf("jwt.max_jwks_bytes: %d is negative", c.MaxJWKSBytes)
	}
	for v, roles := range c.RoleMap {
		if len(roles) == 0 {
			return fmt.Errorf("jwt.role_map: %q maps to no role", v)
		}
		for _, r := range roles {
			if r == "" {
				return fmt.Errorf("jwt.role_map: %q maps to an empty role", v)
			}
		}
	}
	if len(c.RoleMap) > 0 && c.RolesClaim == "" {
		return errors.New("jwt.role_map: set without jwt.roles_claim")
	}
	return nil
}

// checkJWKSURL accepts https URLs, and http URLs to a loopback address.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a URL")
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return errors.New("is not an http(s) URL with a host")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || strings.EqualFold(host, "localhost") {
			return nil
		}
		return errors.New("uses http to a host that is not loopback; use https")
	default:
		return errors.New("is not an http(s) URL")
	}
}

// scopeModels returns the model patterns among scope entries.
func scopeModels(entries []string) ([]string, bool) {
	var models []string
	for _, s := range entries {
		m, ok := strings.CutPrefix(s, "model:")
		if !ok {
			continue
		}
		if _, err := path.Match(m, ""); err != nil || m == "" {
			return nil, false
		}
		models = append(models, m)
	}
	return models, true
}
