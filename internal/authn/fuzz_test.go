package authn

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

func FuzzParseAPIKey(f *testing.F) {
	f.Add(APIKeyPrefix + strings.Repeat("a", keyIDLen) + "_" + strings.Repeat("b", keySecretLen))
	f.Add(APIKeyPrefix + randomText(keyIDBytes) + "_" + randomText(keySecretBytes))
	f.Add("aegis__")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		id, secret, ok := parseAPIKey(key)
		if !ok {
			return
		}
		// Whatever parses is exactly the canonical shape.
		if APIKeyPrefix+id+"_"+secret != key || !validKeyID(id) || len(secret) != keySecretLen || !allInKeyAlphabet(secret) {
			t.Fatalf("parseAPIKey(%q) = %q, %q: not canonical", key, id, secret)
		}
	})
}

func FuzzAPIKeyAuthenticate(f *testing.F) {
	clk := newClock()
	db, _ := openDB(f)
	s := openTestStore(f, db, clk)
	key, _ := createKey(f, s, "a", nil, pipeline.Scopes{}, 0)
	f.Add("Bearer " + key)
	f.Add("ApiKey " + key)
	f.Add("Bearer " + key[:len(key)-1] + "b")
	f.Add("ApiKey x")
	f.Fuzz(func(t *testing.T, h string) {
		p, err := s.Authenticate(context.Background(), Credentials{Authorization: h})
		switch {
		case err == nil:
			// Only the real key, under a scheme that names it.
			_, cred, _ := splitAuthorization(h)
			if cred != key {
				t.Fatalf("accepted %q", h)
			}
			if p == nil {
				t.Fatal("nil principal")
			}
		case err != ErrNoCredential && !errors.Is(err, ErrInvalid):
			t.Fatalf("error outside the contract: %v", err)
		}
	})
}

func FuzzJWTAuthenticate(f *testing.F) {
	clk := newClock()
	rsaK := newRSASigningKey(f, "rsa1", 0)
	ecK := newECSigningKey(f, "ec1")
	srv := newJWKSServer(f, rsaK, ecK)
	cfg := testJWTConfig(srv.URL)
	cfg.TokenCacheSize = -1
	j := newTestJWT(f, cfg, clk)
	f.Add(rsaK.sign(f, claims(clk.Now(), "alice")))
	f.Add(ecK.sign(f, claims(clk.Now(), "alice")))
	f.Add(ecK.sign(f, with(claims(clk.Now(), "alice"), "groups", []string{"g"})))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := j.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + tok})
		switch {
		case err == nil:
			// Forging is out of reach: only alice's tokens (perhaps
			// re-encoded) can verify.
			if p == nil || p.ID != "jwt:alice" {
				t.Fatalf("accepted %q as %+v", tok, p)
			}
		case err != ErrNoCredential && !errors.Is(err, ErrInvalid):
			t.Fatalf("error outside the contract: %v", err)
		}
	})
}

func FuzzSplitAuthorization(f *testing.F) {
	f.Add("Bearer abc")
	f.Add("ApiKey  aegis_x")
	f.Add(" ")
	f.Fuzz(func(t *testing.T, h string) {
		scheme, cred, ok := splitAuthorization(h)
		if !ok {
			return
		}
		if scheme == "" || cred == "" || hasSpaceOrControl(scheme+cred) || !strings.HasPrefix(h, scheme+" ") || !strings.HasSuffix(h, cred) {
			t.Fatalf("splitAuthorization(%q) = %q, %q", h, scheme, cred)
		}
	})
}
