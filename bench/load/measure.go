package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What one round measures, each in its own process.
const (
	cmdAge       = "age"       // limit A: age -d -i IDENTITY FILE > /dev/null
	cmdSHA256sum = "sha256sum" // limit B: sha256sum PLAINTEXT
	cmdVerify    = opVerify
	cmdLoad      = opLoad
	cmdNoLock    = "verify-nolock" // opVerify with CAP_IPC_LOCK dropped: mlock refused
	cmdPipelined = opPipelined
	cmdReaderAt  = opReaderAt
	cmdParts     = opParts
)

// sample is one measured process.
type sample struct {
	wall   time.Duration // the process, start to exit, as the parent saw it
	maxRSS int64         // its peak resident set (getrusage ru_maxrss), bytes
	res    childResult   // what an Aegis child measured itself
}

// measurer runs the measured commands against one fixture.
type measurer struct {
	fx     *fixture
	self   string // this executable, re-executed for children
	lib    string
	profil string // CPU profile directory, "" for none
	logf   func(string, ...any)
}

// run runs one measured command.
func (m *measurer) run(cmd string) (sample, error) {
	if v, ok := ortVariants[cmd]; ok {
		if v.ortFormat {
			return m.child(childSpec{Op: opLoad, Variant: cmd, VersionDir: m.fx.ortVersionDir, ModelFile: ortModelFile}, false)
		}
		return m.child(childSpec{Op: opLoad, Variant: cmd}, false)
	}
	switch cmd {
	case cmdAge:
		return m.external(exec.Command("age", "-d", "-i", m.fx.identity, m.fx.sealed), "")
	case cmdSHA256sum:
		return m.external(exec.Command("sha256sum", m.fx.plain), m.fx.digest)
	case cmdNoLock:
		return m.child(childSpec{Op: opVerify}, true)
	default:
		return m.child(childSpec{Op: cmd}, false)
	}
}

// external runs a limit command with its output discarded (or, for
// sha256sum, checked against want), and times it from start to exit.
func (m *measurer) external(c *exec.Cmd, want string) (sample, error) {
	var out bytes.Buffer
	if want != "" {
		c.Stdout = &out
	}
	var errb bytes.Buffer
	c.Stderr = &errb
	start := time.Now()
	err := c.Run()
	s := sample{wall: time.Since(start)}
	if err != nil {
		return s, fmt.Errorf("%s: %v: %s", strings.Join(c.Args, " "), err, strings.TrimSpace(errb.String()))
	}
	s.maxRSS = maxRSS(c.ProcessState)
	if want != "" {
		if got, _, _ := strings.Cut(out.String(), " "); got != want {
			return s, fmt.Errorf("%s printed %q, want digest %s", strings.Join(c.Args, " "), got, want)
		}
	}
	return s, nil
}

// child runs an Aegis operation in a child process. dropLock starts it
// without CAP_IPC_LOCK, so that (under the default 8 MiB RLIMIT_MEMLOCK)
// seal's mlock is refused, as for an unprivileged server.
func (m *measurer) child(spec childSpec, dropLock bool) (sample, error) {
	spec.Lib, spec.Identity, spec.TrustedKey, spec.Shape = m.lib, m.fx.identity, m.fx.trustedKey, m.fx.shape
	want := m.fx.digest
	if spec.VersionDir == "" {
		spec.VersionDir = m.fx.versionDir
	} else {
		want = m.fx.ortDigest
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return sample{}, err
	}
	c := exec.Command(m.self)
	c.Env = append(os.Environ(), envChild+"="+string(raw))
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	start := time.Now()
	if dropLock {
		err = startWithoutIPCLock(c)
	} else {
		err = c.Start()
	}
	if err == nil {
		err = c.Wait()
	}
	s := sample{wall: time.Since(start)}
	if err != nil {
		return s, fmt.Errorf("child %s: %v: %s", spec.Op, err, strings.TrimSpace(errb.String()))
	}
	s.maxRSS = maxRSS(c.ProcessState)
	if err := json.Unmarshal(out.Bytes(), &s.res); err != nil {
		return s, fmt.Errorf("child %s: bad result %q: %v", spec.Op, out.String(), err)
	}
	if spec.Op != opBaseline && spec.Op != opConvert && s.res.Digest != want {
		return s, fmt.Errorf("child %s: plaintext digest %s, want %s", spec.Op, s.res.Digest, want)
	}
	if spec.Op == opLoad && !s.res.RunChecked {
		return s, fmt.Errorf("child load %s: the model was not run", spec.Variant)
	}
	return s, nil
}

// startWithoutIPCLock starts c from a thread whose capability bounding set
// lacks CAP_IPC_LOCK, so the child (even as root) cannot lock more than
// RLIMIT_MEMLOCK. The thread is never returned to the scheduler: it exits
// with its goroutine.
func startWithoutIPCLock(c *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_IPC_LOCK, 0, 0, 0); err != nil {
			errc <- fmt.Errorf("drop CAP_IPC_LOCK: %w", err)
			return
		}
		errc <- c.Start()
	}()
	return <-errc
}

// canDropIPCLock reports whether startWithoutIPCLock can work here.
func canDropIPCLock() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps&(1<<unix.CAP_SETPCAP) != 0
		}
	}
	return false
}

func maxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10 // kilobytes on Linux
	}
	return 0
}

// checkAgeCLI decrypts the fixture once with the age command into a hash,
// so the limit command is known to do the same work as Aegis.
func (m *measurer) checkAgeCLI() error {
	c := exec.Command("age", "-d", "-i", m.fx.identity, m.fx.sealed)
	h := sha256.New()
	c.Stdout = h
	var errb bytes.Buffer
	c.Stderr = &errb
	if err := c.Run(); err != nil {
		return fmt.Errorf("age -d: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.fx.digest {
		return fmt.Errorf("age -d gives plaintext with sha256 %s, want %s", got, m.fx.digest)
	}
	return nil
}

// warmFiles reads files to their end so that they sit in the page cache.
func warmFiles(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, bufio.NewReaderSize(f, 1<<20))
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

const dropCachesPath = "/proc/sys/vm/drop_caches"

// canDropCaches reports whether this process may drop the page cache.
func canDropCaches() bool {
	f, err := os.OpenFile(dropCachesPath, os.O_WRONLY, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// coldStart empties the page cache and then warms the programs and
// libraries again (age, sha256sum, this binary, ONNX Runtime), so that only
// the model files are read from disk by the next command.
func (m *measurer) coldStart() error {
	unix.Sync()
	if err := os.WriteFile(dropCachesPath, []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	for _, c := range [][]string{{"age", "--version"}, {"sha256sum", "--version"}} {
		if err := exec.Command(c[0], c[1:]...).Run(); err != nil {
			return err
		}
	}
	_, err := m.child(childSpec{Op: opBaseline}, false)
	return err
}

// rounds runs every command reps times, interleaved (one of each per
// round, in an order that rotates from round to round), and returns the
// samples by command.
func (m *measurer) rounds(cmds []string, reps int, cold bool) (map[string][]sample, error) {
	out := map[string][]sample{}
	for r := range reps {
		for i := range cmds {
			cmd := cmds[(i+r)%len(cmds)]
			if cold {
				if err := m.coldStart(); err != nil {
					return nil, err
				}
			}
			s, err := m.run(cmd)
			if err != nil {
				return nil, err
			}
			out[cmd] = append(out[cmd], s)
			m.logf("round %d/%d %-13s %8.3fs  peak RSS %s", r+1, reps, cmd, s.wall.Seconds(), human(s.maxRSS))
		}
	}
	return out, nil
}

// profile runs op once with a CPU profile of its timed part.
func (m *measurer) profile(op string) (string, error) {
	if err := os.MkdirAll(m.profil, 0o755); err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(m.profil, op+".prof"))
	if err != nil {
		return "", err
	}
	_, err = m.child(childSpec{Op: op, Profile: path}, false)
	return path, err
}

// stats summarises durations.
type stats struct{ median, min, max time.Duration }

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{median: med, min: s[0], max: s[len(s)-1]}
}

// pick extracts one duration from each sample.
func pick(ss []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func peak(ss []sample) int64 {
	var p int64
	for _, s := range ss {
		p = max(p, s.maxRSS)
	}
	return p
}
