package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tlsconf"
)

// accessPolicy grants the scorer role inference on digits only, and the
// operator role the admin API; contractors are denied inference outright.
const accessPolicy = `
roles:
  scorer:
    permissions: [infer, metadata]
    models: ["digits"]
  operator:
    permissions: [admin, audit:read, list, metadata]
    models: ["*"]
bindings:
  - role: scorer
    principals: ["jwt:alice", "group:ml-team", "spiffe://aegis.test/ns/prod/scorer"]
  - role: operator
    principals: ["jwt:root"]
deny:
  - name: contractors-no-inference
    principals: ["group:contractors"]
    permissions: [infer]
    models: ["*"]
`

const (
	testIssuer   = "https://idp.aegis.test"
	testAudience = "aegis"
)

// idp is an OIDC identity provider for tests: an RSA signing key published
// as a JWKS on a loopback server.
type idp struct {
	key  *rsa.PrivateKey
	kid  string
	jwks *httptest.Server
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{key: key, kid: "idp-key-1"}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: p.kid, Algorithm: "RS256", Use: "sig"}}}
	body, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(p.jwks.Close)
	return p
}

// claims returns valid claims for sub, to be edited.
func (p *idp) claims(sub string, groups ...string) map[string]any {
	now := time.Now()
	c := map[string]any{"iss": testIssuer, "aud": testAudience, "sub": sub,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	if len(groups) > 0 {
		c["groups"] = groups
	}
	return c
}

// sign returns a compact RS256 JWS of claims with the given kid.
func (p *idp) sign(t *testing.T, claims map[string]any, kid string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: p.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// handMade builds a JWS with any header and an HMAC-SHA256 signature under
// key (or no signature when key is nil): the forgeries a verifier must
// refuse.
func handMade(header, claims map[string]any, key []byte) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	if key == nil {
		return signing + "."
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

// accessServer is a secured server and what its callers hold.
type accessServer struct {
	srv  *servertest.Server
	sec  *servertest.Secure
	cfg  config.Config
	idp  *idp
	keys map[string]string // API keys by name
	// clientCert is a client certificate from the server's CA for the
	// SPIFFE id spiffe://aegis.test/ns/prod/scorer.
	clientCert tls.Certificate
	// foreignCert is from another CA.
	foreignCert tls.Certificate
}

// accessRepo holds digits (which the scorer role may use) and dtype_fp32
// (which it may not).
func accessRepo(t *testing.T) string {
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	copyFixture(t, repo, "dtype_fp32", "dtype_fp32", "1")
	return repo
}

func startAccessServer(t *testing.T, clientAuth string, mutate func(*config.Config)) *accessServer {
	t.Helper()
	cfg, sec := servertest.SecureConfig(t, accessRepo(t), accessPolicy)
	a := &accessServer{sec: sec, idp: newIDP(t), keys: map[string]string{}}
	cfg.TLS.ClientAuth = clientAuth
	if clientAuth != "none" {
		cfg.TLS.ClientCAFile = sec.CAFile
	}
	cfg.Auth.JWT = &config.JWT{Issuer: testIssuer, Audiences: []string{testAudience}, JWKSURL: a.idp.jwks.URL}
	if mutate != nil {
		mutate(&cfg)
	}
	a.cfg = cfg
	key := func(name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) {
		a.keys[name] = servertest.CreateKey(t, cfg, name, roles, scopes, ttl)
	}
	key("scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	key("operator", []string{"operator"}, pipeline.Scopes{}, 0)
	key("narrow", []string{"scorer"}, pipeline.Scopes{Models: []string{"other"}}, 0)
	key("small-batch", []string{"scorer"}, pipeline.Scopes{MaxBatch: 1}, 0)
	key("no-role", nil, pipeline.Scopes{}, 0)
	key("expired", []string{"scorer"}, pipeline.Scopes{}, time.Second)
	key("to-revoke", []string{"scorer"}, pipeline.Scopes{}, 0)

	caCert, caKey, err := tlsconf.LoadCA(sec.PKI)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.IssueClient(sec.Dir, "scorer", caCert, caKey, tlsconf.ClientID{SPIFFEID: "spiffe://aegis.test/ns/prod/scorer"}); err != nil {
		t.Fatal(err)
	}
	if a.clientCert, err = tls.LoadX509KeyPair(filepath.Join(sec.Dir, "scorer.crt"), filepath.Join(sec.Dir, "scorer.key")); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(sec.Dir, "other-ca")
	otherCA, otherKey, err := tlsconf.GenerateCA(other, "Another CA")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.IssueClient(other, "intruder", otherCA, otherKey, tlsconf.ClientID{SPIFFEID: "spiffe://aegis.test/ns/prod/scorer"}); err != nil {
		t.Fatal(err)
	}
	if a.foreignCert, err = tls.LoadX509KeyPair(filepath.Join(other, "intruder.crt"), filepath.Join(other, "intruder.key")); err != nil {
		t.Fatal(err)
	}
	a.srv = servertest.Start(t, cfg)
	return a
}

func (a *accessServer) httpClient(t *testing.T, cert *tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: a.sec.ClientTLS(t, cert)}}
}

func (a *accessServer) grpcClient(t *testing.T, cert *tls.Certificate) pb.GRPCInferenceServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(a.srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(a.sec.ClientTLS(t, cert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewGRPCInferenceServiceClient(conn)
}

// outcome is what one call got: status (HTTP, or the HTTP equivalent of
// the gRPC code) and request id.
type outcome struct {
	status int
	id     string
	msg    string
}

func digitsBody(batch int) []byte {
	data := make([]string, 64*batch)
	for i := range data {
		data[i] = "1"
	}
	return []byte(fmt.Sprintf(`{"inputs":[{"name":"input","datatype":"FP32","shape":[%d,64],"data":[%s]}]}`, batch, strings.Join(data, ",")))
}

func (a *accessServer) rest(t *testing.T, c *http.Client, method, path, auth string, body []byte) outcome {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.HTTPURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	// Send the path exactly as written: no client-side cleaning.
	req.URL.Opaque = path
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return outcome{resp.StatusCode, resp.Header.Get("X-Request-Id"), string(b)}
}

func grpcInfer(ctx context.Context, c pb.GRPCInferenceServiceClient, model string, batch int) (outcome, error) {
	in := &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP32", Shape: []int64{int64(batch), 64},
		Contents: &pb.InferTensorContents{Fp32Contents: make([]float32, 64*batch)}}
	var hdr metadata.MD
	_, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: model, Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}, grpc.Header(&hdr))
	o := outcome{status: 200}
	if v := hdr.Get("x-request-id"); len(v) > 0 {
		o.id = v[0]
	}
	if err != nil {
		st, _ := status.FromError(err)
		o.status, o.msg = httpOf(st.Code().String()), st.Message()
	}
	return o, err
}

func httpOf(code string) int {
	return map[string]int{"OK": 200, "Unauthenticated": 401, "PermissionDenied": 403, "NotFound": 404,
		"InvalidArgument": 400, "Unavailable": 503, "Unimplemented": 501, "ResourceExhausted": 429}[code]
}

func withAuth(auth string) context.Context {
	ctx := context.Background()
	if auth != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", auth)
	}
	return ctx
}

// auditRecords stops the server and returns its audit records by request
// id, after checking the whole log verifies and ends with a clean close.
func (a *accessServer) auditRecords(t *testing.T) (byID map[string]map[string]any, all []map[string]any) {
	t.Helper()
	if err := a.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	files, err := audit.Files(a.cfg.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.LoadPublicKey(filepath.Join(a.cfg.AuditKeyDir(), audit.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(files, pub, audit.VerifyOptions{})
	if err != nil {
		t.Fatalf("audit log of the run does not verify: %v", err)
	}
	if !rep.Closed() || !rep.SignaturesChecked || rep.Requests == 0 {
		t.Fatalf("audit report %+v: want a closed, signed log with requests", rep)
	}
	byID = map[string]map[string]any{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r map[string]any
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			all = append(all, r)
			if id, _ := r["request_id"].(string); id != "" {
				byID[id] = r
			}
		}
		fh.Close()
	}
	return byID, all
}

// TestAttackMatrix tries every attack on the access controls over REST and
// gRPC: each must be refused with the right status and leave an audit
// record of the refusal, and the log of the whole run must verify.
func TestAttackMatrix(t *testing.T) {
	a := startAccessServer(t, "optional", nil)
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)
	infer := servertest.Path("digits", "")
	key := a.keys["scorer"]

	// Controls: the legitimate calls work, so refusals below are real.
	if o := a.rest(t, hc, "POST", infer, "Bearer "+key, digitsBody(1)); o.status != 200 {
		t.Fatalf("API key over REST: %+v", o)
	}
	if o, err := grpcInfer(withAuth("Bearer "+key), gc, "digits", 1); err != nil {
		t.Fatalf("API key over gRPC: %v %+v", err, o)
	}
	alice := a.idp.sign(t, a.idp.claims("alice"), a.idp.kid)
	if o := a.rest(t, hc, "POST", infer, "Bearer "+alice, digitsBody(1)); o.status != 200 {
		t.Fatalf("JWT over REST: %+v", o)
	}
	if _, err := grpcInfer(withAuth("Bearer "+alice), gc, "digits", 1); err != nil {
		t.Fatalf("JWT over gRPC: %v", err)
	}
	mtlsHTTP := a.httpClient(t, &a.clientCert)
	if o := a.rest(t, mtlsHTTP, "POST", infer, "", digitsBody(1)); o.status != 200 {
		t.Fatalf("client certificate over REST: %+v", o)
	}
	if _, err := grpcInfer(context.Background(), a.grpcClient(t, &a.clientCert), "digits", 1); err != nil {
		t.Fatalf("client certificate over gRPC: %v", err)
	}

	// Revoke one key through the admin API, with the operator's key.
	var created struct {
		Key    string         `json:"key"`
		Record map[string]any `json:"record"`
	}
	o := a.rest(t, hc, "POST", "/admin/v1/keys", "Bearer "+a.keys["operator"], []byte(`{"name":"made-by-admin","roles":["scorer"]}`))
	if o.status != 201 || json.Unmarshal([]byte(o.msg), &created) != nil || !strings.HasPrefix(created.Key, "aegis_") {
		t.Fatalf("create key through the admin API: %+v", o)
	}
	revokeID := strings.Split(a.keys["to-revoke"], "_")[1]
	if o := a.rest(t, hc, "DELETE", "/admin/v1/keys/"+revokeID, "Bearer "+a.keys["operator"], nil); o.status != 200 {
		t.Fatalf("revoke: %+v", o)
	}
	// The expired key was made with a one-second lifetime.
	time.Sleep(time.Until(time.Now().Add(1100 * time.Millisecond)))

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	id, secret := strings.Split(key, "_")[1], strings.Split(key, "_")[2]
	rsaPub, _ := x509.MarshalPKIXPublicKey(&a.idp.key.PublicKey)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT", "kid": a.idp.kid} }
	claims := a.idp.claims("alice")
	edit := func(k string, v any) map[string]any {
		c := a.idp.claims("alice")
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	good := a.idp.sign(t, claims, a.idp.kid)
	parts := strings.Split(good, ".")
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 1
	if sig[len(sig)/2] == '-' || sig[len(sig)/2] == '_' {
		sig[len(sig)/2] = 'A'
	}
	badSig := parts[0] + "." + parts[1] + "." + string(sig)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherIDP := &idp{key: otherKey, kid: a.idp.kid}

	unauthenticated := []struct {
		name, auth string
	}{
		{"no credential", ""},
		{"malformed: scheme only", "Bearer"},
		{"malformed: basic auth", "Basic dXNlcjpwYXNzd29yZA=="},
		{"malformed: two tokens", "Bearer a b"},
		{"malformed: api key with no parts", "Bearer aegis_"},
		{"malformed: non-ASCII bytes", "Bearer aegis_\u00e9\u00e9_\u00ff"},
		{"unknown api key", "Bearer aegis_" + strings.Repeat("a", len(id)) + "_" + strings.Repeat("b", len(secret))},
		{"revoked api key", "Bearer " + a.keys["to-revoke"]},
		{"expired api key", "Bearer " + a.keys["expired"]},
		{"api key, one character of the secret changed", "Bearer aegis_" + id + "_" + flip(secret, 5)},
		{"api key, last character of the secret changed", "Bearer aegis_" + id + "_" + flip(secret, len(secret)-1)},
		{"api key, one character of the id changed", "Bearer aegis_" + flip(id, 2) + "_" + secret},
		{"jwt alg none", "Bearer " + handMade(hdr("none"), claims, nil)},
		{"jwt HS256 keyed with the RSA public key (PEM)", "Bearer " + handMade(hdr("HS256"), claims, rsaPEM)},
		{"jwt HS256 keyed with the RSA public key (DER)", "Bearer " + handMade(hdr("HS256"), claims, rsaPub)},
		{"jwt HS256 keyed with the RSA modulus", "Bearer " + handMade(hdr("HS256"), claims, a.idp.key.PublicKey.N.Bytes())},
		{"jwt unknown kid", "Bearer " + a.idp.sign(t, claims, "no-such-kid")},
		{"jwt bad signature", "Bearer " + badSig},
		{"jwt signed by another key under the known kid", "Bearer " + otherIDP.sign(t, claims, a.idp.kid)},
		{"jwt expired", "Bearer " + a.idp.sign(t, edit("exp", time.Now().Add(-time.Hour).Unix()), a.idp.kid)},
		{"jwt not yet valid", "Bearer " + a.idp.sign(t, edit("nbf", time.Now().Add(time.Hour).Unix()), a.idp.kid)},
		{"jwt wrong issuer", "Bearer " + a.idp.sign(t, edit("iss", "https://evil.example"), a.idp.kid)},
		{"jwt wrong audience", "Bearer " + a.idp.sign(t, edit("aud", "someone-else"), a.idp.kid)},
		{"jwt without exp", "Bearer " + a.idp.sign(t, edit("exp", nil), a.idp.kid)},
	}
	forbidden := []struct {
		name, model, auth string
		batch             int
	}{
		{"api key asks for a model outside its role", "dtype_fp32", "Bearer " + key, 1},
		{"api key without any role", "digits", "Bearer " + a.keys["no-role"], 1},
		{"api key scoped to other models", "digits", "Bearer " + a.keys["narrow"], 1},
		{"api key over its batch scope", "digits", "Bearer " + a.keys["small-batch"], 2},
		{"jwt asks for a model outside its role", "dtype_fp32", "Bearer " + alice, 1},
		{"jwt of a contractor in an allowed group", "digits", "Bearer " + a.idp.sign(t, a.idp.claims("carol", "ml-team", "contractors"), a.idp.kid), 1},
		{"jwt of an unbound subject", "digits", "Bearer " + a.idp.sign(t, a.idp.claims("mallory"), a.idp.kid), 1},
	}

	type expectation struct {
		name   string
		id     string
		status int
		rule   string // prefix
	}
	var expect []expectation

	for _, tc := range unauthenticated {
		o := a.rest(t, hc, "POST", infer, tc.auth, digitsBody(1))
		if o.status != 401 || strings.Contains(o.msg, "digits") {
			t.Errorf("REST %s: got %d %q, want 401 naming nothing", tc.name, o.status, o.msg)
		}
		expect = append(expect, expectation{"REST " + tc.name, o.id, 401, "authn:"})
		if strings.ContainsFunc(tc.auth, func(r rune) bool { return r > 0x7e }) {
			continue // grpc-go refuses to send it
		}
		og, err := grpcInfer(withAuth(tc.auth), gc, "digits", 1)
		if err == nil || og.status != 401 {
			t.Errorf("gRPC %s: got %+v %v, want Unauthenticated", tc.name, og, err)
		}
		expect = append(expect, expectation{"gRPC " + tc.name, og.id, 401, "authn:"})
	}
	// The same refusals for metadata and the admin API: nothing but the
	// health probes is open.
	for _, p := range []string{"/v2", "/v2/models", "/v2/models/digits", "/v2/models/digits/ready", "/v2/models/nonexistent", "/admin/v1/keys", "/v2/nowhere"} {
		o := a.rest(t, hc, "GET", p, "", nil)
		if o.status != 401 {
			t.Errorf("GET %s without credential: %d, want 401", p, o.status)
		}
		expect = append(expect, expectation{"GET " + p, o.id, 401, "authn:"})
	}
	for _, p := range []string{"/v2/health/live", "/v2/health/ready"} {
		if o := a.rest(t, hc, "GET", p, "", nil); o.status != 200 {
			t.Errorf("health probe %s: %d, want 200", p, o.status)
		}
	}

	for _, tc := range forbidden {
		o := a.rest(t, hc, "POST", servertest.Path(tc.model, ""), tc.auth, digitsBody(tc.batch))
		if o.status != 403 {
			t.Errorf("REST %s: got %d %q, want 403", tc.name, o.status, o.msg)
		}
		expect = append(expect, expectation{"REST " + tc.name, o.id, 403, ""})
		og, err := grpcInfer(withAuth(tc.auth), gc, tc.model, tc.batch)
		if err == nil || og.status != 403 {
			t.Errorf("gRPC %s: got %+v %v, want PermissionDenied", tc.name, og, err)
		}
		expect = append(expect, expectation{"gRPC " + tc.name, og.id, 403, ""})
	}
	// A scorer may not use the admin API, and an unknown model and a
	// forbidden one look the same to it.
	for _, c := range []struct{ method, path string }{{"GET", "/admin/v1/keys"}, {"POST", "/admin/v1/policy/reload"}, {"GET", "/admin/v1/audit/status"}} {
		o := a.rest(t, hc, c.method, c.path, "Bearer "+key, nil)
		if o.status != 403 {
			t.Errorf("scorer %s %s: %d, want 403", c.method, c.path, o.status)
		}
		expect = append(expect, expectation{"scorer " + c.path, o.id, 403, ""})
	}
	hidden := a.rest(t, hc, "GET", "/v2/models/nonexistent", "Bearer "+key, nil)
	forbid := a.rest(t, hc, "GET", "/v2/models/dtype_fp32", "Bearer "+key, nil)
	if hidden.status != 403 || forbid.status != 403 || hidden.msg != forbid.msg {
		t.Errorf("a scorer can tell a missing model (%d %q) from a forbidden one (%d %q)", hidden.status, hidden.msg, forbid.status, forbid.msg)
	}

	// Path tricks in model names, with a valid credential: never served.
	for _, p := range []string{
		"/v2/models/../models/digits/infer", "/v2/models/%2e%2e/digits/infer", "/v2/models/%2E%2E%2Fdigits/infer",
		"/v2/models/digits%2F..%2Fdtype_fp32/infer", "/v2/models/dtype_fp32%2F..%2Fdigits/infer", "/v2/models/DIGITS/infer",
		"/v2/models/Digits/infer", "/v2/Models/digits/infer", "/v2/models/digits/infer/", "/v2/models/digits//infer",
		"/v2/models/./digits/infer", "/v2/models/digits%00/infer", "/v2/models/digits/versions/01/infer",
		"/v2/models/digits/versions/%31/infer/",
	} {
		o := a.rest(t, hc, "POST", p, "Bearer "+key, digitsBody(1))
		if o.status != 403 && o.status != 404 && o.status != 400 {
			t.Errorf("POST %s: %d, want it refused", p, o.status)
		}
		expect = append(expect, expectation{"path " + p, o.id, o.status, ""})
	}
	for _, m := range []string{"../digits", "digits/../dtype_fp32", "%2e%2e", "DIGITS", "digits/", "digits\x00", ""} {
		og, err := grpcInfer(withAuth("Bearer "+key), gc, m, 1)
		if err == nil || (og.status != 403 && og.status != 404) {
			t.Errorf("gRPC model %q: got %+v %v, want it refused", m, og, err)
		}
		expect = append(expect, expectation{fmt.Sprintf("gRPC model %q", m), og.id, og.status, ""})
	}

	// Connections that never get to a request: plain HTTP and plain
	// HTTP/2 to the TLS ports, a client certificate from another CA.
	tlsRefusals := 0
	resp, err := http.Get("http://" + a.srv.HTTPAddr() + infer)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP to the TLS port: %d %q", resp.StatusCode, b)
		}
	}
	tlsRefusals++
	plain, err := grpc.NewClient(a.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	if _, err := pb.NewGRPCInferenceServiceClient(plain).ServerMetadata(ctx, &pb.ServerMetadataRequest{}); err == nil {
		t.Error("plaintext gRPC to the TLS port was served")
	}
	cancel()
	plain.Close()
	tlsRefusals++
	if _, err := a.httpClient(t, &a.foreignCert).Get(a.srv.HTTPURL + "/v2"); err == nil {
		t.Error("a client certificate from another CA was accepted over REST")
	}
	tlsRefusals++
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if _, err := grpcInfer(ctx, a.grpcClient(t, &a.foreignCert), "digits", 1); err == nil {
		t.Error("a client certificate from another CA was accepted over gRPC")
	}
	cancel()
	tlsRefusals++

	// The server is still up and serving the legitimate caller.
	if o := a.rest(t, hc, "POST", infer, "Bearer "+key, digitsBody(1)); o.status != 200 {
		t.Fatalf("after the attacks: %+v", o)
	}

	byID, all := a.auditRecords(t)
	files, _ := audit.Files(a.cfg.AuditPath())
	pub, _ := audit.LoadPublicKey(filepath.Join(a.cfg.AuditKeyDir(), audit.PublicKeyFile))
	tamperRun(t, files, pub)
	for _, e := range expect {
		if e.id == "" {
			t.Errorf("%s: no request id in the response", e.name)
			continue
		}
		r, ok := byID[e.id]
		if !ok {
			t.Errorf("%s: no audit record for request %s", e.name, e.id)
			continue
		}
		if r["decision"] != "deny" || int(r["status"].(float64)) != e.status || !strings.HasPrefix(fmt.Sprint(r["rule"]), e.rule) {
			t.Errorf("%s: audit record %v, want deny, status %d, rule %s...", e.name, r, e.status, e.rule)
		}
	}
	handshakes := 0
	for _, r := range all {
		if r["rule"] == "tls-handshake" && r["decision"] == "deny" {
			handshakes++
		}
	}
	if handshakes < tlsRefusals {
		t.Errorf("%d refused TLS handshakes audited, want at least %d", handshakes, tlsRefusals)
	}
	// No secret, token or tensor in the log.
	raw, _ := json.Marshal(all)
	for name, k := range a.keys {
		if bytes.Contains(raw, []byte(strings.Split(k, "_")[2])) {
			t.Errorf("the audit log holds the secret of key %s", name)
		}
	}
	if bytes.Contains(raw, []byte(parts[2])) || bytes.Contains(raw, []byte(created.Key[len(created.Key)-20:])) {
		t.Error("the audit log holds a token or a key")
	}
}

// TestMTLSRequired: with client certificates required, a client without
// one or with one from another CA is refused in the handshake (and
// audited), and one from the server's CA is served as its SPIFFE id.
func TestMTLSRequired(t *testing.T) {
	a := startAccessServer(t, "require", nil)
	infer := servertest.Path("digits", "")
	if _, err := a.httpClient(t, nil).Post(a.srv.HTTPURL+infer, "application/json", bytes.NewReader(digitsBody(1))); err == nil {
		t.Error("REST without a client certificate was served")
	}
	if _, err := a.httpClient(t, &a.foreignCert).Post(a.srv.HTTPURL+infer, "application/json", bytes.NewReader(digitsBody(1))); err == nil {
		t.Error("REST with a certificate from another CA was served")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := grpcInfer(ctx, a.grpcClient(t, nil), "digits", 1); err == nil {
		t.Error("gRPC without a client certificate was served")
	}
	if _, err := grpcInfer(ctx, a.grpcClient(t, &a.foreignCert), "digits", 1); err == nil {
		t.Error("gRPC with a certificate from another CA was served")
	}
	o := a.rest(t, a.httpClient(t, &a.clientCert), "POST", infer, "", digitsBody(1))
	if o.status != 200 {
		t.Fatalf("valid client certificate: %+v", o)
	}
	og, err := grpcInfer(context.Background(), a.grpcClient(t, &a.clientCert), "digits", 1)
	if err != nil {
		t.Fatalf("valid client certificate over gRPC: %v", err)
	}
	_ = og
	byID, all := a.auditRecords(t)
	if r := byID[o.id]; r == nil || r["principal"] != "spiffe://aegis.test/ns/prod/scorer" || r["auth"] != "mtls" || r["decision"] != "allow" {
		t.Errorf("audit record of the mTLS request: %v", r)
	}
	handshakes := 0
	for _, r := range all {
		if r["rule"] == "tls-handshake" {
			handshakes++
		}
	}
	if handshakes < 4 {
		t.Errorf("%d refused handshakes audited, want 4", handshakes)
	}
}
