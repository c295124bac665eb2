package authn

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

func TestJWTAccepts(t *testing.T) {
	clk := newClock()
	rsaK := newRSASigningKey(t, "rsa1", 0)
	ecK := newECSigningKey(t, "ec1")
	srv := newJWKSServer(t, rsaK, ecK)
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)

	for _, k := range []signingKey{rsaK, ecK} {
		t.Run(string(k.alg), func(t *testing.T) {
			c := with(claims(clk.Now(), "alice"), "groups", []string{"ml", "ops"})
			p, err := j.Authenticate(context.Background(), bearer(k.sign(t, c)))
			if err != nil {
				t.Fatalf("got %v, want accepted", err)
			}
			want := &pipeline.Principal{
				ID:      "jwt:alice",
				Method:  pipeline.MethodJWT,
				Groups:  []string{"ml", "ops"},
				Expires: time.Unix(clk.Now().Add(time.Hour).Unix(), 0),
			}
			if !principalEqual(p, want) {
				t.Errorf("got %+v, want %+v", p, want)
			}
		})
	}
}

func principalEqual(a, b *pipeline.Principal) bool {
	return a.ID == b.ID && a.Method == b.Method && slices.Equal(a.Groups, b.Groups) &&
		slices.Equal(a.Roles, b.Roles) && slices.Equal(a.Scopes.Models, b.Scopes.Models) &&
		a.Expires.Equal(b.Expires)
}

func TestJWTRefuses(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	rsaK := newRSASigningKey(t, "rsa1", 0)
	ecK := newECSigningKey(t, "ec1")
	srv := newJWKSServer(t, rsaK, ecK)
	cfg := testJWTConfig(srv.URL)
	cfg.TokenCacheSize = -1
	j := newTestJWT(t, cfg, clk)

	pub := rsaK.priv.Public().(*rsa.PublicKey)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
	jwkN := b64(pub.N.Bytes())
	attacker := newRSASigningKey(t, "rsa1", 1) // same kid, key not in the JWKS
	valid := claims(now, "alice")

	hs256 := func(secret []byte) string {
		input := b64(mustJSON(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": "rsa1"})) + "." + b64(mustJSON(t, valid))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return input + "." + b64(m.Sum(nil))
	}
	none := func(kid string) string {
		return b64(mustJSON(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid})) + "." + b64(mustJSON(t, valid)) + "."
	}
	flipSig := func(tok string) string {
		i := strings.LastIndexByte(tok, '.')
		sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
		if err != nil {
			t.Fatal(err)
		}
		sig[len(sig)/2] ^= 0x01
		return tok[:i+1] + b64(sig)
	}
	flipPayload := func(tok string) string {
		parts := strings.Split(tok, ".")
		parts[1] = b64(mustJSON(t, with(valid, "sub", "mallory")))
		return strings.Join(parts, ".")
	}

	tests := []struct {
		name, tok, reason string
	}{
		{"alg none", none("rsa1"), reasonJWTAlgorithm},
		{"alg none, no kid", none(""), reasonJWTAlgorithm},
		{"HS256 keyed with the PKIX PEM public key", hs256(pemBytes), reasonJWTAlgorithm},
		{"HS256 keyed with the PKCS#1 PEM public key", hs256(pkcs1PEM), reasonJWTAlgorithm},
		{"HS256 keyed with the DER public key", hs256(der), reasonJWTAlgorithm},
		{"HS256 keyed with the JWK n", hs256([]byte(jwkN)), reasonJWTAlgorithm},
		{"HS256 keyed with n's bytes", hs256(pub.N.Bytes()), reasonJWTAlgorithm},
		{"RS384 (not allowed)", signingKey{kid: "rsa1", alg: jose.RS384, priv: rsaK.priv}.sign(t, valid), reasonJWTAlgorithm},
		{"unknown kid", newRSASigningKey(t, "nope", 0).sign(t, valid), reasonJWTUnknownKid},
		{"missing kid", signingKey{alg: jose.RS256, priv: rsaK.priv}.sign(t, valid), reasonJWTNoKid},
		{"bad RSA signature", flipSig(rsaK.sign(t, valid)), reasonJWTSignature},
		{"bad ECDSA signature", flipSig(ecK.sign(t, valid)), reasonJWTSignature},
		{"payload swapped", flipPayload(rsaK.sign(t, valid)), reasonJWTSignature},
		{"signed by a key not in the JWKS, with a kid that is", attacker.sign(t, valid), reasonJWTSignature},
		{"ES256 header on the RSA kid", signingKey{kid: "rsa1", alg: jose.ES256, priv: ecK.priv}.sign(t, valid), reasonJWTKeyMismatch},
		{"RS256 header on the EC kid", signingKey{kid: "ec1", alg: jose.RS256, priv: rsaK.priv}.sign(t, valid), reasonJWTKeyMismatch},
		{"expired", rsaK.sign(t, with(valid, "exp", now.Add(-2*time.Minute).Unix())), reasonJWTExpired},
		{"not yet valid", rsaK.sign(t, with(valid, "nbf", now.Add(2*time.Minute).Unix())), reasonJWTNotYetValid},
		{"issued in the future", rsaK.sign(t, with(valid, "iat", now.Add(2*time.Minute).Unix())), reasonJWTIssuedFuture},
		{"wrong issuer", rsaK.sign(t, with(valid, "iss", "https://evil.example")), reasonJWTIssuer},
		{"no issuer", rsaK.sign(t, with(valid, "iss", nil)), reasonJWTIssuer},
		{"wrong audience", rsaK.sign(t, with(valid, "aud", "other")), reasonJWTAudience},
		{"no audience", rsaK.sign(t, with(valid, "aud", nil)), reasonJWTAudience},
		{"missing exp", rsaK.sign(t, with(valid, "exp", nil)), reasonJWTNoExp},
		{"exp not a number", rsaK.sign(t, with(valid, "exp", "tomorrow")), reasonJWTClaims},
		{"missing sub", rsaK.sign(t, with(valid, "sub", nil)), reasonJWTSubject},
		{"sub not a string", rsaK.sign(t, with(valid, "sub", 42)), reasonJWTClaims},
		{"sub with a newline", rsaK.sign(t, with(valid, "sub", "alice\nadmin")), reasonJWTSubject},
		{"groups not strings", rsaK.sign(t, with(valid, "groups", []any{"ml", 7})), reasonJWTGroups},
		{"not a JWT", "hello", reasonJWTMalformed},
		{"two parts", "a.b", reasonJWTMalformed},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`, reasonJWTMalformed},
		{"too long", strings.Repeat("a", maxTokenLen+1), reasonJWTTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := j.Authenticate(context.Background(), bearer(tt.tok))
			if got := reasonOf(err); got != tt.reason || p != nil {
				t.Errorf("got %q (principal %v), want %q", got, p, tt.reason)
			}
			if err != nil && strings.Contains(err.Error(), tt.tok) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
	// The valid token these were derived from is accepted: the refusals
	// are due to the changes.
	if _, err := j.Authenticate(context.Background(), bearer(rsaK.sign(t, valid))); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	// Expiry and nbf honour the 60s skew.
	for _, c := range []map[string]any{
		with(valid, "exp", now.Add(-30*time.Second).Unix()),
		with(valid, "nbf", now.Add(30*time.Second).Unix()),
	} {
		if _, err := j.Authenticate(context.Background(), bearer(rsaK.sign(t, c))); err != nil {
			t.Errorf("within skew: got %v, want accepted", err)
		}
	}
}

// Even if HS256 got past the algorithm allow-list, an RSA key from the
// JWKS would not be used as an HMAC secret.
func TestJWTHMACNeverUsesPublicKey(t *testing.T) {
	clk := newClock()
	rsaK := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, rsaK)
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)
	j.algs = append(j.algs, jose.HS256) // what Validate refuses to configure

	der, _ := x509.MarshalPKIXPublicKey(rsaK.priv.Public())
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for _, secret := range [][]byte{pemBytes, der} {
		input := b64(mustJSON(t, map[string]any{"alg": "HS256", "kid": "rsa1"})) + "." + b64(mustJSON(t, claims(clk.Now(), "mallory")))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		_, err := j.Authenticate(context.Background(), bearer(input+"."+b64(m.Sum(nil))))
		if got := reasonOf(err); got != reasonJWTKeyMismatch {
			t.Errorf("got %q, want %q", got, reasonJWTKeyMismatch)
		}
	}
}

func TestJWTConfigRefusesUnsafeAlgorithms(t *testing.T) {
	for _, alg := range []string{"none", "HS256", "HS384", "HS512", "", "RS1"} {
		cfg := testJWTConfig("https://idp.example/jwks")
		cfg.Algorithms = []string{"RS256", alg}
		if err := cfg.Validate(); err == nil {
			t.Errorf("Algorithms %q: got nil, want an error", cfg.Algorithms)
		}
	}
}

func TestJWTConfigValidate(t *testing.T) {
	good := testJWTConfig("https://idp.example/jwks")
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name   string
		change func(*JWTConfig)
	}{
		{"no issuer", func(c *JWTConfig) { c.Issuer = "" }},
		{"no audience", func(c *JWTConfig) { c.Audiences = nil }},
		{"empty audience", func(c *JWTConfig) { c.Audiences = []string{""} }},
		{"no JWKS", func(c *JWTConfig) { c.JWKSURL = "" }},
		{"URL and file", func(c *JWTConfig) { c.JWKSFile = "/etc/jwks.json" }},
		{"file URL", func(c *JWTConfig) { c.JWKSURL = "file:///etc/jwks.json" }},
		{"http to a remote host", func(c *JWTConfig) { c.JWKSURL = "http://idp.example/jwks" }},
		{"http to a private address", func(c *JWTConfig) { c.JWKSURL = "http://10.0.0.1/jwks" }},
		{"no host", func(c *JWTConfig) { c.JWKSURL = "https:///jwks" }},
		{"user info", func(c *JWTConfig) { c.JWKSURL = "https://u:p@idp.example/jwks" }},
		{"negative skew", func(c *JWTConfig) { c.ClockSkew = -time.Second }},
		{"huge skew", func(c *JWTConfig) { c.ClockSkew = time.Hour }},
		{"refresh too often", func(c *JWTConfig) { c.RefreshInterval = time.Millisecond }},
		{"role map without claim", func(c *JWTConfig) { c.RoleMap = map[string][]string{"a": {"b"}} }},
		{"role map to nothing", func(c *JWTConfig) { c.RolesClaim = "roles"; c.RoleMap = map[string][]string{"a": {}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Audiences = slices.Clone(good.Audiences)
			tt.change(&c)
			if err := c.Validate(); err == nil {
				t.Errorf("got nil, want an error")
			}
		})
	}
	for _, u := range []string{"http://127.0.0.1:8080/jwks", "http://[::1]/jwks", "http://localhost/jwks", "https://idp.example/.well-known/jwks.json"} {
		c := good
		c.JWKSURL = u
		if err := c.Validate(); err != nil {
			t.Errorf("%s: got %v, want nil", u, err)
		}
	}
}

// Header parameters that carry or point at keys are ignored: the attacker's
// key is never fetched nor used.
func TestJWTIgnoresKeyBearingHeaders(t *testing.T) {
	clk := newClock()
	rsaK := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, rsaK)
	cfg := testJWTConfig(srv.URL)
	j := newTestJWT(t, cfg, clk)

	attackerKey := newRSASigningKey(t, "rsa1", 1)
	evil := newJWKSServer(t, attackerKey, signingKey{kid: "evil", alg: jose.RS256, priv: attackerKey.priv})
	attackerJWK := mustJSONMap(t, attackerKey.jwk())
	c := claims(clk.Now(), "mallory")

	tests := []struct {
		name   string
		header map[string]any
		reason string
	}{
		{"jku, known kid", map[string]any{"alg": "RS256", "kid": "rsa1", "jku": evil.URL}, reasonJWTSignature},
		{"jku, unknown kid", map[string]any{"alg": "RS256", "kid": "evil", "jku": evil.URL}, reasonJWTUnknownKid},
		{"x5u, known kid", map[string]any{"alg": "RS256", "kid": "rsa1", "x5u": evil.URL}, reasonJWTSignature},
		{"embedded jwk, known kid", map[string]any{"alg": "RS256", "kid": "rsa1", "jwk": attackerJWK}, reasonJWTSignature},
		{"embedded jwk, no kid", map[string]any{"alg": "RS256", "jwk": attackerJWK}, reasonJWTNoKid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := rawRS256(t, tt.header, c, attackerKey.priv.(*rsa.PrivateKey))
			_, err := j.Authenticate(context.Background(), bearer(tok))
			if got := reasonOf(err); got != tt.reason {
				t.Errorf("got %q, want %q", got, tt.reason)
			}
		})
	}
	if n := evil.hits.Load(); n != 0 {
		t.Errorf("the attacker's server got %d requests, want 0", n)
	}
	// The same header shape signed by the real key is accepted, so the
	// refusals above are the signature's doing.
	tok := rawRS256(t, map[string]any{"alg": "RS256", "kid": "rsa1", "jku": evil.URL}, c, rsaK.priv.(*rsa.PrivateKey))
	if _, err := j.Authenticate(context.Background(), bearer(tok)); err != nil {
		t.Errorf("real key with a jku header: got %v, want accepted", err)
	}
}

func mustJSONMap(t testing.TB, v any) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustJSON(t, v), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestJWTKeyRotation(t *testing.T) {
	clk := newClock()
	oldK := newRSASigningKey(t, "2030-01", 0)
	newK := newRSASigningKey(t, "2030-02", 1)
	srv := newJWKSServer(t, oldK)
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)
	ctx := context.Background()
	oldTok := oldK.sign(t, claims(clk.Now(), "alice"))
	newTok := newK.sign(t, claims(clk.Now(), "bob"))

	if _, err := j.Authenticate(ctx, bearer(oldTok)); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	// The provider publishes the new key next to the old one.
	srv.publish(t, oldK, newK)
	clk.Advance(11 * time.Second) // past the unknown-kid rate limit
	hits := srv.hits.Load()
	if p, err := j.Authenticate(ctx, bearer(newTok)); err != nil || p.ID != "jwt:bob" {
		t.Fatalf("new kid after rotation: got %v, %v; want jwt:bob", p, err)
	}
	if got := srv.hits.Load() - hits; got != 1 {
		t.Errorf("the unknown kid caused %d fetches, want 1", got)
	}
	if _, err := j.Authenticate(ctx, bearer(oldTok)); err != nil {
		t.Fatalf("old key while still published: %v", err)
	}
	// The provider drops the old key; after the next refresh its tokens
	// (even ones verified and cached before) are refused.
	srv.publish(t, newK)
	if err := j.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Authenticate(ctx, bearer(oldTok)); reasonOf(err) != reasonJWTUnknownKid {
		t.Errorf("old key after removal: got %q, want %q", reasonOf(err), reasonJWTUnknownKid)
	}
	if _, err := j.Authenticate(ctx, bearer(newTok)); err != nil {
		t.Errorf("new key after removal of the old: %v", err)
	}
}

func TestJWTPeriodicRefresh(t *testing.T) {
	clk := newClock()
	oldK := newRSASigningKey(t, "old", 0)
	newK := newRSASigningKey(t, "new", 1)
	srv := newJWKSServer(t, oldK, newK)
	cfg := testJWTConfig(srv.URL)
	cfg.RefreshInterval = time.Second
	j := newTestJWT(t, cfg, clk)
	oldTok := oldK.sign(t, claims(clk.Now(), "alice"))
	if _, err := j.Authenticate(context.Background(), bearer(oldTok)); err != nil {
		t.Fatal(err)
	}
	srv.publish(t, newK)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := j.Authenticate(context.Background(), bearer(oldTok))
		if reasonOf(err) == reasonJWTUnknownKid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old key still accepted 10s after it left the JWKS (last: %q)", reasonOf(err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestJWTUnknownKidRefetchIsRateLimited(t *testing.T) {
	clk := newClock()
	k := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, k)
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)
	ctx := context.Background()

	spray := func() int64 {
		before := srv.hits.Load()
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				tok := signingKey{kid: fmt.Sprintf("random-%d-%d", i, clk.Now().Unix()), alg: jose.RS256, priv: k.priv}.sign(t, claims(clk.Now(), "x"))
				if _, err := j.Authenticate(ctx, bearer(tok)); reasonOf(err) != reasonJWTUnknownKid {
					t.Errorf("random kid: got %q, want %q", reasonOf(err), reasonJWTUnknownKid)
				}
			})
		}
		wg.Wait()
		return srv.hits.Load() - before
	}
	// Right after the initial fetch: no fetch at all.
	if got := spray(); got != 0 {
		t.Errorf("100 random kids within 10s of the last fetch caused %d fetches, want 0", got)
	}
	clk.Advance(11 * time.Second)
	if got := spray(); got != 1 {
		t.Errorf("100 random kids 11s later caused %d fetches, want 1", got)
	}
	if got := spray(); got != 0 {
		t.Errorf("100 more random kids at once caused %d fetches, want 0", got)
	}
}

func TestJWTFetchFailureKeepsKeys(t *testing.T) {
	clk := newClock()
	k := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, k)
	cfg := testJWTConfig(srv.URL)
	cfg.TokenCacheSize = -1 // the key, not the cache, must accept
	j := newTestJWT(t, cfg, clk)
	tok := k.sign(t, claims(clk.Now(), "alice"))

	for name, pub := range map[string]func(){
		"500":                func() { srv.publishRaw([]byte("oops"), http.StatusInternalServerError) },
		"not JSON":           func() { srv.publishRaw([]byte("<html>"), http.StatusOK) },
		"no keys member":     func() { srv.publishRaw([]byte(`{}`), http.StatusOK) },
		"larger than capped": func() { srv.publishRaw([]byte(`{"keys":[],"pad":"`+strings.Repeat("x", 2<<20)+`"}`), http.StatusOK) },
	} {
		pub()
		if err := j.Reload(context.Background()); err == nil {
			t.Errorf("%s: Reload got nil, want an error", name)
		}
		if _, err := j.Authenticate(context.Background(), bearer(tok)); err != nil {
			t.Errorf("%s: token after a failed refresh: %v", name, err)
		}
	}
}

func TestJWTRefusesRedirect(t *testing.T) {
	k := newRSASigningKey(t, "rsa1", 0)
	good := newJWKSServer(t, k)
	redirect := httptest.NewServer(http.RedirectHandler(good.URL, http.StatusFound))
	defer redirect.Close()
	_, err := newJWT(context.Background(), testJWTConfig(redirect.URL), discardLog(), time.Now)
	if err == nil {
		t.Fatal("got nil, want an error: redirects are not followed")
	}
	if n := good.hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

func TestJWKSSkipsUnusableKeys(t *testing.T) {
	rsaK := newRSASigningKey(t, "good", 0)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := mustJSONMap(t, rsaK.jwk())
	doc := map[string]any{"keys": []any{
		map[string]any{"kty": "oct", "kid": "sym", "k": b64([]byte("secret"))},
		mustJSONMap(t, jose.JSONWebKey{Key: &small.PublicKey, KeyID: "small", Use: "sig"}),
		mustJSONMap(t, jose.JSONWebKey{Key: rsaK.priv.Public(), KeyID: "enc", Use: "enc"}),
		mustJSONMap(t, jose.JSONWebKey{Key: rsaK.priv.Public()}), // no kid
		map[string]any{"kty": "weird", "kid": "weird"},
		good,
	}}
	byKid, _, err := parseJWKS(mustJSON(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for kid := range byKid {
		kids = append(kids, kid)
	}
	if !slices.Equal(kids, []string{"good"}) {
		t.Errorf("usable kids: got %q, want [good]", kids)
	}
}

func TestJWTKeyAlgMustFit(t *testing.T) {
	clk := newClock()
	k := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t)
	jwk := k.jwk()
	jwk.Algorithm = "RS384" // the key is for RS384 only
	srv.publishRaw(mustJSON(t, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}), http.StatusOK)
	cfg := testJWTConfig(srv.URL)
	cfg.Algorithms = []string{"RS256", "RS384"}
	j := newTestJWT(t, cfg, clk)
	_, err := j.Authenticate(context.Background(), bearer(k.sign(t, claims(clk.Now(), "a"))))
	if got := reasonOf(err); got != reasonJWTKeyMismatch {
		t.Errorf("RS256 token, RS384 key: got %q, want %q", got, reasonJWTKeyMismatch)
	}
	k.alg = jose.RS384
	if _, err := j.Authenticate(context.Background(), bearer(k.sign(t, claims(clk.Now(), "a")))); err != nil {
		t.Errorf("RS384 token, RS384 key: %v", err)
	}
}

func TestJWTClaimsMapping(t *testing.T) {
	clk := newClock()
	k := newECSigningKey(t, "ec1")
	srv := newJWKSServer(t, k)
	cfg := testJWTConfig(srv.URL)
	cfg.SubjectClaim = "email"
	cfg.GroupsClaim = "https://example.com/groups"
	cfg.RolesClaim = "realm_roles"
	cfg.RoleMap = map[string][]string{"ml-admin": {"admin", "deployer"}, "ml-user": {"user"}, "both": {"user"}}
	cfg.ScopeClaim = "scope"
	j := newTestJWT(t, cfg, clk)
	base := claims(clk.Now(), "ignored")

	tests := []struct {
		name   string
		claims map[string]any
		want   *pipeline.Principal
		reason string
	}{
		{
			name: "all mapped",
			claims: with(base, "email", "a@example.com", "https://example.com/groups", "ml",
				"realm_roles", []string{"ml-user", "both", "ml-admin", "unmapped"},
				"scope", "openid model:resnet-* model:bert profile"),
			want: &pipeline.Principal{ID: "jwt:a@example.com", Groups: []string{"ml"},
				Roles: []string{"user", "admin", "deployer"}, Scopes: pipeline.Scopes{Models: []string{"resnet-*", "bert"}}},
		},
		{
			name:   "roles as a string, scope as an array",
			claims: with(base, "email", "b@example.com", "realm_roles", "ml-user", "scope", []string{"model:x"}),
			want:   &pipeline.Principal{ID: "jwt:b@example.com", Roles: []string{"user"}, Scopes: pipeline.Scopes{Models: []string{"x"}}},
		},
		{
			name:   "nothing but the subject",
			claims: with(base, "email", "c@example.com"),
			want:   &pipeline.Principal{ID: "jwt:c@example.com"},
		},
		{name: "no subject claim", claims: base, reason: reasonJWTSubject},
		{name: "roles not strings", claims: with(base, "email", "d", "realm_roles", map[string]any{"a": 1}), reason: reasonJWTRoles},
		{name: "bad model pattern", claims: with(base, "email", "d", "scope", "model:[a"), reason: reasonJWTScope},
		{name: "scope a number", claims: with(base, "email", "d", "scope", 3), reason: reasonJWTScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := j.Authenticate(context.Background(), bearer(k.sign(t, tt.claims)))
			if tt.reason != "" {
				if got := reasonOf(err); got != tt.reason {
					t.Errorf("got %q, want %q", got, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Method = pipeline.MethodJWT
			tt.want.Expires = time.Unix(clk.Now().Add(time.Hour).Unix(), 0)
			if !principalEqual(p, tt.want) {
				t.Errorf("got %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestJWTFromFile(t *testing.T) {
	clk := newClock()
	k1 := newRSASigningKey(t, "k1", 0)
	k2 := newECSigningKey(t, "k2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(keys ...signingKey) {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
		for _, k := range keys {
			set.Keys = append(set.Keys, k.jwk())
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, mustJSON(t, set), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(k1)
	cfg := testJWTConfig("")
	cfg.JWKSFile = path
	cfg.RefreshInterval = 0 // the default for files: 1s
	j := newTestJWT(t, cfg, clk)
	ctx := context.Background()
	t1 := k1.sign(t, claims(clk.Now(), "one"))
	t2 := k2.sign(t, claims(clk.Now(), "two"))
	if _, err := j.Authenticate(ctx, bearer(t1)); err != nil {
		t.Fatal(err)
	}
	// Explicit Reload.
	write(k1, k2)
	if err := j.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Authenticate(ctx, bearer(t2)); err != nil {
		t.Fatalf("after Reload: %v", err)
	}
	// Change noticed without Reload.
	write(k2)
	deadline := time.Now().Add(10 * time.Second)
	for reasonOf(func() error { _, err := j.Authenticate(ctx, bearer(t1)); return err }()) != reasonJWTUnknownKid {
		if time.Now().After(deadline) {
			t.Fatal("k1 still accepted 10s after it left the file")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A broken file keeps the last good keys.
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := j.Reload(ctx); err == nil {
		t.Error("Reload of a broken file: got nil, want an error")
	}
	if _, err := j.Authenticate(ctx, bearer(t2)); err != nil {
		t.Errorf("after a broken file: %v", err)
	}
}

func TestJWTStartupNeedsKeys(t *testing.T) {
	srv := newJWKSServer(t)
	srv.publishRaw([]byte("nope"), http.StatusServiceUnavailable)
	if _, err := newJWT(context.Background(), testJWTConfig(srv.URL), discardLog(), time.Now); err == nil {
		t.Error("got nil, want an error when the first JWKS load fails")
	}
	cfg := testJWTConfig("")
	cfg.JWKSFile = filepath.Join(t.TempDir(), "missing.json")
	if _, err := newJWT(context.Background(), cfg, discardLog(), time.Now); err == nil {
		t.Error("missing file: got nil, want an error")
	}
}

func TestJWTTokenCache(t *testing.T) {
	clk := newClock()
	k := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, k)
	cfg := testJWTConfig(srv.URL)
	cfg.TokenCacheSize = 3
	j := newTestJWT(t, cfg, clk)
	ctx := context.Background()
	cache := func() *tokenCache { return j.keys.current().cache }

	tok := k.sign(t, with(claims(clk.Now(), "alice"), "exp", clk.Now().Add(10*time.Minute).Unix()))
	p1, err := j.Authenticate(ctx, bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	if got := cache().len(); got != 1 {
		t.Fatalf("cache holds %d tokens after one success, want 1", got)
	}
	p2, err := j.Authenticate(ctx, bearer(tok))
	if err != nil || p2 == p1 || !principalEqual(p1, p2) {
		t.Fatalf("cache hit: got %+v, %v; want an equal copy of %+v", p2, err, p1)
	}
	// Refused tokens are not cached, even when their signature verified.
	expired := k.sign(t, with(claims(clk.Now(), "bob"), "exp", clk.Now().Add(-time.Hour).Unix()))
	if _, err := j.Authenticate(ctx, bearer(expired)); err == nil {
		t.Fatal("expired token accepted")
	}
	if _, err := j.Authenticate(ctx, bearer(tok+"x")); err == nil {
		t.Fatal("tampered token accepted")
	}
	if got := cache().len(); got != 1 {
		t.Errorf("cache holds %d tokens after refusals, want 1", got)
	}
	// A cached token stops working when it expires (beyond the skew).
	clk.Advance(10*time.Minute + 30*time.Second)
	if _, err := j.Authenticate(ctx, bearer(tok)); err != nil {
		t.Errorf("cached token within skew: %v", err)
	}
	clk.Advance(time.Minute)
	if _, err := j.Authenticate(ctx, bearer(tok)); reasonOf(err) != reasonJWTExpired {
		t.Errorf("cached token past exp+skew: got %q, want %q", reasonOf(err), reasonJWTExpired)
	}
	// Bounded.
	for i := range 10 {
		if _, err := j.Authenticate(ctx, bearer(k.sign(t, claims(clk.Now(), fmt.Sprint("u", i))))); err != nil {
			t.Fatal(err)
		}
	}
	if got := cache().len(); got > 3 {
		t.Errorf("cache holds %d tokens, want at most 3", got)
	}
}

func TestJWTClosedRefuses(t *testing.T) {
	clk := newClock()
	k := newRSASigningKey(t, "rsa1", 0)
	srv := newJWKSServer(t, k)
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)
	tok := k.sign(t, claims(clk.Now(), "alice"))
	if _, err := j.Authenticate(context.Background(), bearer(tok)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if _, err := j.Authenticate(context.Background(), bearer(tok)); reasonOf(err) != reasonJWTClosed {
		t.Errorf("after Close: got %q, want %q", reasonOf(err), reasonJWTClosed)
	}
}

func TestJWTRecognises(t *testing.T) {
	clk := newClock()
	srv := newJWKSServer(t, newRSASigningKey(t, "rsa1", 0))
	j := newTestJWT(t, testJWTConfig(srv.URL), clk)
	for _, h := range []string{"", "Basic dXNlcjpwYXNz", "Bearer aegis_whatever", "ApiKey abc", "Bearer", "Bearer "} {
		if _, err := j.Authenticate(context.Background(), Credentials{Authorization: h}); err != ErrNoCredential {
			t.Errorf("%q: got %v, want ErrNoCredential", h, err)
		}
	}
	if _, err := j.Authenticate(context.Background(), Credentials{Authorization: "bearer x.y.z"}); !isInvalid(err) {
		t.Errorf("lower-case scheme: got %v, want a refusal", err)
	}
}

func isInvalid(err error) bool {
	_, ok := err.(*InvalidError)
	return ok
}
