package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// sealedRepo builds a repository with an encrypted digits model and
// encrypted models that must not load, and returns it with the identity.
func sealedRepo(t *testing.T) (repo, identity string) {
	t.Helper()
	dir := t.TempDir()
	identity = filepath.Join(dir, "identity.txt")
	g, err := keys.GenerateIdentityFile(identity)
	if err != nil {
		t.Fatal(err)
	}
	rcpt, _ := keys.ParseRecipient(g.Recipient)
	other, err := keys.GenerateIdentityFile(filepath.Join(dir, "other.txt"))
	if err != nil {
		t.Fatal(err)
	}
	otherRcpt, _ := keys.ParseRecipient(other.Recipient)

	repo = filepath.Join(dir, "models")
	src := filepath.Join(servertest.Models(t), "digits", "1", "model.onnx")
	encrypt := func(model string, r age.Recipient) string {
		out := filepath.Join(repo, model, "1", "model.onnx.age")
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := seal.EncryptFile(src, out, r); err != nil {
			t.Fatal(err)
		}
		return out
	}
	encrypt("digits", rcpt)
	encrypt("wrongkey", otherRcpt)
	tampered := encrypt("tampered", rcpt)
	b, err := os.ReadFile(tampered)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	encrypt("both", rcpt)
	copyFixture(t, repo, "digits", "both", "1")
	copyFixture(t, repo, "dtype_fp32", "plain", "1")
	return repo, identity
}

// TestEncryptedModelsServe: an encrypted model serves exactly like its
// plaintext; tampered, wrongly keyed and ambiguous models never load and do
// not stop the others; the process is no longer dumpable.
func TestEncryptedModelsServe(t *testing.T) {
	repo, identity := sealedRepo(t)
	cfg := servertest.Config(t, repo)
	cfg.Keys.IdentityFile = identity
	srv := servertest.Start(t, cfg)

	var loaded []string
	for _, m := range srv.Registry.Models() {
		loaded = append(loaded, m.Name)
	}
	if strings.Join(loaded, ",") != "digits,plain" {
		t.Errorf("loaded %v, want digits and plain", loaded)
	}
	failed := map[string]string{}
	for _, f := range srv.Registry.Failures() {
		if f.Version == "1" {
			failed[f.Model] = f.Err.Error()
		}
	}
	for model, want := range map[string]string{"tampered": "decrypt payload", "wrongkey": "did not match any of the recipients", "both": "both"} {
		if !strings.Contains(failed[model], want) {
			t.Errorf("%s: failure %q, want it to mention %q", model, failed[model], want)
		}
	}
	m, _ := srv.Registry.Get("digits")
	if !m.Latest().Encrypted() {
		t.Error("digits not reported as encrypted")
	}
	x := randomTensor(newRNG(), tensor.Spec{Name: "input", DType: tensor.FP32, Shape: []int64{-1, 64}}, 5)
	want := inProcess(t, "digits", []tensor.Tensor{x})
	for _, c := range srv.Clients(t) {
		resp, err := c.Infer(context.Background(), &servertest.Request{Model: "digits", Inputs: []tensor.Tensor{x}})
		if err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
		for i := range want {
			if d := sameTensor(resp.Outputs[i], want[i]); d != "" {
				t.Errorf("%s: %s", c.Name(), d)
			}
		}
	}
	if dumpable, err := seal.Dumpable(); err != nil || dumpable {
		t.Errorf("process dumpable = %v (%v) while serving encrypted models", dumpable, err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil || lim.Cur != 0 || lim.Max != 0 {
		t.Errorf("RLIMIT_CORE = %+v (%v), want 0", lim, err)
	}
}

func TestInsecureIdentityFileRefused(t *testing.T) {
	repo, identity := sealedRepo(t)
	if err := os.Chmod(identity, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := servertest.Config(t, repo)
	cfg.Keys.IdentityFile = identity
	srv, err := app.New(cfg, discardLogger())
	if err == nil {
		srv.Serve(cancelled())
		t.Fatal("server started with a world-readable identity file")
	}
	if !errors.Is(err, keys.ErrInsecurePermissions) {
		t.Errorf("got %v, want ErrInsecurePermissions", err)
	}
}

// TestPlaintextNeverTouchesDisk watches every directory the server could
// write to while it decrypts and loads models: no file may be created or
// written.
func TestPlaintextNeverTouchesDisk(t *testing.T) {
	repo, identity := sealedRepo(t)
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	const mask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_MODIFY
	watched := map[int]string{}
	watch := func(dir string) {
		wd, err := unix.InotifyAddWatch(fd, dir, mask)
		if err == nil {
			watched[wd] = dir
		}
	}
	filepath.WalkDir(filepath.Dir(repo), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			watch(p)
		}
		return nil
	})
	cwd, _ := os.Getwd()
	for _, d := range []string{os.TempDir(), "/tmp", "/var/tmp", "/dev/shm", cwd, servertest.RepoRoot(t)} {
		watch(d)
	}

	cfg := servertest.Config(t, repo)
	cfg.Keys.IdentityFile = identity
	srv := servertest.Start(t, cfg)
	if _, ok := srv.Registry.Get("digits"); !ok {
		t.Fatal("encrypted model did not load")
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}

	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil && err != unix.EAGAIN {
		t.Fatal(err)
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		t.Errorf("file system write while loading: %s/%s (mask %#x)", watched[int(ev.Wd)], name, ev.Mask)
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	if len(watched) < 5 {
		t.Errorf("watched only %d directories", len(watched))
	}
}
