package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func fp32Tensor(name string, shape []int64, vals []float32) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.FP32, Shape: shape, Data: []byte{}}
	for _, v := range vals {
		t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
	}
	return t
}

func int64Tensor(name string, shape []int64, vals []int64) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.Int64, Shape: shape, Data: []byte{}}
	for _, v := range vals {
		t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(v))
	}
	return t
}

func fp32s(t tensor.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

func int64s(t tensor.Tensor) []int64 {
	out := make([]int64, len(t.Data)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out
}

// TestDigitsAccuracy classifies the held-out digits through every transport:
// the demo model is a real classifier, and the server must preserve that.
func TestDigitsAccuracy(t *testing.T) {
	var held struct {
		Inputs [][]float32 `json:"inputs"`
		Labels []int64     `json:"labels"`
	}
	b, err := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "digits", "heldout.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &held); err != nil {
		t.Fatal(err)
	}
	n := len(held.Inputs)
	var flat []float32
	for _, row := range held.Inputs {
		flat = append(flat, row...)
	}
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	for _, c := range srv.Clients(t) {
		t.Run(c.Name(), func(t *testing.T) {
			resp, err := c.Infer(context.Background(), &servertest.Request{
				Model:   "digits",
				Inputs:  []tensor.Tensor{fp32Tensor("input", []int64{int64(n), 64}, flat)},
				Outputs: []string{"label"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Outputs) != 1 || resp.Outputs[0].Name != "label" {
				t.Fatalf("got outputs %v, want only label", resp.Outputs)
			}
			correct := 0
			for i, l := range int64s(resp.Outputs[0]) {
				if l == held.Labels[i] {
					correct++
				}
			}
			if acc := float64(correct) / float64(n); acc < 0.95 {
				t.Errorf("accuracy %.3f on %d held-out digits, want >= 0.95", acc, n)
			}
		})
	}
}

// TestMultiIOArithmetic checks multi-input, multi-output results against
// arithmetic done here, and that requesting a subset returns just that.
func TestMultiIOArithmetic(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	a := []float32{1.5, -2, 3, 0.25, 10, 20, 30, 40}
	bv := []int64{1, 2, 3, 4, -5, -6, -7, -8}
	for _, c := range srv.Clients(t) {
		t.Run(c.Name(), func(t *testing.T) {
			resp, err := c.Infer(context.Background(), &servertest.Request{
				Model:   "multi_io",
				Inputs:  []tensor.Tensor{int64Tensor("b", []int64{2, 4}, bv), fp32Tensor("a", []int64{2, 4}, a)},
				Outputs: []string{"argmax", "sum"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "argmax" || resp.Outputs[1].Name != "sum" {
				t.Fatalf("got %d outputs, want argmax then sum", len(resp.Outputs))
			}
			if got := int64s(resp.Outputs[0]); got[0] != 2 || got[1] != 3 {
				t.Errorf("argmax = %v, want [2 3]", got)
			}
			for i, s := range fp32s(resp.Outputs[1]) {
				if want := a[i] + float32(bv[i]); s != want {
					t.Errorf("sum[%d] = %v, want %v", i, s, want)
				}
			}
		})
	}
}

// TestScalars covers rank-0 tensors in and out.
func TestScalars(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	for _, c := range srv.Clients(t) {
		t.Run(c.Name(), func(t *testing.T) {
			resp, err := c.Infer(context.Background(), &servertest.Request{
				Model:  "scalar_in",
				Inputs: []tensor.Tensor{fp32Tensor("s", []int64{}, []float32{2.5}), fp32Tensor("x", []int64{3}, []float32{1, 2, 4})},
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := fp32s(resp.Outputs[0]); len(got) != 3 || got[0] != 2.5 || got[2] != 10 {
				t.Errorf("y = %v, want [2.5 5 10]", got)
			}
			resp, err = c.Infer(context.Background(), &servertest.Request{
				Model:  "scalar",
				Inputs: []tensor.Tensor{fp32Tensor("x", []int64{2, 2}, []float32{1, 2, 3, 4.5})},
			})
			if err != nil {
				t.Fatal(err)
			}
			if o := resp.Outputs[0]; len(o.Shape) != 0 || fp32s(o)[0] != 10.5 {
				t.Errorf("total: shape %v data %v, want scalar 10.5", o.Shape, fp32s(o))
			}
		})
	}
}

// TestNonFiniteFloats sends NaN and infinities through every encoding.
func TestNonFiniteFloats(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	in := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), -0.0, 3.4028235e38}
	for _, c := range srv.Clients(t) {
		t.Run(c.Name(), func(t *testing.T) {
			resp, err := c.Infer(context.Background(), &servertest.Request{
				Model: "dtype_fp32", Inputs: []tensor.Tensor{fp32Tensor("x", []int64{1, 5}, in)}, Outputs: []string{"y"},
			})
			if err != nil {
				t.Fatal(err)
			}
			got := fp32s(resp.Outputs[0])
			if !math.IsNaN(float64(got[0])) || !math.IsInf(float64(got[1]), 1) || !math.IsInf(float64(got[2]), -1) || got[4] != in[4] {
				t.Errorf("got %v, want %v", got, in)
			}
		})
	}
}
