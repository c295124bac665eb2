package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/aegis-inference/aegis/internal/tlsconf"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
)

// confined is an unprivileged, confined, non-dumpable process that may
// read but not write.
func confined() Process {
	return Process{
		EUIDFunc:     func() int { return 1000 },
		StatusFunc:   func() (ProcStatus, error) { return ProcStatus{NoNewPrivs: 1, Seccomp: 2}, nil },
		DumpableFunc: func() (bool, error) { return false, nil },
		RlimitFunc:   func(int) (unix.Rlimit, error) { return unix.Rlimit{}, nil },
		AccessFunc: func(_ string, mode uint32) error {
			if mode&unix.W_OK != 0 {
				return unix.EACCES
			}
			return nil
		},
	}
}

// makeRepo builds DIR/<model>/<version>/<file> for each "model/version/file"
// with tight modes (directories 0755, files 0644), whatever the umask.
func makeRepo(t *testing.T, files ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "models")
	mkdir(t, dir)
	for _, f := range files {
		p := filepath.Join(dir, f)
		for d := filepath.Dir(p); d != dir; d = filepath.Dir(d) {
			mkdir(t, d)
		}
		writeFile(t, p, 0o644)
	}
	return dir
}

func mkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	chmod(t, d, 0o755)
}

func writeFile(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), mode); err != nil {
		t.Fatal(err)
	}
	chmod(t, p, mode)
}

func chmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// goodEnv is an environment every check passes: a tight repository,
// loopback listeners, and the pinned library already verified.
func goodEnv(t *testing.T) Env {
	t.Helper()
	cfg := config.Default()
	cfg.ModelRepository = makeRepo(t, "digits/1/model.onnx")
	pki := t.TempDir()
	if _, err := tlsconf.InitDir(pki, nil); err != nil {
		t.Fatal(err)
	}
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(pki, tlsconf.ServerCertFile), filepath.Join(pki, tlsconf.ServerKeyFile)
	cfg.StateDir = t.TempDir()
	cfg.Auth.PolicyFile = filepath.Join(t.TempDir(), "policy.yaml")
	return Env{
		Config:  cfg,
		Process: confined(),
		Library: &onnx.LibraryInfo{Path: "libonnxruntime.so.1", Digest: onnx.PinnedDigest, Pinned: true},
	}
}

func find(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, r.Checks)
	return Check{}
}

// expect runs env and compares one check's status, and that its message
// holds want.
func expect(t *testing.T, env Env, name string, status Status, want string) {
	t.Helper()
	c := find(t, Run(env), name)
	if c.Status != status || !strings.Contains(c.Message, want) {
		t.Errorf("%s: got %s %q, want %s containing %q", name, c.Status, c.Message, status, want)
	}
}

func TestRunReportsEveryCheckInOrder(t *testing.T) {
	r := Run(goodEnv(t))
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
		if c.Status != OK {
			t.Errorf("%s: got %s %q, want ok", c.Name, c.Status, c.Message)
		}
	}
	want := []string{"config", "user", "dumpable", "core_limit", "memlock", "no_new_privs", "seccomp",
		"keys", "trusted_keys", "model_repository", "model_writable", "http_addr", "grpc_addr", "tls", "access", "onnxruntime"}
	if !slices.Equal(names, want) {
		t.Errorf("got checks %q, want %q", names, want)
	}
	if r.Failed(true) {
		t.Error("a clean environment fails under strict")
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		name             string
		statuses         []Status
		failed, inStrict bool
	}{
		{"empty", nil, false, false},
		{"all ok", []Status{OK, OK}, false, false},
		{"a warning fails only under strict", []Status{OK, Warn}, false, true},
		{"a failure", []Status{Fail, OK}, true, true},
		{"the zero status fails", []Status{OK, ""}, true, true},
		{"an unknown status fails", []Status{"info"}, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Report
			for i, s := range tc.statuses {
				r.Checks = append(r.Checks, Check{Name: string(rune('a' + i)), Status: s})
			}
			if got := r.Failed(false); got != tc.failed {
				t.Errorf("Failed(false) = %v, want %v", got, tc.failed)
			}
			if got := r.Failed(true); got != tc.inStrict {
				t.Errorf("Failed(true) = %v, want %v", got, tc.inStrict)
			}
			if got := r.Err(true) != nil; got != tc.inStrict {
				t.Errorf("Err(true) = %v, want an error: %v", r.Err(true), tc.inStrict)
			}
		})
	}
}

func TestErrNamesFailingChecks(t *testing.T) {
	r := Report{Checks: []Check{{"user", Warn, "root"}, {"http_addr", Fail, "0.0.0.0"}, {"keys", OK, ""}}}
	err := r.Err(false)
	if !errors.Is(err, ErrFailed) || !strings.HasSuffix(err.Error(), ": http_addr") {
		t.Errorf("Err(false) = %v, want ErrFailed naming http_addr only", err)
	}
	err = r.Err(true)
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "(strict): user, http_addr") {
		t.Errorf("Err(true) = %v, want ErrFailed (strict) naming user, http_addr", err)
	}
}

func TestWriteText(t *testing.T) {
	r := Report{Checks: []Check{{"user", Warn, "running as root"}, {"keys", OK, "two\nlines"}}}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := "warn  user              running as root\nok    keys              two lines\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteJSON(t *testing.T) {
	r := Report{Checks: []Check{{"user", Warn, "running as root"}}}
	for _, strict := range []bool{false, true} {
		var b bytes.Buffer
		if err := r.WriteJSON(&b, strict); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Strict, Failed bool
			Checks         []Check
		}
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("%v in %s", err, b.String())
		}
		if got.Strict != strict || got.Failed != strict || !slices.Equal(got.Checks, r.Checks) {
			t.Errorf("strict %v: got %+v, want the checks and failed=%v", strict, got, strict)
		}
	}
	var b bytes.Buffer
	if err := (Report{}).WriteJSON(&b, false); err != nil || !strings.Contains(b.String(), `"checks": []`) {
		t.Errorf("empty report: got %s, %v; want an empty checks list", b.String(), err)
	}
}

func TestConfigCheck(t *testing.T) {
	env := goodEnv(t)
	env.Config.Log.Format = "xml"
	expect(t, env, "config", Fail, "log.format")
	env.Config = config.Default() // no model_repository
	expect(t, env, "config", Fail, "model_repository: must be set")
	expect(t, env, "model_repository", Fail, "not set")
}

func TestListeners(t *testing.T) {
	tests := []struct {
		addr   string
		status Status
		want   string
	}{
		{"127.0.0.1:8000", OK, "loopback only"},
		{"127.1.2.3:8000", OK, "loopback only"},
		{"[::1]:8001", OK, "loopback only"},
		{"localhost:8000", OK, "loopback only"},
		{"LOCALHOST:8000", OK, "loopback only"},
		{"[::ffff:127.0.0.1]:8000", OK, "loopback only"},
		{"0.0.0.0:8000", Fail, "no TLS or authentication"},
		{"[::]:8000", Fail, "beyond loopback"},
		{":8000", Fail, "every interface"},
		{"192.168.1.10:8000", Fail, "beyond loopback"},
		{"example.com:8000", Fail, "beyond loopback"},
		{"localhost.example.com:8000", Fail, "beyond loopback"},
		{"nohost", Fail, "not HOST:PORT"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			for _, name := range []string{"http_addr", "grpc_addr"} {
				env := goodEnv(t)
				env.Config.HTTPAddr, env.Config.GRPCAddr = "127.0.0.1:1", "127.0.0.1:2"
				if name == "http_addr" {
					env.Config.HTTPAddr = tc.addr
				} else {
					env.Config.GRPCAddr = tc.addr
				}
				expect(t, env, name, tc.status, tc.want)
			}
		})
	}
}

func TestStartup(t *testing.T) {
	env := goodEnv(t)
	env.Process.EUIDFunc = func() int { return 0 }
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	r, err := Startup(env, false, log)
	if err != nil {
		t.Fatalf("not strict: got %v, want the server to start", err)
	}
	if find(t, r, "user").Status != Warn {
		t.Errorf("user: got %+v, want warn", find(t, r, "user"))
	}
	for _, want := range []string{"level=WARN msg=\"environment check\" check=user", "level=DEBUG msg=\"environment check\" check=keys"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	if _, err := Startup(env, true, log); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "user") {
		t.Errorf("strict: got %v, want ErrFailed naming user", err)
	}

	env.Config.HTTPAddr = "0.0.0.0:8000"
	logs.Reset()
	if _, err := Startup(env, false, log); err != nil {
		t.Errorf("not strict, exposed listener: got %v, want a logged error only", err)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"environment check\" check=http_addr") {
		t.Errorf("the exposed listener is not logged as an error:\n%s", logs.String())
	}
}
