package outguard_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func fp32(name string, rows [][]float64) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.FP32, Shape: []int64{int64(len(rows)), 0}}
	for _, r := range rows {
		t.Shape[1] = int64(len(r))
		for _, v := range r {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(v)))
		}
	}
	return t
}

func fp64(name string, rows [][]float64) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.FP64, Shape: []int64{int64(len(rows)), 0}}
	for _, r := range rows {
		t.Shape[1] = int64(len(r))
		for _, v := range r {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(v))
		}
	}
	return t
}

func i64(name string, shape []int64, vals ...int64) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.Int64, Shape: shape}
	for _, v := range vals {
		t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(v))
	}
	return t
}

func floatsOf(t tensor.Tensor) []float64 {
	var v []float64
	switch t.DType {
	case tensor.FP32:
		for i := 0; i+4 <= len(t.Data); i += 4 {
			v = append(v, float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[i:]))))
		}
	case tensor.FP64:
		for i := 0; i+8 <= len(t.Data); i += 8 {
			v = append(v, math.Float64frombits(binary.LittleEndian.Uint64(t.Data[i:])))
		}
	}
	return v
}

func intsOf(t tensor.Tensor) []int64 {
	var v []int64
	size := t.DType.Size()
	for i := 0; size > 0 && i+size <= len(t.Data); i += size {
		v = append(v, tensor.ReadInt(t.Data[i:], size))
	}
	return v
}

func outputs(ts ...tensor.Tensor) []pipeline.OutputTensor {
	out := make([]pipeline.OutputTensor, len(ts))
	for i, t := range ts {
		out[i] = pipeline.OutputTensor{Tensor: t}
	}
	return out
}

func byName(outs []pipeline.OutputTensor, name string) *tensor.Tensor {
	for i := range outs {
		if outs[i].Name == name {
			return &outs[i].Tensor
		}
	}
	return nil
}

func names(outs []pipeline.OutputTensor) []string {
	var n []string
	for _, o := range outs {
		n = append(n, o.Name)
	}
	return n
}

func argmaxOf(row []float64) int {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best
}

// digitsSpecs are the declared outputs of testdata/models/digits.
var digitsSpecs = []tensor.Spec{
	{Name: "label", DType: tensor.Int64, Shape: []int64{-1}},
	{Name: "probabilities", DType: tensor.FP32, Shape: []int64{-1, 10}},
}

func equalInts(t *testing.T, what string, got, want []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s[%d]: got %d, want %d", what, i, got[i], want[i])
		}
	}
}
