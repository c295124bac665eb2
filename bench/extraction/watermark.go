package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
	"github.com/aegis-inference/aegis/bench/extraction/learn"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// The watermark is verified as an operator verifies it (`aegis watermark
// verify`, docs/watermark.md): with the server stopped, the pairs it
// recorded for the suspected principals (every marked answer they were
// given: the input and the watermark label) are read from its state
// store, the suspect model answers each recorded input, and
// watermark.Verify tests how often it reproduces the watermark label,
// and how often its scores rank the watermark label first of the wrong
// classes, against the 1/(C−1) chance of a model built without those
// answers. The
// suspect here is the attacker's surrogate itself, evaluated in Go (the
// CLI would run it as ONNX), and, for contrast, a model of the same
// architecture trained without the server.

// errNoPairs means the server recorded no marked answer for the
// principals: no watermark on the model, or too few queries to be marked.
var errNoPairs = errors.New("no watermark pairs recorded")

// verifyWatermark tests suspects against the pairs the stopped instance
// recorded for principals on model. It returns one result per suspect.
func verifyWatermark(stateDir, model string, principals []string, suspects ...learn.Classifier) ([]watermark.Result, error) {
	st, err := state.OpenBolt(stateDir)
	if err != nil {
		return nil, fmt.Errorf("open state store: %w", err)
	}
	defer st.Close()
	var pairs []watermark.Pair
	for _, p := range principals {
		ps, err := watermark.Pairs(st.DB(), p)
		if err != nil {
			return nil, fmt.Errorf("pairs of %s: %w", p, err)
		}
		for _, pr := range ps {
			if pr.Model == model {
				pairs = append(pairs, pr)
			}
		}
	}
	if len(pairs) == 0 {
		return nil, errNoPairs
	}
	var out []watermark.Result
	for _, s := range suspects {
		scorer, _ := s.(scorer)
		res, err := watermark.Verify(pairs, func(p *watermark.Pair) (watermark.Answer, error) {
			x, err := pairInput(p)
			if err != nil {
				return watermark.Answer{}, err
			}
			if scorer != nil {
				probs := scorer.Probs(x)
				return watermark.Answer{Label: int64(learn.Argmax(probs)), Scores: probs}, nil
			}
			return watermark.Answer{Label: int64(s.Predict(x))}, nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

// scorer is a suspect that gives its scores, as the attackers' networks
// (learn.Net) do: the verifier then ranks the watermark label among them
// too.
type scorer interface {
	Probs(x []float64) []float64
}

// pairInput decodes a recorded digits row: one FP32 input of 64 values.
func pairInput(p *watermark.Pair) ([]float64, error) {
	if len(p.Inputs) != 1 || p.Inputs[0].DType != tensor.FP32 || len(p.Inputs[0].Data) != 4*attack.Dim {
		return nil, fmt.Errorf("recorded input is not one FP32 row of %d values", attack.Dim)
	}
	d := p.Inputs[0].Data
	x := make([]float64, attack.Dim)
	for i := range x {
		x[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:])))
	}
	return x, nil
}
