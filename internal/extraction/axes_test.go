package extraction

import (
	"math"
	"math/rand/v2"
	"testing"
)

// keyOf is x's search key for axes.
func keyOf(x []float32, axes [][]float32) []float32 {
	k := make([]float32, keyLen(len(axes)))
	searchKey(k, x, axes)
	return k
}

func TestPrincipalAxesOrthonormalAndLeading(t *testing.T) {
	loadFixtures(t)
	axes, err := PrincipalAxes(fixtures.reference, SearchAxes)
	if err != nil {
		t.Fatal(err)
	}
	if len(axes) != SearchAxes {
		t.Fatalf("%d axes, want %d", len(axes), SearchAxes)
	}
	if err := checkAxes(axes, 64); err != nil {
		t.Fatal(err)
	}
	// Each axis carries at least as much of the samples' variance as the
	// next, and the first more than any coordinate axis (a random unit
	// vector carries about 1/64 of the total).
	variance := func(a []float32) float64 {
		var s, s2 float64
		for _, x := range fixtures.reference {
			var p float64
			for j, v := range x {
				p += float64(v) * float64(a[j])
			}
			s += p
			s2 += p * p
		}
		n := float64(len(fixtures.reference))
		return s2/n - (s/n)*(s/n)
	}
	var prev = math.Inf(1)
	for i, a := range axes {
		v := variance(a)
		if v > prev*(1+1e-6) {
			t.Errorf("axis %d carries variance %v, more than axis %d's %v", i, v, i-1, prev)
		}
		prev = v
	}
	first := variance(axes[0])
	for j := range 64 {
		e := make([]float32, 64)
		e[j] = 1
		if v := variance(e); v > first {
			t.Errorf("feature %d alone has variance %v, more than the first principal axis's %v", j, v, first)
		}
	}
}

func TestPrincipalAxesRefusesBadInput(t *testing.T) {
	for name, c := range map[string]struct {
		s [][]float32
		n int
	}{
		"no samples":   {nil, 2},
		"one sample":   {[][]float32{{1, 2}}, 1},
		"zero axes":    {[][]float32{{1, 2}, {3, 4}}, 0},
		"too many":     {[][]float32{{1, 2}, {3, 4}}, MaxAxes + 1},
		"ragged":       {[][]float32{{1, 2}, {3}}, 1},
		"all the same": {[][]float32{{1, 2}, {1, 2}}, 1},
	} {
		if _, err := PrincipalAxes(c.s, c.n); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	cfg := testConfig(t)
	cfg.KNN.Axes = [][]float32{make([]float32, 64)} // not unit length
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted a zero axis")
	}
	cfg.KNN.Axes = [][]float32{fixtures.axes[0], fixtures.axes[0]} // not orthogonal
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted two equal axes")
	}
	cfg.KNN.Axes = [][]float32{fixtures.axes[0][:10]}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted an axis of the wrong length")
	}
}

// TestKNNSearchKeysChangeNothing: the detector skips rows on their search
// keys; with the principal axes, with none (norms only), and against a
// search that reads every row, it finds the same neighbours: the same
// distances, repeats and verdicts, query by query, on benign streams,
// attacks, near-duplicates and rows of very different scale.
func TestKNNSearchKeysChangeNothing(t *testing.T) {
	loadFixtures(t)
	rng := rand.New(rand.NewPCG(7, 7))
	streams := map[string][][]float32{}
	var benign, uniform, near, scaled [][]float32
	for _, q := range benignStream(rng, 1500) {
		benign = append(benign, q.x)
	}
	for _, q := range uniformStream(rng, 600) {
		uniform = append(uniform, q.x)
	}
	for range 600 {
		x := append([]float32(nil), fixtures.heldout[rng.IntN(40)]...)
		x[rng.IntN(64)] += float32(rng.NormFloat64()) * 0.5 // tiny perturbations: within τ of each other
		near = append(near, x)
		if rng.IntN(4) == 0 {
			near = append(near, x) // exact repeats
		}
	}
	for range 600 {
		x := append([]float32(nil), fixtures.heldout[rng.IntN(len(fixtures.heldout))]...)
		s := float32(math.Pow(10, rng.Float64()*6-3))
		for j := range x {
			x[j] *= s
		}
		scaled = append(scaled, x)
	}
	streams["benign"], streams["uniform"], streams["near"], streams["scaled"] = benign, uniform, near, scaled
	for name, xs := range streams {
		for _, k := range []int{1, 3} {
			kc := KNNConfig{K: k, History: 300, Threshold: fixtures.knnThresh, Window: 128, AlarmCount: 10}
			var withAxes, noAxes knnState
			bestA, bestN := make([]float32, k), make([]float32, k)
			suspicious := 0
			var hist [][]float32 // what the detector holds: the latest 300 queries that were not repeats
			for i, x := range xs {
				want := bruteKNN(hist, x, k, fixtures.knnThresh)
				if !want.repeat {
					hist = append(hist, x)
					if len(hist) > kc.History {
						hist = hist[1:]
					}
				}
				a := withAxes.observe(x, keyOf(x, fixtures.axes), &kc, 64, bestA)
				n := noAxes.observe(x, keyOf(x, nil), &kc, 64, bestN)
				if a != n {
					t.Fatalf("%s k=%d query %d: with axes %+v, without %+v", name, k, i, a, n)
				}
				if want.repeat != a.repeat || (!a.repeat && want.scored && math.Abs(want.dist-a.dist) > 1e-3*max(1, want.dist)) {
					t.Fatalf("%s k=%d query %d: %+v, reading every row %+v", name, k, i, a, want)
				}
				if a.dist < kc.Threshold && a.scored {
					suspicious++
				}
			}
			if name == "near" && suspicious == 0 {
				t.Errorf("%s k=%d: no query found suspicious; the comparison proves little", name, k)
			}
		}
	}
}

// bruteKNN scores x against hist as knnState does, reading every row.
func bruteKNN(hist [][]float32, x []float32, k int, tau float64) knnResult {
	var r knnResult
	ds := make([]float64, 0, len(hist))
	for _, y := range hist {
		d := float64(sqDist(x, y))
		if d == 0 {
			r.repeat = true
			return r
		}
		ds = append(ds, math.Sqrt(d))
	}
	if len(ds) < k {
		return r
	}
	for i := range k { // partial selection sort: the k smallest
		m := i
		for j := i + 1; j < len(ds); j++ {
			if ds[j] < ds[m] {
				m = j
			}
		}
		ds[i], ds[m] = ds[m], ds[i]
	}
	limit := float64(k) * tau
	var sum float64
	for _, d := range ds[:k] {
		sum += min(d, limit)
	}
	r.scored = true
	r.dist = max(sum/float64(k), 0)
	if !(ds[k-1] < limit && r.dist < tau) {
		r.dist = max(r.dist, tau)
	}
	return r
}
