package attack

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
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
func victimLike(seed uint64) (*learn.Net, [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	v := learn.NewNet([]int{Dim, Classes}, 1.0/PixelMax, rng)
	for i := range v.Layers[0].W {
		v.Layers[0].W[i] *= 4
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
