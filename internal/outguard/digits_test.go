package outguard_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// digitsRun runs testdata/models/digits on the held-out rows in process
// and returns its outputs (label, probabilities) and the true labels.
func digitsRun(t *testing.T) ([]tensor.Tensor, []int64) {
	t.Helper()
	servertest.InitRuntime(t)
	root := servertest.RepoRoot(t)
	model, err := os.ReadFile(filepath.Join(root, "testdata", "models", "digits", "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := onnx.NewSession(model, onnx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := os.ReadFile(filepath.Join(root, "testdata", "digits", "heldout.json"))
	if err != nil {
		t.Fatal(err)
	}
	var held struct {
		Inputs [][]float64 `json:"inputs"`
		Labels []int64     `json:"labels"`
	}
	if err := json.Unmarshal(raw, &held); err != nil {
		t.Fatal(err)
	}
	in := fp32("input", held.Inputs)
	res, err := s.Run(context.Background(), []*tensor.Tensor{&in})
	if err != nil {
		t.Fatal(err)
	}
	return res.Outputs, held.Labels
}

// served reads back what a client would: the predicted class of each row
// from every output that says it (label, argmax of probabilities, first
// top-k index), checking they agree, and how many scores each row got.
func served(t *testing.T, outs []pipeline.OutputTensor, rows int) (pred []int64, scoresPerRow int) {
	t.Helper()
	pred = make([]int64, rows)
	for i := range pred {
		pred[i] = -1
	}
	agree := func(r int, c int64, from string) {
		if pred[r] >= 0 && pred[r] != c {
			t.Fatalf("row %d: %s says %d, another output %d", r, from, c, pred[r])
		}
		pred[r] = c
	}
	if l := byName(outs, "label"); l != nil {
		for r, c := range intsOf(*l) {
			agree(r, c, "label")
		}
	}
	if p := byName(outs, "probabilities"); p != nil {
		v := floatsOf(*p)
		scoresPerRow = 10
		for r := range rows {
			agree(r, int64(argmaxOf(v[r*10:r*10+10])), "argmax(probabilities)")
			for j := 1; j < 10; j++ {
				if v[r*10+j] == v[r*10+argmaxOf(v[r*10:r*10+10])] && j != argmaxOf(v[r*10:r*10+10]) {
					t.Fatalf("row %d: top score tied", r)
				}
			}
		}
	}
	if p := byName(outs, "topk_indices"); p != nil {
		idx := intsOf(*p)
		k := int(p.Shape[1])
		vals := floatsOf(*byName(outs, "topk_values"))
		scoresPerRow = k
		for r := range rows {
			agree(r, idx[r*k], "topk_indices[0]")
			for j := 1; j < k; j++ {
				if !(vals[r*k] > vals[r*k+j]) {
					t.Fatalf("row %d: top-k values %v not led by a strict maximum", r, vals[r*k:r*k+k])
				}
			}
		}
	}
	for r, c := range pred {
		if c < 0 {
			t.Fatalf("row %d: no output says the class", r)
		}
	}
	return pred, scoresPerRow
}

func accuracy(pred, truth []int64) float64 {
	n := 0
	for i := range pred {
		if pred[i] == truth[i] {
			n++
		}
	}
	return float64(n) / float64(len(pred))
}

func TestDigitsTop1Unchanged(t *testing.T) {
	raw, truth := digitsRun(t)
	rows := len(truth)
	rawOuts := make([]pipeline.OutputTensor, len(raw))
	for i := range raw {
		rawOuts[i] = pipeline.OutputTensor{Tensor: raw[i]}
	}
	rawPred, _ := served(t, rawOuts, rows)
	rawAcc := accuracy(rawPred, truth)
	t.Logf("raw: top-1 accuracy %.4f on %d held-out rows", rawAcc, rows)
	if rawAcc < 0.9 {
		t.Fatalf("raw accuracy %.4f: the fixture is not the digits classifier", rawAcc)
	}

	rs := outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}
	tests := []struct {
		name      string
		policy    outguard.Policy
		maxScores int
	}{
		{"round 2", outguard.Policy{Detail: pipeline.OutputFull, Round: 2}, 10},
		{"round 0", outguard.Policy{Detail: pipeline.OutputFull, Round: 0}, 10},
		{"top_k 3", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 3, Round: outguard.RoundOff}, 3},
		{"default (top_k 1, round 2)", outguard.Default(), 1},
		{"reverse sigmoid", outguard.Policy{Detail: pipeline.OutputFull, Round: outguard.RoundOff, ReverseSigmoid: rs}, 10},
		{"reverse sigmoid γ=2", outguard.Policy{Detail: pipeline.OutputFull, Round: outguard.RoundOff, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 1, Gamma: 2}}, 10},
		{"reverse sigmoid, top_k 3, round 2", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 3, Round: 2, ReverseSigmoid: rs}, 3},
		{"label", outguard.Policy{Detail: pipeline.OutputLabel}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Without the label output too: the prediction must survive in
			// the scores alone.
			for _, withLabel := range []bool{true, false} {
				var in []pipeline.OutputTensor
				for _, o := range raw {
					if o.Name != "label" || withLabel {
						in = append(in, pipeline.OutputTensor{Tensor: o})
					}
				}
				out, err := outguard.Apply(tc.policy, in, digitsSpecs)
				if err != nil {
					t.Fatal(err)
				}
				pred, k := served(t, out, rows)
				if k > tc.maxScores {
					t.Errorf("%d scores per row served, want at most %d", k, tc.maxScores)
				}
				for r := range pred {
					if pred[r] != rawPred[r] {
						t.Fatalf("row %d (label output served: %v): predicted %d, raw %d", r, withLabel, pred[r], rawPred[r])
					}
				}
			}
		})
	}
}

func TestDigitsReverseSigmoidPerturbs(t *testing.T) {
	raw, truth := digitsRun(t)
	p := outguard.Policy{Detail: pipeline.OutputFull, Round: outguard.RoundOff, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}}
	out, err := outguard.Apply(p, []pipeline.OutputTensor{{Tensor: raw[0]}, {Tensor: raw[1]}}, digitsSpecs)
	if err != nil {
		t.Fatal(err)
	}
	before, after := floatsOf(raw[1]), floatsOf(*byName(out, "probabilities"))
	// Among the classes below the top, the order of log-ratios is what
	// equation-solving reads; count rows where the perturbation reverses
	// the order of the two least likely classes.
	reversed := 0
	for r := range truth {
		b, a := before[r*10:r*10+10], after[r*10:r*10+10]
		lo, hi := -1, -1 // the least and the second least likely
		for i := range b {
			switch {
			case lo < 0 || b[i] < b[lo]:
				hi, lo = lo, i
			case hi < 0 || b[i] < b[hi]:
				hi = i
			}
		}
		if b[lo] < b[hi] && a[lo] > a[hi] {
			reversed++
		}
		sum := 0.0
		for _, x := range a {
			sum += x
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("row %d sums to %v", r, sum)
		}
	}
	t.Logf("reverse sigmoid β=0.5 γ=0.2: %d of %d rows have their two least likely classes in reverse order", reversed, len(truth))
	if reversed < len(truth)/2 {
		t.Errorf("only %d of %d rows reversed: the perturbation is not deceiving", reversed, len(truth))
	}
}

// TestDefaultPolicyGivesNoLogRatios checks the structural reason the
// default defeats equation-solving: no answer carries two non-zero scores,
// so no answer yields a log-ratio equation.
func TestDefaultPolicyGivesNoLogRatios(t *testing.T) {
	raw, truth := digitsRun(t)
	out, err := outguard.Apply(outguard.Default(), []pipeline.OutputTensor{{Tensor: raw[0]}, {Tensor: raw[1]}}, digitsSpecs)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if isFloat := o.DType == tensor.FP32 || o.DType == tensor.FP64; isFloat && o.Shape[1] != 1 {
			t.Fatalf("output %s %v: more than one score per row", o.Name, o.Shape)
		}
	}
	vals := floatsOf(*byName(out, "topk_values"))
	if len(vals) != len(truth) {
		t.Fatalf("%d scores for %d rows", len(vals), len(truth))
	}
	probs := floatsOf(raw[1])
	same, lo, hi := 0, 1.0, 0.0
	for r, v := range vals {
		if q := v * 100; math.Abs(q-math.Round(q)) > 1e-4 {
			t.Fatalf("row %d: score %v has more than 2 decimals", r, v)
		}
		top := probs[r*10 : r*10+10][argmaxOf(probs[r*10:r*10+10])]
		if float32(v) == float32(math.Round(top*100)/100) {
			same++
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	// The one score is perturbed: it is not the top probability rounded.
	t.Logf("default policy: served scores in [%.2f, %.2f]; %d of %d equal the rounded top probability", lo, hi, same, len(vals))
	if same > len(vals)/10 {
		t.Errorf("%d of %d served scores are the rounded top probability: the perturbation is off", same, len(vals))
	}
}
