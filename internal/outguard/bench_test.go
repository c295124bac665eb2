package outguard_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// BenchmarkApply measures shaping a digits-like response (label INT64
// [B], probabilities FP32 [B,10]) under each kind of policy.
func BenchmarkApply(b *testing.B) {
	policies := []struct {
		name string
		p    outguard.Policy
	}{
		{"full", outguard.Full()},
		{"default", outguard.Default()},
		{"top1_round2", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 1, Round: 2}},
		{"round2", outguard.Policy{Detail: pipeline.OutputFull, Round: 2}},
		{"reverse_sigmoid", outguard.Policy{Detail: pipeline.OutputFull, Round: 3, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}}},
	}
	for _, batch := range []int{1, 64} {
		rng := rand.New(rand.NewPCG(1, 2))
		rows := make([][]float64, batch)
		labels := make([]int64, batch)
		for r := range rows {
			rows[r] = make([]float64, 10)
			sum := 0.0
			for c := range rows[r] {
				rows[r][c] = rng.Float64()
				sum += rows[r][c]
			}
			for c := range rows[r] {
				rows[r][c] /= sum
			}
			labels[r] = int64(argmaxOf(rows[r]))
		}
		outs := outputs(i64("label", []int64{int64(batch)}, labels...), fp32("probabilities", rows))
		for _, pc := range policies {
			b.Run(fmt.Sprintf("%s/batch=%d", pc.name, batch), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := outguard.Apply(pc.p, outs, digitsSpecs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkGuard measures the stage as the server runs it on a digits-like
// single-row answer: the model's policy narrowed by a principal's scopes,
// the layout resolved, the answer shaped (default policy) and released
// after encoding, with a marker that marks nothing (the watermark's own
// cost is BenchmarkServiceMark's, in package watermark).
func BenchmarkGuard(b *testing.B) {
	row := []float64{0.01, 0.02, 0.03, 0.6, 0.04, 0.05, 0.06, 0.07, 0.08, 0.04}
	outs := outputs(i64("label", []int64{1}, 3), fp32("probabilities", [][]float64{row}))
	m := &model{outs: func() []pipeline.OutputTensor { return outs }}
	for _, tc := range []struct {
		name string
		mk   outguard.Marker
	}{
		{"default", nil},
		{"default+marker", marker{
			MarksFunc: func(pipeline.Target) bool { return true },
			MarkFunc:  func(context.Context, pipeline.Target, []tensor.Tensor, []int64, int) {},
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return outguard.Default() }, Marker: tc.mk}
			h := pipeline.Chain(m, g.Stage)
			ctx := pipeline.WithPrincipal(context.Background(), &pipeline.Principal{ID: "key:a"})
			req := &pipeline.Request{Model: "m"}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := h.Infer(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Release()
			}
		})
	}
}
