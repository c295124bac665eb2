package watermarktest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Heldout reads testdata/digits/heldout.json under the repository root.
func Heldout(root string) (inputs [][]float64, labels []int64, err error) {
	raw, err := os.ReadFile(filepath.Join(root, "testdata", "digits", "heldout.json"))
	if err != nil {
		return nil, nil, err
	}
	var held struct {
		Inputs [][]float64 `json:"inputs"`
		Labels []int64     `json:"labels"`
	}
	if err := json.Unmarshal(raw, &held); err != nil {
		return nil, nil, fmt.Errorf("heldout.json: %w", err)
	}
	return held.Inputs, held.Labels, nil
}

// Queries returns n query rows for an attacker of the digits model: the
// held-out rows, then noisy copies of them (Gaussian noise of standard
// deviation 1.5, clipped to the 0..16 pixel range), the same for a seed.
func Queries(heldout [][]float64, n int, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([][]float32, n)
	for i := range out {
		src := heldout[i%len(heldout)]
		row := make([]float32, len(src))
		for j, v := range src {
			if i >= len(heldout) {
				v = math.Min(16, math.Max(0, v+1.5*rng.NormFloat64()))
			}
			row[j] = float32(v)
		}
		out[i] = row
	}
	return out
}

// FP32 returns rows as an FP32 [len(rows), D] tensor.
func FP32(name string, rows [][]float32) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.FP32, Shape: []int64{int64(len(rows)), 0}}
	for _, r := range rows {
		t.Shape[1] = int64(len(r))
		for _, v := range r {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
		}
	}
	return t
}

// Target is a model version as the guard sees it.
type Target struct {
	Model, Ver string
	Specs      []tensor.Spec
}

// Name implements pipeline.Target.
func (t Target) Name() string { return t.Model }

// Version implements pipeline.Target.
func (t Target) Version() string { return t.Ver }

// Outputs returns the declared outputs, as repository.Version does.
func (t Target) Outputs() []tensor.Spec { return t.Specs }

// Victim serves a model in process through a Guard, as the server's chain
// does after inference: the answers a principal gets.
type Victim struct {
	Session *onnx.Session
	Target  Target
	Guard   *outguard.Guard
}

// Query answers rows (one input named input) as principal and returns the
// label each was answered with.
func (v *Victim) Query(ctx context.Context, principal string, input string, rows [][]float32) ([]int64, error) {
	h := pipeline.Chain(pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
		req.Target = v.Target
		in := make([]*tensor.Tensor, len(req.Inputs))
		for i := range req.Inputs {
			in[i] = &req.Inputs[i]
		}
		res, err := v.Session.Run(ctx, in)
		if err != nil {
			return nil, err
		}
		resp := &pipeline.Response{Model: v.Target.Model, Version: v.Target.Ver}
		for _, o := range res.Outputs {
			resp.Outputs = append(resp.Outputs, pipeline.OutputTensor{Tensor: o})
		}
		return resp, nil
	}), v.Guard.Stage)
	ctx = pipeline.WithPrincipal(ctx, &pipeline.Principal{ID: principal, Method: pipeline.MethodAPIKey})
	resp, err := h.Infer(ctx, &pipeline.Request{Model: v.Target.Model, Inputs: []tensor.Tensor{FP32(input, rows)}})
	if err != nil {
		return nil, err
	}
	ts := make([]tensor.Tensor, len(resp.Outputs))
	for i := range resp.Outputs {
		ts[i] = resp.Outputs[i].Tensor
	}
	for _, t := range ts {
		if t.Name == outguard.TopKIndices {
			k := int(t.Shape[1])
			labels := make([]int64, len(rows))
			for r := range labels {
				labels[r] = int64(binary.LittleEndian.Uint64(t.Data[8*r*k:]))
			}
			return labels, nil
		}
	}
	return outguard.Labels(ts, nil, "", "")
}
