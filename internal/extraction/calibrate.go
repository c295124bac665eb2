package extraction

import (
	"fmt"
	"math"
	"slices"
)

// CalibrateKNN returns the kNN detector's threshold for a reference sample
// of benign inputs: the quantile q (e.g. 0.001) of the mean distance of each
// sample to its k nearest other samples. Exact duplicates are skipped, as
// the detector skips repeats. Cost is quadratic in len(samples).
func CalibrateKNN(samples [][]float32, k int, q float64) (float64, error) {
	if k < 1 || !(q > 0 && q < 1) {
		return 0, fmt.Errorf("%w: calibrate knn: k %d, quantile %v", ErrConfig, k, q)
	}
	if len(samples) <= k {
		return 0, fmt.Errorf("%w: calibrate knn: %d samples for k %d", ErrConfig, len(samples), k)
	}
	dim := len(samples[0])
	means := make([]float64, 0, len(samples))
	best := make([]float64, k)
	for i, x := range samples {
		if len(x) != dim {
			return 0, fmt.Errorf("%w: calibrate knn: sample %d has %d features, sample 0 has %d", ErrConfig, i, len(x), dim)
		}
		for j := range best {
			best[j] = math.Inf(1)
		}
		for j, y := range samples {
			if j == i {
				continue
			}
			d := float64(sqDist(x, y))
			if d == 0 || d >= best[k-1] {
				continue
			}
			l := k - 1
			for l > 0 && best[l-1] > d {
				best[l] = best[l-1]
				l--
			}
			best[l] = d
		}
		if math.IsInf(best[k-1], 1) {
			continue
		}
		var s float64
		for _, d := range best {
			s += math.Sqrt(d)
		}
		means = append(means, s/float64(k))
	}
	if len(means) == 0 {
		return 0, fmt.Errorf("%w: calibrate knn: no sample has %d distinct neighbours", ErrConfig, k)
	}
	slices.Sort(means)
	idx := int(math.Floor(q * float64(len(means)-1)))
	return means[idx], nil
}
