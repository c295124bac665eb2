package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// signingKey makes a signing key pair and returns the private key path and
// the public key path.
func signingKey(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "sign.pem"), filepath.Join(dir, "sign.pub")
	if err := keys.GenerateSigningKey(priv, pub); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func signVersion(t *testing.T, dir, keyPath string) {
	t.Helper()
	signer, err := keys.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := modelsig.Sign(dir, signer, modelsig.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, modelsig.SignatureFile), b)
}

// TestDeployPolicy: with signatures required, signed models serve (also
// when encrypted after signing) and report their signer; unsigned,
// tampered, wrongly signed and digest-pinned-mismatched models never serve,
// each failure naming its check.
func TestDeployPolicy(t *testing.T) {
	priv, pub := signingKey(t)
	otherPriv, _ := signingKey(t)
	idPath := filepath.Join(t.TempDir(), "id.txt")
	g, _ := keys.GenerateIdentityFile(idPath)
	rcpt, _ := keys.ParseRecipient(g.Recipient)

	repo := t.TempDir()
	for _, m := range []string{"signed", "sealed", "unsigned", "tampered", "otherkey", "pinned", "pinbad"} {
		copyFixture(t, repo, "digits", m, "1")
	}
	for _, m := range []string{"signed", "sealed", "tampered", "pinned", "pinbad"} {
		signVersion(t, filepath.Join(repo, m, "1"), priv)
	}
	signVersion(t, filepath.Join(repo, "otherkey", "1"), otherPriv)
	// Encrypt after signing: the .age file stands for the signed plaintext.
	plain := filepath.Join(repo, "sealed", "1", "model.onnx")
	if err := seal.EncryptFile(plain, plain+".age", rcpt); err != nil {
		t.Fatal(err)
	}
	os.Remove(plain)
	// Tamper after signing.
	f := filepath.Join(repo, "tampered", "1", "model.onnx")
	b, _ := os.ReadFile(f)
	b[100] ^= 1
	os.WriteFile(f, b, 0o644)
	// Pin digests.
	model, _ := os.ReadFile(filepath.Join(servertest.Models(t), "digits", "1", "model.onnx"))
	sum := sha256.Sum256(model)
	digest := hex.EncodeToString(sum[:])
	writeFile(t, filepath.Join(repo, "pinned", "config.yaml"), []byte("deploy:\n  require_signature: true\n  trusted_keys: ["+pub+"]\n  pinned_digests: {\"1\": "+digest+"}\n"))
	writeFile(t, filepath.Join(repo, "pinbad", "config.yaml"), []byte("deploy:\n  require_signature: true\n  trusted_keys: ["+pub+"]\n  pinned_digests: {\"1\": "+strings.Repeat("ab", 32)+"}\n"))

	cfg := servertest.Config(t, repo)
	cfg.Keys.IdentityFile = idPath
	cfg.Deploy = config.Deploy{RequireSignature: true, TrustedKeys: []string{pub}}
	srv := servertest.Start(t, cfg)

	var loaded []string
	for _, m := range srv.Registry.Models() {
		loaded = append(loaded, m.Name)
	}
	if strings.Join(loaded, ",") != "pinned,sealed,signed" {
		t.Errorf("loaded %v, want pinned, sealed, signed", loaded)
	}
	failed := map[string]string{}
	for _, f := range srv.Registry.Failures() {
		if f.Version == "1" {
			failed[f.Model] = f.Err.Error()
		}
	}
	for model, want := range map[string][]string{
		"unsigned": {"signature required", "model.sig"},
		"tampered": {"file model.onnx", "has changed"},
		"otherkey": {"signature", "not made by any trusted key"},
		"pinbad":   {"pinned digest", digest},
	} {
		for _, w := range want {
			if !strings.Contains(failed[model], w) {
				t.Errorf("%s: failure %q, want it to mention %q", model, failed[model], w)
			}
		}
	}

	// Metadata reports provenance over both transports.
	var md struct{ Properties map[string]string }
	if code := getJSON(t, srv.HTTPURL+"/v2/models/sealed", &md); code != http.StatusOK {
		t.Fatalf("metadata: %d", code)
	}
	p := md.Properties
	if p["signed"] != "true" || p["signature_method"] != "key" || !strings.HasPrefix(p["signer"], "key sha256:") ||
		p["sha256"] != digest || p["encrypted"] != "true" || p["verified_at"] == "" {
		t.Errorf("REST properties %v", p)
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := pb.NewGRPCInferenceServiceClient(conn).ModelMetadata(t.Context(), &pb.ModelMetadataRequest{Name: "signed"})
	if err != nil || r.Properties["signer"] != p["signer"] || r.Properties["encrypted"] != "false" {
		t.Errorf("gRPC properties %v (%v)", r.GetProperties(), err)
	}
}

// TestAntiRollback: once version 3 has served, version 2 is refused, across
// a restart.
func TestAntiRollback(t *testing.T) {
	stateDir := t.TempDir()
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "m", "3")
	cfg := servertest.Config(t, repo)
	cfg.StateDir = stateDir
	cfg.Deploy.AntiRollback = true
	srv := servertest.Start(t, cfg)
	if m, ok := srv.Registry.Get("m"); !ok || m.Latest().Version() != "3" {
		t.Fatal("version 3 did not load")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	os.RemoveAll(filepath.Join(repo, "m", "3"))
	copyFixture(t, repo, "digits", "m", "2")
	srv = servertest.Start(t, cfg)
	if _, ok := srv.Registry.Get("m"); ok {
		t.Error("version 2 loaded after version 3 had been deployed")
	}
	found := false
	for _, f := range srv.Registry.Failures() {
		if f.Model == "m" && f.Version == "2" && strings.Contains(f.Err.Error(), "rollback refused") {
			found = true
		}
	}
	if !found {
		t.Errorf("no rollback failure reported: %v", srv.Registry.Failures())
	}
}
