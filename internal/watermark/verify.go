package watermark

import (
	"errors"
	"fmt"
	"math"
	"math/big"
)

// Result is a suspect model's agreement with a principal's watermark.
//
// For a recorded input x with true label y, the watermark label w is
// uniform over the classes−1 labels other than y and, being an HMAC output
// under a secret key, independent of any model built without the marked
// answers. Over distinct inputs (the Recorder stores each once) the marks
// are independent. Two exact tests follow from that:
//
//   - Labels: such a model, whatever it predicts for x, predicts w with
//     probability exactly 1/(classes−1) when it predicts something other
//     than y, and never when it predicts y. Among the Disagree pairs where
//     the suspect does not answer y, the number that match w
//     (AgreeWatermark) is Binomial(Disagree, 1/(classes−1)).
//   - Scores, when the suspect gives a score to every class: the class it
//     scores highest among those other than y is w with probability at
//     most 1/(classes−1) (exactly, without ties), whatever it answers. The
//     number of such pairs (TopWrong) is at most Binomial(Scored,
//     1/(classes−1)). A surrogate that learnt a mark but still answers y
//     there mostly ranks w next, so this test sees marks the first misses.
//
// Log2P, the verdict's p-value, is the labels test's alone when the
// suspect gives no scores, else twice the smaller of the two (Bonferroni:
// either test may decide, and the doubling keeps the verdict's level at or
// below the nominal one, however the two tests depend on each other).
//
// Log2PAll is the labels test over all Pairs rather than the
// disagreements only: a weaker test (it ignores what the suspect answers
// on the other inputs), never smaller than Log2PLabels.
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
	// Scored counts the answers that came with scores (Pairs, or 0 for a
	// suspect with labels only); TopWrong those in which the watermark
	// label scored strictly higher than every other class but the true
	// label.
	Scored   int `json:"scored"`
	TopWrong int `json:"top_wrong"`
	// P0 is the chance of agreeing with a watermark label per
	// disagreement, and of ranking it first of the wrong classes:
	// 1/(classes−1).
	P0 float64 `json:"p0"`
	// Log2PLabels and Log2PScores are log2 of the two tests' p-values
	// (P[X ≥ k] for X ~ Binomial(m, p0); P[X ≥ TopWrong] for X ~
	// Binomial(Scored, p0), 0 without scores), exact to float64 precision;
	// Log2P is the verdict's; Log2PAll the labels test over all pairs.
	Log2PLabels float64 `json:"log2_p_labels"`
	Log2PScores float64 `json:"log2_p_scores"`
	Log2P       float64 `json:"log2_p"`
	Log2PAll    float64 `json:"log2_p_all"`
}

// P returns the verdict's p-value, 2^Log2P (0 when below float64's range).
func (r Result) P() float64 { return math.Exp2(r.Log2P) }

// PAll returns the labels test's p-value over all pairs.
func (r Result) PAll() float64 { return math.Exp2(r.Log2PAll) }

// Identified reports whether the verdict's p-value is below alpha.
func (r Result) Identified(alpha float64) bool { return r.Log2P < math.Log2(alpha) }

// ErrNoPairs reports a verification with nothing to verify.
var ErrNoPairs = errors.New("no watermark pairs recorded")

// ErrScoreClasses reports a suspect whose scores do not cover the victim's
// classes one for one.
var ErrScoreClasses = errors.New("the suspect's scores do not match the victim's classes")

// Answer is a suspect's answer to one recorded input: its label and, for
// a suspect with a scores output, its score for each class (any monotone
// scale: probabilities or logits), else nil.
type Answer struct {
	Label  int64
	Scores []float64
}

// Verify asks the suspect for its answer to each pair's inputs, in the
// order of pairs, and tests the agreement with the watermark. All pairs
// must come from one model (one class count), and the suspect must give
// scores for all or none. answer's first error stops it.
func Verify(pairs []Pair, answer func(*Pair) (Answer, error)) (Result, error) {
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
		got, err := answer(p)
		if err != nil {
			return Result{}, fmt.Errorf("pair %d: %w", i, err)
		}
		res.Pairs++
		switch got.Label {
		case int64(p.TrueLabel):
			res.AgreeTrue++
		case int64(p.Label):
			res.AgreeWatermark++
			res.Disagree++
		default:
			res.Disagree++
		}
		if got.Scores != nil {
			if len(got.Scores) != res.Classes {
				return Result{}, fmt.Errorf("pair %d: %w: %d scores, %d classes", i, ErrScoreClasses, len(got.Scores), res.Classes)
			}
			res.Scored++
			if topWrong(got.Scores, p.TrueLabel, p.Label) {
				res.TopWrong++
			}
		}
	}
	if res.Scored != 0 && res.Scored != res.Pairs {
		return Result{}, fmt.Errorf("the suspect gave scores for %d of %d answers: all or none", res.Scored, res.Pairs)
	}
	return res.finish(), nil
}

// topWrong reports whether w scores strictly higher than every class but
// y and w. A tie, or a NaN on either side, is not a win: under the
// independence hypothesis that keeps the chance at most 1/(classes−1).
func topWrong(scores []float64, y, w int) bool {
	if w < 0 || w >= len(scores) || w == y {
		return false
	}
	sw := scores[w]
	for c, s := range scores {
		if c != y && c != w && !(sw > s) {
			return false
		}
	}
	return true
}

func (r Result) finish() Result {
	den := int64(r.Classes - 1)
	r.P0 = 1 / float64(den)
	r.Log2PLabels = Log2BinomialTailExact(r.Disagree, r.AgreeWatermark, 1, den)
	r.Log2PAll = Log2BinomialTailExact(r.Pairs, r.AgreeWatermark, 1, den)
	r.Log2P = r.Log2PLabels
	if r.Scored > 0 {
		r.Log2PScores = Log2BinomialTailExact(r.Scored, r.TopWrong, 1, den)
		r.Log2P = min(0, 1+min(r.Log2PLabels, r.Log2PScores))
	}
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
