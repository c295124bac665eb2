package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

// TestPlaintextNeverTouchesDisk watches, with fanotify, every file system
// the server could write to while it decrypts and loads models, and fails
// on any write made by this process. (fanotify reports the writer's pid, so
// other processes on the machine writing to /tmp do not count.)
func TestPlaintextNeverTouchesDisk(t *testing.T) {
	repo, identity := sealedRepo(t)
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("fanotify_init: %v (the test needs CAP_SYS_ADMIN)", err)
	}
	defer unix.Close(fd)
	cwd, _ := os.Getwd()
	marked := 0
	for _, d := range []string{repo, os.TempDir(), "/tmp", "/var/tmp", "/dev/shm", cwd, servertest.RepoRoot(t)} {
		err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM,
			unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE, unix.AT_FDCWD, d)
		if err == nil {
			marked++
		}
	}
	if marked < 3 {
		t.Fatalf("could watch only %d file systems", marked)
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

	self := int32(os.Getpid())
	buf := make([]byte, 256<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN || n <= 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
			ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			if ev.Event_len == 0 {
				break
			}
			if ev.Pid == self {
				path, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", ev.Fd))
				if path == goTestLog() {
					// go test's own record of the files the test
					// opens (for its cache), not the server's.
					unix.Close(int(ev.Fd))
					off += int(ev.Event_len)
					continue
				}
				t.Errorf("this process wrote to %s while loading an encrypted model (mask %#x)", path, ev.Mask)
			}
			if ev.Fd >= 0 {
				unix.Close(int(ev.Fd))
			}
			off += int(ev.Event_len)
		}
	}
}

// goTestLog is the file go test has this process log the files and
// variables it uses to (-test.testlogfile), or "" when there is none.
func goTestLog() string {
	if f := flag.Lookup("test.testlogfile"); f != nil {
		return f.Value.String()
	}
	return ""
}
