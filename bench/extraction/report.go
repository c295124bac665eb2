package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// report is what a run measured.
type report struct {
	opt            options
	policies       []*policy
	scenarios      []scenario
	started        time.Time
	elapsed        time.Duration
	ortVersion     string
	victimAccuracy []victimAcc
	runs           []*attackRun
	benign         []*benignRun
	overhead       []*overheadRun
}

type victimAcc struct {
	model    string
	accuracy float64
}

// target is the agreement the criteria are stated at.
const target = 0.98

// runsOf returns the runs of scenario s under policy p, by seed.
func (r *report) runsOf(p string, s string) []*attackRun {
	var out []*attackRun
	for _, run := range r.runs {
		if run.policy == p && run.scenario.name == s {
			out = append(out, run)
		}
	}
	return out
}

// queriesTo returns the attack's own queries at the first checkpoint
// where its agreement reached t, and false if it never did.
func (a *attackRun) queriesTo(t float64) (int, bool) {
	for _, p := range a.curve {
		if p.agreement >= t {
			return p.own, true
		}
	}
	return 0, false
}

// agreementAt returns the agreement at own queries: the last
// measurement at or before it (an attack blocked earlier keeps its last
// model), and false if there is none.
func (a *attackRun) agreementAt(own int) (float64, bool) {
	v, ok := 0.0, false
	for _, p := range a.curve {
		if p.own <= own {
			v, ok = p.agreement, true
		}
	}
	if !ok || (a.curve[len(a.curve)-1].own < own && !a.blocked) {
		return 0, false
	}
	return v, true
}

// QueriesTo98 is the figure the smoke test checks: the median over seeds
// of the queries equation-solving needed to reach 98% agreement under
// policy p, and whether every seed reached it.
func (r *report) QueriesTo98(p, scen string) (int, bool) {
	var qs []float64
	all := true
	for _, run := range r.runsOf(p, scen) {
		q, ok := run.queriesTo(target)
		if !ok {
			all = false
			continue
		}
		qs = append(qs, float64(q))
	}
	if len(qs) == 0 {
		return 0, false
	}
	return int(benchutil.Median(qs)), all
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Model extraction: attacks and defences\n\n")
	w("`%s`: %d seed(s), %s. Go %s, GOMAXPROCS %d, ONNX Runtime %s, load average at the end %s; the run took %s.\n\n",
		r.opt.command, r.opt.seeds, map[bool]string{true: "quick (smoke run: few queries, figures not meaningful)", false: "full"}[r.opt.quick],
		runtime.Version(), runtime.GOMAXPROCS(0), r.ortVersion, benchutil.LoadAverage(), r.elapsed.Round(time.Second))
	w("Every query is one REST request (JSON, one row) over TLS 1.3 with its own API key to a real Aegis ")
	w("(internal/app, as `aegis serve` builds it) on loopback, audited; a fresh server for every run, so that ")
	w("no detector state carries over. Agreement is the fraction of the %d evaluation digits on which the ", 450-poolSize)
	w("attacker's model gives the victim's raw top-1 label. \"Queries\" count input rows sent, refused ones included.\n\n")
	if !r.opt.quick {
		tr := r.opt.train()
		w("Surrogates are trained with Adam on minibatches of %d for %d epochs (at least %d, at most %d steps). ", tr.Batch, tr.Epochs, tr.MinSteps, tr.MaxSteps)
		w("The independent models of the watermark table are trained for %d epochs.\n\n", learn.DefaultTrain.Epochs)
	}

	w("## Victims\n\n| victim | model | top-1 accuracy on the 450 held-out digits |\n|---|---|---|\n")
	desc := map[string]string{victimLogreg: "multinomial logistic regression (64→10)", victimMLP: "MLP 64→64 ReLU→10"}
	for _, v := range r.victimAccuracy {
		w("| `%s` | %s | %.4f |\n", v.model, desc[v.model], v.accuracy)
	}
	w("\nData: `testdata/digits/heldout.json`, the 450 digits `train_test_split(test_size=0.25, random_state=0)` kept out of ")
	w("training. Rows 0..%d are the attacker's natural pool (knockoff and label-natural queries, their one- and two-pixel ", poolSize-1)
	w("translations, Jacobian seeds, cover queries); rows %d..449 are the evaluation set, never queried by an attacker. ", poolSize)
	w("Benign clients replay all 450.\n\n")

	w("## Policies\n\n| policy | what | accepted by this server |\n|---|---|---|\n")
	for _, p := range r.policies {
		acc := "yes"
		if !p.supported() {
			acc = "no: " + strings.ReplaceAll(p.unsupported, "\n", " ") + " (columns read n/a)"
		}
		w("| %s | %s | %s |\n", p.name, p.Description, acc)
	}
	w("\nAttacks:\n\n")
	seen := map[string]bool{}
	for _, s := range r.scenarios {
		if !seen[s.kind] {
			seen[s.kind] = true
			w("- `%s`: %s\n", s.kind, kindDesc[s.kind])
		}
	}
	w("- `split%d:` the same attack, its queries dealt round-robin over %d API keys; `interleave:` the attack with %.3g natural pool ", r.opt.split, r.opt.split, r.opt.mix)
	w("queries sent by the same key before each of its own (their answers unused; they count as queries spent).\n\n")

	for _, p := range r.policies {
		if !p.supported() {
			continue
		}
		r.curves(&b, p.name)
	}
	r.to98(&b)
	r.detection(&b)
	r.benignTable(&b)
	r.watermarkTable(&b)
	r.overheadTable(&b)
	return b.String()
}

// notAccepted writes a row for every policy other than raw the server did
// not accept, in a table of cols columns, and returns how many.
func (r *report) notAccepted(b *strings.Builder, cols int) int {
	n := 0
	for _, p := range r.policies {
		if p.name != "raw" && !p.supported() {
			fmt.Fprintf(b, "| every scenario | %s | n/a (policy not accepted)%s |\n", p.name, strings.Repeat(" |", cols-3))
			n++
		}
	}
	return n
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func fmtAlarm(n int) string {
	switch {
	case n < 0:
		return "n/a"
	case n == 0:
		return "none"
	}
	return fmt.Sprint(n)
}

func fmtFlagged(n int) string {
	if n < 0 {
		return "n/a"
	}
	return fmt.Sprint(n)
}
