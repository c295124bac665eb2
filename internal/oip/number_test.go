package oip

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// checkFloat asserts the scanner converts s exactly as strconv does.
func checkFloat(t *testing.T, s string, bits int) {
	t.Helper()
	want, werr := strconv.ParseFloat(s, bits)
	sc := &scanner{b: []byte(s), maxDepth: 4}
	got, ok, err := sc.float(bits)
	if !ok {
		t.Fatalf("%q: not read as a number", s)
	}
	if (err != nil) != (werr != nil) {
		t.Fatalf("%q: error %v, strconv %v", s, err, werr)
	}
	if werr == nil && math.Float64bits(got) != math.Float64bits(want) {
		t.Fatalf("%q (%d bits): got %v, want %v", s, bits, got, want)
	}
	if sc.i != len(s) {
		t.Fatalf("%q: consumed %d bytes", s, sc.i)
	}
}

func TestFloatMatchesStrconv(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "0.5", "1e10", "1E-10", "123456789012345678901234",
		"0.000000000000000000000000000000000000000000001", "3.4028235e38", "3.4028236e38", "1e39", "-1e400",
		"1.17549435e-38", "1e-46", "16777217", "0.1", "-2.5e-3", "9007199254740993", "1.00000017881393432617187499",
		"2.2250738585072011e-308", "1.7976931348623157e308", "0.0000", "100000000000000000000000e-20"} {
		checkFloat(t, s, 32)
		checkFloat(t, s, 64)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 100000 {
		f := rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))
		checkFloat(t, strconv.FormatFloat(float64(float32(f)), 'g', -1, 32), 32)
		checkFloat(t, strconv.FormatFloat(f, 'g', -1, 64), 64)
		checkFloat(t, strconv.FormatFloat(f, 'g', -1, 64), 32)
		checkFloat(t, strconv.FormatFloat(rng.Float64(), 'f', rng.IntN(12), 64), 32)
	}
}

func TestFloatRefusesNonJSON(t *testing.T) {
	for _, s := range []string{"", "-", "+1", ".5", "1.", "1e", "1e+", "x", "-x"} {
		sc := &scanner{b: []byte(s), maxDepth: 4}
		if _, ok, _ := sc.float(32); ok {
			t.Errorf("%q read as a number", s)
		}
	}
}

func FuzzFloat(f *testing.F) {
	f.Add("1.5e3", true)
	f.Add("-0.000123", false)
	f.Fuzz(func(t *testing.T, s string, f32 bool) {
		bits := 64
		if f32 {
			bits = 32
		}
		sc := &scanner{b: []byte(s), maxDepth: 4}
		got, ok, err := sc.float(bits)
		if !ok || err != nil {
			return
		}
		num := strings.TrimLeft(s[:sc.i], " \t\n\r") // float skips leading JSON white space
		want, werr := strconv.ParseFloat(num, bits)
		if werr != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%q: got %v, strconv %v (%v)", num, got, want, werr)
		}
	})
}
