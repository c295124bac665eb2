// Package ood scores how far an input lies from a reference sample of normal
// inputs: the Mahalanobis distance under a Ledoit–Wolf shrinkage covariance
// of standardised features, with a threshold calibrated by cross-fitting at
// a chosen false-positive rate.
//
// A Model is fitted once from a reference sample supplied at deployment
// (Fit), written next to the model version (Write) and read back at load
// (Read, Load). Scoring is one triangular matrix-vector product (about 2,100
// multiply-adds for 64 features) and allocates nothing; a Model is immutable
// and safe for concurrent use.
//
// Defaults, and what they guarantee:
//   - FPR 0.01: about 1% of inputs drawn like the reference sample are
//     flagged (measured 1.6% on the digits held-out set, 7 of 450).
//   - Ledoit–Wolf shrinkage chosen from the data (Options.Shrinkage < 0).
//   - Per-feature standard deviations floored at 0.1 × their root mean
//     square, so that a feature constant in the reference sample (a border
//     pixel that is always 0) makes any other value strongly out of
//     distribution without dividing by zero.
//   - Fail closed: an input of the wrong length or with a NaN or infinite
//     value scores +Inf and is out of distribution.
package ood

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Options tune Fit. The zero value is not valid; start from DefaultOptions.
type Options struct {
	// FPR is the target false-positive rate of the threshold, in (0, 0.5].
	FPR float64
	// Folds is the number of cross-fitting folds used to calibrate the
	// threshold on scores of samples the fit did not see (≥ 2).
	Folds int
	// Shrinkage is the weight of the scaled identity in the covariance:
	// negative for Ledoit–Wolf's estimate, else in [0, 1].
	Shrinkage float64
	// StdFloor is the smallest per-feature standard deviation, as a
	// fraction of the root mean square of all of them, in (0, 1].
	StdFloor float64
	// Seed fixes the assignment of samples to folds.
	Seed uint64
}

// DefaultOptions returns the options that separated natural digits from
// uniform-random and Jacobian-augmented queries best (docs/extraction-detection.md).
func DefaultOptions() Options {
	return Options{FPR: 0.01, Folds: 5, Shrinkage: -1, StdFloor: 0.1, Seed: 1}
}

// MinSamples is the smallest reference sample Fit accepts.
const MinSamples = 50

// ErrInvalid marks a reference sample or options that Fit cannot use, and a
// serialised model that Read cannot accept.
var ErrInvalid = errors.New("ood: invalid")

// Validate reports the first bad field.
func (o Options) Validate() error {
	switch {
	case !(o.FPR > 0 && o.FPR <= 0.5):
		return fmt.Errorf("%w: fpr %v: want 0 < fpr <= 0.5", ErrInvalid, o.FPR)
	case o.Folds < 2:
		return fmt.Errorf("%w: folds %d: want at least 2", ErrInvalid, o.Folds)
	case math.IsNaN(o.Shrinkage) || o.Shrinkage > 1:
		return fmt.Errorf("%w: shrinkage %v: want < 0 (Ledoit–Wolf) or 0..1", ErrInvalid, o.Shrinkage)
	case !(o.StdFloor > 0 && o.StdFloor <= 1):
		return fmt.Errorf("%w: std_floor %v: want 0 < std_floor <= 1", ErrInvalid, o.StdFloor)
	}
	return nil
}

// Model scores inputs against a fitted reference sample.
type Model struct {
	dim       int
	mean      []float64
	whiten    []float64 // lower-triangular, row-major packed: row i holds i+1 entries
	threshold float64
	// Recorded for Info and the file.
	samples   int
	fpr       float64
	shrinkage float64
}

// Info describes a fitted model.
type Info struct {
	Dim       int
	Samples   int     // size of the reference sample
	FPR       float64 // target false-positive rate of Threshold
	Shrinkage float64 // weight of the identity in the covariance actually used
	Threshold float64 // scores above it are out of distribution
}

// Info returns what the model was fitted with.
func (m *Model) Info() Info {
	return Info{Dim: m.dim, Samples: m.samples, FPR: m.fpr, Shrinkage: m.shrinkage, Threshold: m.threshold}
}

// Dim is the number of features the model expects.
func (m *Model) Dim() int { return m.dim }

// Threshold is the score above which an input is out of distribution.
func (m *Model) Threshold() float64 { return m.threshold }

// Score returns the Mahalanobis distance of x from the reference sample
// (in units of standard deviations, along the whitened axes), or +Inf if x
// has the wrong length or a non-finite value.
func (m *Model) Score(x []float32) float64 {
	if len(x) != m.dim {
		return math.Inf(1)
	}
	var buf [256]float64
	d := m.centred(buf[:0])
	for i, v := range x {
		d[i] = float64(v) - m.mean[i]
	}
	return m.distance(d)
}

// ScoreLE is Score for a row as a tensor holds it: Dim little-endian FP32
// values (+Inf for any other length).
func (m *Model) ScoreLE(row []byte) float64 {
	if len(row) != 4*m.dim {
		return math.Inf(1)
	}
	var buf [256]float64
	d := m.centred(buf[:0])
	for i := range d {
		d[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))) - m.mean[i]
	}
	return m.distance(d)
}

// centred returns a slice of Dim values for the centred input: buf's
// array when it is large enough (no allocation for up to 256 features).
func (m *Model) centred(buf []float64) []float64 {
	if m.dim <= cap(buf) {
		return buf[:m.dim]
	}
	return make([]float64, m.dim)
}

// distance is the whitened length of the centred input d. Rows of the
// packed triangle are taken two at a time, so that each d[j] loaded
// serves both: the loop is bound by loads (64 features: 0.58 → 0.53 µs;
// 784: 82 → 69 µs).
func (m *Model) distance(d []float64) float64 {
	var s float64
	w := m.whiten
	i := 0
	for ; i+1 < len(d); i += 2 {
		r0 := w[:i+1]
		r1 := w[i+1 : 2*i+3]
		w = w[2*i+3:]
		var a0, a1, b0, b1 float64
		j := 0
		for ; j+1 < len(r0); j += 2 {
			x0, x1 := d[j], d[j+1]
			a0 += r0[j] * x0
			a1 += r0[j+1] * x1
			b0 += r1[j] * x0
			b1 += r1[j+1] * x1
		}
		if j < len(r0) { // r0 has i+1 entries: one left when i is even
			a0 += r0[j] * d[j]
			b0 += r1[j] * d[j]
			j++
		}
		// r1 has one more entry than r0.
		if j+1 < len(r1) {
			b0 += r1[j] * d[j]
			b1 += r1[j+1] * d[j+1]
		} else {
			b0 += r1[j] * d[j]
		}
		u, v := a0+a1, b0+b1
		s += u * u
		s += v * v
	}
	if i < len(d) {
		row := w[:i+1]
		var a0, a1 float64
		j := 0
		for ; j+1 < len(row); j += 2 {
			a0 += row[j] * d[j]
			a1 += row[j+1] * d[j+1]
		}
		if j < len(row) {
			a0 += row[j] * d[j]
		}
		u := a0 + a1
		s += u * u
	}
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return math.Inf(1)
	}
	return math.Sqrt(s)
}

// OOD reports whether x is out of distribution: its score is above the
// threshold (or it could not be scored).
func (m *Model) OOD(x []float32) bool { return !(m.Score(x) <= m.threshold) }

// Fit fits a model to a reference sample of normal inputs (each of the same
// length) and calibrates its threshold: the samples are split into
// opts.Folds folds, each fold is scored by a fit to the others, and the
// threshold is the (1−FPR) quantile of those out-of-fold scores. The model
// returned is then fitted to the whole sample.
func Fit(samples [][]float64, opts Options) (*Model, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	n := len(samples)
	if n < MinSamples {
		return nil, fmt.Errorf("%w: %d samples: want at least %d", ErrInvalid, n, MinSamples)
	}
	if n < 2*opts.Folds {
		return nil, fmt.Errorf("%w: %d samples for %d folds", ErrInvalid, n, opts.Folds)
	}
	dim := len(samples[0])
	if dim == 0 {
		return nil, fmt.Errorf("%w: samples have no features", ErrInvalid)
	}
	for i, s := range samples {
		if len(s) != dim {
			return nil, fmt.Errorf("%w: sample %d has %d features, sample 0 has %d", ErrInvalid, i, len(s), dim)
		}
		for j, v := range s {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: sample %d feature %d is %v", ErrInvalid, i, j, v)
			}
		}
	}

	// Cross-fitting: out-of-fold scores calibrate the threshold.
	perm := rand.New(rand.NewPCG(opts.Seed, 0x6f6f64)).Perm(n)
	scores := make([]float64, 0, n)
	x32 := make([]float32, dim)
	for f := 0; f < opts.Folds; f++ {
		var train, test [][]float64
		for k, i := range perm {
			if k%opts.Folds == f {
				test = append(test, samples[i])
			} else {
				train = append(train, samples[i])
			}
		}
		m, err := fit(train, opts)
		if err != nil {
			return nil, fmt.Errorf("fold %d: %w", f, err)
		}
		for _, s := range test {
			for j, v := range s {
				x32[j] = float32(v)
			}
			scores = append(scores, m.Score(x32))
		}
	}
	slices.Sort(scores)
	// The smallest score with at most FPR of the out-of-fold scores above it.
	k := int(math.Ceil((1 - opts.FPR) * float64(n)))
	k = min(max(k, 1), n)
	m, err := fit(samples, opts)
	if err != nil {
		return nil, err
	}
	m.threshold = scores[k-1]
	m.fpr = opts.FPR
	return m, nil
}

// fit estimates mean, standard deviations and the shrunk covariance of the
// standardised features, and stores the whitening transform L⁻¹·diag(1/sd)
// where L is the Cholesky factor of the covariance.
func fit(samples [][]float64, opts Options) (*Model, error) {
	n, dim := len(samples), len(samples[0])
	nf := float64(n)
	mean := make([]float64, dim)
	for _, s := range samples {
		for j, v := range s {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= nf
	}
	sd := make([]float64, dim)
	for _, s := range samples {
		for j, v := range s {
			d := v - mean[j]
			sd[j] += d * d
		}
	}
	var ms float64
	for j := range sd {
		sd[j] = math.Sqrt(sd[j] / nf)
		ms += sd[j] * sd[j]
	}
	floor := opts.StdFloor * math.Sqrt(ms/float64(dim))
	if !(floor > 0) {
		return nil, fmt.Errorf("%w: every feature is constant", ErrInvalid)
	}
	for j := range sd {
		sd[j] = max(sd[j], floor)
	}
	// Standardised, centred data.
	z := make([]float64, n*dim)
	for i, s := range samples {
		for j, v := range s {
			z[i*dim+j] = (v - mean[j]) / sd[j]
		}
	}
	// Empirical covariance S = ZᵀZ/n (full, symmetric).
	cov := make([]float64, dim*dim)
	for i := 0; i < n; i++ {
		row := z[i*dim : (i+1)*dim]
		for a := 0; a < dim; a++ {
			ra := row[a]
			if ra == 0 {
				continue
			}
			c := cov[a*dim : a*dim+a+1]
			for b := range c {
				c[b] += ra * row[b]
			}
		}
	}
	for a := 0; a < dim; a++ {
		for b := 0; b <= a; b++ {
			cov[a*dim+b] /= nf
			cov[b*dim+a] = cov[a*dim+b]
		}
	}
	shrink := opts.Shrinkage
	if shrink < 0 {
		shrink = ledoitWolf(z, cov, n, dim)
	}
	var tr float64
	for a := 0; a < dim; a++ {
		tr += cov[a*dim+a]
	}
	mu := tr / float64(dim)
	for a := 0; a < dim; a++ {
		for b := 0; b < dim; b++ {
			cov[a*dim+b] *= 1 - shrink
		}
		cov[a*dim+a] += shrink * mu
	}
	l, err := cholesky(cov, dim)
	if err != nil {
		return nil, err
	}
	linv := invertLower(l, dim)
	whiten := make([]float64, 0, dim*(dim+1)/2)
	for i := 0; i < dim; i++ {
		for j := 0; j <= i; j++ {
			whiten = append(whiten, linv[i*dim+j]/sd[j])
		}
	}
	return &Model{dim: dim, mean: mean, whiten: whiten, samples: n, shrinkage: shrink}, nil
}

// ledoitWolf returns the Ledoit–Wolf (2004) optimal shrinkage intensity
// toward μ·I for the covariance of the centred rows of z (n×dim), given
// S = ZᵀZ/n; the same estimate as scikit-learn's ledoit_wolf_shrinkage.
func ledoitWolf(z, s []float64, n, dim int) float64 {
	nf, pf := float64(n), float64(dim)
	var tr, frob float64
	for a := 0; a < dim; a++ {
		tr += s[a*dim+a]
		for b := 0; b < dim; b++ {
			frob += s[a*dim+b] * s[a*dim+b]
		}
	}
	mu := tr / pf
	// delta = ‖S − μI‖²_F / p
	delta := (frob - 2*mu*tr + pf*mu*mu) / pf
	// beta = (1/(p·n)) (Σ_k ‖z_k‖⁴/n − ‖S‖²_F)
	var sum4 float64
	for i := 0; i < n; i++ {
		var r2 float64
		for _, v := range z[i*dim : (i+1)*dim] {
			r2 += v * v
		}
		sum4 += r2 * r2
	}
	beta := (sum4/nf - frob) / (pf * nf)
	beta = min(beta, delta)
	if beta <= 0 || delta <= 0 {
		return 0
	}
	return beta / delta
}

// cholesky returns the lower-triangular L with LLᵀ = a (dim×dim, row-major).
func cholesky(a []float64, dim int) ([]float64, error) {
	l := make([]float64, dim*dim)
	for i := 0; i < dim; i++ {
		for j := 0; j <= i; j++ {
			s := a[i*dim+j]
			for k := 0; k < j; k++ {
				s -= l[i*dim+k] * l[j*dim+k]
			}
			if i == j {
				if !(s > 0) {
					return nil, fmt.Errorf("%w: covariance is not positive definite (feature %d)", ErrInvalid, i)
				}
				l[i*dim+i] = math.Sqrt(s)
			} else {
				l[i*dim+j] = s / l[j*dim+j]
			}
		}
	}
	return l, nil
}

// invertLower returns L⁻¹ of a lower-triangular L (row-major), by forward
// substitution column by column.
func invertLower(l []float64, dim int) []float64 {
	inv := make([]float64, dim*dim)
	for c := 0; c < dim; c++ {
		inv[c*dim+c] = 1 / l[c*dim+c]
		for i := c + 1; i < dim; i++ {
			var s float64
			for k := c; k < i; k++ {
				s += l[i*dim+k] * inv[k*dim+c]
			}
			inv[i*dim+c] = -s / l[i*dim+i]
		}
	}
	return inv
}
