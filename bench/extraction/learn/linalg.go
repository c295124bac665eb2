package learn

import (
	"errors"
	"math"
)

// ErrNotPositiveDefinite is returned by SolveSPD when the matrix has no
// Cholesky factor (it is singular or indefinite).
var ErrNotPositiveDefinite = errors.New("matrix is not positive definite")

// SolveSPD solves a·x = b for a symmetric positive definite n×n matrix a
// (row-major, only the lower triangle read) by Cholesky factorisation. a
// and b are left unchanged.
func SolveSPD(a []float64, n int, b []float64) ([]float64, error) {
	if len(a) != n*n || len(b) != n {
		return nil, errors.New("solve: dimensions do not match")
	}
	l := make([]float64, n*n)
	for i := range n {
		for j := 0; j <= i; j++ {
			s := a[i*n+j]
			li, lj := l[i*n:i*n+j], l[j*n:j*n+j]
			for k := range li {
				s -= li[k] * lj[k]
			}
			if i == j {
				if s <= 0 || math.IsNaN(s) {
					return nil, ErrNotPositiveDefinite
				}
				l[i*n+i] = math.Sqrt(s)
			} else {
				l[i*n+j] = s / l[j*n+j]
			}
		}
	}
	// L·y = b, then Lᵀ·x = y.
	x := make([]float64, n)
	for i := range n {
		s := b[i]
		for k := range i {
			s -= l[i*n+k] * x[k]
		}
		x[i] = s / l[i*n+i]
	}
	for i := n - 1; i >= 0; i-- {
		s := x[i]
		for k := i + 1; k < n; k++ {
			s -= l[k*n+i] * x[k]
		}
		x[i] = s / l[i*n+i]
	}
	return x, nil
}
