package learn

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSolveSPD(t *testing.T) {
	// a = mᵀm + I for a random m is positive definite; check a·x = b.
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 30
	m := make([]float64, n*n)
	for i := range m {
		m[i] = rng.NormFloat64()
	}
	a := make([]float64, n*n)
	for i := range n {
		for j := range n {
			for k := range n {
				a[i*n+j] += m[k*n+i] * m[k*n+j]
			}
		}
		a[i*n+i]++
	}
	want := make([]float64, n)
	for i := range want {
		want[i] = rng.NormFloat64()
	}
	b := make([]float64, n)
	for i := range n {
		for j := range n {
			b[i] += a[i*n+j] * want[j]
		}
	}
	got, err := SolveSPD(a, n, b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("x[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if _, err := SolveSPD([]float64{1, 2, 2, 1}, 2, []float64{1, 1}); err != ErrNotPositiveDefinite {
		t.Errorf("indefinite matrix: got %v, want ErrNotPositiveDefinite", err)
	}
}

// TestInputGrad compares the analytic gradient with central differences.
func TestInputGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sizes := range [][]int{{8, 5}, {8, 6, 5}} {
		n := NewNet(sizes, 1.0/16, rng)
		x := make([]float64, 8)
		for i := range x {
			x[i] = rng.Float64() * 16
		}
		for c := range 5 {
			g := n.InputGrad(x, c)
			for i := range x {
				const h = 1e-5
				xp := append([]float64(nil), x...)
				xm := append([]float64(nil), x...)
				xp[i] += h
				xm[i] -= h
				fd := (n.Probs(xp)[c] - n.Probs(xm)[c]) / (2 * h)
				if math.Abs(fd-g[i]) > 1e-6 {
					t.Errorf("sizes %v class %d: ∂p/∂x[%d] = %v, finite difference %v", sizes, c, i, g[i], fd)
				}
			}
		}
	}
}

// TestFitLearnsAndIsDeterministic trains twice on a linearly separable
// problem: both runs must fit it and give identical weights.
func TestFitLearnsAndIsDeterministic(t *testing.T) {
	data := rand.New(rand.NewPCG(5, 6))
	var xs, ts [][]float64
	var ys []int
	for range 300 {
		x := []float64{data.Float64()*16 - 8, data.Float64()*16 - 8}
		y := 0
		if x[0]+2*x[1] > 1 {
			y = 1
		}
		xs, ys, ts = append(xs, x), append(ys, y), append(ts, OneHot(y, 2))
	}
	var nets []*Net
	for range 2 {
		rng := rand.New(rand.NewPCG(7, 8))
		n := NewNet([]int{2, 16, 2}, 1.0/8, rng)
		if err := n.Fit(xs, ts, DefaultTrain, rng); err != nil {
			t.Fatal(err)
		}
		nets = append(nets, n)
	}
	if a := Agreement(nets[0], xs, ys); a < 0.97 {
		t.Errorf("training agreement %.3f, want at least 0.97", a)
	}
	for l := range nets[0].Layers {
		for i, w := range nets[0].Layers[l].W {
			if w != nets[1].Layers[l].W[i] {
				t.Fatalf("layer %d weight %d: %v then %v: training is not deterministic", l, i, w, nets[1].Layers[l].W[i])
			}
		}
	}
}
