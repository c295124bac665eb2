package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestPolicyReload changes the policy file under a running server: the
// admin reload applies a valid file at once, and a broken one is refused
// with the previous policy left in force.
func TestPolicyReload(t *testing.T) {
	a := startAccessServer(t, "none", nil)
	hc := a.httpClient(t, nil)
	scorer, operator := "Bearer "+a.keys["scorer"], "Bearer "+a.keys["operator"]
	fp32 := servertest.Path("dtype_fp32", "")
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`)
	if o := a.rest(t, hc, "POST", fp32, scorer, body); o.status != 403 {
		t.Fatalf("before the change: %d, want 403", o.status)
	}
	wider := strings.Replace(accessPolicy, `models: ["digits"]`, `models: ["digits", "dtype_*"]`, 1)
	if err := os.WriteFile(a.sec.Policy, []byte(wider), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not applied until reloaded.
	if o := a.rest(t, hc, "POST", fp32, scorer, body); o.status != 403 {
		t.Fatalf("changed but not reloaded: %d, want 403", o.status)
	}
	if o := a.rest(t, hc, "POST", "/admin/v1/policy/reload", scorer, nil); o.status != 403 {
		t.Errorf("reload by a scorer: %d, want 403", o.status)
	}
	if o := a.rest(t, hc, "POST", "/admin/v1/policy/reload", operator, nil); o.status != 200 || !strings.Contains(o.msg, "policy_sha256") {
		t.Fatalf("reload: %+v", o)
	}
	if o := a.rest(t, hc, "POST", fp32, scorer, body); o.status != 200 {
		t.Fatalf("after reload: %d %s, want 200", o.status, o.msg)
	}
	// A broken file is refused; the wider policy stays.
	if err := os.WriteFile(a.sec.Policy, []byte("roles:\n  scorer:\n    permissions: [infr]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if o := a.rest(t, hc, "POST", "/admin/v1/policy/reload", operator, nil); o.status != 400 || strings.Contains(o.msg, "infr") {
		t.Errorf("broken reload: %d %q, want 400 without the file's contents", o.status, o.msg)
	}
	if o := a.rest(t, hc, "POST", fp32, scorer, body); o.status != 200 {
		t.Errorf("after a broken reload: %d, want the previous policy (200)", o.status)
	}
	byID, _ := a.auditRecords(t)
	n := 0
	for _, r := range byID {
		if r["action"] == "admin" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d admin actions audited, want 3", n)
	}
}
