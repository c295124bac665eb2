package outguard

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestTopOneIsTopKsFirst: the k = 1 shortcut picks what the general
// selection ranks first, with ties, NaNs and infinities about.
func TestTopOneIsTopKsFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	pick := []float64{0, 0.5, 0.5, 1, -1, math.NaN(), math.Inf(1), math.Inf(-1)}
	for trial := range 2000 {
		cols := 1 + rng.IntN(6)
		rows := 1 + rng.IntN(3)
		v := make([]float64, rows*cols)
		for i := range v {
			if rng.IntN(3) == 0 {
				v[i] = rng.Float64()
			} else {
				v[i] = pick[rng.IntN(len(pick))]
			}
		}
		vals1, idx1 := topK(v, cols, 1)
		vals2, idx2 := topK(v, cols, min(2, cols))
		k2 := min(2, cols)
		for r := range rows {
			if idx1[r] != idx2[r*k2] || !(vals1[r] == vals2[r*k2] || math.IsNaN(vals1[r]) && math.IsNaN(vals2[r*k2])) {
				t.Fatalf("trial %d row %v: top 1 %v@%d, top %d starts %v@%d", trial, v[r*cols:(r+1)*cols], vals1[r], idx1[r], k2, vals2[r*k2], idx2[r*k2])
			}
		}
	}
}
