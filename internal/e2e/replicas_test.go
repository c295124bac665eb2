package e2e

import (
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/ratelimit/redistest"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestReplicasShareLimitsInRedis: two servers (replicas) with the Redis
// rate-limit backend share one principal's budget; when Redis goes away
// they refuse with 503 (fail closed), and they recover when it is back.
func TestReplicasShareLimitsInRedis(t *testing.T) {
	rs := redistest.StartT(t)
	// The same principal on both replicas: a JWT subject from one
	// identity provider (each replica has its own state directory, so an
	// API key would exist on one only).
	idp := newIDP(t)
	mk := func() *accessServer {
		cfg, sec := servertest.SecureConfig(t, accessRepo(t), accessPolicy)
		cfg.RateLimit.Backend = ratelimit.BackendRedis
		cfg.RateLimit.Redis.Addr = rs.Addr
		cfg.RateLimit.Requests = ratelimit.Rate{PerSecond: 0.5, Burst: 6}
		cfg.Auth.JWT = &config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: idp.jwks.URL}
		return &accessServer{sec: sec, cfg: cfg}
	}
	a, b := mk(), mk()
	tok := "Bearer " + idp.sign(t, idp.claims("alice"), idp.kid)
	a.srv = servertest.Start(t, a.cfg)
	b.srv = servertest.Start(t, b.cfg)
	ha, hb := a.httpClient(t, nil), b.httpClient(t, nil)
	infer := servertest.Path("digits", "")
	ok := 0
	for i := 0; i < 12; i++ {
		srv, hc := a, ha
		if i%2 == 1 {
			srv, hc = b, hb
		}
		if o := srv.rest(t, hc, "POST", infer, tok, digitsBody(1)); o.status == 200 {
			ok++
		} else if o.status != 429 {
			t.Fatalf("request %d: %+v", i, o)
		}
	}
	if ok != 6 {
		t.Errorf("%d requests admitted over two replicas with a shared burst of 6", ok)
	}
	// Redis gone: fail closed.
	rs.Stop()
	if o := a.rest(t, ha, "POST", infer, tok, digitsBody(1)); o.status != 503 {
		t.Errorf("with Redis down: %d, want 503", o.status)
	}
	// Redis back (empty: no persistence): both replicas serve again.
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		o := b.rest(t, hb, "POST", infer, tok, digitsBody(1))
		if o.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered after Redis restarted: %+v", o)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
