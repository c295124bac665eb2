package conformance

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/tensor"
)

func f32(shape []int64, vs ...float32) tensor.Tensor {
	return tensor.Tensor{Name: "y", DType: tensor.FP32, Shape: shape, Data: le32(vs...)}
}

func f64(vs ...float64) tensor.Tensor {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return tensor.Tensor{Name: "y", DType: tensor.FP64, Shape: []int64{int64(len(vs))}, Data: b}
}

func half(bits ...uint16) tensor.Tensor {
	var b []byte
	for _, v := range bits {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return tensor.Tensor{Name: "y", DType: tensor.FP16, Shape: []int64{int64(len(bits))}, Data: b}
}

func strs(ss ...string) tensor.Tensor {
	t := tensor.Tensor{Name: "y", DType: tensor.Bytes, Shape: []int64{int64(len(ss))}}
	for _, s := range ss {
		t.Strings = append(t.Strings, []byte(s))
	}
	return t
}

func TestCompare(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	one := []int64{1}
	tests := []struct {
		name      string
		got, want tensor.Tensor
		tol       Tolerance
		err       string // substring; "" to pass
	}{
		{"equal", f32(one, 1.5), f32(one, 1.5), BackendTolerance, ""},
		{"within rtol", f32(one, 1000.9), f32(one, 1000), BackendTolerance, ""},
		{"beyond rtol", f32(one, 1001.1), f32(one, 1000), BackendTolerance, "1 of 1 elements differ"},
		{"within atol near zero", f32(one, 5e-8), f32(one, 0), BackendTolerance, ""},
		{"beyond atol near zero", f32(one, 2e-7), f32(one, 0), BackendTolerance, "differ"},
		{"relative to want, not got", f64(2.0021), f64(2), BackendTolerance, "differ"},
		{"NaN equals NaN", f32(one, nan), f32(one, nan), BackendTolerance, ""},
		{"NaN is not a number", f32(one, 0), f32(one, nan), BackendTolerance, "differ"},
		{"number is not NaN", f32(one, nan), f32(one, 0), BackendTolerance, "differ"},
		{"infinity equals itself", f32(one, inf), f32(one, inf), BackendTolerance, ""},
		{"infinities of opposite sign", f32(one, -inf), f32(one, inf), BackendTolerance, "differ"},
		{"finite is not infinite", f32(one, math.MaxFloat32), f32(one, inf), BackendTolerance, "differ"},
		{"exact refuses one ulp", f32(one, math.Nextafter32(1, 2)), f32(one, 1), Exact, "differ"},
		{"exact accepts NaN", f32(one, nan), f32(one, nan), Exact, ""},
		{"exact tells -0 from 0", f32(one, float32(math.Copysign(0, -1))), f32(one, 0), Exact, "differ"},
		{"tolerance does not", f32(one, float32(math.Copysign(0, -1))), f32(one, 0), BackendTolerance, ""},
		{"FP16 within tolerance", half(0x3c00), half(0x3c00), BackendTolerance, ""},
		{"FP16 one ulp is within rtol at 1", half(0x3c01), half(0x3c00), BackendTolerance, ""},
		{"FP16 two ulps are not", half(0x3c02), half(0x3c00), BackendTolerance, "differ"},
		{"datatype", f64(1), f32(one, 1), BackendTolerance, "datatype FP64, want FP32"},
		{"scalar is not [1]", f32([]int64{}, 1), f32(one, 1), BackendTolerance, "shape [] (scalar), want [1]"},
		{"shape", f32([]int64{2, 1}, 1, 2), f32([]int64{1, 2}, 1, 2), BackendTolerance, "shape"},
		{"empty", f32([]int64{0, 3}), f32([]int64{0, 3}), BackendTolerance, ""},
		{"integers exact", tensor.Tensor{DType: tensor.Int64, Shape: one, Data: binary.LittleEndian.AppendUint64(nil, 1<<60)},
			tensor.Tensor{DType: tensor.Int64, Shape: one, Data: binary.LittleEndian.AppendUint64(nil, 1<<60+1)}, BackendTolerance,
			"got 1152921504606846976, want 1152921504606846977"},
		{"bool", tensor.Tensor{DType: tensor.Bool, Shape: []int64{2}, Data: []byte{1, 0}},
			tensor.Tensor{DType: tensor.Bool, Shape: []int64{2}, Data: []byte{1, 1}}, BackendTolerance, "got false, want true"},
		{"strings equal", strs("a", ""), strs("a", ""), BackendTolerance, ""},
		{"strings differ", strs("a", "b"), strs("a", "c"), BackendTolerance, `first at 1: got "b", want "c"`},
		{"short data", tensor.Tensor{DType: tensor.FP32, Shape: []int64{2}, Data: le32(1)}, f32([]int64{2}, 1, 2), BackendTolerance, "4 bytes of data, want 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Compare(&tt.got, &tt.want, tt.tol)
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("got %v, want a match", err)
			case tt.err != "" && err == nil:
				t.Errorf("got a match, want an error containing %q", tt.err)
			case tt.err != "" && !strings.Contains(err.Error(), tt.err):
				t.Errorf("got %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

func TestCompareOutputs(t *testing.T) {
	a := f32([]int64{1}, 1)
	b := a
	b.Name = "z"
	if err := CompareOutputs([]tensor.Tensor{a}, []tensor.Tensor{a}, BackendTolerance); err != nil {
		t.Errorf("got %v, want a match", err)
	}
	if err := CompareOutputs([]tensor.Tensor{b}, []tensor.Tensor{a}, BackendTolerance); err == nil || !strings.Contains(err.Error(), `output 0 is "z", want "y"`) {
		t.Errorf("got %v, want a name mismatch", err)
	}
	if err := CompareOutputs(nil, []tensor.Tensor{a}, BackendTolerance); err == nil {
		t.Error("got a match for a missing output")
	}
}
