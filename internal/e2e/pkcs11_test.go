package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// TestServeWithSoftHSM: a model encrypted to an RSA key that lives on a
// SoftHSM2 token serves; the token unwraps the file key and the private key
// never leaves it.
func TestServeWithSoftHSM(t *testing.T) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatal("softhsm2-util not found: install the Debian package softhsm2 (scripts/install-deps.sh)")
	}
	module := "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("SoftHSM2 module missing: %v (Debian package softhsm2)", err)
	}
	dir := filepath.Join(t.TempDir(), "softhsm")
	cmd := exec.Command(filepath.Join(servertest.RepoRoot(t), "scripts", "softhsm-init.sh"), dir)
	cmd.Env = append(os.Environ(), "SOFTHSM_TOKEN_LABEL=aegis-e2e", "SOFTHSM_SO_PIN=5678", "SOFTHSM_USER_PIN=1234")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm-init.sh: %v\n%s", err, out)
	}
	t.Setenv("SOFTHSM2_CONF", filepath.Join(dir, "softhsm2.conf"))
	t.Setenv("AEGIS_E2E_PIN", "1234")
	hsm := config.PKCS11{Module: module, TokenLabel: "aegis-e2e", KeyLabel: "model-key", PINEnv: "AEGIS_E2E_PIN", Mechanism: keys.MechanismRSAX509}
	g, err := keys.GeneratePKCS11Key(keys.PKCS11Config{Module: hsm.Module, TokenLabel: hsm.TokenLabel, KeyLabel: hsm.KeyLabel, PINEnv: hsm.PINEnv, Mechanism: hsm.Mechanism}, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rcpt, err := keys.ParseRecipient(g.Recipient)
	if err != nil {
		t.Fatalf("recipient %q: %v", g.Recipient, err)
	}
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	plain := filepath.Join(repo, "digits", "1", "model.onnx")
	if err := seal.EncryptFile(plain, plain+".age", rcpt); err != nil {
		t.Fatal(err)
	}
	os.Remove(plain)

	cfg := servertest.Config(t, repo)
	cfg.Keys.PKCS11 = &hsm
	srv := servertest.Start(t, cfg)
	x := digitsTensor()
	want := inProcess(t, "digits", []tensor.Tensor{x})
	resp, err := srv.Clients(t)[3].Infer(context.Background(), &servertest.Request{Model: "digits", Inputs: []tensor.Tensor{x}})
	if err != nil {
		t.Fatalf("infer: %v (failures %v)", err, srv.Registry.Failures())
	}
	for i := range want {
		if d := sameTensor(resp.Outputs[i], want[i]); d != "" {
			t.Error(d)
		}
	}
	// A wrong PIN keeps the server from starting.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AEGIS_E2E_PIN", "0000")
	cfg.HTTPAddr, cfg.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	if s, err := newServer(cfg); err == nil {
		s.Serve(cancelled())
		t.Fatal("server started with a wrong PIN")
	}
}
