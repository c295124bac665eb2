package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/seal"
)

// Process reads facts about the process. A nil field reads the running
// process; tests set the fields they fake.
type Process struct {
	// EUIDFunc returns the effective user id (os.Geteuid).
	EUIDFunc func() int
	// StatusFunc returns the fields of /proc/self/status the checks use.
	StatusFunc func() (ProcStatus, error)
	// DumpableFunc returns prctl(PR_GET_DUMPABLE) != 0.
	DumpableFunc func() (bool, error)
	// RlimitFunc returns getrlimit(resource), for RLIMIT_CORE and
	// RLIMIT_MEMLOCK.
	RlimitFunc func(resource int) (unix.Rlimit, error)
	// AccessFunc is access(2): nil when the process may access path in
	// mode (unix.W_OK). As for access(2), root passes permission checks
	// whatever the mode bits, and fails only on a read-only file system
	// or an immutable file, exactly as its writes would.
	AccessFunc func(path string, mode uint32) error
}

func (p Process) withDefaults() Process {
	if p.EUIDFunc == nil {
		p.EUIDFunc = os.Geteuid
	}
	if p.StatusFunc == nil {
		p.StatusFunc = readStatus
	}
	if p.DumpableFunc == nil {
		p.DumpableFunc = seal.Dumpable
	}
	if p.RlimitFunc == nil {
		p.RlimitFunc = func(resource int) (unix.Rlimit, error) {
			var l unix.Rlimit
			err := unix.Getrlimit(resource, &l)
			return l, err
		}
	}
	if p.AccessFunc == nil {
		p.AccessFunc = unix.Access
	}
	return p
}

// ProcStatus holds the fields of /proc/self/status the checks use.
type ProcStatus struct {
	NoNewPrivs int    // 1 when no_new_privs is set
	Seccomp    int    // 0 none, 1 strict, 2 filter
	CapEff     uint64 // effective capabilities
}

// Seccomp modes as /proc/self/status writes them.
const (
	seccompDisabled = 0
	seccompStrict   = 1
	seccompFilter   = 2
)

func readStatus() (ProcStatus, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return ProcStatus{}, err
	}
	defer f.Close()
	return ParseStatus(f)
}

// ParseStatus reads NoNewPrivs, Seccomp and CapEff from the text of
// /proc/<pid>/status ("Key:\tvalue" lines). A missing or malformed field is
// an error: kernels before 4.10 have no NoNewPrivs line.
func ParseStatus(r io.Reader) (ProcStatus, error) {
	var st ProcStatus
	var seen struct{ nnp, seccomp, capEff bool }
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "NoNewPrivs":
			st.NoNewPrivs, err = strconv.Atoi(val)
			seen.nnp = true
		case "Seccomp":
			st.Seccomp, err = strconv.Atoi(val)
			seen.seccomp = true
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(val, 16, 64)
			seen.capEff = true
		default:
			continue
		}
		if err != nil {
			return ProcStatus{}, fmt.Errorf("status field %s: %q is not a number", key, val)
		}
	}
	if err := sc.Err(); err != nil {
		return ProcStatus{}, err
	}
	switch {
	case !seen.nnp:
		return ProcStatus{}, errors.New("status: no NoNewPrivs field")
	case !seen.seccomp:
		return ProcStatus{}, errors.New("status: no Seccomp field")
	case !seen.capEff:
		return ProcStatus{}, errors.New("status: no CapEff field")
	}
	return st, nil
}

func checkUser(p Process) Check {
	if uid := p.EUIDFunc(); uid != 0 {
		return Check{"user", OK, fmt.Sprintf("running as uid %d", uid)}
	}
	return Check{"user", Warn, "running as root (euid 0): a compromised server owns the host and can rewrite its models and keys; " +
		"run as an unprivileged user (systemd DynamicUser=yes, USER in the container image)"}
}

// keysConfigured reports whether serve will open a key custody, and so
// harden the process (seal.HardenProcess) before it decrypts anything.
func keysConfigured(k config.Keys) bool {
	return k.IdentityFile != "" || k.PassphraseEnv != ""
}

// checkHardening reports what `aegis serve` will do about core dumps and
// ptrace: with keys configured it makes the process non-dumpable and sets
// RLIMIT_CORE to 0; without, it leaves them as they are, which matters when
// the repository holds encrypted models.
func checkHardening(cfg config.Config, p Process, scan repoScan) []Check {
	hardens := keysConfigured(cfg.Keys)
	exposed := func(name, state string) Check {
		switch {
		case hardens:
			return Check{name, OK, fmt.Sprintf("now %s; serve makes it 0 before it decrypts models, as keys are configured", state)}
		case scan.encrypted > 0:
			return Check{name, Warn, fmt.Sprintf("%s, and the repository holds %d encrypted models but no keys are configured, "+
				"so serve will not harden the process", state, scan.encrypted)}
		}
		return Check{name, OK, fmt.Sprintf("%s; serve hardens the process only when keys are configured, and no model is encrypted", state)}
	}

	var dump Check
	switch d, err := p.DumpableFunc(); {
	case err != nil && hardens:
		dump = Check{"dumpable", OK, "serve makes the process non-dumpable before it decrypts models, as keys are configured"}
	case err != nil:
		dump = Check{"dumpable", Warn, fmt.Sprintf("cannot read PR_GET_DUMPABLE: %v", err)}
	case !d:
		dump = Check{"dumpable", OK, "not dumpable (no core dumps, no ptrace by the same user)"}
	default:
		dump = exposed("dumpable", "dumpable (PR_GET_DUMPABLE 1)")
	}

	var core Check
	switch l, err := p.RlimitFunc(unix.RLIMIT_CORE); {
	case err != nil && hardens:
		core = Check{"core_limit", OK, "serve sets RLIMIT_CORE to 0 before it decrypts models, as keys are configured"}
	case err != nil:
		core = Check{"core_limit", Warn, fmt.Sprintf("cannot read RLIMIT_CORE: %v", err)}
	case l.Cur == 0:
		core = Check{"core_limit", OK, fmt.Sprintf("RLIMIT_CORE soft limit 0 (hard %s)", limit(l.Max))}
	default:
		core = exposed("core_limit", fmt.Sprintf("RLIMIT_CORE %s (hard %s)", limit(l.Cur), limit(l.Max)))
	}
	return []Check{dump, core, checkMemlock(cfg, p, scan)}
}

// checkMemlock reports whether the buffers that hold decrypted models can
// be locked in memory (seal locks them where permitted; otherwise they may
// be swapped). It needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK that covers the
// largest encrypted model.
func checkMemlock(cfg config.Config, p Process, scan repoScan) Check {
	const name = "memlock"
	if scan.encrypted == 0 || !keysConfigured(cfg.Keys) {
		return Check{name, OK, "no encrypted model will be decrypted"}
	}
	if st, err := p.StatusFunc(); err == nil && st.CapEff&(1<<unix.CAP_IPC_LOCK) != 0 {
		return Check{name, OK, "CAP_IPC_LOCK: decrypted models are locked in memory"}
	}
	l, err := p.RlimitFunc(unix.RLIMIT_MEMLOCK)
	if err != nil {
		return Check{name, Warn, fmt.Sprintf("cannot read RLIMIT_MEMLOCK: %v", err)}
	}
	if l.Cur == unix.RLIM_INFINITY || l.Cur >= uint64(scan.largestEncrypted) {
		return Check{name, OK, fmt.Sprintf("RLIMIT_MEMLOCK %s covers the largest encrypted model (%d bytes)", limit(l.Cur), scan.largestEncrypted)}
	}
	return Check{name, Warn, fmt.Sprintf("RLIMIT_MEMLOCK %s is below the largest encrypted model (%d bytes): decrypted models may be swapped; "+
		"raise LimitMEMLOCK= or grant CAP_IPC_LOCK", limit(l.Cur), scan.largestEncrypted)}
}

// checkConfinement reports no_new_privs and the seccomp mode.
func checkConfinement(p Process) []Check {
	st, err := p.StatusFunc()
	if err != nil {
		msg := fmt.Sprintf("cannot read /proc/self/status: %v", err)
		return []Check{{"no_new_privs", Warn, msg}, {"seccomp", Warn, msg}}
	}
	nnp := Check{"no_new_privs", OK, "set: the process and its children cannot gain privileges"}
	if st.NoNewPrivs != 1 {
		nnp = Check{"no_new_privs", Warn, "not set: set NoNewPrivileges=yes (systemd) or --security-opt no-new-privileges (docker)"}
	}
	var sc Check
	switch st.Seccomp {
	case seccompFilter:
		sc = Check{"seccomp", OK, "filter mode"}
	case seccompStrict:
		sc = Check{"seccomp", OK, "strict mode"}
	case seccompDisabled:
		sc = Check{"seccomp", Warn, "no filter: run under the container runtime's default profile or systemd SystemCallFilter=@system-service"}
	default:
		sc = Check{"seccomp", Warn, fmt.Sprintf("unknown mode %d", st.Seccomp)}
	}
	return []Check{nnp, sc}
}

func limit(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}
