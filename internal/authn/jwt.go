package authn

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// JWT authenticates "Authorization: Bearer <JWT>" against an OIDC
// provider's signing keys. Any Bearer credential that does not start with
// APIKeyPrefix is taken as a JWT.
//
// A token is accepted only if: it is a compact JWS whose "alg" is allowed;
// its "kid" names a key of the configured JWKS whose type, curve and
// "alg"/"use" (if set) fit that alg; the signature verifies with that key;
// "iss" is Issuer; "aud" names one of Audiences; "exp" is present and not
// past, "nbf" not future, "iat" not future (each with ClockSkew); and the
// subject claim is a non-empty printable string. Header parameters that
// carry or point to keys (jwk, jku, x5u, x5c) are ignored: keys come only
// from the configured JWKS.
//
// An unknown kid makes it fetch the JWKS again, at most once per
// MinRefreshInterval; otherwise the JWKS is fetched every RefreshInterval.
// A failed fetch keeps the previous keys.
type JWT struct {
	cfg      JWTConfig
	algs     []jose.SignatureAlgorithm
	expected jwt.Expected
	keys     *jwksSource
	now      func() time.Time
	log      *slog.Logger

	closed atomic.Bool
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the refresher returns
}

var _ Authenticator = (*JWT)(nil)

// maxTokenLen bounds the tokens parsed.
const maxTokenLen = 16 << 10

// NewJWT validates cfg, loads the key set once (failing if it cannot) and
// starts refreshing it in the background until Close. A nil log means
// slog.Default().
func NewJWT(ctx context.Context, cfg JWTConfig, log *slog.Logger) (*JWT, error) {
	return newJWT(ctx, cfg, log, time.Now)
}

func newJWT(ctx context.Context, cfg JWTConfig, log *slog.Logger, now func() time.Time) (*JWT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	j := &JWT{
		cfg:      cfg,
		expected: jwt.Expected{Issuer: cfg.Issuer, AnyAudience: jwt.Audience(slices.Clone(cfg.Audiences))},
		keys:     newJWKSSource(cfg, now),
		now:      now,
		log:      log,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, a := range cfg.Algorithms {
		j.algs = append(j.algs, jose.SignatureAlgorithm(a))
	}
	if err := j.keys.refresh(ctx, true); err != nil {
		return nil, err
	}
	go j.refresher(cfg.RefreshInterval)
	return j, nil
}

func (j *JWT) refresher(every time.Duration) {
	defer close(j.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-t.C:
			if !j.keys.changed() {
				continue
			}
			before := j.keys.current()
			if err := j.keys.refresh(context.Background(), true); err != nil {
				j.log.Warn("jwks refresh failed; keeping the previous keys", "err", err)
			} else if j.keys.current() != before {
				j.log.Info("jwks changed", "keys", len(j.keys.current().byKid))
			}
		}
	}
}

// Reload loads the key set now, whatever the rate limit, and returns when
// it is in use or the load failed (the previous keys stay in use).
func (j *JWT) Reload(ctx context.Context) error {
	return j.keys.refresh(ctx, true)
}

// Close stops the background refresh. The authenticator then refuses every
// token.
func (j *JWT) Close() error {
	if j.closed.Swap(true) {
		return nil
	}
	close(j.stop)
	<-j.done
	return nil
}

// Method implements Authenticator.
func (j *JWT) Method() string { return pipeline.MethodJWT }

const (
	reasonJWTClosed       = "jwt: authenticator closed"
	reasonJWTTooLong      = "jwt: too long"
	reasonJWTMalformed    = "jwt: malformed"
	reasonJWTAlgorithm    = "jwt: algorithm not allowed"
	reasonJWTNoKid        = "jwt: missing kid"
	reasonJWTUnknownKid   = "jwt: unknown kid"
	reasonJWTKeyMismatch  = "jwt: key does not fit alg"
	reasonJWTSignature    = "jwt: bad signature"
	reasonJWTClaims       = "jwt: malformed claims"
	reasonJWTNoExp        = "jwt: missing exp"
	reasonJWTIssuer       = "jwt: wrong issuer"
	reasonJWTAudience     = "jwt: wrong audience"
	reasonJWTExpired      = "jwt: expired"
	reasonJWTNotYetValid  = "jwt: not yet valid"
	reasonJWTIssuedFuture = "jwt: issued in the future"
	reasonJWTSubject      = "jwt: bad subject"
	reasonJWTGroups       = "jwt: bad groups claim"
	reasonJWTRoles        = "jwt: bad roles claim"
	reasonJWTScope        = "jwt: bad scope claim"
)

func jwtInvalid(reason string) error { return invalid(pipeline.MethodJWT, reason) }

// Authenticate implements Authenticator. The principal is "jwt:<subject>"
// with the token's groups, mapped roles, model scopes and exp.
func (j *JWT) Authenticate(ctx context.Context, c Credentials) (*pipeline.Principal, error) {
	scheme, tok, ok := splitAuthorization(c.Authorization)
	if !ok || !strings.EqualFold(scheme, schemeBearer) || strings.HasPrefix(tok, APIKeyPrefix) {
		return nil, ErrNoCredential
	}
	if j.closed.Load() {
		return nil, jwtInvalid(reasonJWTClosed)
	}
	if len(tok) > maxTokenLen {
		return nil, jwtInvalid(reasonJWTTooLong)
	}
	now := j.now()
	var sum [sha256.Size]byte
	if ks := j.keys.current(); ks.cache != nil {
		sum = tokenSum(tok)
		if p, ok := ks.cache.get(sum, now, j.cfg.ClockSkew); ok {
			return p, nil
		}
	}
	p, ks, err := j.verify(ctx, tok, now)
	if err != nil {
		return nil, err
	}
	if ks.cache != nil {
		if sum == ([sha256.Size]byte{}) {
			sum = tokenSum(tok)
		}
		ks.cache.put(sum, p)
	}
	return p, nil
}

// tokenBufs spares tokenSum an allocation per request.
var tokenBufs = sync.Pool{New: func() any { return new([maxTokenLen]byte) }}

// tokenSum returns the SHA-256 of tok (at most maxTokenLen bytes).
func tokenSum(tok string) [sha256.Size]byte {
	b := tokenBufs.Get().(*[maxTokenLen]byte)
	sum := sha256.Sum256(b[:copy(b[:], tok)])
	tokenBufs.Put(b)
	return sum
}

// verify checks tok fully and returns its principal and the key set that
// verified it.
func (j *JWT) verify(ctx context.Context, tok string, now time.Time) (*pipeline.Principal, *keySet, error) {
	t, err := jwt.ParseSigned(tok, j.algs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, nil, jwtInvalid(reasonJWTAlgorithm)
		}
		return nil, nil, jwtInvalid(reasonJWTMalformed)
	}
	if len(t.Headers) != 1 {
		return nil, nil, jwtInvalid(reasonJWTMalformed)
	}
	h := t.Headers[0]
	if h.KeyID == "" {
		return nil, nil, jwtInvalid(reasonJWTNoKid)
	}
	ks := j.keys.current()
	cands := ks.byKid[h.KeyID]
	if len(cands) == 0 {
		// Perhaps the provider rotated its keys. The refresh is rate
		// limited, so random kids cannot make us hammer the provider.
		if err := j.keys.refresh(ctx, false); err != nil && err != errRateLimited && ctx.Err() == nil {
			j.log.Warn("jwks refresh for an unknown kid failed; keeping the previous keys", "err", err)
		}
		ks = j.keys.current()
		cands = ks.byKid[h.KeyID]
		if len(cands) == 0 {
			return nil, nil, jwtInvalid(reasonJWTUnknownKid)
		}
	}

	var (
		std    jwt.Claims
		claims map[string]any
		fits   bool
	)
	verified := false
	for i := range cands {
		k := &cands[i]
		if !keyFits(k, h.Algorithm) {
			continue
		}
		fits = true
		err := t.Claims(k.Key, &std, &claims)
		if err == nil {
			verified = true
			break
		}
		if !errors.Is(err, jose.ErrCryptoFailure) {
			// The signature verified; the payload is not a claims set.
			return nil, nil, jwtInvalid(reasonJWTClaims)
		}
	}
	switch {
	case !fits:
		return nil, nil, jwtInvalid(reasonJWTKeyMismatch)
	case !verified:
		return nil, nil, jwtInvalid(reasonJWTSignature)
	case std.Expiry == nil:
		return nil, nil, jwtInvalid(reasonJWTNoExp)
	}
	switch err := std.ValidateWithLeeway(j.expected.WithTime(now), j.cfg.ClockSkew); {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, nil, jwtInvalid(reasonJWTIssuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, nil, jwtInvalid(reasonJWTAudience)
	case errors.Is(err, jwt.ErrExpired):
		return nil, nil, jwtInvalid(reasonJWTExpired)
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, nil, jwtInvalid(reasonJWTNotYetValid)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, nil, jwtInvalid(reasonJWTIssuedFuture)
	default:
		return nil, nil, jwtInvalid(reasonJWTClaims)
	}
	p, err := j.principal(claims)
	if err != nil {
		return nil, nil, err
	}
	p.Expires = std.Expiry.Time()
	return p, ks, nil
}

// maxSubjectLen bounds the subject, which becomes a principal id.
const maxSubjectLen = 256

func (j *JWT) principal(claims map[string]any) (*pipeline.Principal, error) {
	sub, ok := claims[j.cfg.SubjectClaim].(string)
	if !ok || sub == "" || len(sub) > maxSubjectLen || !printable(sub) || strings.ContainsFunc(sub, unicode.IsSpace) {
		return nil, jwtInvalid(reasonJWTSubject)
	}
	p := &pipeline.Principal{ID: "jwt:" + sub, Method: pipeline.MethodJWT}
	groups, ok := claimStrings(claims[j.cfg.GroupsClaim])
	if !ok {
		return nil, jwtInvalid(reasonJWTGroups)
	}
	p.Groups = groups
	if j.cfg.RolesClaim != "" {
		values, ok := claimStrings(claims[j.cfg.RolesClaim])
		if !ok {
			return nil, jwtInvalid(reasonJWTRoles)
		}
		for _, v := range values {
			for _, r := range j.cfg.RoleMap[v] {
				if !slices.Contains(p.Roles, r) {
					p.Roles = append(p.Roles, r)
				}
			}
		}
	}
	if j.cfg.ScopeClaim != "" {
		v := claims[j.cfg.ScopeClaim]
		if s, isString := v.(string); isString {
			v = strings.Fields(s)
		}
		entries, ok := claimStrings(v)
		if !ok {
			return nil, jwtInvalid(reasonJWTScope)
		}
		if p.Scopes.Models, ok = scopeModels(entries); !ok {
			return nil, jwtInvalid(reasonJWTScope)
		}
	}
	return p, nil
}

// claimStrings reads a claim that is absent, a string, or an array of
// strings.
func claimStrings(v any) ([]string, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{v}, true
	case []string:
		return v, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}
