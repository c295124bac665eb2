package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func digitsTensor() tensor.Tensor {
	return randomTensor(newRNG(), tensor.Spec{Name: "input", DType: tensor.FP32, Shape: []int64{-1, 64}}, 3)
}

// TestHotReloadByWatching: a version copied into the repository while the
// server runs is picked up, and serves by default once it is the newest.
func TestHotReloadByWatching(t *testing.T) {
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	cfg := servertest.Config(t, repo)
	cfg.ReloadDebounce = 50 * time.Millisecond
	srv := servertest.Start(t, cfg)
	c := srv.Clients(t)[0]

	// Stage version 2 outside, then move it in, as deployment tools do.
	staged := filepath.Join(t.TempDir(), "2")
	copyFixture(t, filepath.Dir(staged), "digits", ".", "2")
	if err := os.Rename(filepath.Join(filepath.Dir(staged), "2"), filepath.Join(repo, "digits", "2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "version 2", func() bool {
		m, ok := srv.Registry.Get("digits")
		return ok && m.Latest().Version() == "2"
	})
	resp, err := c.Infer(context.Background(), &servertest.Request{Model: "digits", Inputs: []tensor.Tensor{digitsTensor()}})
	if err != nil || resp.Version != "2" {
		t.Fatalf("after reload: version %v, %v", resp, err)
	}
	// Removing it retires it.
	os.RemoveAll(filepath.Join(repo, "digits", "2"))
	waitFor(t, "version 2 to retire", func() bool {
		m, ok := srv.Registry.Get("digits")
		return ok && m.Latest().Version() == "1"
	})
}

// TestReloadTamperSweep serves a signed, encrypted model, then offers
// version 2 in many tampered forms (a byte flipped in the header, in each
// payload chunk, in the final chunk; truncations; a changed signature):
// each is refused, none crashes the server, and version 1 keeps serving.
func TestReloadTamperSweep(t *testing.T) {
	priv, pub := signingKey(t)
	idPath := filepath.Join(t.TempDir(), "id.txt")
	g, _ := keys.GenerateIdentityFile(idPath)
	rcpt, _ := keys.ParseRecipient(g.Recipient)
	repo := t.TempDir()

	// A model large enough for several age chunks: the MLP (2.7 MB).
	makeVersion := func(v string) string {
		copyFixture(t, repo, "mlp", "m", v)
		dir := filepath.Join(repo, "m", v)
		signVersion(t, dir, priv)
		plain := filepath.Join(dir, "model.onnx")
		if err := seal.EncryptFile(plain, plain+".age", rcpt); err != nil {
			t.Fatal(err)
		}
		os.Remove(plain)
		return plain + ".age"
	}
	makeVersion("1")
	cfg := servertest.Config(t, repo)
	cfg.WatchRepository = false // this test reloads by hand
	cfg.Keys.IdentityFile = idPath
	cfg.Deploy = config.Deploy{RequireSignature: true, TrustedKeys: []string{pub}}
	srv := servertest.Start(t, cfg)
	c := srv.Clients(t)[3]
	x := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 784}}
	for i := 0; i < 784; i++ {
		x.Data = binary.LittleEndian.AppendUint32(x.Data, math.Float32bits(float32(i%10)/10))
	}
	want, err := c.Infer(context.Background(), &servertest.Request{Model: "m", Inputs: []tensor.Tensor{x}})
	if err != nil {
		t.Fatal(err)
	}

	good := makeVersion("2")
	pristine, _ := os.ReadFile(good)
	hdrEnd := bytes.Index(pristine, []byte("\n---")) + 1
	hdrEnd += bytes.IndexByte(pristine[hdrEnd:], '\n') + 1
	const chunk = 64<<10 + 16
	variants := map[string][]byte{}
	for _, pos := range []int{10, hdrEnd - 5, hdrEnd + 3, hdrEnd + 16 + 100, hdrEnd + 16 + chunk + 7, hdrEnd + 16 + 20*chunk, len(pristine) - 5} {
		b := bytes.Clone(pristine)
		b[pos] ^= 0x80
		variants["flip@"+itoa(pos)] = b
	}
	for _, n := range []int{hdrEnd, hdrEnd + 16 + chunk, len(pristine) / 2, len(pristine) - 1} {
		variants["truncate@"+itoa(n)] = bytes.Clone(pristine[:n])
	}
	for name, b := range variants {
		if err := os.WriteFile(good, b, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := srv.Reload()
		if err != nil {
			t.Fatal(err)
		}
		refused := false
		for _, f := range res.Failures {
			refused = refused || (f.Model == "m" && f.Version == "2")
		}
		if !refused {
			t.Errorf("%s: version 2 was not refused", name)
		}
		got, err := c.Infer(context.Background(), &servertest.Request{Model: "m", Inputs: []tensor.Tensor{x}})
		if err != nil || got.Version != "1" || !bytes.Equal(got.Outputs[0].Data, want.Outputs[0].Data) {
			t.Fatalf("%s: version 1 no longer serves correctly: %v", name, err)
		}
	}
	// A signature that no longer matches is refused the same way.
	os.WriteFile(good, pristine, 0o644)
	sig := filepath.Join(filepath.Dir(good), "model.sig")
	sb, _ := os.ReadFile(sig)
	os.WriteFile(sig, bytes.Replace(sb, []byte(`"sig": "M`), []byte(`"sig": "N`), 1), 0o644)
	res, _ := srv.Reload()
	if len(res.Failures) == 0 || !strings.Contains(res.Failures[0].Err.Error(), "signature") {
		t.Errorf("changed signature: failures %v", res.Failures)
	}
	// Restored, version 2 loads and serves.
	os.WriteFile(sig, sb, 0o644)
	if _, err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Infer(context.Background(), &servertest.Request{Model: "m", Inputs: []tensor.Tensor{x}})
	if err != nil || got.Version != "2" {
		t.Fatalf("restored version 2: %v %v", got, err)
	}
}

func itoa(n int) string { return fmtInt(n) }

// TestInFlightFinishOnRetiredVersion: a request running on a version that
// a reload retires completes on it; later requests go to the new version.
func TestInFlightFinishOnRetiredVersion(t *testing.T) {
	repo := t.TempDir()
	copyFixture(t, repo, "mlp", "m", "1")
	cfg := servertest.Config(t, repo)
	cfg.WatchRepository = false
	cfg.Runtime.Concurrency = 1
	srv := servertest.Start(t, cfg)
	c := srv.Clients(t)[3]
	big := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{8192, 784}, Data: make([]byte, 8192*784*4)}
	var wg sync.WaitGroup
	var version string
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := c.Infer(context.Background(), &servertest.Request{Model: "m", Inputs: []tensor.Tensor{big}})
		runErr = err
		if err == nil {
			version = resp.Version
		}
	}()
	waitFor(t, "the request to be in flight", func() bool { return srv.InFlight() > 0 })
	os.RemoveAll(filepath.Join(repo, "m", "1"))
	copyFixture(t, repo, "mlp", "m", "2")
	res, err := srv.Reload()
	if err != nil || len(res.Retired) != 1 || len(res.Loaded) != 1 {
		t.Fatalf("reload: %+v %v", res, err)
	}
	wg.Wait()
	if runErr != nil || version != "1" {
		t.Fatalf("in-flight request: version %q, err %v; want it to finish on version 1", version, runErr)
	}
	resp, err := c.Infer(context.Background(), &servertest.Request{Model: "m", Inputs: []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 784}, Data: make([]byte, 784*4)}}})
	if err != nil || resp.Version != "2" {
		t.Fatalf("after reload: %v %v", resp, err)
	}
}

// TestResignedModelReloads: re-signing a version in place (another trusted
// key) is picked up, and the metadata names the new signer.
func TestResignedModelReloads(t *testing.T) {
	privA, pubA := signingKey(t)
	privB, pubB := signingKey(t)
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "d", "1")
	dir := filepath.Join(repo, "d", "1")
	signVersion(t, dir, privA)
	cfg := servertest.Config(t, repo)
	cfg.WatchRepository = false
	cfg.Deploy = config.Deploy{RequireSignature: true, TrustedKeys: []string{pubA, pubB}}
	srv := servertest.Start(t, cfg)
	m, _ := srv.Registry.Get("d")
	signerA := m.Latest().Deployment().Signer
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	signVersion(t, dir, privB)
	res, err := srv.Reload()
	if err != nil || len(res.Loaded) != 1 || len(res.Retired) != 1 {
		t.Fatalf("reload after re-signing: %+v %v", res, err)
	}
	m, _ = srv.Registry.Get("d")
	if signerB := m.Latest().Deployment().Signer; signerB == signerA || !strings.HasPrefix(signerB, "key sha256:") {
		t.Errorf("signer %q after re-signing, was %q", signerB, signerA)
	}
}
