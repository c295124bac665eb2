package conformance

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
)

var (
	full       = flag.Bool("conformance.full", false, "run every case of the ONNX backend test data (make conformance)")
	reportPath = flag.String("conformance.report", "", "where the full run writes its markdown report (default build/conformance-report.md)")
	batchSize  = flag.Int("conformance.batch", 250, "models one server loads at a time in the full run")
)

// TestConformance runs every case and writes the report. It is the
// `make conformance` target, too slow for `make test`.
func TestConformance(t *testing.T) {
	if !*full {
		t.Skip("the full ONNX backend conformance run needs -conformance.full (make conformance); TestQuickConformance covers a subset")
	}
	dir, err := DataDir()
	if err != nil {
		t.Fatal(err)
	}
	names, err := CaseNames(dir, Suites...)
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(t, dir, names, Options{BatchSize: *batchSize, Logf: t.Logf})
	path := *reportPath
	if path == "" {
		path = filepath.Join(servertest.RepoRoot(t), "build", "conformance-report.md")
	}
	var md, sum bytes.Buffer
	rep.WriteMarkdown(&md)
	rep.WriteSummary(&sum)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, md.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	summaryPath := filepath.Join(filepath.Dir(path), "conformance-summary.txt")
	if err := os.WriteFile(summaryPath, sum.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", path, sum.String())
	sm := rep.Summarize()
	if n := len(sm.Regressions); n > 0 {
		t.Errorf("%d cases pass in-process but fail over a client (see %s)", n, path)
	}
	for i, n := range sm.Identical {
		if want := sm.Clients[i][InProcessPass].Pass; n != want {
			t.Errorf("%s: %d of %d passing cases identical to in-process; want all", rep.Clients[i], n, want)
		}
	}
	if n := len(sm.LoadMismatches); n > 0 {
		t.Errorf("%d models load in-process but not in the server, or the other way round (see %s)", n, path)
	}
}
