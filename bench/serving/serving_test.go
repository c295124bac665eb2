package main

import (
	"os"
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

// TestQuickRun runs the whole harness in quick mode: every model, batch,
// client count and path, with every served output checked against bare
// ONNX Runtime. It checks only that the figures are sane, never how fast
// anything is: speed is measured, not asserted.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and ONNX Runtime")
	}
	root := servertest.RepoRoot(t)
	opt := options{
		models:     []string{"digits", "mlp", "cnn"},
		batches:    []int{1, 64},
		clients:    []int{1, 2},
		profileDir: t.TempDir(),
		root:       root,
		lib:        servertest.LibraryPath(t),
		progress:   logWriter{t},
		command:    "go test ./bench/serving",
	}.quicken()
	if err := opt.validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(opt)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	if got, want := len(rep.cells), 3*2*2*int(numPaths); got != want {
		t.Fatalf("got %d cells, want %d", got, want)
	}
	for _, c := range rep.cells {
		name := c.model + " " + c.path.String()
		if len(c.samples) != opt.rounds {
			t.Errorf("%s: got %d samples, want %d", name, len(c.samples), opt.rounds)
			continue
		}
		for _, s := range c.samples {
			if s.requests < 1 || s.p50() <= 0 || s.p99() < s.p50() || s.elapsed <= 0 || s.throughput() <= 0 {
				t.Errorf("%s batch %d clients %d: insane sample: %d requests, p50 %v, p99 %v, elapsed %v",
					name, c.batch, c.clients, s.requests, s.p50(), s.p99(), s.elapsed)
			}
		}
	}
	if len(rep.profiles) != 12 {
		t.Errorf("got %d profiles, want 12 (6 at batch 1, 6 at batch 64)", len(rep.profiles))
	}
	for _, p := range rep.profiles {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("profile %s missing or empty (%v)", p, err)
		}
	}
	md := rep.markdown()
	for _, want := range []string{"## Targets (mlp)", "## digits", "## mlp", "## cnn", "aegis-grpc-raw", "floor-rest-json+ort"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
