package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// grpcurlPath returns the grpcurl binary `make` installs, building it from
// the version pinned in go.mod if it is missing.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	root := servertest.RepoRoot(t)
	p := filepath.Join(root, "build", "bin", "grpcurl")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p = filepath.Join(t.TempDir(), "grpcurl")
	cmd := exec.Command("go", "build", "-o", p, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build grpcurl: %v\n%s", err, out)
	}
	return p
}

// TestRealClients runs the commands `make run` prints (scripts/demo-usage.sh),
// exactly as printed, with curl, grpcurl and the aegis CLI, against a
// server set up as the demo is (TLS from a local CA, API keys, the demo
// policy, the audit log), and checks the answers.
func TestRealClients(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	root := servertest.RepoRoot(t)
	policy, err := os.ReadFile(filepath.Join(root, "scripts", "demo-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	cfg, sec := servertest.SecureConfig(t, repo, string(policy))
	key := servertest.CreateKey(t, cfg, "demo", []string{"demo"}, pipeline.Scopes{}, 0)
	admin := servertest.CreateKey(t, cfg, "demo-admin", []string{"operator"}, pipeline.Scopes{}, 0)
	keyFile, adminFile := filepath.Join(sec.Dir, "api-key"), filepath.Join(sec.Dir, "admin-api-key")
	writeFile(t, keyFile, []byte(key+"\n"))
	writeFile(t, adminFile, []byte(admin+"\n"))
	srv := servertest.Start(t, cfg)

	out, err := exec.Command(filepath.Join(root, "scripts", "demo-usage.sh"), srv.HTTPAddr(), srv.GRPCAddr(), sec.CAFile, keyFile, adminFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	// The printed key, and the commands (with their continuation lines).
	var printedKey string
	var cmds []string
	lines := strings.Split(string(out), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if k, ok := strings.CutPrefix(l, "export AEGIS_API_KEY="); ok {
			printedKey = k
			continue
		}
		if !strings.HasPrefix(l, "curl ") && !strings.HasPrefix(l, "build/") && !strings.HasPrefix(l, "AEGIS_API_KEY=") {
			continue
		}
		cmd := l
		for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(cmd, "\\") + " " + strings.TrimSpace(lines[i])
		}
		cmds = append(cmds, cmd)
	}
	if printedKey != key {
		t.Fatalf("demo-usage.sh prints key %q, want the demo key", printedKey)
	}
	if len(cmds) != 7 {
		t.Fatalf("want 7 example commands, found %d:\n%s", len(cmds), strings.Join(cmds, "\n"))
	}
	// The commands name build/bin/grpcurl and build/aegis: point those at
	// binaries this test has (a shell function per name).
	aegisBin := filepath.Join(t.TempDir(), "aegis")
	build := exec.Command("go", "build", "-o", aegisBin, "./cmd/aegis")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build aegis: %v\n%s", err, b)
	}
	prelude := fmt.Sprintf("set -eo pipefail\nbuild/bin/grpcurl() { %q \"$@\"; }\nbuild/aegis() { %q \"$@\"; }\n", grpcurlPath(t), aegisBin)
	run := func(cmd, apiKey string) (string, error) {
		c := exec.Command("bash", "-c", prelude+cmd)
		c.Dir = root
		c.Env = append(os.Environ(), "AEGIS_API_KEY="+apiKey)
		b, err := c.CombinedOutput()
		return string(b), err
	}
	type inferResult struct {
		Outputs []struct {
			Name string
			Data []json.Number
		}
	}
	type grpcResult struct {
		ModelName string
		ID        string
		Outputs   []struct {
			Name     string
			Contents struct {
				Int64Contents []json.Number
			}
		}
	}
	checks := []func(t *testing.T, out string){
		func(t *testing.T, out string) { // REST metadata
			if !strings.Contains(out, `"platform":"onnxruntime_onnx"`) {
				t.Errorf("metadata: %s", out)
			}
		},
		func(t *testing.T, out string) { // REST infer
			var r inferResult
			if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Outputs) != 2 || r.Outputs[0].Name != "label" ||
				r.Outputs[0].Data[0] != "2" || r.Outputs[0].Data[1] != "8" {
				t.Errorf("infer: %s, want labels 2 and 8", out)
			}
		},
		func(t *testing.T, out string) { // gRPC metadata
			if !strings.Contains(out, `"name": "digits"`) || !strings.Contains(out, "onnxruntime_onnx") {
				t.Errorf("grpc metadata: %s", out)
			}
		},
		func(t *testing.T, out string) { // gRPC infer
			var r grpcResult
			if err := json.Unmarshal([]byte(out), &r); err != nil || r.ModelName != "digits" || r.ID != "demo-1" ||
				len(r.Outputs) == 0 || len(r.Outputs[0].Contents.Int64Contents) != 2 ||
				r.Outputs[0].Contents.Int64Contents[0] != "2" || r.Outputs[0].Contents.Int64Contents[1] != "8" {
				t.Errorf("grpc infer: %s", out)
			}
		},
		func(t *testing.T, out string) { // keys list with the admin key
			if !strings.Contains(out, "demo-admin") || !strings.Contains(out, "active") {
				t.Errorf("keys list: %s", out)
			}
		},
	}
	for i, cmd := range cmds[:5] {
		t.Run(strings.Fields(cmd)[0], func(t *testing.T) {
			out, err := run(cmd, key)
			if err != nil {
				t.Fatalf("%s: %v\n%s", cmd, err, out)
			}
			checks[i](t, out)
		})
	}
	// Without the key, or with a wrong one: refused.
	for _, bad := range []string{"", "aegis_wrong_key"} {
		out, _ := run(cmds[1]+" -w ' HTTP %{http_code}'", bad)
		if !strings.HasSuffix(strings.TrimSpace(out), "HTTP 401") {
			t.Errorf("curl infer with key %q: %s, want 401", bad, out)
		}
		out, err := run(cmds[3], bad)
		if err == nil || !strings.Contains(out, "Unauthenticated") {
			t.Errorf("grpcurl infer with key %q: %v %s, want Unauthenticated", bad, err, out)
		}
	}
	// The printed audit check, once the server has stopped.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	verify := strings.NewReplacer("build/demo-state/audit-signing.pub", filepath.Join(cfg.AuditKeyDir(), "audit-signing.pub"),
		"build/demo-state/audit/*.log", filepath.Join(filepath.Dir(cfg.AuditPath()), "*.log")).Replace(cmds[6])
	if out, err := run(verify, ""); err != nil || !strings.Contains(out, "audit log OK") || !strings.Contains(out, "clean shutdown") {
		t.Errorf("%s: %v\n%s", verify, err, out)
	}
}
