package oip

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// float32Fast converts the common shape of an FP32 JSON number, an optional
// minus, an integer part of at most three digits, and a fraction of 1 to 16
// digits with no exponent ("-0.7340068", "12.5"), reading the fraction eight
// bytes at a time. It returns ok false, without moving, for anything else
// (and near the end of the buffer), and the caller falls back to float,
// whose result it matches bit for bit.
func (s *scanner) float32Fast() (v float32, ok bool) {
	b, i := s.b, s.i
	if len(b)-i < 20 { // room for the longest accepted number plus one byte
		return 0, false
	}
	neg := b[i] == '-'
	if neg {
		i++
	}
	var mant uint64
	c := b[i] - '0'
	switch {
	case c == 0:
		i++
	case c < 10:
		mant = uint64(c)
		i++
		for n := 0; n < 2 && b[i]-'0' < 10; n++ {
			mant = mant*10 + uint64(b[i]-'0')
			i++
		}
		if b[i]-'0' < 10 {
			return 0, false
		}
	default:
		return 0, false
	}
	if b[i] != '.' {
		return 0, false
	}
	i++
	k := 0 // fraction digits
	for chunk := 0; chunk < 2; chunk++ {
		w := binary.LittleEndian.Uint64(b[i:])
		n := digitRun(w)
		if n == 0 {
			break
		}
		mant = mant*pow10u[n] + eightDigits((w-0x3030303030303030)<<(8*(8-n)))
		k += n
		i += n
		if n < 8 {
			break
		}
	}
	if k == 0 || b[i]-'0' < 10 || b[i]|0x20 == 'e' {
		return 0, false
	}
	// Clinger's fast path, as in float: mant < 10^19 here, exact when at
	// most 2^53; the power of ten (k ≤ 16) is exact.
	if mant > 1<<53 {
		return 0, false
	}
	f := float64(mant) / pow10[k]
	if mant != 0 {
		if f < 0x1p-126 || math.Float64bits(f)&(1<<29-1) == 1<<28 {
			return 0, false // subnormal in FP32, or a double-rounding tie
		}
	}
	if neg {
		f = -f
	}
	s.i = i
	return float32(f), true
}

var pow10u = [...]uint64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000}

// digitRun returns how many of the eight bytes of w (first byte lowest)
// are ASCII digits before the first that is not.
func digitRun(w uint64) int {
	// A byte is a digit when its high nibble is 3 and adding 6 keeps it so.
	nd := (w & 0xF0F0F0F0F0F0F0F0) ^ 0x3030303030303030
	nd |= ((w + 0x0606060606060606) & 0xF0F0F0F0F0F0F0F0) ^ 0x3030303030303030
	return bits.TrailingZeros64(nd) >> 3
}

// eightDigits returns the value of eight decimal digits, one per byte of w
// (0..9 each, the first digit in the lowest byte).
func eightDigits(w uint64) uint64 {
	w = (w * 10) + (w >> 8)
	w = (((w & 0x000000FF000000FF) * (100 + (1000000 << 32))) +
		(((w >> 16) & 0x000000FF000000FF) * (1 + (10000 << 32)))) >> 32
	return w
}
