package conformance

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// Tolerance bounds how far a floating-point element may be from the
// expected one: |got-want| <= ATol + RTol*|want|.
type Tolerance struct {
	RTol, ATol float64
}

// BackendTolerance is the ONNX backend test runner's default
// (numpy.testing.assert_allclose with rtol=1e-3, atol=1e-7).
var BackendTolerance = Tolerance{RTol: 1e-3, ATol: 1e-7}

// Exact demands identical values, the sign of zero included (NaN still
// equals NaN, whatever its payload).
var Exact = Tolerance{}

// Compare checks got against want: same datatype, same shape, and every
// element equal, floating-point ones within tol (NaN equals NaN; infinities
// must match exactly). The error describes the first difference and how
// many elements differ.
func Compare(got, want *tensor.Tensor, tol Tolerance) error {
	if got.DType != want.DType {
		return fmt.Errorf("datatype %s, want %s", got.DType, want.DType)
	}
	if !slices.Equal(got.Shape, want.Shape) {
		return fmt.Errorf("shape %v, want %v", fmtShape(got.Shape), fmtShape(want.Shape))
	}
	n := want.Elements()
	if want.DType == tensor.Bytes {
		if int64(len(got.Strings)) != n {
			return fmt.Errorf("%d strings, want %d", len(got.Strings), n)
		}
		bad, first := 0, -1
		for i := range want.Strings {
			if !bytes.Equal(got.Strings[i], want.Strings[i]) {
				bad++
				if first < 0 {
					first = i
				}
			}
		}
		if bad > 0 {
			return fmt.Errorf("%d of %d strings differ; first at %d: got %q, want %q", bad, n, first, clipBytes(got.Strings[first]), clipBytes(want.Strings[first]))
		}
		return nil
	}
	size := want.DType.Size()
	if int64(len(got.Data)) != n*int64(size) || int64(len(want.Data)) != n*int64(size) {
		return fmt.Errorf("%d bytes of data, want %d", len(got.Data), n*int64(size))
	}
	switch want.DType {
	case tensor.FP16, tensor.BF16, tensor.FP32, tensor.FP64:
		return compareFloats(got, want, int(n), tol)
	}
	if bytes.Equal(got.Data, want.Data) {
		return nil
	}
	bad, first := 0, -1
	for i := 0; i < int(n); i++ {
		if !bytes.Equal(got.Data[i*size:(i+1)*size], want.Data[i*size:(i+1)*size]) {
			bad++
			if first < 0 {
				first = i
			}
		}
	}
	return fmt.Errorf("%d of %d elements differ; first at %d: got %s, want %s", bad, n, first,
		formatElem(got, first), formatElem(want, first))
}

func compareFloats(got, want *tensor.Tensor, n int, tol Tolerance) error {
	bad, first := 0, -1
	maxDiff := 0.0
	for i := 0; i < n; i++ {
		g, w := floatAt(got, i), floatAt(want, i)
		if isClose(g, w, tol) {
			continue
		}
		bad++
		if first < 0 {
			first = i
		}
		if d := math.Abs(g - w); d > maxDiff || math.IsNaN(d) {
			maxDiff = d
		}
	}
	if bad == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d elements differ beyond rtol=%g atol=%g; first at %d: got %s, want %s; max |diff| %g",
		bad, n, tol.RTol, tol.ATol, first, formatElem(got, first), formatElem(want, first), maxDiff)
}

// isClose is numpy's isclose(g, w, rtol, atol, equal_nan=True).
func isClose(g, w float64, tol Tolerance) bool {
	switch {
	case math.IsNaN(g) || math.IsNaN(w):
		return math.IsNaN(g) && math.IsNaN(w)
	case math.IsInf(g, 0) || math.IsInf(w, 0):
		return g == w
	}
	if tol == Exact {
		return g == w && math.Signbit(g) == math.Signbit(w)
	}
	return math.Abs(g-w) <= tol.ATol+tol.RTol*math.Abs(w)
}

func floatAt(t *tensor.Tensor, i int) float64 {
	switch t.DType {
	case tensor.FP16:
		return halfToFloat(binary.LittleEndian.Uint16(t.Data[2*i:]))
	case tensor.BF16:
		return bfloatToFloat(binary.LittleEndian.Uint16(t.Data[2*i:]))
	case tensor.FP32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
}

func formatElem(t *tensor.Tensor, i int) string {
	size := t.DType.Size()
	switch t.DType {
	case tensor.FP16, tensor.BF16, tensor.FP32, tensor.FP64:
		return strconv.FormatFloat(floatAt(t, i), 'g', -1, 64)
	case tensor.Bool:
		return strconv.FormatBool(t.Data[i] != 0)
	case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
		return strconv.FormatUint(tensor.ReadUint(t.Data[i*size:], size), 10)
	}
	return strconv.FormatInt(tensor.ReadInt(t.Data[i*size:], size), 10)
}

func fmtShape(s []int64) string {
	if len(s) == 0 {
		return "[] (scalar)"
	}
	return fmt.Sprint(s)
}

func clipBytes(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:40:40], "..."...)
	}
	return b
}

// CompareOutputs checks a run's outputs against expected outputs, by
// position and name.
func CompareOutputs(got, want []tensor.Tensor, tol Tolerance) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d outputs, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name {
			return fmt.Errorf("output %d is %q, want %q", i, got[i].Name, want[i].Name)
		}
		if err := Compare(&got[i], &want[i], tol); err != nil {
			return fmt.Errorf("output %q: %w", want[i].Name, err)
		}
	}
	return nil
}
