package watermark_test

import (
	"errors"
	"math"
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

func TestTally(t *testing.T) {
	// A surrogate that learnt 40 of 50 watermark labels, answering the true
	// label on the other 10, on a 10-class model.
	r, err := watermark.Tally(10, 50, 40, 10)
	if err != nil {
		t.Fatal(err)
	}
	if r.Disagree != 40 || r.P0 != 1.0/9 {
		t.Errorf("got %+v", r)
	}
	if want := -40 * math.Log2(9); !near(r.Log2P, want, 1e-12) {
		t.Errorf("log2 p: got %v, want %v", r.Log2P, want)
	}
	if !(r.Log2PAll > r.Log2P) || !r.Identified(math.Exp2(-64)) {
		t.Errorf("p over all pairs %v should exceed p over disagreements %v; identified at 2^-64: %v", r.Log2PAll, r.Log2P, r.Identified(math.Exp2(-64)))
	}
	// An independent model: right on 47 of 50, wrong on 3, one of which
	// happens to be the watermark label.
	r, _ = watermark.Tally(10, 50, 1, 47)
	if p := r.P(); !(p > 0.01) || r.Identified(0.01) {
		t.Errorf("independent model: p = %v, want above 0.01", p)
	}
	if _, err := watermark.Tally(10, 5, 4, 4); err == nil {
		t.Error("8 agreements of 5 pairs accepted")
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
	r, err := watermark.Verify(pairs, func(*watermark.Pair) (int64, error) { i++; return answers[i-1], nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.Pairs != 4 || r.AgreeWatermark != 2 || r.AgreeTrue != 1 || r.Disagree != 3 {
		t.Errorf("got %+v", r)
	}
	if want := watermark.Log2BinomialTailExact(3, 2, 1, 9); r.Log2P != want {
		t.Errorf("log2 p: got %v, want %v", r.Log2P, want)
	}
	if _, err := watermark.Verify(nil, nil); !errors.Is(err, watermark.ErrNoPairs) {
		t.Errorf("no pairs: got %v", err)
	}
	mixed := append(pairs, watermark.Pair{Classes: 5})
	if _, err := watermark.Verify(mixed, func(*watermark.Pair) (int64, error) { return 0, nil }); err == nil {
		t.Error("pairs of two models accepted")
	}
	boom := errors.New("boom")
	if _, err := watermark.Verify(pairs, func(*watermark.Pair) (int64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("predict error: got %v", err)
	}
}
