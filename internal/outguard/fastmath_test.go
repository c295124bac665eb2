package outguard

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Bounds on the relative errors of log2 and exp2, a little above the
// worst measured (7e-14 next to 1 for log2, where the rounding of m·inv
// weighs most; 5e-15 for exp2): tight enough that a coefficient or table
// entry wrong in any digit that matters fails them.
const (
	log2Tol = 1e-13
	exp2Tol = 2e-14
)

// logExact is math.Log made right for subnormals: on amd64 math.Log
// treats them as if their exponent were −1022 (math.Log(5e-324) is
// −709.1, not −744.4; golang.org/issue/56600).
func logExact(x float64) float64 {
	if x > 0 && x < 0x1p-1022 {
		return math.Log(x*0x1p52) - 52*math.Ln2
	}
	return math.Log(x)
}

// log2Exact is the reference for log2. math.Log2 is not: next to 1 it
// loses most of its relative accuracy (math.Log2(1+2⁻⁵²) is off by 4%),
// while math.Log stays within an ulp.
func log2Exact(x float64) float64 { return logExact(x) / math.Ln2 }

// exp2Exact is the reference for exp2: math.Exp2, except that below
// 2⁻¹⁰²² it is scaled from a normal result, as math.Exp2 returns 0 for
// every x < −1074 where 2^x rounds to 2⁻¹⁰⁷⁴ down to x = −1075.
func exp2Exact(x float64) float64 {
	if x < -1022 {
		return math.Exp2(x+64) * 0x1p-64
	}
	return math.Exp2(x)
}

// log2Inputs returns positive finite test inputs: random bit patterns
// (every exponent, subnormals included), values next to 1, every table
// step and the rounding boundaries between steps at several exponents,
// and the extremes.
func log2Inputs(rng *rand.Rand) []float64 {
	var xs []float64
	for range 200000 { // any positive finite float64
		b := rng.Uint64N(0x7FF0000000000000)
		xs = append(xs, math.Float64frombits(b))
	}
	for range 20000 { // subnormals
		xs = append(xs, math.Float64frombits(1+rng.Uint64N(1<<52-1)))
	}
	for range 50000 { // uniform on a few octaves
		xs = append(xs, rng.Float64()*8)
	}
	for d := 1e-16; d < 0.1; d *= 1.7 { // next to 1
		xs = append(xs, 1+d, 1-d, 1+d*rng.Float64(), 1-d*rng.Float64())
	}
	for x, y, k := 1.0, 1.0, 0; k < 2000; k++ { // the 2000 floats either side of 1
		x, y = math.Nextafter(x, 2), math.Nextafter(y, 0)
		xs = append(xs, x, y)
	}
	for j := 0; j <= 2*log2Steps; j++ { // table steps and the midpoints between them
		m := 1 + float64(j)/(2*log2Steps)
		for _, e := range []int{-1074, -1030, -1022, -3, -1, 0, 1, 5, 1000, 1023} {
			x := math.Ldexp(m, e)
			xs = append(xs, x, math.Nextafter(x, 0), math.Nextafter(x, math.Inf(1)))
		}
	}
	for e := -1074; e <= 1023; e++ {
		xs = append(xs, math.Ldexp(1, e))
	}
	return append(xs, math.MaxFloat64, math.SmallestNonzeroFloat64, 0x1p-1022, math.Nextafter(0x1p-1022, 0), 3, 10, math.E, 0.1)
}

func TestLog2Accuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	worst, at := 0.0, 0.0
	for _, x := range log2Inputs(rng) {
		if !(x > 0) || math.IsInf(x, 0) {
			continue
		}
		got, want := log2(x), log2Exact(x)
		var err float64
		if want == 0 {
			err = math.Abs(got)
		} else {
			err = math.Abs(got-want) / math.Abs(want)
		}
		if err > worst {
			worst, at = err, x
		}
		if err > log2Tol {
			t.Fatalf("log2(%v) = %v, want %v (relative error %.3g)", x, got, want, err)
		}
	}
	t.Logf("log2: worst relative error %.3g at x = %v", worst, at)
}

func TestLog2Exact(t *testing.T) {
	for e := -1074; e <= 1023; e++ {
		if got := log2(math.Ldexp(1, e)); got != float64(e) {
			t.Errorf("log2(2^%d) = %v", e, got)
		}
	}
	for _, tc := range []struct{ x, want float64 }{
		{0, math.Inf(-1)},
		{math.Copysign(0, -1), math.Inf(-1)},
		{math.Inf(1), math.Inf(1)},
		{math.SmallestNonzeroFloat64, -1074},
	} {
		if got := log2(tc.x); got != tc.want {
			t.Errorf("log2(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	for _, x := range []float64{-1, -math.SmallestNonzeroFloat64, math.Inf(-1), math.NaN()} {
		if got := log2(x); !math.IsNaN(got) {
			t.Errorf("log2(%v) = %v, want NaN", x, got)
		}
	}
}

// exp2Inputs returns test inputs for exp2: random over the whole range
// where 2^x is neither 0 nor +Inf and beyond it, small and tiny
// arguments, every table step, integers and the range limits.
func exp2Inputs(rng *rand.Rand) []float64 {
	var xs []float64
	for range 200000 {
		xs = append(xs, (rng.Float64()*2-1)*1100)
	}
	for range 50000 {
		xs = append(xs, rng.Float64()*2-1)
	}
	for range 20000 { // tiny, of either sign
		x := math.Exp(-rng.Float64() * 700)
		xs = append(xs, x, -x)
	}
	for k := -1100 * exp2Steps; k <= 1100*exp2Steps; k += 7 { // table steps and the midpoints between them
		x := float64(k) / exp2Steps
		h := x + 0.5/exp2Steps
		xs = append(xs, x, math.Nextafter(x, 0), h, math.Nextafter(h, 0), math.Nextafter(h, 2000))
	}
	for _, x := range []float64{1022, 1023, 1024, 1074, 1075, 1080} {
		for _, v := range []float64{x, -x} {
			xs = append(xs, v, math.Nextafter(v, 0), math.Nextafter(v, math.Inf(int(v))), v+0.5, v-0.5)
		}
	}
	return append(xs, 0, math.Copysign(0, -1), 0.5, -0.5, 1e-300, -1e-300, 5e-324)
}

func TestExp2Accuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	worst, at := 0.0, 0.0
	for _, x := range exp2Inputs(rng) {
		got, want := exp2(x), exp2Exact(x)
		switch {
		case math.IsInf(want, 1) || want == 0:
			if got != want {
				t.Fatalf("exp2(%v) = %v, want %v", x, got, want)
			}
		case want < 0x1p-1022: // subnormal: may differ by the last place
			if math.Abs(got-want) > exp2Tol*want+math.SmallestNonzeroFloat64 {
				t.Fatalf("exp2(%v) = %v, want %v", x, got, want)
			}
		default:
			err := math.Abs(got-want) / want
			if err > worst {
				worst, at = err, x
			}
			if err > exp2Tol {
				t.Fatalf("exp2(%v) = %v, want %v (relative error %.3g)", x, got, want, err)
			}
		}
	}
	t.Logf("exp2: worst relative error %.3g at x = %v", worst, at)
}

func TestExp2Exact(t *testing.T) {
	for e := -1074; e <= 1023; e++ {
		if got := exp2(float64(e)); got != math.Ldexp(1, e) {
			t.Errorf("exp2(%d) = %v, want %v", e, got, math.Ldexp(1, e))
		}
	}
	for _, tc := range []struct{ x, want float64 }{
		{0, 1},
		{1024, math.Inf(1)},
		{1e300, math.Inf(1)},
		{math.Inf(1), math.Inf(1)},
		{-1076, 0},
		{-1e300, 0},
		{math.Inf(-1), 0},
	} {
		if got := exp2(tc.x); got != tc.want {
			t.Errorf("exp2(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := exp2(math.NaN()); !math.IsNaN(got) {
		t.Errorf("exp2(NaN) = %v", got)
	}
}

// squashExact is σ(γ·logit(y)) by math.Exp and logExact, edges included.
func squashExact(y, gamma float64) float64 {
	switch {
	case y <= 0:
		return 0
	case y >= 1:
		return 1
	}
	return 1 / (1 + math.Exp(-gamma*logExact(y/(1-y))))
}

func TestSquashRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	ys := []float64{
		0, math.Copysign(0, -1), -0.5, -1e-300, 1, 1.5, 2,
		math.SmallestNonzeroFloat64, 1e-320, math.Nextafter(0x1p-1022, 0), 0x1p-1022, 1e-300, 1e-30, 1e-8,
		0.5, math.Nextafter(0.5, 0), math.Nextafter(0.5, 1),
		1 - 0x1p-53, 1 - 0x1p-52, 1 - 1e-12, 0.999999,
	}
	for range 2000 {
		ys = append(ys, rng.Float64(), math.Exp(-rng.Float64()*745), 1-math.Exp(-rng.Float64()*36))
	}
	gammas := []float64{1e-300, 1e-6, 0.01, 0.2, 0.5, 1, 2, 10, 100, 1e6, 1e300}
	for range 20 {
		gammas = append(gammas, 0.01+rng.Float64()*10)
	}
	s := make([]float64, len(ys))
	worst := 0.0
	for _, g := range gammas {
		squashRow(s, ys, g)
		for i, y := range ys {
			want := squashExact(y, g)
			err := math.Abs(s[i] - want)
			worst = max(worst, err)
			if !(err <= 1e-13) {
				t.Fatalf("γ=%v y=%v: s = %v, want %v", g, y, s[i], want)
			}
			if one := squashOne(y, g); !(math.Abs(one-want) <= 1e-13) {
				t.Fatalf("squashOne: γ=%v y=%v: s = %v, want %v", g, y, one, want)
			}
		}
	}
	t.Logf("squashRow: worst absolute error %.3g", worst)
	// A power that overflows gives 0, one that underflows 1.
	squashRow(s[:2], []float64{1e-300, 1 - 0x1p-53}, 1e300)
	if s[0] != 0 || s[1] != 1 {
		t.Errorf("overflowing powers: got %v, want [0 1]", s[:2])
	}
}

// keepTop applies reverseSigmoid's last step to a reference row: the
// maximum and the top class trade places when they differ.
func keepTop(row []float64, top int) {
	if m := argmax(row); m != top && row[m] > row[top] {
		row[m], row[top] = row[top], row[m]
	}
}

// TestReverseSigmoidMatchesReference compares reverseSigmoid with the
// exact formula (reference, then the top class put back on top) on
// random rows of every kind and on extreme ones: it must stay within
// 1e-9 (it is within ~1e-14).
func TestReverseSigmoidMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	randomRow := func(n int) []float64 {
		row := make([]float64, n)
		spread := []float64{1, 10, 100, 700}[rng.IntN(4)] // from flat rows to very peaked ones
		sum := 0.0
		for i := range row {
			row[i] = math.Exp(-spread * rng.Float64())
			sum += row[i]
		}
		for i := range row {
			row[i] /= sum
		}
		return row
	}
	var rows [][]float64
	for range 3000 {
		rows = append(rows, randomRow(2+rng.IntN(99)))
	}
	rows = append(rows,
		[]float64{1, 0},
		[]float64{0, 1, 0, 0},
		[]float64{1 - 1e-15, 1e-300, 1e-300, 1e-15 - 2e-300},
		[]float64{1, 1e-300, 5e-324, 0},
		[]float64{1 - 0x1p-53, 0x1p-53},
		[]float64{0.5, 0.5},
		[]float64{1e-300, 1e-300, 1},
		[]float64{5e-324, 1},
	)
	worst := 0.0
	for n, y := range rows {
		beta := 1 - rng.Float64() // (0, 1]
		gamma := 0.01 + (10-0.01)*(1-rng.Float64())
		if n%7 == 0 { // the policies' usual values
			beta, gamma = 0.5, 0.2
		}
		top := argmax(y)
		want := reference(y, beta, gamma)
		keepTop(want, top)
		got := append([]float64(nil), y...)
		reverseSigmoid(got, top, beta, gamma, make([]float64, len(got)))
		for i := range want {
			err := math.Abs(got[i] - want[i])
			worst = max(worst, err)
			if !(err <= 1e-9) {
				t.Fatalf("β=%v γ=%v y=%v:\ngot  %v\nwant %v", beta, gamma, y, got, want)
			}
		}
		if argmax(got) != top {
			t.Fatalf("β=%v γ=%v y=%v: top class moved from %d to %d", beta, gamma, y, top, argmax(got))
		}
	}
	t.Logf("reverseSigmoid: worst absolute error %.3g over %d rows", worst, len(rows))
}

func BenchmarkReverseSigmoid(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	y := make([]float64, 10)
	sum := 0.0
	for i := range y {
		y[i] = rng.Float64()
		sum += y[i]
	}
	for i := range y {
		y[i] /= sum
	}
	top := argmax(y)
	row, scratch := make([]float64, len(y)), make([]float64, len(y))
	for b.Loop() {
		copy(row, y)
		reverseSigmoid(row, top, 0.5, 0.2, scratch)
	}
}
