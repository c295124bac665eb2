package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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

// TestRealClients runs the README's curl and grpcurl commands against a
// server and checks the answers.
func TestRealClients(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (Debian package curl)")
	}
	root := servertest.RepoRoot(t)
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	type result struct {
		Outputs []struct {
			Name string
			Data []json.Number
		}
	}

	t.Run("curl", func(t *testing.T) {
		out, err := exec.Command(curl, "-sS", "--fail-with-body", "-X", "POST", srv.HTTPURL+"/v2/models/digits/infer",
			"-H", "Content-Type: application/json", "-d", "@"+filepath.Join(root, "testdata", "digits", "sample.json")).Output()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("curl output %q: %v", out, err)
		}
		if len(r.Outputs) != 2 || r.Outputs[0].Name != "label" || r.Outputs[0].Data[0] != "2" || r.Outputs[0].Data[1] != "8" {
			t.Errorf("curl got %+v, want labels 2 and 8", r.Outputs)
		}
		out, err = exec.Command(curl, "-sS", srv.HTTPURL+"/v2/models/digits").Output()
		if err != nil || !strings.Contains(string(out), `"platform":"onnxruntime_onnx"`) {
			t.Errorf("curl metadata: %v %s", err, out)
		}
	})

	t.Run("grpcurl", func(t *testing.T) {
		bin := grpcurlPath(t)
		args := []string{"-plaintext", "-import-path", filepath.Join(root, "internal", "oip", "pb"), "-proto", "grpc_predict_v2.proto"}
		in, err := os.Open(filepath.Join(root, "testdata", "digits", "sample-grpc.json"))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		cmd := exec.Command(bin, append(args, "-d", "@", srv.GRPCAddr(), "inference.GRPCInferenceService/ModelInfer")...)
		cmd.Stdin = in
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl: %v\n%s", err, out)
		}
		var r struct {
			ModelName string
			ID        string
			Outputs   []struct {
				Name     string
				Contents struct {
					Int64Contents []json.Number
				}
			}
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("grpcurl output %q: %v", out, err)
		}
		if r.ModelName != "digits" || r.ID != "demo-1" || r.Outputs[0].Name != "label" ||
			len(r.Outputs[0].Contents.Int64Contents) != 2 || r.Outputs[0].Contents.Int64Contents[0] != "2" || r.Outputs[0].Contents.Int64Contents[1] != "8" {
			t.Errorf("grpcurl got %s", out)
		}
		out, err = exec.Command(bin, append(args, "-d", `{"name":"nosuch"}`, srv.GRPCAddr(), "inference.GRPCInferenceService/ModelMetadata")...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "NotFound") {
			t.Errorf("grpcurl unknown model: %v %s, want NotFound", err, out)
		}
	})
}
