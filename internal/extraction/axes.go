package extraction

import (
	"fmt"
	"math"
)

// MaxAxes is the most principal axes the kNN search projects on.
const MaxAxes = 8

// SearchAxes is how many principal axes servers give the kNN search: on the
// digits, four axes let it skip nearly every row that is not near.
const SearchAxes = 4

// PrincipalAxes returns the n leading principal axes of samples: unit
// vectors, orthogonal to each other, along which the samples vary most
// (power iteration on their covariance, deflated axis by axis). The kNN
// detector projects queries on them to skip history rows that cannot be
// near without reading them (KNNConfig.Axes). Deterministic for given
// samples.
func PrincipalAxes(samples [][]float32, n int) ([][]float32, error) {
	if n < 1 || n > MaxAxes {
		return nil, fmt.Errorf("%w: principal axes: %d, want 1..%d", ErrConfig, n, MaxAxes)
	}
	if len(samples) < 2 {
		return nil, fmt.Errorf("%w: principal axes: %d samples, want at least 2", ErrConfig, len(samples))
	}
	dim := len(samples[0])
	if dim < 1 {
		return nil, fmt.Errorf("%w: principal axes: samples without features", ErrConfig)
	}
	n = min(n, dim)
	mean := make([]float64, dim)
	for i, x := range samples {
		if len(x) != dim {
			return nil, fmt.Errorf("%w: principal axes: sample %d has %d features, sample 0 has %d", ErrConfig, i, len(x), dim)
		}
		for j, v := range x {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(len(samples))
	}
	cov := make([]float64, dim*dim)
	for _, x := range samples {
		for a := range dim {
			da := float64(x[a]) - mean[a]
			row := cov[a*dim : (a+1)*dim]
			for b := a; b < dim; b++ {
				row[b] += da * (float64(x[b]) - mean[b])
			}
		}
	}
	for a := range dim {
		for b := a; b < dim; b++ {
			cov[b*dim+a] = cov[a*dim+b]
		}
	}
	axes := make([][]float64, 0, n)
	v, w := make([]float64, dim), make([]float64, dim)
	for len(axes) < n {
		// Start from a fixed vector not orthogonal to the usual axes.
		for j := range v {
			v[j] = 1 + float64(j%7)/7
		}
		orthogonalize(v, axes)
		if !normalize(v) {
			break
		}
		flat := false
		for range 500 {
			for a := range dim {
				var s float64
				for b, c := range cov[a*dim : (a+1)*dim] {
					s += c * v[b]
				}
				w[a] = s
			}
			orthogonalize(w, axes)
			if !normalize(w) {
				flat = true // no variance left off the axes found
				break
			}
			delta := 0.0
			for j := range v {
				delta = max(delta, math.Abs(w[j]-v[j]))
			}
			v, w = w, v
			if delta < 1e-10 {
				break
			}
		}
		if flat {
			break
		}
		axes = append(axes, append([]float64(nil), v...))
	}
	if len(axes) == 0 {
		return nil, fmt.Errorf("%w: principal axes: the samples do not vary", ErrConfig)
	}
	out := make([][]float32, len(axes))
	for i, a := range axes {
		out[i] = make([]float32, dim)
		for j, x := range a {
			out[i][j] = float32(x)
		}
	}
	return out, nil
}

// orthogonalize removes from v its components along axes (unit vectors).
func orthogonalize(v []float64, axes [][]float64) {
	for range 2 { // twice, for rounding
		for _, a := range axes {
			var d float64
			for j := range v {
				d += v[j] * a[j]
			}
			for j := range v {
				v[j] -= d * a[j]
			}
		}
	}
}

// normalize scales v to unit length, reporting false when it is (nearly)
// zero.
func normalize(v []float64) bool {
	var s float64
	for _, x := range v {
		s += x * x
	}
	if !(s > 1e-24) {
		return false
	}
	s = 1 / math.Sqrt(s)
	for j := range v {
		v[j] *= s
	}
	return true
}

// checkAxes reports whether axes are orthonormal vectors of dim features.
func checkAxes(axes [][]float32, dim int) error {
	if len(axes) > MaxAxes {
		return fmt.Errorf("%d axes, want at most %d", len(axes), MaxAxes)
	}
	for i, a := range axes {
		if len(a) != dim {
			return fmt.Errorf("axis %d has %d features, want %d", i, len(a), dim)
		}
		for j := 0; j <= i; j++ {
			var d float64
			for f := range a {
				d += float64(a[f]) * float64(axes[j][f])
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(d-want) > 1e-4 {
				return fmt.Errorf("axes %d and %d: dot product %v, want %v (orthonormal)", i, j, d, want)
			}
		}
	}
	return nil
}

// keyLen is the length of a kNN search key for n axes: the projections,
// the norm of what the axes leave, and the norm.
func keyLen(n int) int { return n + 2 }

// searchKey writes x's kNN search key to key (keyLen(len(axes)) long): its
// coordinates on the axes, the norm of its remainder, and its norm. For
// two rows with keys p and q, ‖x − y‖² ≥ Σ (p_j − q_j)² over the first
// len(axes)+1 entries (the projections' distance plus the remainders'
// norms' difference), up to the rounding that keySlack covers.
func searchKey(key, x []float32, axes [][]float32) {
	var n2 float64
	for _, v := range x {
		n2 += float64(v) * float64(v)
	}
	rest := n2
	for j, a := range axes {
		var p float64
		for f, v := range x {
			p += float64(v) * float64(a[f])
		}
		key[j] = float32(p)
		rest -= p * p
	}
	key[len(axes)] = float32(math.Sqrt(max(rest, 0)))
	key[len(axes)+1] = float32(math.Sqrt(n2))
}

// keySlack bounds, relative to the two norms, how far rounding (of the
// keys, and of the axes' orthonormality to checkAxes's 1e-4) can take the
// keys' distance above the rows' true distance. Rows are skipped only when
// the keys' distance exceeds the bound by more than it.
const keySlack = 2e-4
