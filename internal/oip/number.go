package oip

import (
	"math"
	"strconv"
)

// Tensor data is mostly numbers, and converting them dominates the cost of a
// JSON request. float reads and converts a JSON number in one pass, using
// Clinger's exact fast path (an exactly representable mantissa times an
// exactly representable power of ten is one correctly rounded IEEE
// operation) and strconv for the rest, so every result is bit-identical to
// strconv.ParseFloat.

var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// float reads the JSON number at the scanner's position and returns it
// rounded to bits (32 or 64) as strconv.ParseFloat would. ok is false for
// text that is not a JSON number; err is set for numbers out of range.
func (s *scanner) float(bits int) (f float64, ok bool, err error) {
	if s.i < len(s.b) && s.b[s.i] <= ' ' {
		s.ws()
	}
	b := s.b
	start, i := s.i, s.i
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	digits, exp, exact := 0, 0, true
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i]-'1' < 9:
		for ; i < len(b) && b[i]-'0' < 10; i++ {
			if digits < 19 {
				mant = mant*10 + uint64(b[i]-'0')
				digits++
			} else {
				// Past 19 significant digits the mantissa would overflow:
				// keep the magnitude, and note any lost non-zero digit.
				exp++
				exact = exact && b[i] == '0'
			}
		}
	default:
		return 0, false, nil
	}
	if i < len(b) && b[i] == '.' {
		i++
		n := i
		for ; i < len(b) && b[i]-'0' < 10; i++ {
			c := b[i]
			switch {
			case mant == 0 && c == '0':
				exp-- // leading zeros are not significant
			case digits < 19:
				mant = mant*10 + uint64(c-'0')
				digits++
				exp--
			default:
				exact = exact && c == '0'
			}
		}
		if i == n {
			return 0, false, nil
		}
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		n, e := i, 0
		for i < len(b) && b[i]-'0' < 10 {
			if e < 100000 {
				e = e*10 + int(b[i]-'0')
			}
			i++
		}
		if i == n {
			return 0, false, nil
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	s.i = i
	if exact && mant <= 1<<53 && exp >= -22 && exp <= 22 {
		f = float64(mant)
		if exp < 0 {
			f /= pow10[-exp]
		} else {
			f *= pow10[exp]
		}
		if neg {
			f = -f
		}
		if bits == 64 || mant == 0 {
			return f, true, nil
		}
		// Rounding the correctly rounded float64 to float32 is correct
		// unless it sits exactly halfway between two float32s (double
		// rounding) or outside the normal float32 range.
		a := math.Abs(f)
		if a >= 0x1p-126 && a <= math.MaxFloat32 && math.Float64bits(f)&(1<<29-1) != 1<<28 {
			return float64(float32(f)), true, nil
		}
	}
	f, err = strconv.ParseFloat(unsafeString(b[start:i]), bits)
	return f, true, err
}
