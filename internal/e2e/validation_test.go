package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestInputConstraints: a model's config.yaml constrains input values;
// a reject rule refuses out-of-range inputs with 400 over both transports,
// a flag rule serves them and marks their audit record.
func TestInputConstraints(t *testing.T) {
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	copyFixture(t, repo, "dtype_fp32", "dtype_fp32", "1")
	writeFile(t, filepath.Join(repo, "digits", "config.yaml"), []byte("validation:\n  inputs:\n    input: {min: 0, max: 16}\n"))
	writeFile(t, filepath.Join(repo, "dtype_fp32", "config.yaml"), []byte("validation:\n  inputs:\n    x: {min: -1, max: 1, action: flag}\n"))
	policy := strings.Replace(accessPolicy, `models: ["digits"]`, `models: ["digits", "dtype_fp32"]`, 1)
	cfg, sec := servertest.SecureConfig(t, repo, policy)
	key := "Bearer " + servertest.CreateKey(t, cfg, "scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)

	if o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, digitsBody(1)); o.status != 200 {
		t.Fatalf("in range: %+v", o)
	}
	big := strings.Replace(string(digitsBody(1)), `"data":[1,`, `"data":[17,`, 1)
	o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, []byte(big))
	if o.status != 400 || !strings.Contains(o.msg, "outside the allowed range") || strings.Contains(o.msg, "17") {
		t.Errorf("out of range over REST: %d %q, want 400 naming the rule, not the value", o.status, o.msg)
	}
	if og, err := grpcInfer(withAuth(key), gc, "digits", 1); err != nil || og.status != 200 {
		t.Errorf("in range over gRPC (zeros): %+v %v", og, err)
	}
	flagged := a.rest(t, hc, "POST", servertest.Path("dtype_fp32", ""), key,
		[]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[0.5,2,0]}]}`))
	if flagged.status != 200 {
		t.Fatalf("flag rule: %+v", flagged)
	}
	byID, _ := a.auditRecords(t)
	if r := byID[flagged.id]; r == nil || r["flags"] != "validation:range:x" || r["decision"] != "allow" {
		t.Errorf("audit record of the flagged request: %v", r)
	}
	if r := byID[o.id]; r == nil || r["status"].(float64) != 400 {
		t.Errorf("audit record of the refused request: %v", r)
	}
}
