//go:build linux && amd64

package sandbox

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The filter is permanent, so it is tried in a child process: the test
// binary re-executes itself with AEGIS_SANDBOX_CHILD set.
func TestMain(m *testing.M) {
	if os.Getenv("AEGIS_SANDBOX_CHILD") == "1" {
		child()
		return
	}
	os.Exit(m.Run())
}

// child applies the sandbox and reports what it can still do.
func child() {
	if err := Apply(); err != nil {
		os.Stdout.WriteString("apply: " + err.Error() + "\n")
		os.Exit(1)
	}
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "NoNewPrivs:") || strings.HasPrefix(l, "Seccomp:") {
			os.Stdout.WriteString(strings.Join(strings.Fields(l), " ") + "\n")
		}
	}
	if _, err := os.ReadFile("/proc/self/cmdline"); err != nil {
		os.Stdout.WriteString("read: " + err.Error() + "\n")
	} else {
		os.Stdout.WriteString("read: ok\n")
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		os.Stdout.WriteString("exec: refused\n")
	} else {
		os.Stdout.WriteString("exec: ran\n")
	}
	os.Exit(0)
}

func TestSandboxRefusesExecAndKeepsWorking(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AEGIS_SANDBOX_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"NoNewPrivs: 1", "Seccomp: 2", "read: ok", "exec: refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("child said %q, want %q", got, want)
		}
	}
}

func TestProgramShape(t *testing.T) {
	p := program()
	if len(p) != 5+len(Denied)+2 {
		t.Fatalf("program has %d instructions", len(p))
	}
	// Every deny jump lands on the EPERM return.
	for i := 5; i < 5+len(Denied); i++ {
		if target := i + 1 + int(p[i].Jt); target != len(p)-1 {
			t.Errorf("instruction %d jumps to %d, want %d", i, target, len(p)-1)
		}
	}
	if target := 4 + 1 + int(p[4].Jt); target != len(p)-1 {
		t.Errorf("x32 check jumps to %d, want %d", target, len(p)-1)
	}
}
