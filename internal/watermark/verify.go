package watermark

import (
	"errors"
	"fmt"
	"math"
	"math/big"
)

// Result is a suspect model's agreement with a principal's watermark.
//
// The test: for a recorded input x with true label y, the watermark label
// w is uniform over the classes−1 labels other than y and, being an HMAC
// output under a secret key, independent of any model built without the
// marked answers. Such a model, whatever it predicts for x, predicts w
// with probability exactly 1/(classes−1) when it predicts something other
// than y, and never when it predicts y. Over distinct inputs (the
// Recorder stores each once) the marks are independent, so among the
// Disagree pairs where the suspect does not answer y, the number that
// match w is Binomial(Disagree, 1/(classes−1)) under the hypothesis that
// the suspect is independent. P is that binomial's tail P[X ≥
// AgreeWatermark]: how likely an independent model agrees this often.
//
// PAll is the same tail over all Pairs rather than the disagreements
// only: a weaker test (it ignores what the suspect answers on the other
// inputs), never smaller than P.
type Result struct {
	// Pairs is the number of recorded pairs the suspect answered (n).
	Pairs int `json:"pairs"`
	// Classes is the victim's number of classes.
	Classes int `json:"classes"`
	// AgreeWatermark counts the suspect's answers equal to the watermark
	// label (k); AgreeTrue those equal to the victim's true label;
	// Disagree those not equal to the true label (m ≥ k).
	AgreeWatermark int `json:"agree_watermark"`
	AgreeTrue      int `json:"agree_true"`
	Disagree       int `json:"disagree"`
	// P0 is the chance of agreeing with a watermark label per
	// disagreement: 1/(classes−1).
	P0 float64 `json:"p0"`
	// Log2P and Log2PAll are log2 of the p-values (P[X ≥ k] for X ~
	// Binomial(m, p0) and Binomial(n, p0)), exact to float64 precision.
	Log2P    float64 `json:"log2_p"`
	Log2PAll float64 `json:"log2_p_all"`
}

// P returns the p-value, 2^Log2P (0 when below float64's range).
func (r Result) P() float64 { return math.Exp2(r.Log2P) }

// PAll returns the p-value over all pairs.
func (r Result) PAll() float64 { return math.Exp2(r.Log2PAll) }

// Identified reports whether the p-value is below alpha.
func (r Result) Identified(alpha float64) bool { return r.Log2P < math.Log2(alpha) }

// ErrNoPairs reports a verification with nothing to verify.
var ErrNoPairs = errors.New("no watermark pairs recorded")

// Verify asks predict for the suspect's label of each pair's inputs and
// tests the agreement with the watermark. All pairs must come from one
// model (one class count). predict's first error stops it.
func Verify(pairs []Pair, predict func(*Pair) (int64, error)) (Result, error) {
	if len(pairs) == 0 {
		return Result{}, ErrNoPairs
	}
	res := Result{Classes: pairs[0].Classes}
	if res.Classes < 3 {
		return Result{}, fmt.Errorf("%w: %d classes", ErrCorrupt, res.Classes)
	}
	for i := range pairs {
		p := &pairs[i]
		if p.Classes != res.Classes {
			return Result{}, fmt.Errorf("pairs from models with %d and %d classes: verify one model at a time", res.Classes, p.Classes)
		}
		got, err := predict(p)
		if err != nil {
			return Result{}, fmt.Errorf("pair %d: %w", i, err)
		}
		res.Pairs++
		switch got {
		case int64(p.TrueLabel):
			res.AgreeTrue++
		case int64(p.Label):
			res.AgreeWatermark++
			res.Disagree++
		default:
			res.Disagree++
		}
	}
	return res.finish(), nil
}

// Tally returns the Result of counts already taken.
func Tally(classes, pairs, agreeWatermark, agreeTrue int) (Result, error) {
	if classes < 3 || pairs < 0 || agreeWatermark < 0 || agreeTrue < 0 || agreeWatermark+agreeTrue > pairs {
		return Result{}, fmt.Errorf("counts out of range: %d classes, %d pairs, %d + %d agreements", classes, pairs, agreeWatermark, agreeTrue)
	}
	r := Result{Classes: classes, Pairs: pairs, AgreeWatermark: agreeWatermark, AgreeTrue: agreeTrue, Disagree: pairs - agreeTrue}
	return r.finish(), nil
}

func (r Result) finish() Result {
	r.P0 = 1 / float64(r.Classes-1)
	r.Log2P = Log2BinomialTailExact(r.Disagree, r.AgreeWatermark, 1, int64(r.Classes-1))
	r.Log2PAll = Log2BinomialTailExact(r.Pairs, r.AgreeWatermark, 1, int64(r.Classes-1))
	return r
}

// Log2BinomialTailExact returns log2 P[X ≥ k] for X ~ Binomial(n, num/den),
// 0 ≤ num ≤ den, den > 0, computed exactly in integers:
//
//	P[X ≥ k] = Σ_{i=k..n} C(n,i) num^i (den−num)^(n−i) / den^n
//
// and rounded once, to float64, at the end. It returns 0 (P = 1) for
// k ≤ 0 and -Inf for k > n.
func Log2BinomialTailExact(n, k int, num, den int64) float64 {
	switch {
	case k <= 0:
		return 0
	case k > n || num <= 0:
		return math.Inf(-1)
	case num >= den:
		return 0
	}
	a, b := big.NewInt(num), big.NewInt(den-num)
	// Walk i from n down to k: term(i) = C(n,i)·a^i·b^(n−i).
	binom := big.NewInt(1)                                 // C(n, i)
	apow := new(big.Int).Exp(a, big.NewInt(int64(n)), nil) // a^i
	bpow := big.NewInt(1)                                  // b^(n−i)
	sum, term := new(big.Int), new(big.Int)
	for i := n; i >= k; i-- {
		term.Mul(binom, apow)
		term.Mul(term, bpow)
		sum.Add(sum, term)
		if i == k {
			break
		}
		// C(n, i−1) = C(n, i)·i/(n−i+1), exactly.
		binom.Mul(binom, big.NewInt(int64(i)))
		binom.Quo(binom, big.NewInt(int64(n-i+1)))
		apow.Quo(apow, a)
		bpow.Mul(bpow, b)
	}
	denom := new(big.Int).Exp(big.NewInt(den), big.NewInt(int64(n)), nil)
	return log2Int(sum) - log2Int(denom)
}

// log2Int returns log2 x for x > 0 to float64 precision.
func log2Int(x *big.Int) float64 {
	f := new(big.Float).SetPrec(128).SetInt(x)
	mant := new(big.Float)
	exp := f.MantExp(mant) // x = mant·2^exp, mant in [0.5, 1)
	m, _ := mant.Float64()
	return float64(exp) + math.Log2(m)
}

// Log2BinomialTail returns log2 P[X ≥ k] for X ~ Binomial(n, p), summing
// the terms in log space (log-gamma, log-sum-exp): no term underflows, so
// tails like 2^-1000 come out as accurately as float64 log-gamma allows
// (about 1e-12 relative for n up to 10^6). For rational p use
// Log2BinomialTailExact.
func Log2BinomialTail(n, k int, p float64) float64 {
	switch {
	case k <= 0 || p >= 1:
		return 0
	case k > n || p <= 0:
		return math.Inf(-1)
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	lgn, _ := math.Lgamma(float64(n) + 1)
	logTerm := func(i int) float64 {
		a, _ := math.Lgamma(float64(i) + 1)
		b, _ := math.Lgamma(float64(n-i) + 1)
		return lgn - a - b + float64(i)*lp + float64(n-i)*lq
	}
	// The terms rise to the mode and fall after it; the largest in the
	// tail is at max(k, mode).
	mode := int(math.Floor(float64(n+1) * p))
	top := logTerm(max(k, min(mode, n)))
	sum := 0.0
	for i := k; i <= n; i++ {
		t := logTerm(i) - top
		if t < -80 && i > mode {
			break // the rest add less than 2^-100 relative
		}
		sum += math.Exp(t)
	}
	return (top + math.Log(sum)) / math.Ln2
}
