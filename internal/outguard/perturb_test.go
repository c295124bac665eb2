package outguard

import (
	"math"
	"testing"
)

// reference computes y' = α(y − β(s(γ·s⁻¹(y)) − ½)) for one row, without
// keeping the top class.
func reference(y []float64, beta, gamma float64) []float64 {
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	logit := func(p float64) float64 { return logExact(p / (1 - p)) } // math.Log is wrong for subnormals on amd64
	out := make([]float64, len(y))
	sum := 0.0
	for i, p := range y {
		out[i] = p - beta*(sig(gamma*logit(p))-0.5)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func TestReverseSigmoidFormula(t *testing.T) {
	tests := []struct {
		y           []float64
		beta, gamma float64
	}{
		{[]float64{0.1, 0.6, 0.25, 0.05}, 0.5, 0.2},
		{[]float64{0.97, 0.01, 0.01, 0.01}, 0.7, 0.4},
		{[]float64{0.2, 0.3, 0.5}, 0.1, 1},
	}
	for _, tc := range tests {
		want := reference(tc.y, tc.beta, tc.gamma)
		got := append([]float64(nil), tc.y...)
		reverseSigmoid(got, argmax(got), tc.beta, tc.gamma, make([]float64, len(got)))
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-12 {
				t.Errorf("β=%v γ=%v y=%v: got %v, want %v", tc.beta, tc.gamma, tc.y, got, want)
				break
			}
		}
		if argmax(got) != argmax(tc.y) {
			t.Errorf("β=%v γ=%v y=%v: top class moved to %d", tc.beta, tc.gamma, tc.y, argmax(got))
		}
	}
}

func TestReverseSigmoidGammaOneIsAffine(t *testing.T) {
	// With γ = 1, s(s⁻¹(y)) = y: y' ∝ (1−β)y + β/2.
	y := []float64{0.1, 0.2, 0.7}
	got := append([]float64(nil), y...)
	reverseSigmoid(got, 2, 0.4, 1, make([]float64, len(got)))
	sum := 0.0
	for _, p := range y {
		sum += 0.6*p + 0.2
	}
	for i, p := range y {
		if want := (0.6*p + 0.2) / sum; math.Abs(got[i]-want) > 1e-12 {
			t.Errorf("y'[%d] = %v, want %v", i, got[i], want)
		}
	}
}

func TestReverseSigmoidKeepsTopClass(t *testing.T) {
	// β=1, γ=10 sends 0.6 to 0.117 and 0.4 to 0.883 before renormalising:
	// the perturbation alone would flip the label.
	y := []float64{0.6, 0.4}
	if ref := reference(y, 1, 10); argmax(ref) != 1 {
		t.Fatalf("test premise: the plain perturbation keeps the top class (%v)", ref)
	}
	got := append([]float64(nil), y...)
	reverseSigmoid(got, 0, 1, 10, make([]float64, len(got)))
	if argmax(got) != 0 || !(got[0] > got[1]) {
		t.Errorf("got %v, want class 0 strictly on top", got)
	}
	// An exact tie that would hand the argmax to a lower index is broken
	// in the top class's favour.
	tie := []float64{0.25, 0.25, 0.5}
	reverseSigmoid(tie, 2, 1, 1, make([]float64, len(tie))) // γ=1, β=1: every y' is ½, then ⅓
	if argmax(tie) != 2 {
		t.Errorf("tie: got %v, want class 2 on top", tie)
	}
}

func TestReverseSigmoidLeavesNonFiniteRows(t *testing.T) {
	row := []float64{math.NaN(), 0.5, 0.5}
	reverseSigmoid(row, 1, 0.5, 0.5, make([]float64, len(row)))
	if !math.IsNaN(row[0]) || row[1] != 0.5 || row[2] != 0.5 {
		t.Errorf("got %v", row)
	}
}
