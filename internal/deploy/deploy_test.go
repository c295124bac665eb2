package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/modelsig"
)

// versions is an in-memory anti-rollback store.
type versions map[string]int64

func (v versions) Highest(m string) (int64, error) { return v[m], nil }
func (v versions) Record(m string, n int64) error {
	if n > v[m] {
		v[m] = n
	}
	return nil
}

func repoRoot() string { return filepath.Join("..", "..") }

func TestLoadTrust(t *testing.T) {
	root := repoRoot()
	p, err := Load(config.Deploy{
		TrustedKeys:         []string{filepath.Join(root, "testdata/model-signing/keys/certificate/signing-key-pub.pem")},
		TrustedCAs:          []string{filepath.Join(root, "testdata/model-signing/keys/certificate/ca-cert.pem")},
		SigstoreTrustedRoot: filepath.Join(root, "testdata/model-signing/sigstore/trusted_root.json"),
		KeylessIdentities:   []config.KeylessIdentity{{SAN: "stefanb@us.ibm.com", Issuer: "https://sigstore.verify.ibm.com/oauth2"}},
		PinnedDigests:       map[string]string{"3": strings.Repeat("a", 64)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys()) != 1 || p.trust.Roots == nil || p.trust.Sigstore == nil || len(p.trust.KeylessIdentities) != 1 || p.pinned[3] == "" {
		t.Errorf("policy %+v", p)
	}
	for name, c := range map[string]config.Deploy{
		"missing key":        {TrustedKeys: []string{"/nonexistent.pem"}},
		"CA file not PEM":    {TrustedCAs: []string{filepath.Join(root, "go.mod")}},
		"bad trusted root":   {SigstoreTrustedRoot: filepath.Join(root, "go.mod")},
		"bad keyless regexp": {KeylessIdentities: []config.KeylessIdentity{{SANRegexp: "(", Issuer: "x"}}},
		"bad pinned version": {PinnedDigests: map[string]string{"v1": strings.Repeat("a", 64)}},
	} {
		if _, err := Load(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("m"), 0o644)
	digest := strings.Repeat("b", 64)

	p, _ := Load(config.Deploy{PinnedDigests: map[string]string{"1": strings.Repeat("c", 64)}})
	if _, err := p.Check("m", 1, dir, digest, modelsig.Source{}, nil); err == nil || !strings.Contains(err.Error(), "pinned digest") {
		t.Errorf("pinned mismatch: %v", err)
	}
	if _, err := p.Check("m", 2, dir, digest, modelsig.Source{}, nil); err != nil {
		t.Errorf("unpinned version: %v", err)
	}

	p, _ = Load(config.Deploy{RequireSignature: true, TrustedKeys: []string{filepath.Join(repoRoot(), "testdata/model-signing/keys/certificate/signing-key-pub.pem")}})
	if _, err := p.Check("m", 1, dir, digest, modelsig.Source{}, nil); err == nil || !strings.Contains(err.Error(), "signature required") {
		t.Errorf("unsigned: %v", err)
	}

	p, _ = Load(config.Deploy{AntiRollback: true})
	vs := versions{}
	if _, err := p.Check("m", 2, dir, digest, modelsig.Source{}, nil); err == nil {
		t.Error("anti-rollback without a store accepted")
	}
	if _, err := p.Check("m", 2, dir, digest, modelsig.Source{}, vs); err != nil {
		t.Fatal(err)
	}
	if vs["m"] != 0 {
		t.Error("Check recorded a version before it was deployed")
	}
	p.Deployed("m", 2, vs)
	if _, err := p.Check("m", 1, dir, digest, modelsig.Source{}, vs); !errors.Is(err, ErrRollback) {
		t.Errorf("version 1 after 2: %v, want ErrRollback", err)
	}
	if _, err := p.Check("m", 2, dir, digest, modelsig.Source{}, vs); err != nil {
		t.Errorf("same version again: %v", err)
	}
}
