package authn

import (
	"context"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// BenchmarkAPIKey is one successful API key authentication.
func BenchmarkAPIKey(b *testing.B) {
	db, _ := openDB(b)
	db.NoSync = true // setup speed only; verification never writes
	s, err := OpenKeyStore(db, testPepper())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for range 1000 { // a store that is not trivially small
		if _, _, err := s.Create("filler", nil, pipeline.Scopes{}, 0); err != nil {
			b.Fatal(err)
		}
	}
	key, _, err := s.Create("bench", []string{"user"}, pipeline.Scopes{}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	c := Credentials{Authorization: "Bearer " + key}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Authenticate(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJWT is one successful JWT authentication, with the verified
// token cache (a hit: every iteration presents the same token) and
// without it (the signature check every time).
func BenchmarkJWT(b *testing.B) {
	keys := map[string]signingKey{
		"RS256": newRSASigningKey(b, "rsa1", 0),
		"ES256": newECSigningKey(b, "ec1"),
	}
	srv := newJWKSServer(b, keys["RS256"], keys["ES256"])
	for _, alg := range []string{"RS256", "ES256"} {
		for _, cached := range []bool{true, false} {
			name := alg + "/uncached"
			if cached {
				name = alg + "/cached"
			}
			b.Run(name, func(b *testing.B) {
				cfg := testJWTConfig(srv.URL)
				if !cached {
					cfg.TokenCacheSize = -1
				}
				j, err := NewJWT(context.Background(), cfg, discardLog())
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				tok := keys[alg].sign(b, with(claims(time.Now(), "alice"), "groups", []string{"ml", "ops"}))
				c := bearer(tok)
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if _, err := j.Authenticate(ctx, c); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
