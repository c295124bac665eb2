package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

// createKey makes an API key with the scorer role in cfg's state
// directory, as `aegis keys create --offline` does before the server
// starts.
func createKey(cfg config.Config, name string) (string, error) {
	return app.CreateKeyOffline(cfg, name, []string{"scorer"}, pipeline.Scopes{}, 0)
}

// idp is a local OIDC identity provider: an RSA-2048 key published as a
// JWKS on a loopback listener, and one token it signed (RS256) for
// jwtSubject, valid for a day.
type idp struct {
	url   string
	token string
	srv   *http.Server
}

func startIDP() (*idp, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	const kid = "bench-idp-1"
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"}}})
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": jwtIssuer, "aud": jwtAudience, "sub": jwtSubject, "groups": []string{"ml-team"},
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(24 * time.Hour).Unix(),
	})
	jws, err := signer.Sign(claims)
	if err != nil {
		return nil, err
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	})}
	go srv.Serve(ln)
	return &idp{url: "http://" + ln.Addr().String() + "/jwks.json", token: tok, srv: srv}, nil
}

func (p *idp) close() { p.srv.Close() }
