package oip

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// checkFast32 asserts that float32Fast either declines s or converts it
// exactly as strconv.ParseFloat(s, 32) does, consuming all of it.
func checkFast32(t *testing.T, s string) (taken bool) {
	t.Helper()
	buf := []byte(s + ",                    ")
	sc := &scanner{b: buf}
	v, ok := sc.float32Fast()
	if !ok {
		if sc.i != 0 {
			t.Fatalf("%q: declined but moved to %d", s, sc.i)
		}
		return false
	}
	want, err := strconv.ParseFloat(s, 32)
	if err != nil {
		t.Fatalf("%q: fast path took a number strconv refuses: %v", s, err)
	}
	if sc.i != len(s) || math.Float32bits(v) != math.Float32bits(float32(want)) {
		t.Fatalf("%q: got %v (%#x) after %d bytes, want %v (%#x)", s, v, math.Float32bits(v), sc.i, float32(want), math.Float32bits(float32(want)))
	}
	return true
}

func TestFloat32Fast(t *testing.T) {
	for _, s := range []string{"0.0", "-0.0", "0.5", "-0.7340068", "0.58967453", "123.25", "999.9999999999999999",
		"1.00000017881393432617187499", "0.1", "0.0000001", "16777217.0", "0.00000000000000001"} {
		checkFast32(t, s)
	}
	// Declined: not a number, or a shape the fast path leaves to float.
	for _, s := range []string{"", "-", "1", "-1", "01.5", "1234.5", "1.", "1.e5", "1.5e3", "1.5E-3", ".5", "+1.5", "1.23456789012345678", "-x", "0x1.8"} {
		if checkFast32(t, s) {
			t.Errorf("%q: taken by the fast path", s)
		}
	}
	// A number followed by something else stops where float would stop.
	sc := &scanner{b: []byte("1.5.5                    ")}
	if v, ok := sc.float32Fast(); !ok || v != 1.5 || sc.i != 3 {
		t.Errorf("1.5.5: got %v %v after %d bytes, want 1.5 after 3", v, ok, sc.i)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	taken := 0
	const n = 300000
	for range n {
		f := float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(6)-3)))
		for _, s := range []string{
			strconv.FormatFloat(float64(f), 'f', -1, 32),
			strconv.FormatFloat(float64(f), 'f', rng.IntN(17), 64),
			strconv.FormatFloat(float64(rng.Uint64N(1<<54))/float64(uint64(1)<<rng.IntN(60)), 'f', -1, 64),
		} {
			if checkFast32(t, s) {
				taken++
			}
		}
	}
	if taken < n { // shortest FP32 forms of normal values are mostly in its shape
		t.Errorf("fast path took only %d of %d numbers", taken, 3*n)
	}
}

// TestFloat32FastTies covers the one case where rounding the correctly
// rounded float64 to float32 would be wrong: a float64 exactly halfway
// between two float32s. The fast path must decline it, or get it right.
func TestFloat32FastTies(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		// A float32 with a short decimal form plus half an FP32 ulp.
		f := float64(float32(rng.Float64() * 100))
		ulp := float64(math.Nextafter32(float32(f), 2)) - f
		s := strconv.FormatFloat(f+ulp/2, 'f', -1, 64)
		checkFast32(t, s)
	}
}

func FuzzFloat32Fast(f *testing.F) {
	for _, s := range []string{"0.5", "-0.7340068", "12.0000000000000001", "1.5e3", "00.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		buf := []byte(s + "                    ")
		sc := &scanner{b: buf}
		v, ok := sc.float32Fast()
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(string(buf[:sc.i]), 32)
		if err != nil || math.Float32bits(v) != math.Float32bits(float32(want)) {
			t.Fatalf("%q: fast %v, strconv %v (%v)", buf[:sc.i], v, want, err)
		}
		// What follows the number must not continue it.
		if c := buf[sc.i]; c-'0' < 10 || c|0x20 == 'e' {
			t.Fatalf("%q: stopped before %q", s, c)
		}
	})
}
