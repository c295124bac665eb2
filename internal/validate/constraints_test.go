package validate

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func f32(vs ...float32) *tensor.Tensor {
	t := &tensor.Tensor{Name: "x", DType: tensor.FP32, Shape: []int64{int64(len(vs))}}
	for _, v := range vs {
		t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
	}
	return t
}

func ptr(v float64) *float64 { return &v }

func TestConstraints(t *testing.T) {
	specs := []tensor.Spec{{Name: "x", DType: tensor.FP32, Shape: []int64{-1}}, {Name: "s", DType: tensor.Bytes, Shape: []int64{-1}},
		{Name: "k", DType: tensor.Int64, Shape: []int64{-1}}}
	rules := &Rules{Inputs: map[string]InputRule{
		"x": {Min: ptr(0), Max: ptr(16)},
		"s": {MaxStringBytes: 4, AllowedStrings: []string{"yes", "no"}, Action: ActionFlag},
		"k": {Allowed: []float64{1, 2, 3}, Action: ActionCount},
	}}
	c, err := Compile(rules, specs, "")
	if err != nil {
		t.Fatal(err)
	}
	str := func(ss ...string) *tensor.Tensor {
		t := &tensor.Tensor{Name: "s", DType: tensor.Bytes, Shape: []int64{int64(len(ss))}}
		for _, s := range ss {
			t.Strings = append(t.Strings, []byte(s))
		}
		return t
	}
	i64 := func(vs ...int64) *tensor.Tensor {
		t := &tensor.Tensor{Name: "k", DType: tensor.Int64, Shape: []int64{int64(len(vs))}}
		for _, v := range vs {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(v))
		}
		return t
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name   string
		in     []*tensor.Tensor
		reject string
		flags  []string
	}{
		{"all in range", []*tensor.Tensor{f32(0, 5.5, 16), str("yes", "no"), i64(1, 3)}, "", nil},
		{"below min", []*tensor.Tensor{f32(0, -0.001)}, msgRange, nil},
		{"above max", []*tensor.Tensor{f32(16.5)}, msgRange, nil},
		{"NaN is in no range", []*tensor.Tensor{f32(1, nan)}, msgRange, nil},
		{"infinity", []*tensor.Tensor{f32(inf)}, msgRange, nil},
		{"string not allowed: flagged", []*tensor.Tensor{f32(1), str("maybe")}, "", []string{"validation:string:s"}},
		{"string too long: flagged", []*tensor.Tensor{nil, str("yes", "nooooo")}, "", []string{"validation:string:s"}},
		{"int not allowed: counted", []*tensor.Tensor{nil, nil, i64(1, 4)}, "", nil},
	} {
		res, err := c.Check(tc.in)
		if tc.reject != "" {
			if k, msg := apierr.Public(err); k != apierr.InvalidArgument || !strings.Contains(msg, tc.reject) || !strings.Contains(msg, `"x"`) {
				t.Errorf("%s: got %v, want 400 %q", tc.name, err, tc.reject)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if strings.Join(res.Flags, ";") != strings.Join(tc.flags, ";") {
			t.Errorf("%s: flags %v, want %v", tc.name, res.Flags, tc.flags)
		}
	}
	v := c.Violations()
	if v["x"] != 4 || v["s"] != 2 || v["k"] != 1 {
		t.Errorf("violations %v", v)
	}
}

func TestConstraintsCompileErrors(t *testing.T) {
	specs := []tensor.Spec{{Name: "x", DType: tensor.FP32}, {Name: "s", DType: tensor.Bytes}}
	for _, tc := range []struct {
		name string
		r    Rules
		want string
	}{
		{"unknown input", Rules{Inputs: map[string]InputRule{"y": {}}}, "no input"},
		{"bad action", Rules{Inputs: map[string]InputRule{"x": {Action: "drop"}}}, "action"},
		{"min above max", Rules{Inputs: map[string]InputRule{"x": {Min: ptr(2), Max: ptr(1)}}}, "above max"},
		{"string rule on numbers", Rules{Inputs: map[string]InputRule{"x": {MaxStringBytes: 3}}}, "string constraints"},
		{"number rule on strings", Rules{Inputs: map[string]InputRule{"s": {Min: ptr(0)}}}, "numeric constraints"},
	} {
		if _, err := Compile(&tc.r, specs, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestFP16 checks the half-precision conversion on exact values.
func TestFP16(t *testing.T) {
	for h, want := range map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.9604645e-08, 0x0000: 0, 0x3555: 0.33325195} {
		if got := fp16(h); got != want {
			t.Errorf("fp16(%#x) = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(fp16(0x7c00)), 1) || !math.IsNaN(float64(fp16(0x7e00))) {
		t.Error("fp16 infinity or NaN")
	}
}

// BenchmarkCheck: a range rule over the 784 inputs of an MLP request.
func BenchmarkCheck(b *testing.B) {
	c, _ := Compile(&Rules{Inputs: map[string]InputRule{"x": {Min: ptr(-10), Max: ptr(10)}}}, []tensor.Spec{{Name: "x", DType: tensor.FP32}}, "")
	vs := make([]float32, 784)
	in := []*tensor.Tensor{f32(vs...)}
	for b.Loop() {
		c.Check(in)
	}
}
