package watermark_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/aegis-inference/aegis/internal/watermark"
)

func TestBinomialTailKnownValues(t *testing.T) {
	tests := []struct {
		name     string
		n, k     int
		num, den int64
		want     float64 // log2 P[X ≥ k]
	}{
		{"k 0 is certain", 10, 0, 1, 9, 0},
		{"k above n is impossible", 10, 11, 1, 9, math.Inf(-1)},
		{"fair coin, 8 of 10", 10, 8, 1, 2, math.Log2(56.0 / 1024)}, // (45+10+1)/2^10
		{"fair coin, 1 of 1", 1, 1, 1, 2, -1},
		{"all 10 of 10 at 1/9", 10, 10, 1, 9, -10 * math.Log2(9)},
		{"all 100 of 100 at 1/9", 100, 100, 1, 9, -100 * math.Log2(9)},
		// P[X ≥ 1] = 1 − (8/9)^5
		{"at least 1 of 5 at 1/9", 5, 1, 1, 9, math.Log2(1 - math.Pow(8.0/9, 5))},
		// 2 of 3 at 1/3: 3·(1/3)²(2/3) + (1/3)³ = 7/27
		{"2 of 3 at 1/3", 3, 2, 1, 3, math.Log2(7.0 / 27)},
		// 21 agreements in 21 disagreements at 1/9: 9^-21 = 2^-66.57
		{"21 of 21 at 1/9", 21, 21, 1, 9, -21 * math.Log2(9)},
		// 5000 of 5000 at 1/9: far below float64's range as a number.
		{"5000 of 5000 at 1/9", 5000, 5000, 1, 9, -5000 * math.Log2(9)},
	}
	for _, tc := range tests {
		got := watermark.Log2BinomialTailExact(tc.n, tc.k, tc.num, tc.den)
		if !near(got, tc.want, 1e-12) {
			t.Errorf("%s: exact: got %v, want %v", tc.name, got, tc.want)
		}
		lg := watermark.Log2BinomialTail(tc.n, tc.k, float64(tc.num)/float64(tc.den))
		if !near(lg, tc.want, 1e-9) {
			t.Errorf("%s: log space: got %v, want %v", tc.name, lg, tc.want)
		}
	}
}

func near(got, want, rel float64) bool {
	if math.IsInf(want, 0) || want == 0 {
		return got == want
	}
	return math.Abs(got-want) <= rel*math.Abs(want)
}

func TestBinomialTailExactAgreesWithLogSpace(t *testing.T) {
	for _, c := range []int{3, 10, 100} {
		for _, n := range []int{1, 7, 50, 333, 2000} {
			for _, k := range []int{1, n / 20, n / 9, n / 3, n / 2, n - 1, n} {
				if k < 1 {
					continue
				}
				exact := watermark.Log2BinomialTailExact(n, k, 1, int64(c-1))
				lg := watermark.Log2BinomialTail(n, k, 1/float64(c-1))
				if math.Abs(exact-lg) > 1e-9*math.Max(1, math.Abs(exact)) {
					t.Errorf("C=%d n=%d k=%d: exact %v, log space %v", c, n, k, exact, lg)
				}
			}
		}
	}
}

// labelAnswers returns pairs of a 10-class model and a suspect that
// answers the watermark label on the first k, the true label on the next
// t and a third class on the rest.
func labelAnswers(n, k, t int) ([]watermark.Pair, func(*watermark.Pair) (watermark.Answer, error)) {
	pairs := make([]watermark.Pair, n)
	for i := range pairs {
		pairs[i] = watermark.Pair{Classes: 10, TrueLabel: i % 10, Label: (i + 1) % 10}
	}
	i := 0
	return pairs, func(p *watermark.Pair) (watermark.Answer, error) {
		i++
		switch {
		case i <= k:
			return watermark.Answer{Label: int64(p.Label)}, nil
		case i <= k+t:
			return watermark.Answer{Label: int64(p.TrueLabel)}, nil
		}
		return watermark.Answer{Label: int64(otherThan(p.TrueLabel, p.Label))}, nil
	}
}

func TestVerifyLabels(t *testing.T) {
	// A surrogate that learnt 40 of 50 watermark labels, answering the true
	// label on the other 10.
	r, err := watermark.Verify(labelAnswers(50, 40, 10))
	if err != nil {
		t.Fatal(err)
	}
	if r.Disagree != 40 || r.P0 != 1.0/9 || r.Scored != 0 {
		t.Errorf("got %+v", r)
	}
	if want := -40 * math.Log2(9); !near(r.Log2P, want, 1e-12) || r.Log2P != r.Log2PLabels {
		t.Errorf("log2 p: got %v, want %v", r.Log2P, want)
	}
	if !(r.Log2PAll > r.Log2P) || !r.Identified(math.Exp2(-64)) {
		t.Errorf("p over all pairs %v should exceed p over disagreements %v; identified at 2^-64: %v", r.Log2PAll, r.Log2P, r.Identified(math.Exp2(-64)))
	}
	// An independent model: right on 47 of 50, wrong on 3, one of which
	// happens to be the watermark label.
	r, _ = watermark.Verify(labelAnswers(50, 1, 47))
	if p := r.P(); r.Disagree != 3 || !(p > 0.01) || r.Identified(0.01) {
		t.Errorf("independent model: %+v, p = %v, want above 0.01", r, p)
	}
}

func TestVerifyCounts(t *testing.T) {
	pairs := []watermark.Pair{
		{Classes: 10, Label: 3, TrueLabel: 1},
		{Classes: 10, Label: 4, TrueLabel: 2},
		{Classes: 10, Label: 5, TrueLabel: 3},
		{Classes: 10, Label: 6, TrueLabel: 4},
	}
	answers := []int64{3, 2, 9, 6} // watermark, true, other, watermark
	i := 0
	r, err := watermark.Verify(pairs, func(*watermark.Pair) (watermark.Answer, error) {
		i++
		return watermark.Answer{Label: answers[i-1]}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Pairs != 4 || r.AgreeWatermark != 2 || r.AgreeTrue != 1 || r.Disagree != 3 || r.Scored != 0 || r.Log2PScores != 0 {
		t.Errorf("got %+v", r)
	}
	if want := watermark.Log2BinomialTailExact(3, 2, 1, 9); r.Log2P != want || r.Log2PLabels != want {
		t.Errorf("log2 p: got %v, want %v", r.Log2P, want)
	}
	if _, err := watermark.Verify(nil, nil); !errors.Is(err, watermark.ErrNoPairs) {
		t.Errorf("no pairs: got %v", err)
	}
	mixed := append(pairs, watermark.Pair{Classes: 5})
	if _, err := watermark.Verify(mixed, func(*watermark.Pair) (watermark.Answer, error) { return watermark.Answer{}, nil }); err == nil {
		t.Error("pairs of two models accepted")
	}
	boom := errors.New("boom")
	if _, err := watermark.Verify(pairs, func(*watermark.Pair) (watermark.Answer, error) { return watermark.Answer{}, boom }); !errors.Is(err, boom) {
		t.Errorf("predict error: got %v", err)
	}
}

// scoresAnswer returns a suspect's answer whose scores rank the classes
// in the order given, first highest; its label is the first.
func scoresAnswer(classes int, order ...int) watermark.Answer {
	s := make([]float64, classes)
	for i, c := range order {
		s[c] = float64(classes - i)
	}
	return watermark.Answer{Label: int64(order[0]), Scores: s}
}

func TestVerifyScores(t *testing.T) {
	// 30 marks on a 10-class model; the suspect answers the true label on
	// every one but ranks the watermark label next: the labels test sees
	// nothing, the scores test everything.
	var pairs []watermark.Pair
	for i := range 30 {
		y := i % 10
		pairs = append(pairs, watermark.Pair{Classes: 10, TrueLabel: y, Label: (y + 1 + i%9) % 10})
	}
	learnt := func(p *watermark.Pair) (watermark.Answer, error) {
		return scoresAnswer(10, p.TrueLabel, p.Label), nil
	}
	r, err := watermark.Verify(pairs, learnt)
	if err != nil {
		t.Fatal(err)
	}
	if r.AgreeTrue != 30 || r.Disagree != 0 || r.Scored != 30 || r.TopWrong != 30 || r.Log2PLabels != 0 {
		t.Errorf("got %+v", r)
	}
	if want := -30 * math.Log2(9); !near(r.Log2PScores, want, 1e-12) || !near(r.Log2P, want+1, 1e-12) {
		t.Errorf("log2 p: scores %v, verdict %v; want %v and %v", r.Log2PScores, r.Log2P, want, want+1)
	}
	if !r.Identified(math.Exp2(-64)) {
		t.Error("a suspect ranking every mark second is not identified")
	}

	// The verdict takes the better test, doubled: here the labels test.
	half := func(p *watermark.Pair) (watermark.Answer, error) {
		if p.TrueLabel%2 == 0 {
			return scoresAnswer(10, p.Label, p.TrueLabel), nil
		}
		// The true label, then a class that is neither.
		return scoresAnswer(10, p.TrueLabel, otherThan(p.TrueLabel, p.Label), p.Label), nil
	}
	r, _ = watermark.Verify(pairs, half)
	if r.AgreeWatermark != 15 || r.Disagree != 15 || r.TopWrong != 15 {
		t.Errorf("got %+v", r)
	}
	if r.Log2PLabels >= r.Log2PScores || r.Log2P != r.Log2PLabels+1 {
		t.Errorf("log2 p: labels %v, scores %v, verdict %v", r.Log2PLabels, r.Log2PScores, r.Log2P)
	}

	// A tie with the watermark label is no win, nor is a NaN.
	tie := func(p *watermark.Pair) (watermark.Answer, error) {
		a := scoresAnswer(10, p.TrueLabel, p.Label)
		a.Scores[otherThan(p.TrueLabel, p.Label)] = a.Scores[p.Label]
		return a, nil
	}
	if r, _ = watermark.Verify(pairs, tie); r.TopWrong != 0 || r.Log2P != 0 {
		t.Errorf("ties: got %+v", r)
	}
	nan := func(p *watermark.Pair) (watermark.Answer, error) {
		a := scoresAnswer(10, p.TrueLabel, p.Label)
		a.Scores[otherThan(p.TrueLabel, p.Label)] = math.NaN()
		return a, nil
	}
	if r, _ = watermark.Verify(pairs, nan); r.TopWrong != 0 {
		t.Errorf("NaN: got %+v", r)
	}

	// Scores for some answers only, or for the wrong number of classes.
	n := 0
	some := func(p *watermark.Pair) (watermark.Answer, error) {
		n++
		if n%2 == 0 {
			return watermark.Answer{Label: int64(p.TrueLabel)}, nil
		}
		return learnt(p)
	}
	if _, err := watermark.Verify(pairs, some); err == nil {
		t.Error("scores for half the answers accepted")
	}
	short := func(p *watermark.Pair) (watermark.Answer, error) {
		return scoresAnswer(9, 0, 1), nil
	}
	if _, err := watermark.Verify(pairs, short); !errors.Is(err, watermark.ErrScoreClasses) {
		t.Error("9 scores for a 10-class victim accepted")
	}
}

func otherThan(a, b int) int {
	for c := 0; ; c++ {
		if c != a && c != b {
			return c
		}
	}
}

// TestVerifyIndependentLevel checks the verdict's level: suspects whose
// scores owe nothing to the key (random, and mostly right, as a good
// independent model is) fall below p = 0.05 at most 5% of the time, and
// below 2^-64 never.
func TestVerifyIndependentLevel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const trials, marks, classes = 4000, 50, 10
	below, scoresBelow := 0, 0
	for range trials {
		pairs := make([]watermark.Pair, marks)
		for i := range pairs {
			y := rng.IntN(classes)
			pairs[i] = watermark.Pair{Classes: classes, TrueLabel: y, Label: (y + 1 + rng.IntN(classes-1)) % classes}
		}
		r, err := watermark.Verify(pairs, func(p *watermark.Pair) (watermark.Answer, error) {
			s := make([]float64, classes)
			for c := range s {
				s[c] = rng.Float64()
			}
			if rng.Float64() < 0.9 {
				s[p.TrueLabel] = 2 // right nine times in ten
			}
			a := watermark.Answer{Scores: s}
			for c := range s {
				if s[c] > s[a.Label] {
					a.Label = int64(c)
				}
			}
			return a, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.P() <= 0.05 {
			below++
		}
		if r.Log2PScores <= math.Log2(0.05) {
			scoresBelow++
		}
		if r.Identified(math.Exp2(-64)) {
			t.Fatalf("an independent suspect identified: %+v", r)
		}
	}
	t.Logf("%d trials: verdict p ≤ 0.05 in %d, scores test alone in %d", trials, below, scoresBelow)
	// The binomial tests are exact but discrete, so at most 5% each; 2.6
	// standard deviations of slack over 4,000 trials.
	if limit := trials*5/100 + 90; below > limit || scoresBelow > limit {
		t.Errorf("p ≤ 0.05 in %d (verdict) and %d (scores) of %d trials, want at most %d", below, scoresBelow, trials, limit)
	}
	// And the scores test is not vacuous: its level is close to 5%.
	if scoresBelow < trials*2/100 {
		t.Errorf("scores test below 0.05 in only %d of %d trials", scoresBelow, trials)
	}
}
