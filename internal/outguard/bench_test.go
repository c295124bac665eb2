package outguard_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
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
