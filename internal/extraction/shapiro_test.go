package extraction

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// shapiroReference is testdata/extraction/shapiro.json, written by
// scripts/extraction/shapiro_reference.py: scipy.stats.shapiro's W and p
// (Fortran AS R94 in single precision) and the same algorithm evaluated with
// mpmath at 50 digits (w_mp, p_mp).
type shapiroReference struct {
	Scipy string `json:"scipy"`
	Cases []struct {
		Name string    `json:"name"`
		X    []float64 `json:"x"`
		W    float64   `json:"w"`
		P    float64   `json:"p"`
		WMP  float64   `json:"w_mp"`
		PMP  float64   `json:"p_mp"`
	} `json:"cases"`
}

func loadShapiroReference(t testing.TB) shapiroReference {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "extraction", "shapiro.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref shapiroReference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// relDiff is |got-want|/|want|, or |got-want| when want is 0.
func relDiff(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

// TestShapiroWilkMatchesScipy compares W and p with scipy.stats.shapiro.
// scipy computes in float32, so W agrees to float32 rounding error
// (≤ 1.5e-6 up to n=500 — 1.1e-6 for data at 1000±0.5 whose median scipy
// subtracts in float32 —, ≤ 2.5e-6 at n=5000), and p agrees to 1e-4 relative
// once the part explained by scipy's own W error is allowed for: p is a
// steep function of W near 1, and dp/dW·ΔW is what that error moves p by.
func TestShapiroWilkMatchesScipy(t *testing.T) {
	ref := loadShapiroReference(t)
	if len(ref.Cases) < 40 {
		t.Fatalf("got %d reference cases, want at least 40", len(ref.Cases))
	}
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			n := len(c.X)
			w, p, err := ShapiroWilk(c.X)
			if err != nil {
				t.Fatalf("ShapiroWilk: %v", err)
			}
			tolW := 1.5e-6
			if n > 500 {
				tolW = 2.5e-6
			}
			dw := math.Abs(w - c.W)
			if dw > tolW {
				t.Errorf("W = %.9f, scipy %.9f: |Δ| %.2e > %.1e", w, c.W, dw, tolW)
			}
			if c.P == 0 {
				// float32 underflow in scipy.
				if p > 1e-37 {
					t.Errorf("p = %g, scipy underflowed to 0: want < 1e-37", p)
				}
				return
			}
			// Sensitivity of log p to W at this n, by a central difference.
			h := 1e-7
			lo := swPValue(w-h, 1-(w-h), n)
			hi := swPValue(math.Min(w+h, 1), 1-math.Min(w+h, 1), n)
			dlogp := math.Abs(math.Log(hi)-math.Log(lo)) / (2 * h)
			tolP := 1e-4 + dlogp*2*dw
			if n == 3 {
				// scipy's n=3 constants 6/π≈1.909859 and π/3≈1.047198 are
				// rounded to 7 digits: up to 1e-6 absolute in p.
				tolP += 1e-6 / c.P
			}
			if rd := relDiff(p, c.P); rd > tolP {
				t.Errorf("p = %.8g, scipy %.8g: relative Δ %.2e > %.2e", p, c.P, rd, tolP)
			}
		})
	}
}

// TestShapiroWilkMatchesHighPrecision compares with the algorithm evaluated
// at 50 digits: this pins the double-precision arithmetic.
func TestShapiroWilkMatchesHighPrecision(t *testing.T) {
	ref := loadShapiroReference(t)
	for _, c := range ref.Cases {
		t.Run(c.Name, func(t *testing.T) {
			w, p, err := ShapiroWilk(c.X)
			if err != nil {
				t.Fatalf("ShapiroWilk: %v", err)
			}
			if d := math.Abs(w - c.WMP); d > 1e-11 {
				t.Errorf("W = %.15f, mpmath %.15f: |Δ| %.2e > 1e-11", w, c.WMP, d)
			}
			// 1-W carries ~1e-16/(1-W) relative error into p.
			tolP := 1e-9 + 1e-13/math.Max(1-c.WMP, 1e-6)
			if rd := relDiff(p, c.PMP); rd > tolP {
				t.Errorf("p = %.15g, mpmath %.15g: relative Δ %.2e > %.1e", p, c.PMP, rd, tolP)
			}
		})
	}
}

func TestShapiroWilkErrors(t *testing.T) {
	tests := []struct {
		name string
		x    []float64
		want error
	}{
		{"empty", nil, ErrSampleSize},
		{"two values", []float64{1, 2}, ErrSampleSize},
		{"5001 values", make([]float64, 5001), ErrSampleSize},
		{"constant", []float64{4, 4, 4, 4}, ErrZeroRange},
		{"NaN", []float64{1, math.NaN(), 3}, ErrNotFinite},
		{"Inf", []float64{1, math.Inf(1), 3}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ShapiroWilk(tt.x)
			if !errors.Is(err, tt.want) {
				t.Errorf("got error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestShapiroWilkLeavesInputAlone(t *testing.T) {
	x := []float64{3, 1, 2, 5, 4}
	if _, _, err := ShapiroWilk(x); err != nil {
		t.Fatal(err)
	}
	if want := []float64{3, 1, 2, 5, 4}; !equalFloats(x, want) {
		t.Errorf("input became %v, want %v", x, want)
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNormQuantileInvertsErfc(t *testing.T) {
	for _, p := range []float64{1e-300, 1e-20, 1e-8, 0.001, 0.02, 0.3, 0.5, 0.7, 0.975, 0.999999} {
		z := normQuantile(p)
		if got := normUpper(-z); relDiff(got, p) > 1e-13 {
			t.Errorf("Φ(Φ⁻¹(%g)) = %.17g", p, got)
		}
	}
}
