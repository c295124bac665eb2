package attack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// fakeOracle answers from a local network, as the server would: float32
// probabilities, optionally rounded to decimals or withheld.
type fakeOracle struct {
	victim   *learn.Net
	decimals int  // round probabilities to this many decimals; 0: float32 as is
	noProbs  bool // serve the label only
	sent     int
}

func (f *fakeOracle) Query(_ context.Context, xs [][]float64) ([]Answer, error) {
	var out []Answer
	for _, x := range xs {
		f.sent++
		p := f.victim.Probs(x)
		for i := range p {
			p[i] = float64(float32(p[i]))
			if f.decimals > 0 {
				s := math.Pow10(f.decimals)
				p[i] = math.Round(p[i]*s) / s
			}
		}
		a := Answer{Label: learn.Argmax(p), Probs: p}
		if f.noProbs {
			a.Probs = nil
		}
		out = append(out, a)
	}
	return out, nil
}

// victimLike returns a logistic regression with weights of the scale of
// the digits_logreg victim, and natural-ish evaluation inputs.
func victimLike(seed uint64) (*learn.Net, [][]float64) { return victimScaled(seed, 4) }

// victimScaled is victimLike with weights of scale × He initialisation.
func victimScaled(seed uint64, scale float64) (*learn.Net, [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	v := learn.NewNet([]int{Dim, Classes}, 1.0/PixelMax, rng)
	for i := range v.Layers[0].W {
		v.Layers[0].W[i] *= scale
	}
	var eval [][]float64
	for range 300 {
		x := make([]float64, Dim)
		for i := range x {
			if rng.IntN(2) == 0 {
				x[i] = float64(rng.IntN(PixelMax + 1))
			}
		}
		eval = append(eval, x)
	}
	return v, eval
}

func labels(n *learn.Net, xs [][]float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = n.Predict(x)
	}
	return out
}

type curve map[int]float64

func run(t *testing.T, a Attack, o Oracle, cps []int, eval [][]float64, want []int) curve {
	t.Helper()
	c := curve{}
	err := a.Run(context.Background(), o, cps, func(spent int, m learn.Classifier) error {
		c[spent] = learn.Agreement(m, eval, want)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEqSolveExactProbabilities is the baseline the benchmark measures
// defences against: 65 queries with float32 probabilities recover the
// model.
func TestEqSolveExactProbabilities(t *testing.T) {
	for seed := range uint64(3) {
		victim, eval := victimLike(seed)
		want := labels(victim, eval)
		o := &fakeOracle{victim: victim}
		c := run(t, EqSolve{Seed: seed}, o, []int{30, 64, 65, 100}, eval, want)
		if c[65] < 0.99 {
			t.Errorf("seed %d: agreement %.3f after 65 queries, want at least 0.99 (curve %v)", seed, c[65], c)
		}
		if c[30] > 0.9 {
			t.Errorf("seed %d: agreement %.3f after 30 queries: the system cannot be determined yet", seed, c[30])
		}
		if o.sent != 100 {
			t.Errorf("seed %d: %d queries sent, want 100", seed, o.sent)
		}
	}
}

// TestEqSolveRounded checks the attack still converges on probabilities
// rounded to two decimals, only more slowly, and falls back to labels
// when no probabilities are served.
func TestEqSolveRounded(t *testing.T) {
	victim, eval := victimLike(7)
	want := labels(victim, eval)
	c := run(t, EqSolve{Seed: 1}, &fakeOracle{victim: victim, decimals: 2}, []int{65, 2000}, eval, want)
	if c[65] >= 0.98 || c[2000] < 0.9 {
		t.Errorf("rounded to 2 decimals: agreement %.3f at 65, %.3f at 2000; want < 0.98, then >= 0.9", c[65], c[2000])
	}
	c = run(t, EqSolve{Seed: 1}, &fakeOracle{victim: victim, noProbs: true}, []int{65, 500}, eval, want)
	if c[500] < 0.5 {
		t.Errorf("labels only: agreement %.3f at 500 queries, want the label-only fallback to learn something", c[500])
	}
}

func TestQuantum(t *testing.T) {
	for _, tc := range []struct {
		probs []float64
		want  float64
	}{
		{[]float64{0.25, 0.75}, 0.01},
		{[]float64{0.2, 0.8}, 0.1},
		{[]float64{0.123, 0.877}, 0.001},
		{[]float64{float64(float32(0.1234567)), 0.5}, 0},
	} {
		if got := quantum([]Answer{{Probs: tc.probs}}); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("quantum(%v) = %v, want %v", tc.probs, got, tc.want)
		}
	}
}

func TestRetrainAndJacobianLearn(t *testing.T) {
	victim, eval := victimLike(11)
	want := labels(victim, eval)
	c := run(t, Retrain{Source: NewNatural(eval[:100], 1), Soft: true, Sizes: []int{Dim, Classes}, Seed: 1}, &fakeOracle{victim: victim}, []int{50, 400}, eval, want)
	if c[400] < 0.8 {
		t.Errorf("knockoff: agreement %.3f at 400 queries, want at least 0.8", c[400])
	}
	// Jacobian augmentation learns little on this synthetic victim (the
	// benchmark measures it on the digits victims): check its rounds.
	o := &fakeOracle{victim: victim}
	c = run(t, Jacobian{Seeds: eval[:20], Lambda: 2, Tau: 3, Sizes: []int{Dim, Classes}, Seed: 1}, o, []int{300}, eval, want)
	for _, n := range []int{20, 40, 80, 160, 300} {
		if _, ok := c[n]; !ok || len(c) != 5 {
			t.Errorf("jacobian observed at %v, want after 20, 40, 80, 160 and 300 (the budget) queries", c)
			break
		}
	}
	if o.sent != 300 {
		t.Errorf("jacobian sent %d queries, want the budget, 300", o.sent)
	}
}

func TestSpread(t *testing.T) {
	victim, eval := victimLike(1)
	var parts []*fakeOracle
	var oracles []Oracle
	for range 4 {
		f := &fakeOracle{victim: victim}
		parts, oracles = append(parts, f), append(oracles, f)
	}
	rr := &RoundRobin{Oracles: oracles}
	got, err := rr.Query(context.Background(), eval[:10])
	if err != nil || len(got) != 10 {
		t.Fatalf("round robin: %d answers, %v", len(got), err)
	}
	for i, p := range parts {
		if want := []int{3, 3, 2, 2}[i]; p.sent != want {
			t.Errorf("principal %d got %d queries, want %d", i, p.sent, want)
		}
	}
	f := &fakeOracle{victim: victim}
	m := NewInterleave(f, eval[100:], 1.5, 1)
	if got, _ := m.Query(context.Background(), eval[:10]); len(got) != 10 || f.sent != 25 {
		t.Errorf("interleave 1.5: %d answers and %d queries sent, want 10 and 25", len(got), f.sent)
	}
}

func TestTranslate(t *testing.T) {
	x := make([]float64, Dim)
	x[0], x[63] = 1, 2
	y := Translate(x, 1, 1)
	if y[9] != 1 || y[0] != 0 {
		t.Errorf("shift by (1,1): pixel 0 went to %v (want y[9]=1, y[0]=0)", y[:10])
	}
	if n := NewNatural([][]float64{x, x}, 1); len(n.queue) != 26 {
		t.Errorf("natural source over 2 images holds %d queries, want 26", len(n.queue))
	}
}

// blockingOracle answers n queries, then refuses everything with
// ErrBlocked, as the harness's oracle does once the server stops
// answering an attacker.
type blockingOracle struct {
	fakeOracle
	n int
}

func (b *blockingOracle) Query(ctx context.Context, xs [][]float64) ([]Answer, error) {
	var out []Answer
	for _, x := range xs {
		if b.sent >= b.n {
			return out, fmt.Errorf("principal: %w", ErrBlocked)
		}
		a, _ := b.fakeOracle.Query(ctx, [][]float64{x})
		out = append(out, a...)
	}
	return out, nil
}

func TestBlockedAttacksKeepWhatTheyHave(t *testing.T) {
	victim, eval := victimLike(3)
	for _, tc := range []struct {
		name string
		a    Attack
	}{
		{"eqsolve", EqSolve{Seed: 1}},
		{"retrain", Retrain{Source: NewUniform(1), Sizes: []int{Dim, Classes}, Seed: 1}},
		{"jacobian", Jacobian{Seeds: eval[:10], Lambda: 2, Sizes: []int{Dim, Classes}, Seed: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &blockingOracle{fakeOracle: fakeOracle{victim: victim}, n: 70}
			var last int
			err := tc.a.Run(context.Background(), o, []int{50, 100, 200}, func(spent int, m learn.Classifier) error {
				last = spent
				return nil
			})
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("got %v, want ErrBlocked", err)
			}
			if last != 70 {
				t.Errorf("last observed after %d queries, want 70 (when it was blocked)", last)
			}
		})
	}
}

// top1Oracle serves the top class and its probability only, rounded to
// two decimals: outguard's default.
type top1Oracle struct{ fakeOracle }

func (o *top1Oracle) Query(ctx context.Context, xs [][]float64) ([]Answer, error) {
	as, err := o.fakeOracle.Query(ctx, xs)
	for i := range as {
		p := make([]float64, Classes)
		p[as[i].Label] = as[i].Probs[as[i].Label]
		as[i].Probs = p
	}
	return as, err
}

// digitsVictim is a local copy of the digits_logreg victim
// (testdata/extraction/victims, written by train_victims.py) and the
// evaluation digits (held-out rows 200..449).
func digitsVictim(t *testing.T) (*learn.Net, [][]float64) {
	t.Helper()
	b, err := os.ReadFile("../../../testdata/extraction/victims/digits_logreg.json")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		W [][]float64 `json:"w"`
		B []float64   `json:"b"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	v := &learn.Net{Scale: 1.0 / PixelMax, Layers: []learn.Dense{{In: Dim, Out: Classes, W: make([]float64, Dim*Classes), B: w.B}}}
	for i := range Dim {
		for c := range Classes {
			v.Layers[0].W[c*Dim+i] = w.W[i][c]
		}
	}
	b, err = os.ReadFile("../../../testdata/digits/heldout.json")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Inputs [][]float64 }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return v, h.Inputs[200:]
}

func TestEqSolveDigitsVictim(t *testing.T) {
	victim, eval := digitsVictim(t)
	c := run(t, EqSolve{Seed: 1}, &fakeOracle{victim: victim}, []int{65}, eval, labels(victim, eval))
	if c[65] < 0.98 {
		t.Errorf("digits_logreg, float32 probabilities: agreement %.3f after 65 queries, want at least 0.98", c[65])
	}
}

// TestEqSolveTop1Scores checks that with only the top class and its
// probability served, rounded to two decimals (outguard's default), the
// attack fits the scores and does better than retraining on the labels
// alone.
func TestEqSolveTop1Scores(t *testing.T) {
	if raceEnabled {
		t.Skip("minutes under the race detector")
	}
	victim, eval := digitsVictim(t)
	want := labels(victim, eval)
	cps := []int{1000}
	scores := run(t, EqSolve{Seed: 1}, &top1Oracle{fakeOracle{victim: victim, decimals: 2}}, cps, eval, want)
	labelsOnly := run(t, Retrain{Source: NewUniform(1), Sizes: []int{Dim, Classes}, Seed: 1}, &top1Oracle{fakeOracle{victim: victim, decimals: 2}}, cps, eval, want)
	t.Logf("1000 queries, top-1 at 2 decimals: score fitting %.3f, labels only %.3f", scores[1000], labelsOnly[1000])
	if scores[1000] < labelsOnly[1000]+0.05 {
		t.Errorf("score fitting %.3f, labels only %.3f: want the scores to help by at least 0.05", scores[1000], labelsOnly[1000])
	}
}
