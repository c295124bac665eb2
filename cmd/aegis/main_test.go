package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"serve"}, "model_repository: must be set"},
		{[]string{"serve", "--model-repository", "x", "--http-addr", "nohost"}, "http_addr"},
		{[]string{"serve", "--model-repository", "x", "extra"}, "unexpected argument"},
		{[]string{"serve", "--config", "/nonexistent/aegis.yaml"}, "read config"},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		err := run(tc.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := run([]string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "aegis ") {
		t.Errorf("version: %v %q", err, out.String())
	}
}

// TestServeBinary builds the real binary, serves the fixtures with JSON
// logs, answers a request, and exits cleanly on SIGTERM.
func TestServeBinary(t *testing.T) {
	root := servertest.RepoRoot(t)
	bin := filepath.Join(t.TempDir(), "aegis")
	build := exec.Command("go", "build", "-o", bin, "./cmd/aegis")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--model-repository", servertest.Models(t),
		"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-format", "json", "--sandbox",
		"--plaintext", "--no-auth", "--no-audit", "--onnxruntime-lib", servertest.LibraryPath(t))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"msg": "NOT JSON: " + sc.Text()}
			}
			lines <- m
		}
		close(lines)
	}()
	var httpAddr string
	timeout := time.After(30 * time.Second)
	for httpAddr == "" {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("server exited before serving")
			}
			if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "NOT JSON") {
				t.Errorf("log line is not JSON: %s", msg)
			}
			if m["msg"] == "serving" {
				httpAddr, _ = m["http"].(string)
			}
		case <-timeout:
			t.Fatal("server did not start within 30s")
		}
	}
	resp, err := http.Post("http://"+httpAddr+"/v2/models/digits/infer", "application/json",
		strings.NewReader(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[`+strings.Repeat("[0,0,0,0,0,0,0,0],", 7)+`[0,0,0,0,0,0,0,0]]}],"outputs":[{"name":"label"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"label"`) {
		t.Errorf("infer: %d %s", resp.StatusCode, body)
	}

	// The sandbox holds, and the server served under it.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "NoNewPrivs:\t1") || !strings.Contains(string(status), "Seccomp:\t2") {
		t.Errorf("server not sandboxed:\n%s", status)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := false
	for m := range lines {
		if m["msg"] == "stopped" {
			stopped = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if !stopped {
		t.Error(`no "stopped" log line after SIGTERM`)
	}
}

func TestKeysGenerateAndModelEncrypt(t *testing.T) {
	dir := t.TempDir()
	id := filepath.Join(dir, "keys", "identity.txt")
	var out, errb bytes.Buffer
	if err := run([]string{"keys", "generate", "--out", id}, &out, &errb); err != nil {
		t.Fatalf("keys generate: %v", err)
	}
	rcpt := strings.TrimSpace(out.String())
	if !strings.HasPrefix(rcpt, "age1") {
		t.Fatalf("recipient %q", rcpt)
	}
	if err := run([]string{"keys", "generate", "--out", id}, io.Discard, io.Discard); err == nil {
		t.Error("keys generate overwrote an identity")
	}
	model := filepath.Join(servertest.Models(t), "digits", "1", "model.onnx")
	enc := filepath.Join(dir, "model.onnx.age")
	if err := run([]string{"model", "encrypt", "--recipient", rcpt, model, enc}, io.Discard, io.Discard); err != nil {
		t.Fatalf("model encrypt: %v", err)
	}
	if err := run([]string{"model", "encrypt", "--recipient", rcpt, model, enc}, io.Discard, io.Discard); err == nil {
		t.Error("model encrypt overwrote its output")
	}
	if err := run([]string{"model", "encrypt", model, filepath.Join(dir, "x.age")}, io.Discard, io.Discard); err == nil {
		t.Error("model encrypt without recipients succeeded")
	}
	c, err := keys.LoadIdentityFile(id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := seal.DecryptFile(enc, c.Identity(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wipe()
	want, _ := os.ReadFile(model)
	if !bytes.Equal(p.Bytes(), want) {
		t.Error("decrypted model differs from the original")
	}
}

// TestSignVerifyInspect runs the signing commands the way an operator
// would: sign, encrypt, verify with and without the key, inspect.
func TestSignVerifyInspect(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "sign.pem")
	if err := run([]string{"keys", "generate", "--signing", "--out", key}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	id := filepath.Join(dir, "id.txt")
	var rcpt bytes.Buffer
	if err := run([]string{"keys", "generate", "--out", id}, &rcpt, io.Discard); err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(dir, "m", "1")
	os.MkdirAll(m, 0o755)
	b, _ := os.ReadFile(filepath.Join(servertest.Models(t), "digits", "1", "model.onnx"))
	os.WriteFile(filepath.Join(m, "model.onnx"), b, 0o644)
	if err := run([]string{"model", "sign", "--key", key, m}, io.Discard, io.Discard); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if err := run([]string{"model", "encrypt", "--recipient", strings.TrimSpace(rcpt.String()), filepath.Join(m, "model.onnx")}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(m, "model.onnx"))
	var out bytes.Buffer
	if err := run([]string{"model", "verify", "--key", key + ".pub", "--identity-file", id, m}, &out, io.Discard); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !strings.Contains(out.String(), "verified: key signature by key sha256:") {
		t.Errorf("verify said %q", out.String())
	}
	if err := run([]string{"model", "verify", "--key", key + ".pub", m}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("verify of an encrypted model without its key: %v", err)
	}
	out.Reset()
	if err := run([]string{"model", "inspect", m}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"model.onnx.age", "encrypted for: X25519 recipient", "signature: key method", "key hint sha256:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "AGE-SECRET-KEY") {
		t.Error("inspect printed a secret key")
	}
}
