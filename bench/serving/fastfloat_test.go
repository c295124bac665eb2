package main

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// This file prototypes, for the suggestion in docs/benchmarks.md, the
// single-pass FP32 decoding that would take JSON decoding off the top of
// the REST profile: each number is validated and converted in one scan,
// with Clinger's exact fast path, and strconv only for the numbers the fast
// path cannot convert exactly. It is measured by BenchmarkDecodeJSON and
// checked against strconv by TestFastFloat32; nothing in the server uses it.

var pow10f64 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

var errNumber = errors.New("bad number")

// parseFloat32JSON parses the JSON number at the start of b and returns it
// rounded to float32 exactly as strconv.ParseFloat(s, 32) would, and the
// number of bytes it took.
func parseFloat32JSON(b []byte) (float32, int, error) {
	i, neg := 0, false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	var mant uint64
	sig, exp, exact := 0, 0, true
	digit := func(c byte, frac bool) {
		if mant == 0 && c == '0' {
			if frac {
				exp--
			}
			return
		}
		if sig < 19 {
			mant = mant*10 + uint64(c-'0')
			sig++
			if frac {
				exp--
			}
			return
		}
		if c != '0' {
			exact = false
		}
		if !frac {
			exp++
		}
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i]-'1' < 9:
		for i < len(b) && b[i]-'0' < 10 {
			digit(b[i], false)
			i++
		}
	default:
		return 0, 0, errNumber
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i]-'0' < 10 {
			digit(b[i], true)
			i++
		}
		if i == start {
			return 0, 0, errNumber
		}
	}
	if i < len(b) && b[i]|0x20 == 'e' {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		start, e := i, 0
		for i < len(b) && b[i]-'0' < 10 {
			if e < 100000 {
				e = e*10 + int(b[i]-'0')
			}
			i++
		}
		if i == start {
			return 0, 0, errNumber
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if exact && mant <= 1<<53 && exp >= -22 && exp <= 22 {
		// Clinger: both operands exact, so one IEEE operation rounds
		// correctly to float64. Rounding that to float32 is correct unless
		// it lands exactly halfway between two float32s, or outside the
		// normal float32 range.
		f := float64(mant)
		if exp < 0 {
			f /= pow10f64[-exp]
		} else {
			f *= pow10f64[exp]
		}
		bits := math.Float64bits(f)
		if mant == 0 || (f >= 0x1p-126 && f <= math.MaxFloat32 && bits&(1<<29-1) != 1<<28) {
			if neg {
				f = -f
			}
			return float32(f), i, nil
		}
	}
	f, err := strconv.ParseFloat(string(b[:i]), 32)
	if err != nil {
		return 0, 0, err
	}
	return float32(f), i, nil
}

// decodeFlatFP32 decodes the JSON array elements of data (the text between
// '[' and ']') into dst.
func decodeFlatFP32(data []byte, dst []float32) ([]float32, error) {
	i := 0
	for {
		for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') {
			i++
		}
		f, n, err := parseFloat32JSON(data[i:])
		if err != nil {
			return dst, err
		}
		dst = append(dst, f)
		i += n
		for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') {
			i++
		}
		if i == len(data) {
			return dst, nil
		}
		if data[i] != ',' {
			return dst, errNumber
		}
		i++
	}
}

func TestFastFloat32(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	check := func(s string) {
		t.Helper()
		want, werr := strconv.ParseFloat(s, 32)
		got, n, err := parseFloat32JSON([]byte(s))
		if werr != nil {
			return // out of range for FP32: the prototype defers to strconv
		}
		if err != nil || n != len(s) || math.Float32bits(got) != math.Float32bits(float32(want)) {
			t.Fatalf("%q: got %v (%d bytes, %v), want %v", s, got, n, err, float32(want))
		}
	}
	for _, s := range []string{"0", "-0", "1", "0.5", "1e10", "1E-10", "123456789012345678901234", "0.000000000000000000000000000000000000000000001",
		"3.4028235e38", "1.17549435e-38", "16777217", "0.1", "-2.5e-3", "9007199254740993", "1.00000017881393432617187499"} {
		check(s)
	}
	for range 200000 {
		f := float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
		check(strconv.FormatFloat(float64(f), 'g', -1, 32))
		check(strconv.FormatFloat(float64(f), 'g', -1, 64))
		check(strconv.FormatFloat(rng.Float64(), 'f', rng.IntN(12), 64))
	}
}
