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
	policies := []string{"raw", "detect", "round", "harden", "hardened", "watermark", "screen"}
	if raceEnabled {
		policies = []string{"raw", "hardened", "screen"}
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
	// Input validation that refuses: uniform random queries are out of
	// distribution, so equation-solving is refused, counted as refusals
	// (a 400 naming the rule), not as errors.
	if runs := rep.runsOf("screen", "eqsolve@logreg"); len(runs) != 1 || runs[0].refused == 0 {
		t.Errorf("equation-solving under screen: %d runs, refused %v; want refusals", len(runs), runs)
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
	if len(rep.overhead) == 0 {
		t.Error("no overhead measured")
	}
	for _, o := range rep.overhead {
		// The servers' own spans come from their audit records: one per
		// request that came over the network, each shorter than the
		// slowest answers the client saw.
		if o.rawSpan <= 0 || o.polSpan <= 0 || o.rawSpan > o.rawP99 || o.polSpan > o.polP99 {
			t.Errorf("%s: server spans raw %v, policy %v; answers p99 raw %v, policy %v", o.policy, o.rawSpan, o.polSpan, o.rawP99, o.polP99)
		}
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

func TestFastMean(t *testing.T) {
	xs := []time.Duration{50, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	if got := fastMean(xs, 0.9); got != 5 {
		t.Errorf("mean of the fastest 9 of %v = %v, want 5", xs, got)
	}
	if xs[0] != 50 {
		t.Error("fastMean sorted its argument")
	}
	if got := fastMean(nil, 0.9); got != 0 {
		t.Errorf("fastMean(nil) = %v, want 0", got)
	}
}

func TestAnswersOf(t *testing.T) {
	probs := []float64{0, 0.1, 0, 0, 0, 0, 0, 0.9, 0, 0}
	for _, tc := range []struct {
		name      string
		outs      []restTensor
		wantLabel int
		wantProbs bool
	}{
		{"label and probabilities", []restTensor{
			{Name: "label", Shape: []int64{1}, Datatype: "INT64", Data: []float64{7}},
			{Name: "probabilities", Shape: []int64{1, 10}, Datatype: "FP32", Data: probs}}, 7, true},
		{"label only", []restTensor{{Name: "label", Shape: []int64{1}, Datatype: "INT64", Data: []float64{3}}}, 3, false},
		{"top-2 scores and indices", []restTensor{
			{Name: "topk_values", Shape: []int64{1, 2}, Datatype: "FP32", Data: []float64{0.8, 0.2}},
			{Name: "topk_indices", Shape: []int64{1, 2}, Datatype: "INT64", Data: []float64{4, 1}}}, 4, true},
		{"top-10 in rank order", []restTensor{
			{Name: "label", Shape: []int64{1}, Datatype: "INT64", Data: []float64{9}},
			{Name: "topk_values", Shape: []int64{1, 10}, Datatype: "FP32", Data: []float64{0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0, 0, 0, 0}},
			{Name: "topk_indices", Shape: []int64{1, 10}, Datatype: "INT64", Data: []float64{9, 0, 1, 2, 3, 4, 5, 6, 7, 8}}}, 9, true},
		{"label and top-1 score", []restTensor{
			{Name: "label", Shape: []int64{1}, Datatype: "INT64", Data: []float64{2}},
			{Name: "topk_values", Shape: []int64{1, 1}, Datatype: "FP32", Data: []float64{0.91}},
			{Name: "topk_indices", Shape: []int64{1, 1}, Datatype: "INT64", Data: []float64{2}}}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := answersOf(tc.outs, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Label != tc.wantLabel || (got[0].Probs != nil) != tc.wantProbs {
				t.Errorf("got label %d probabilities %v, want %d and probabilities: %v", got[0].Label, got[0].Probs, tc.wantLabel, tc.wantProbs)
			}
		})
	}
	if _, err := answersOf([]restTensor{{Name: "x", Shape: []int64{1, 3}, Datatype: "FP32", Data: []float64{1, 2, 3}}}, 1); err == nil {
		t.Error("a response with neither probabilities nor a label: got no error")
	}
}

func TestPlaceAlarm(t *testing.T) {
	m := &meter{at: map[string][]int{"key:a": {1, 3, 5}, "key:b": {2, 4, 6}}, sent: 6}
	for _, tc := range []struct {
		name  string
		alarm alarm
		want  int
	}{
		{"principal's third query", alarm{principals: []string{"key:b"}, queries: 3}, 6},
		{"group at its fourth", alarm{aggregate: true, principals: []string{"key:a", "key:b"}, queries: 4}, 4},
		{"no count: the poll that saw it", alarm{principals: []string{"key:a"}}, 5},
	} {
		if got := m.place(tc.alarm, 5); got != tc.want {
			t.Errorf("%s: placed at %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestTrainOptions pins how the attackers train: 100 epochs by default
// for every budget the benchmark uses (the step cap must not cut the
// 2,000-answer surrogates short), -epochs overrides it, quick runs use
// quickTrain.
func TestTrainOptions(t *testing.T) {
	def, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := def.train()
	if tr.Epochs != 100 {
		t.Errorf("default epochs %d, want 100", tr.Epochs)
	}
	// The largest training set: the 2,000 answers of a learning attack.
	if steps := tr.Epochs * 2000 / tr.Batch; steps > tr.MaxSteps {
		t.Errorf("2,000 answers need %d steps for %d epochs; MaxSteps %d cuts them short", steps, tr.Epochs, tr.MaxSteps)
	}
	o, err := parseFlags([]string{"-epochs", "48"})
	if err != nil {
		t.Fatal(err)
	}
	if got := o.train(); got.Epochs != 48 || got.MaxSteps != tr.MaxSteps || got.LR != tr.LR {
		t.Errorf("-epochs 48: %+v", got)
	}
	if _, err := parseFlags([]string{"-epochs", "-1"}); err == nil {
		t.Error("-epochs -1 accepted")
	}
	q, err := parseFlags([]string{"-quick", "-epochs", "48"})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.train(); got != quickTrain {
		t.Errorf("quick run trains with %+v, want quickTrain", got)
	}
}
