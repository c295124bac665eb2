package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestMain lets the test binary serve as the benchmark's server process,
// which the harness starts by re-executing its own binary.
func TestMain(m *testing.M) {
	if isChild() {
		if err := runChild(); err != nil {
			os.Stderr.WriteString("bench server: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestQuickRun runs the whole harness in quick mode: every instance,
// workload, transport and client count, every answer checked against the
// baseline's, the refusals checked, and every audit log verified and
// counted. It checks only that the figures are sane, never how fast
// anything is: speed is measured, not asserted.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process running seven Aegis instances")
	}
	dir := t.TempDir()
	opt := options{
		parts:           map[string]bool{"main": true, "commit": true, "profiles": true},
		batched:         true,
		clients:         []int{2, 4},
		profileRequests: 1,
		dir:             dir,
		root:            servertest.RepoRoot(t),
		lib:             servertest.LibraryPath(t),
		progress:        logWriter{t},
		command:         "go test ./bench/access",
	}.quicken()
	if err := opt.validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(opt)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.auditErr != nil {
		t.Errorf("audit logs: %v", rep.auditErr)
	}

	// 3 workloads × 2 transports × every instance at 1 client, and 3
	// paths at each further client count.
	if got, want := len(rep.cells), 3*2*len(instances)+len(opt.clients)*3; got != want {
		t.Errorf("got %d cells, want %d", got, want)
	}
	for k, c := range rep.cells {
		if len(c.samples) != opt.rounds {
			t.Errorf("%v: got %d samples, want %d", k, len(c.samples), opt.rounds)
			continue
		}
		for _, s := range c.samples {
			if s.requests < 1 || s.p50() <= 0 || s.p99() < s.p50() || s.elapsed <= 0 {
				t.Errorf("%v: insane sample: %d requests, p50 %v, p99 %v, elapsed %v", k, s.requests, s.p50(), s.p99(), s.elapsed)
			}
			if in, _ := lookupInstance(k.inst); in.audit && (s.records != uint64(s.requests) || s.batches < 1) {
				t.Errorf("%v: %d audit records in %d writes for %d requests", k, s.records, s.batches, s.requests)
			}
		}
	}
	audited := 0
	for _, in := range instances {
		if in.audit {
			audited++
		}
	}
	if len(rep.logs) != audited {
		t.Errorf("got %d audit log checks, want %d", len(rep.logs), audited)
	}
	for _, c := range rep.logs {
		if c.err != nil || c.report.Requests == 0 || c.report.Requests != uint64(c.sent) || !c.report.SignaturesChecked {
			t.Errorf("%s: log check: err %v, %d records for %d sent, signatures checked %v", c.inst, c.err, c.report.Requests, c.sent, c.report.SignaturesChecked)
		}
		if rel, err := filepath.Rel(dir, c.path); err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("%s: audit log %s outside the work directory %s", c.inst, c.path, dir)
		}
	}
	if len(rep.profiles) != 6 {
		t.Errorf("got %d profiles, want 6", len(rep.profiles))
	}
	for _, p := range rep.profiles {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("profile %s missing or empty (%v)", p, err)
		}
	}
	md := rep.markdown()
	for _, want := range []string{"## Targets (mlp batch 1, 1 client)", "## mlp batch 64, grpc-raw, 1 client",
		"## Durable audit and group commit", "## Audit logs", "`secure-jwt-nocache`", "≤ 15 µs added at p50"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "FAILED") {
		t.Errorf("report shows a failure:\n%s", md)
	}
}
