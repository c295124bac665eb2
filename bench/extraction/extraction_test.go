package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/servertest"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestQuickRun runs every scenario in quick mode under every policy (under
// the race detector: raw and hardened, the undefended and the fully
// defended paths), against real servers, and checks the baseline the
// whole benchmark is measured against: equation-solving on the logistic
// regression's raw probabilities reaches 98% agreement within 100 queries.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server for every scenario")
	}
	policies := []string{"raw", "detect", "round", "harden", "hardened", "watermark"}
	if raceEnabled {
		policies = []string{"raw", "hardened"}
	}
	opt := options{
		seeds: 1, policies: policies,
		mix: 1, split: 16, benign: 20, benignQueries: 450, overhead: 1000, poll: 10, blockAfter: 100, patient: true, maxWait: 2 * time.Second,
		work: t.TempDir(), root: servertest.RepoRoot(t), lib: servertest.LibraryPath(t),
		progress: logWriter{t}, command: "go test ./bench/extraction",
	}.quicken()
	if err := opt.validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(opt)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	q, all := rep.QueriesTo98("raw", "eqsolve@logreg")
	if !all || q > 100 {
		t.Errorf("equation-solving against raw probabilities: 98%% agreement after %d queries (reached: %v), want within 100", q, all)
	}
	for _, p := range rep.policies {
		if !p.supported() {
			t.Errorf("policy %s not accepted by the server: %s", p.name, p.unsupported)
			continue
		}
		for _, s := range rep.scenarios {
			if s.kind == "benign" {
				continue
			}
			runs := rep.runsOf(p.name, s.name)
			if len(runs) != 1 || len(runs[0].curve) == 0 {
				t.Errorf("%s under %s: %d runs, want 1 with measurements", s.name, p.name, len(runs))
				continue
			}
			if r := runs[0]; r.sent < r.curve[len(r.curve)-1].own {
				t.Errorf("%s under %s: %d queries sent, fewer than the attack's own %d", s.name, p.name, r.sent, r.curve[len(r.curve)-1].own)
			}
		}
	}
	var rawBenign int
	for _, b := range rep.benign {
		if b.policy != "raw" {
			continue
		}
		rawBenign++
		for v, a := range b.agree {
			if a != 1 {
				t.Errorf("benign clients under raw: top-1 agreement %.4f with the raw answers on %s, want 1", a, v)
			}
		}
	}
	if rawBenign != 1 {
		t.Errorf("%d benign runs under raw, want 1", rawBenign)
	}
	md := rep.markdown()
	for _, want := range []string{"## Queries to 98% agreement", "## Detection", "## Benign clients", "## Watermark", "## Per-request overhead"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	verified := 0
	for _, r := range rep.runs {
		if r.watermark != nil {
			verified++
		}
	}
	// Every verified run tested an independent model too: the report
	// counts them all.
	count := regexp.MustCompile(`Independent models below p = 0\.01: \d+ of (\d+) `).FindStringSubmatch(md)
	switch {
	case verified > 0 && count == nil:
		t.Errorf("%d runs verified against their marks, but the report does not count the independent models", verified)
	case count != nil && count[1] != strconv.Itoa(verified):
		t.Errorf("report counts %s independent models, want %d", count[1], verified)
	}
	t.Logf("%d runs verified against their marks", verified)
}
