package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openDB opens a bbolt file in a fresh directory.
func openDB(t testing.TB) (*bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "aegis.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func testPepper() []byte {
	p := make([]byte, PepperSize)
	for i := range p {
		p[i] = byte(i)
	}
	return p
}

// signingKey is a test signing key and the JWK published for it.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaPool []*rsa.PrivateKey
)

// rsaKey returns the i-th of a few RSA keys generated once per test
// binary (2048-bit generation is slow under -race).
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaPool = append(rsaPool, k)
		}
	})
	return rsaPool[i]
}

func newRSASigningKey(t testing.TB, kid string, i int) signingKey {
	return signingKey{kid: kid, alg: jose.RS256, priv: rsaKey(t, i)}
}

func newECSigningKey(t testing.TB, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: k}
}

func (k signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Use: "sig", Algorithm: string(k.alg)}
}

// sign returns a compact JWT of claims signed by k with go-jose.
func (k signingKey) sign(t testing.TB, claims any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawRS256 builds a token with exactly this header, signed RS256 by priv
// (for headers go-jose would not write).
func rawRS256(t testing.TB, header map[string]any, claims any, priv *rsa.PrivateKey) string {
	t.Helper()
	input := b64(mustJSON(t, header)) + "." + b64(mustJSON(t, claims))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64(sig)
}

// jwksServer serves a JWK Set on 127.0.0.1 and counts requests.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
}

func newJWKSServer(t testing.TB, keys ...signingKey) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.publish(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) publish(t testing.TB, keys ...signingKey) {
	t.Helper()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk())
	}
	s.publishRaw(mustJSON(t, set), http.StatusOK)
}

func (s *jwksServer) publishRaw(body []byte, status int) {
	s.mu.Lock()
	s.body, s.status = body, status
	s.mu.Unlock()
}

const (
	testIssuer   = "https://idp.example"
	testAudience = "aegis"
)

// claims returns valid claims for sub at now.
func claims(now time.Time, sub string) map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"aud": []string{"other", testAudience},
		"sub": sub,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func testJWTConfig(url string) JWTConfig {
	return JWTConfig{
		Issuer:          testIssuer,
		Audiences:       []string{testAudience},
		JWKSURL:         url,
		RefreshInterval: time.Hour, // tests refresh explicitly
	}
}

// newTestJWT starts a JWT authenticator on clk.
func newTestJWT(t testing.TB, cfg JWTConfig, clk *clock) *JWT {
	t.Helper()
	j, err := newJWT(context.Background(), cfg, discardLog(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func bearer(tok string) Credentials { return Credentials{Authorization: "Bearer " + tok} }

// reasonOf returns the InvalidError reason of err, "<nil>" for nil, and
// "no credential" for ErrNoCredential.
func reasonOf(err error) string {
	if err == nil {
		return "<nil>"
	}
	if errors.Is(err, ErrNoCredential) {
		return "no credential"
	}
	if ie, ok := errors.AsType[*InvalidError](err); ok {
		return ie.Reason
	}
	return "unexpected error: " + err.Error()
}

// fakeAuth is an Authenticator made of functions.
type fakeAuth struct {
	MethodFunc       func() string
	AuthenticateFunc func(context.Context, Credentials) (*pipeline.Principal, error)
	calls            atomic.Int64
}

func (f *fakeAuth) Method() string { return f.MethodFunc() }

func (f *fakeAuth) Authenticate(ctx context.Context, c Credentials) (*pipeline.Principal, error) {
	f.calls.Add(1)
	return f.AuthenticateFunc(ctx, c)
}
