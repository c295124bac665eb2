package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/config"
)

func TestUser(t *testing.T) {
	tests := []struct {
		euid   int
		status Status
		want   string
	}{
		{1000, OK, "running as uid 1000"},
		{0, Warn, "running as root"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("euid ", tc.euid), func(t *testing.T) {
			env := goodEnv(t)
			env.Process.EUIDFunc = func() int { return tc.euid }
			expect(t, env, "user", tc.status, tc.want)
			if got := Run(env).Failed(true); got != (tc.status != OK) {
				t.Errorf("strict: Failed = %v, want %v", got, tc.status != OK)
			}
		})
	}
}

func TestHardening(t *testing.T) {
	unlimited := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	readErr := errors.New("boom")
	tests := []struct {
		name      string
		keys      bool // an identity file is configured
		encrypted bool // the repository holds model.onnx.age
		dumpable  bool
		dumpErr   error
		core      unix.Rlimit
		coreErr   error
		dump      Status
		dumpMsg   string
		coreSt    Status
		coreMsg   string
	}{
		{name: "hardened already", dump: OK, dumpMsg: "not dumpable", coreSt: OK, coreMsg: "soft limit 0 (hard 0)"},
		{name: "soft limit 0, hard limit unlimited", core: unix.Rlimit{Cur: 0, Max: unix.RLIM_INFINITY},
			dump: OK, dumpMsg: "not dumpable", coreSt: OK, coreMsg: "soft limit 0 (hard unlimited)"},
		{name: "keys configured: serve hardens", keys: true, encrypted: true, dumpable: true, core: unlimited,
			dump: OK, dumpMsg: "serve makes it 0", coreSt: OK, coreMsg: "RLIMIT_CORE unlimited (hard unlimited); serve makes it 0"},
		{name: "encrypted models, no keys", encrypted: true, dumpable: true, core: unix.Rlimit{Cur: 4096, Max: 8192},
			dump: Warn, dumpMsg: "1 encrypted models but no keys", coreSt: Warn, coreMsg: "RLIMIT_CORE 4096 (hard 8192)"},
		{name: "plaintext models only", dumpable: true, core: unlimited,
			dump: OK, dumpMsg: "no model is encrypted", coreSt: OK, coreMsg: "no model is encrypted"},
		{name: "unreadable facts", dumpErr: readErr, coreErr: readErr,
			dump: Warn, dumpMsg: "cannot read PR_GET_DUMPABLE: boom", coreSt: Warn, coreMsg: "cannot read RLIMIT_CORE: boom"},
		{name: "unreadable facts, keys configured", keys: true, dumpErr: readErr, coreErr: readErr,
			dump: OK, dumpMsg: "serve makes the process non-dumpable", coreSt: OK, coreMsg: "serve sets RLIMIT_CORE to 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			if tc.encrypted {
				env.Config.ModelRepository = makeRepo(t, "secret/1/model.onnx.age")
			}
			if tc.keys {
				env.Config.Keys.IdentityFile = identityFile(t, 0o600)
			}
			env.Process.DumpableFunc = func() (bool, error) { return tc.dumpable, tc.dumpErr }
			env.Process.RlimitFunc = func(res int) (unix.Rlimit, error) {
				if res != unix.RLIMIT_CORE {
					return unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}, nil // RLIMIT_MEMLOCK
				}
				return tc.core, tc.coreErr
			}
			expect(t, env, "dumpable", tc.dump, tc.dumpMsg)
			expect(t, env, "core_limit", tc.coreSt, tc.coreMsg)
		})
	}
}

func TestMemlock(t *testing.T) {
	const ipcLock = 1 << unix.CAP_IPC_LOCK
	tests := []struct {
		name     string
		keys     bool
		capEff   uint64
		memlock  uint64
		status   Status
		want     string
		noModels bool
	}{
		{name: "no encrypted models", keys: true, noModels: true, status: OK, want: "no encrypted model"},
		{name: "encrypted, no keys: nothing is decrypted", status: OK, want: "no encrypted model will be decrypted"},
		{name: "CAP_IPC_LOCK", keys: true, capEff: ipcLock, status: OK, want: "CAP_IPC_LOCK"},
		{name: "limit covers the model", keys: true, memlock: 8 << 20, status: OK, want: "covers the largest encrypted model (1 bytes)"},
		{name: "unlimited", keys: true, memlock: unix.RLIM_INFINITY, status: OK, want: "unlimited covers"},
		{name: "limit below the model", keys: true, memlock: 0, status: Warn, want: "may be swapped"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			if !tc.noModels {
				env.Config.ModelRepository = makeRepo(t, "secret/1/model.onnx.age")
			}
			if tc.keys {
				env.Config.Keys.IdentityFile = identityFile(t, 0o600)
			}
			env.Process.StatusFunc = func() (ProcStatus, error) { return ProcStatus{NoNewPrivs: 1, Seccomp: 2, CapEff: tc.capEff}, nil }
			env.Process.RlimitFunc = func(res int) (unix.Rlimit, error) {
				if res == unix.RLIMIT_MEMLOCK {
					return unix.Rlimit{Cur: tc.memlock, Max: tc.memlock}, nil
				}
				return unix.Rlimit{}, nil
			}
			expect(t, env, "memlock", tc.status, tc.want)
		})
	}
}

func TestConfinement(t *testing.T) {
	tests := []struct {
		name        string
		st          ProcStatus
		err         error
		nnp, sc     Status
		nnpMsg, msg string
	}{
		{"confined", ProcStatus{NoNewPrivs: 1, Seccomp: 2}, nil, OK, OK, "set", "filter mode"},
		{"seccomp strict", ProcStatus{NoNewPrivs: 1, Seccomp: 1}, nil, OK, OK, "set", "strict mode"},
		{"unconfined", ProcStatus{}, nil, Warn, Warn, "NoNewPrivileges=yes", "no filter"},
		{"unknown seccomp mode", ProcStatus{NoNewPrivs: 1, Seccomp: 7}, nil, OK, Warn, "set", "unknown mode 7"},
		{"status unreadable", ProcStatus{}, errors.New("no proc"), Warn, Warn, "cannot read /proc/self/status: no proc", "cannot read"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := goodEnv(t)
			env.Process.StatusFunc = func() (ProcStatus, error) { return tc.st, tc.err }
			expect(t, env, "no_new_privs", tc.nnp, tc.nnpMsg)
			expect(t, env, "seccomp", tc.sc, tc.msg)
		})
	}
}

const sampleStatus = "Name:\taegis\nUmask:\t0022\nState:\tS (sleeping)\nCapEff:\t000001ffffffffff\n" +
	"NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nSpeculation_Store_Bypass:\tthread vulnerable\n"

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name, in string
		want     ProcStatus
		err      string
	}{
		{"a real layout", sampleStatus, ProcStatus{NoNewPrivs: 1, Seccomp: 2, CapEff: 0x1ffffffffff}, ""},
		{"Seccomp_filters is not Seccomp", "CapEff:\t0\nNoNewPrivs:\t0\nSeccomp_filters:\t3\nSeccomp:\t0\n", ProcStatus{}, ""},
		{"an old kernel without NoNewPrivs", "CapEff:\t0\nSeccomp:\t0\n", ProcStatus{}, "no NoNewPrivs"},
		{"no Seccomp", "CapEff:\t0\nNoNewPrivs:\t0\n", ProcStatus{}, "no Seccomp"},
		{"no CapEff", "NoNewPrivs:\t0\nSeccomp:\t0\n", ProcStatus{}, "no CapEff"},
		{"a malformed value", "CapEff:\t0\nNoNewPrivs:\tyes\nSeccomp:\t0\n", ProcStatus{}, `"yes" is not a number`},
		{"malformed capabilities", "CapEff:\tzz\nNoNewPrivs:\t0\nSeccomp:\t0\n", ProcStatus{}, "CapEff"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatus(strings.NewReader(tc.in))
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %+v, %v; want an error containing %q", got, err, tc.err)
			case tc.err == "" && (err != nil || got != tc.want):
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseStatusOfThisProcess(t *testing.T) {
	if _, err := readStatus(); err != nil {
		t.Fatalf("cannot parse /proc/self/status: %v", err)
	}
}

func FuzzParseStatus(f *testing.F) {
	f.Add(sampleStatus)
	f.Add("NoNewPrivs:\t0\nSeccomp:\t0\nCapEff:\t0\n")
	f.Add("NoNewPrivs:\nSeccomp::\n")
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, in string) {
		st, err := ParseStatus(strings.NewReader(in))
		if err != nil {
			return
		}
		// Whatever parsed must be what the text says.
		again := fmt.Sprintf("NoNewPrivs:\t%d\nSeccomp:\t%d\nCapEff:\t%x\n", st.NoNewPrivs, st.Seccomp, st.CapEff)
		if st2, err := ParseStatus(strings.NewReader(again)); err != nil || st2 != st {
			t.Errorf("round trip of %+v: got %+v, %v", st, st2, err)
		}
	})
}

// identityFile writes a stand-in identity file with mode; the doctor never
// reads its contents.
func identityFile(t *testing.T, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "identity.txt")
	writeFile(t, p, mode)
	return p
}

func TestPassphraseCustodyHardensToo(t *testing.T) {
	env := goodEnv(t)
	env.Config.ModelRepository = makeRepo(t, "secret/1/model.onnx.age")
	env.Config.Keys = config.Keys{PassphraseEnv: "AEGIS_TEST_PASSPHRASE"}
	env.Process.DumpableFunc = func() (bool, error) { return true, nil }
	expect(t, env, "dumpable", OK, "serve makes it 0")
}
