package outguard

import "math"

// Base-2 logarithm and power for the reverse sigmoid, in plain float64
// arithmetic and several times cheaper than math.Log and math.Exp there:
// each splits off the exponent bits, reduces the rest with a small table
// and evaluates a short polynomial. Over the whole float64 range their
// relative errors stay below 1e-13 for log2 (worst, 7e-14, next to 1)
// and 2e-14 for exp2 (5e-15 measured); fastmath_test.go checks both
// bounds. Special values follow math.Log2 and math.Exp2.

const (
	expShift      = 52
	expBias       = 1023
	fracMask      = 1<<expShift - 1
	minNormalBits = 1 << expShift            // bits of the smallest positive normal float64
	infBits       = 0x7FF << expShift        // bits of +Inf
	oneBits       = expBias << expShift      // bits of 1
	twoTo52       = 1 << expShift            // scales a subnormal into the normal range
	roundShift    = 0x1.8p52                 // adding then subtracting it rounds to an integer
	exp2NearLimit = 1022                     // |x| ≤ this: 2^x is a normal number
	exp2HugeLimit = 1024                     // x ≥ this: 2^x overflows
	exp2TinyLimit = -1080                    // x < this: 2^x rounds to 0
	exp2Rescale   = 64                       // exponent shift for results near the limits
	twoToMinus64  = 1.0 / (1 << exp2Rescale) // undoes exp2Rescale
	log2StepBits  = 7                        // log2 has 2^7 table steps per octave
	log2Steps     = 1 << log2StepBits
	log2StepShift = expShift - log2StepBits // fraction bits below a log2 step
	exp2StepBits  = 6                       // exp2 has 2^6 table steps per octave
	exp2Steps     = 1 << exp2StepBits
)

// log2(1+r) ≈ r·Σ aₖ·r^k for |r| ≤ 2⁻⁸: a near-minimax polynomial
// (Chebyshev interpolation of log2(1+r)/r), relative error 1e-14.
const (
	log2C0 = 1.4426950408889634074
	log2C1 = -0.72134752042697947427
	log2C2 = 0.48089834694798588358
	log2C3 = -0.36067834739605706469
	log2C4 = 0.28854294004273060742
)

// 2^f ≈ 1 + f·Σ cₖ·f^(k−1) for |f| ≤ 1/128: a near-minimax polynomial
// (Chebyshev interpolation of (2^f − 1)/f), relative error 5e-15.
const (
	exp2C1 = 0.6931471805593241684
	exp2C2 = 0.24022650695902895532
	exp2C3 = 0.055504190062728931599
	exp2C4 = 0.0096181385110820380461
)

// log2Table[j] is for mantissas near c = 1 + j/128: inv = 1/c rounded to
// float64, and lg = −log2(inv), so that log2(m) = lg + log2(m·inv) with
// m·inv within 2⁻⁸ of 1. Entries 0 (c = 1) and 128 (c = 2) are exact,
// which keeps log2 accurate relative to its result next to 1.
var log2Table [log2Steps + 1]struct{ inv, lg float64 }

// exp2Table[j] holds the bits of 2^(j/64).
var exp2Table [exp2Steps]uint64

func init() {
	for j := range log2Table {
		inv := 1 / (1 + float64(j)/log2Steps)
		log2Table[j].inv, log2Table[j].lg = inv, -math.Log2(inv)
	}
	for j := range exp2Table {
		exp2Table[j] = math.Float64bits(math.Exp2(float64(j) / exp2Steps))
	}
}

// log2 returns the base-2 logarithm of x.
func log2(x float64) float64 {
	b := math.Float64bits(x)
	if b-minNormalBits >= infBits-minNormalBits { // not a positive normal number
		return log2Special(x)
	}
	return log2Normal(b)
}

// log2Normal is log2 of the positive normal number with bits b: for
// x = 2^e·m, m in [1, 2), it picks the table step c nearest m, so that
// log2(x) = e + log2(c) + log2(1+r) with r = m/c − 1 in [−2⁻⁸, 2⁻⁸],
// and evaluates the polynomial above for log2(1+r). Small enough to be
// inlined.
func log2Normal(b uint64) float64 {
	frac := b & fracMask
	step := &log2Table[(frac+1<<(log2StepShift-1))>>log2StepShift] // nearest step, 0..128
	r := math.Float64frombits(frac|oneBits)*step.inv - 1
	return (float64(int(b>>expShift)-expBias) + step.lg) + r*log2Poly(r)
}

// log2Poly returns Σ aₖ·r^k, so that log2(1+r) ≈ r·log2Poly(r).
func log2Poly(r float64) float64 {
	return log2C0 + r*(log2C1+r*(log2C2+r*(log2C3+r*log2C4)))
}

// log2Special is log2 for x that is not a positive normal number.
func log2Special(x float64) float64 {
	switch {
	case x > 0 && x < math.Inf(1): // subnormal: scaled into the normal range
		return log2Normal(math.Float64bits(x*twoTo52)) - expShift
	case x == 0:
		return math.Inf(-1)
	case x > 0 || x != x: // +Inf, NaN
		return x
	default: // negative
		return math.NaN()
	}
}

// exp2 returns 2^x.
func exp2(x float64) float64 {
	if !(x >= -exp2NearLimit && x <= exp2NearLimit) { // also NaN
		return exp2Far(x)
	}
	return exp2Near(x)
}

// exp2Near is exp2 for x in [−1022, 1022]: with k the integer nearest
// 64·x, 2^x = 2^(k/64)·2^f where f = x − k/64 is exact and in
// [−1/128, 1/128]; 2^(k/64) comes from the table and the exponent bits,
// 2^f from the polynomial above. Small enough to be inlined.
func exp2Near(x float64) float64 {
	k := (x*exp2Steps + roundShift) - roundShift
	return exp2Step(x-k*(1.0/exp2Steps), int64(k))
}

// exp2Step returns 2^(k/64)·2^f.
func exp2Step(f float64, k int64) float64 {
	scale := math.Float64frombits(exp2Table[k&(exp2Steps-1)] + uint64(k>>exp2StepBits)<<expShift)
	f2 := f * f
	return scale + scale*(f*((exp2C1+exp2C2*f)+(exp2C3+exp2C4*f)*f2))
}

// exp2Far is exp2 for NaN and x outside [−1022, 1022]: results beyond
// the normal range are scaled through a second power of two, so they
// overflow to +Inf and underflow through the subnormals to 0, rounded
// once (math.Exp2 returns 0 from x < −1074 already).
func exp2Far(x float64) float64 {
	switch {
	case x != x:
		return x
	case x >= exp2HugeLimit:
		return math.Inf(1)
	case x < exp2TinyLimit:
		return 0
	case x > 0: // (1022, 1024): x−2 is exact
		return exp2Near(x-2) * 4
	default: // [−1080, −1022): x+64 is exact
		return exp2Near(x+exp2Rescale) * twoToMinus64
	}
}

// squashRow sets s[i] = σ(γ·logit(y)) = 1/(1 + 2^(−γ·log2(y/(1−y)))) for
// each y = ys[i], and 0 for y ≤ 0, 1 for y ≥ 1. s must be at least as
// long as ys.
//
// Its two loops (the logarithms, then the powers) run log2Normal and
// exp2Near inlined: short dependency chains the CPU overlaps across
// elements, and no call around which to spill registers. An element off
// that path (y ≤ 0, y ≥ 1, odds that are subnormal, a power beyond the
// normal range) is marked NaN and computed afterwards by squashOne.
func squashRow(s, ys []float64, gamma float64) {
	s = s[:len(ys)]
	ng := -gamma
	slow := false
	for i, y := range ys {
		b := math.Float64bits(y / (1 - y))
		if b-minNormalBits >= infBits-minNormalBits { // not a positive normal number
			s[i], slow = math.NaN(), true
			continue
		}
		s[i] = log2Normal(b)
	}
	for i, l := range s {
		x := ng * l
		if !(x >= -exp2NearLimit && x <= exp2NearLimit) { // also NaN
			s[i], slow = math.NaN(), true
			continue
		}
		s[i] = 1 / (1 + exp2Near(x))
	}
	if slow {
		for i, v := range s {
			if v != v {
				s[i] = squashOne(ys[i], gamma)
			}
		}
	}
}

// squashOne is squashRow for one y, through the full log2 and exp2: 0 for
// y ≤ 0, 1 for y ≥ 1, and 0 (1) when the power overflows (underflows).
func squashOne(y, gamma float64) float64 {
	switch {
	case y <= 0:
		return 0
	case y >= 1:
		return 1
	}
	return 1 / (1 + exp2(-gamma*log2(y/(1-y))))
}
