package extraction

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Shapiro–Wilk sample-size limits: Royston's approximation (AS R94) is
// valid for 3 ≤ n ≤ 5000.
const (
	ShapiroMinN = 3
	ShapiroMaxN = 5000
)

// Errors of ShapiroWilk, to be checked with errors.Is.
var (
	// ErrSampleSize: fewer than ShapiroMinN or more than ShapiroMaxN values.
	ErrSampleSize = errors.New("shapiro-wilk: sample size out of range")
	// ErrZeroRange: every value is the same, so W is undefined.
	ErrZeroRange = errors.New("shapiro-wilk: sample has zero range")
	// ErrNotFinite: a value is NaN or infinite.
	ErrNotFinite = errors.New("shapiro-wilk: sample has a non-finite value")
)

// ShapiroWilk tests x for normality: it returns the Shapiro–Wilk statistic W
// (in (0, 1]; small values mean "not normal") and its p-value, computed with
// Royston's algorithm AS R94 (Applied Statistics 44(4), 1995), the routine
// behind scipy.stats.shapiro and R's shapiro.test, in double precision with
// exact normal quantiles. x is not modified. It needs 3 ≤ len(x) ≤ 5000.
func ShapiroWilk(x []float64) (w, p float64, err error) {
	var s swScratch
	return s.test(x)
}

// swScratch holds the buffers of one Shapiro–Wilk computation so that a
// detector testing every few queries does not allocate each time. Not safe
// for concurrent use.
type swScratch struct {
	y []float64 // the sorted, centred sample
	a []float64 // coefficients a[1..n/2], a[0] unused
}

// test is ShapiroWilk with reusable buffers.
func (s *swScratch) test(x []float64) (w, p float64, err error) {
	n := len(x)
	if n < ShapiroMinN || n > ShapiroMaxN {
		return 0, 0, fmt.Errorf("%w: n=%d, want %d..%d", ErrSampleSize, n, ShapiroMinN, ShapiroMaxN)
	}
	s.y = append(s.y[:0], x...)
	y := s.y
	for _, v := range y {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, 0, ErrNotFinite
		}
	}
	slices.Sort(y)
	// Centre on the median (as scipy does) to keep x/range well scaled.
	med := y[n/2]
	if n%2 == 0 {
		med = (y[n/2-1] + y[n/2]) / 2
	}
	for i := range y {
		y[i] -= med
	}
	rng := y[n-1] - y[0]
	if !(rng > 1e-19) {
		return 0, 0, ErrZeroRange
	}
	a := s.coefficients(n)
	// coef returns the signed coefficient of the i-th order statistic
	// (0-based): -a[i+1] in the lower half, +a[n-i] in the upper, 0 at the
	// middle of an odd sample.
	coef := func(i int) float64 {
		j := n - 1 - i
		switch {
		case i < j:
			return -a[i+1]
		case i > j:
			return a[j+1]
		}
		return 0
	}
	// W is the squared correlation between the data and the coefficients;
	// 1-W is computed directly to avoid rounding error when W is near 1.
	var sa, sx float64
	for i := 0; i < n; i++ {
		sa += coef(i)
		sx += y[i] / rng
	}
	sa /= float64(n)
	sx /= float64(n)
	var ssa, ssx, sax float64
	for i := 0; i < n; i++ {
		asa := coef(i) - sa
		xsx := y[i]/rng - sx
		ssa += asa * asa
		ssx += xsx * xsx
		sax += asa * xsx
	}
	ssassx := math.Sqrt(ssa * ssx)
	w1 := (ssassx - sax) * (ssassx + sax) / (ssa * ssx)
	w1 = max(w1, 0) // rounding can make a perfect fit a hair above 1
	w = 1 - w1
	return w, swPValue(w, w1, n), nil
}

// coefficients returns a[1..n/2] (a[0] unused) of the AS R94 approximation
// to the Shapiro–Wilk weights for a sample of n.
func (s *swScratch) coefficients(n int) []float64 {
	nn2 := n / 2
	if cap(s.a) < nn2+1 {
		s.a = make([]float64, nn2+1)
	}
	a := s.a[:nn2+1]
	if n == 3 {
		a[1] = math.Sqrt2 / 2
		return a
	}
	an := float64(n)
	an25 := an + 0.25
	var summ2 float64
	for i := 1; i <= nn2; i++ {
		a[i] = normQuantile((float64(i) - 0.375) / an25)
		summ2 += a[i] * a[i]
	}
	summ2 *= 2
	ssumm2 := math.Sqrt(summ2)
	rsn := 1 / math.Sqrt(an)
	a1 := poly(swC1[:], rsn) - a[1]/ssumm2
	i1 := 2
	var fac float64
	if n > 5 {
		i1 = 3
		a2 := -a[2]/ssumm2 + poly(swC2[:], rsn)
		fac = math.Sqrt((summ2 - 2*a[1]*a[1] - 2*a[2]*a[2]) / (1 - 2*a1*a1 - 2*a2*a2))
		a[2] = a2
	} else {
		fac = math.Sqrt((summ2 - 2*a[1]*a[1]) / (1 - 2*a1*a1))
	}
	a[1] = a1
	for i := i1; i <= nn2; i++ {
		a[i] = -a[i] / fac
	}
	return a
}

// AS R94 polynomial coefficients, lowest order first.
var (
	swC1 = [...]float64{0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056}
	swC2 = [...]float64{0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633}
	swC3 = [...]float64{0.544, -0.39978, 0.025054, -6.714e-4}
	swC4 = [...]float64{1.3822, -0.77857, 0.062767, -0.0020322}
	swC5 = [...]float64{-1.5861, -0.31082, -0.083751, 0.0038915}
	swC6 = [...]float64{-0.4803, -0.082676, 0.0030302}
	swG  = [...]float64{-2.273, 0.459}
)

// swPValue is the AS R94 significance level of W for a sample of n, w1 being
// 1-W computed without cancellation.
func swPValue(w, w1 float64, n int) float64 {
	if n == 3 {
		// Exact: 6/π (asin √W − asin √(3/4)).
		p := 6 / math.Pi * (math.Asin(math.Sqrt(w)) - math.Pi/3)
		return max(p, 0)
	}
	an := float64(n)
	if w1 == 0 {
		return 1
	}
	y := math.Log(w1)
	var m, s float64
	if n <= 11 {
		gamma := poly(swG[:], an)
		if y >= gamma {
			return 1e-19 // AS R94's "small": W is below any tabulated value
		}
		y = -math.Log(gamma - y)
		m = poly(swC3[:], an)
		s = math.Exp(poly(swC4[:], an))
	} else {
		xx := math.Log(an)
		m = poly(swC5[:], xx)
		s = math.Exp(poly(swC6[:], xx))
	}
	return normUpper((y - m) / s)
}

// poly evaluates c[0] + c[1]x + c[2]x² + ...
func poly(c []float64, x float64) float64 {
	r := 0.0
	for i := len(c) - 1; i >= 0; i-- {
		r = r*x + c[i]
	}
	return r
}

// normUpper is the upper tail of the standard normal distribution, P(Z > z),
// accurate in relative terms far into the tail.
func normUpper(z float64) float64 {
	return 0.5 * math.Erfc(z/math.Sqrt2)
}

// normQuantile is the standard normal quantile function Φ⁻¹(p) for 0 < p < 1:
// Wichura's algorithm AS 241 (PPND16), relative accuracy about 1e-16.
func normQuantile(p float64) float64 {
	q := p - 0.5
	if math.Abs(q) <= 0.425 {
		r := 0.180625 - q*q
		return q * (((((((2509.0809287301226727*r+33430.575583588128105)*r+67265.770927008700853)*r+
			45921.953931549871457)*r+13731.693765509461125)*r+1971.5909503065514427)*r+
			133.14166789178437745)*r + 3.387132872796366608) /
			(((((((5226.495278852545925*r+28729.085735721942674)*r+39307.89580009271061)*r+
				21213.794301586595867)*r+5394.1960214247511077)*r+687.1870074920579083)*r+
				42.313330701600911252)*r + 1)
	}
	r := p
	if q > 0 {
		r = 1 - p
	}
	r = math.Sqrt(-math.Log(r))
	var v float64
	if r <= 5 {
		r -= 1.6
		v = (((((((7.7454501427834140764e-4*r+0.0227238449892691845833)*r+0.24178072517745061177)*r+
			1.27045825245236838258)*r+3.64784832476320460504)*r+5.7694972214606914055)*r+
			4.6303378461565452959)*r + 1.42343711074968357734) /
			(((((((1.05075007164441684324e-9*r+5.475938084995344946e-4)*r+0.0151986665636164571966)*r+
				0.14810397642748007459)*r+0.68976733498510000455)*r+1.6763848301838038494)*r+
				2.05319162663775882187)*r + 1)
	} else {
		r -= 5
		v = (((((((2.01033439929228813265e-7*r+2.71155556874348757815e-5)*r+0.0012426609473880784386)*r+
			0.026532189526576123093)*r+0.29656057182850489123)*r+1.7848265399172913358)*r+
			5.4637849111641143699)*r + 6.6579046435011037772) /
			(((((((2.04426310338993978564e-15*r+1.4215117583164458887e-7)*r+1.8463183175100546818e-5)*r+
				7.868691311456132591e-4)*r+0.0148753612908506148525)*r+0.13692988092273580531)*r+
				0.59983220655588793769)*r + 1)
	}
	if q < 0 {
		v = -v
	}
	return v
}
