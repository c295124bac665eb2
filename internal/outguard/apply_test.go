package outguard_test

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

var probRows = [][]float64{
	{0.1, 0.6, 0.25, 0.05},
	{0.7, 0.1, 0.1, 0.1},
	{0.004, 0.001, 0.4951, 0.4999}, // 2 and 3 round to the same 0.50
}

var probLabels = []int64{1, 0, 3}

func probOutputs() []pipeline.OutputTensor {
	return outputs(i64("label", []int64{3}, probLabels...), fp32("probabilities", probRows))
}

var probSpecs = []tensor.Spec{
	{Name: "label", DType: tensor.Int64, Shape: []int64{-1}},
	{Name: "probabilities", DType: tensor.FP32, Shape: []int64{-1, 4}},
}

func TestApplyWireShapes(t *testing.T) {
	type want struct {
		name  string
		dtype tensor.DType
		shape []int64
	}
	tests := []struct {
		name   string
		policy outguard.Policy
		want   []want
	}{
		{"full", outguard.Policy{Detail: pipeline.OutputFull, Round: 2}, []want{
			{"label", tensor.Int64, []int64{3}}, {"probabilities", tensor.FP32, []int64{3, 4}}}},
		{"top_k 2", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 2, Round: outguard.RoundOff}, []want{
			{"label", tensor.Int64, []int64{3}}, {"topk_values", tensor.FP32, []int64{3, 2}}, {"topk_indices", tensor.Int64, []int64{3, 2}}}},
		{"top_k above the class count", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 9, Round: 2}, []want{
			{"label", tensor.Int64, []int64{3}}, {"topk_values", tensor.FP32, []int64{3, 4}}, {"topk_indices", tensor.Int64, []int64{3, 4}}}},
		{"default", outguard.Default(), []want{
			{"label", tensor.Int64, []int64{3}}, {"topk_values", tensor.FP32, []int64{3, 1}}, {"topk_indices", tensor.Int64, []int64{3, 1}}}},
		{"label", outguard.Policy{Detail: pipeline.OutputLabel}, []want{
			{"label", tensor.Int64, []int64{3}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := probOutputs()
			out, err := outguard.Apply(tc.policy, in, probSpecs)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(tc.want) {
				t.Fatalf("got outputs %v, want %d", names(out), len(tc.want))
			}
			for i, w := range tc.want {
				o := out[i]
				if o.Name != w.name || o.DType != w.dtype || !slices.Equal(o.Shape, w.shape) {
					t.Errorf("output %d: got %s %s %v, want %s %s %v", i, o.Name, o.DType, o.Shape, w.name, w.dtype, w.shape)
				}
				n, _ := tensor.NumElements(o.Shape)
				if len(o.Data) != int(n)*o.DType.Size() {
					t.Errorf("output %s: %d bytes for shape %v", o.Name, len(o.Data), o.Shape)
				}
			}
			equalInts(t, "label", intsOf(*byName(out, "label")), probLabels)
			if !bytes.Equal(in[1].Data, fp32("probabilities", probRows).Data) {
				t.Error("Apply changed the model's output buffer in place")
			}
		})
	}
}

func TestTopKValuesAndIndices(t *testing.T) {
	out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputTopK, TopK: 3, Round: outguard.RoundOff}, probOutputs(), probSpecs)
	if err != nil {
		t.Fatal(err)
	}
	vals, idx := floatsOf(*byName(out, "topk_values")), intsOf(*byName(out, "topk_indices"))
	wantIdx := []int64{1, 2, 0, 0, 1, 2, 3, 2, 0} // row 1 ties 0.1 three ways: lower index first
	equalInts(t, "topk_indices", idx, wantIdx)
	for i, c := range wantIdx {
		r := i / 3
		if got, want := vals[i], float64(float32(probRows[r][c])); got != want {
			t.Errorf("topk_values[%d]: got %v, want %v (class %d of row %d)", i, got, want, c, r)
		}
	}
}

func TestRoundingKeepsTopStrictlyHighest(t *testing.T) {
	out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputFull, Round: 2}, probOutputs(), probSpecs)
	if err != nil {
		t.Fatal(err)
	}
	got := floatsOf(*byName(out, "probabilities"))
	want := []float64{0.1, 0.6, 0.25, 0.05, 0.7, 0.1, 0.1, 0.1, 0, 0, 0.5, 0.51}
	for i := range want {
		if float32(got[i]) != float32(want[i]) {
			t.Errorf("probabilities[%d]: got %v, want %v", i, got[i], want[i])
		}
	}
	for r := range 3 {
		if a := argmaxOf(got[r*4 : r*4+4]); int64(a) != probLabels[r] {
			t.Errorf("row %d: argmax %d after rounding, want %d", r, a, probLabels[r])
		}
	}
}

func TestRoundDecimals(t *testing.T) {
	rows := [][]float64{{0.123456789, 0.876543211}, {1.0 / 3, 2.0 / 3}}
	for _, n := range []int{0, 1, 3, 6} {
		out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputFull, Round: n}, outputs(fp64("p", rows)), nil)
		if err != nil {
			t.Fatal(err)
		}
		scale := math.Pow10(n)
		for i, v := range floatsOf(out[0].Tensor) {
			if q := v * scale; math.Abs(q-math.Round(q)) > 1e-9 {
				t.Errorf("round %d: value %d is %v, not a multiple of 10^-%d", n, i, v, n)
			}
		}
	}
}

func TestLabelFromScoresWhenOnlyScoresAsked(t *testing.T) {
	// The caller asks for probabilities alone; under label the scores go and
	// a label made from them takes their place.
	in := outputs(fp32("probabilities", probRows))
	in[0].Binary = true
	out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputLabel}, in, probSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Name != "label" || out[0].DType != tensor.Int64 || !out[0].Binary {
		t.Fatalf("got %v, want one binary INT64 label", names(out))
	}
	equalInts(t, "label", intsOf(out[0].Tensor), probLabels)

	// Under top_k the same request gets the top-k outputs.
	out, err = outguard.Apply(outguard.Default(), outputs(fp32("probabilities", probRows)), probSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(out); !slices.Equal(got, []string{"topk_values", "topk_indices"}) {
		t.Fatalf("got %v", got)
	}
	equalInts(t, "topk_indices", intsOf(out[1].Tensor), probLabels)
}

func TestOtherOutputsDroppedUnlessFull(t *testing.T) {
	specs := append(slices.Clone(probSpecs), tensor.Spec{Name: "embedding", DType: tensor.FP32, Shape: []int64{-1, 3}},
		tensor.Spec{Name: "version", DType: tensor.Bytes, Shape: []int64{1}})
	named := outguard.Policy{ScoresOutput: "probabilities"}
	mk := func() []pipeline.OutputTensor {
		return append(probOutputs(),
			pipeline.OutputTensor{Tensor: fp32("embedding", [][]float64{{1.23456, 2, 3}, {4, 5, 6}, {7, 8, 9}})},
			pipeline.OutputTensor{Tensor: tensor.Tensor{Name: "version", DType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("v1")}}})
	}
	for _, tc := range []struct {
		detail pipeline.OutputDetail
		want   []string
	}{
		{pipeline.OutputFull, []string{"label", "probabilities", "embedding", "version"}},
		{pipeline.OutputTopK, []string{"label", "topk_values", "topk_indices"}},
		{pipeline.OutputLabel, []string{"label"}},
	} {
		p := named
		p.Detail, p.TopK, p.Round = tc.detail, 2, 1
		out, err := outguard.Apply(p, mk(), specs)
		if err != nil {
			t.Fatalf("%s: %v", tc.detail, err)
		}
		if got := names(out); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got outputs %v, want %v", tc.detail, got, tc.want)
		}
		if e := byName(out, "embedding"); e != nil {
			if v := floatsOf(*e)[0]; float32(v) != float32(1.2) {
				t.Errorf("%s: embedding[0] = %v, want it rounded to 1.2", tc.detail, v)
			}
		}
	}

	// Asking only for an output the policy does not serve is refused.
	p := named
	p.Detail = pipeline.OutputLabel
	_, err := outguard.Apply(p, outputs(fp32("embedding", [][]float64{{1, 2, 3}})), specs)
	if !errors.Is(err, outguard.ErrNothingToServe) {
		t.Errorf("embedding alone under label: got %v, want ErrNothingToServe", err)
	}
}

func TestFP64ScoresStayFP64(t *testing.T) {
	out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputTopK, TopK: 2, Round: 3},
		outputs(fp64("scores", probRows)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := byName(out, "topk_values"); v == nil || v.DType != tensor.FP64 {
		t.Fatalf("got %+v, want FP64 topk_values", out)
	}
	if got := floatsOf(*byName(out, "topk_values"))[:2]; got[0] != 0.6 || got[1] != 0.25 {
		t.Errorf("row 0: got %v, want [0.6 0.25]", got)
	}
}

func TestReverseSigmoidOnLogits(t *testing.T) {
	logits := [][]float64{{2, -1, 0.5, 7}, {-3, -3, 4, 1}}
	p := outguard.Policy{Detail: pipeline.OutputFull, Round: outguard.RoundOff,
		ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}}
	out, err := outguard.Apply(p, outputs(fp32("logits", logits)), nil)
	if err != nil {
		t.Fatal(err)
	}
	v := floatsOf(out[0].Tensor)
	for r, want := range []int{3, 2} {
		row := v[r*4 : r*4+4]
		sum := 0.0
		for _, x := range row {
			if x < 0 || x > 1 {
				t.Errorf("row %d: %v is not a probability", r, row)
			}
			sum += x
		}
		if math.Abs(sum-1) > 1e-6 {
			t.Errorf("row %d sums to %v", r, sum)
		}
		if a := argmaxOf(row); a != want {
			t.Errorf("row %d: argmax %d, want %d", r, a, want)
		}
	}
}

func TestAmbiguousOutputsRefused(t *testing.T) {
	// multi_io: two [batch,4] float outputs; which is the scores?
	outs := outputs(fp32("sum", [][]float64{{1, 2, 3, 4}}), fp32("square", [][]float64{{1, 4, 9, 16}}), i64("argmax", []int64{1}, 3))
	_, err := outguard.Apply(outguard.Default(), outs, nil)
	if !errors.Is(err, outguard.ErrLayout) {
		t.Fatalf("got %v, want ErrLayout", err)
	}
	// Rounding alone needs no layout.
	out, err := outguard.Apply(outguard.Policy{Detail: pipeline.OutputFull, Round: 0}, outs, nil)
	if err != nil || len(out) != 3 {
		t.Fatalf("full with rounding: %v %v", names(out), err)
	}
	// Naming the scores resolves it.
	p := outguard.Default()
	p.ScoresOutput = "square"
	out, err = outguard.Apply(p, outs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(out); !slices.Equal(got, []string{"topk_values", "topk_indices", "argmax"}) {
		t.Errorf("got %v", got)
	}
}

func TestPassThroughIsUntouched(t *testing.T) {
	in := probOutputs()
	out, err := outguard.Apply(outguard.Full(), in, probSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &in[0] || &out[1].Data[0] != &in[1].Data[0] {
		t.Error("the full policy copied the outputs")
	}
}

func TestCheck(t *testing.T) {
	dtypeModel := []tensor.Spec{{Name: "y", DType: tensor.FP32, Shape: []int64{-1, -1}}, {Name: "shape", DType: tensor.Int64, Shape: []int64{2}}}
	multiIO := []tensor.Spec{{Name: "sum", DType: tensor.FP32, Shape: []int64{-1, 4}}, {Name: "square", DType: tensor.FP32, Shape: []int64{-1, 4}}, {Name: "argmax", DType: tensor.Int64, Shape: []int64{-1}}}
	stringsModel := []tensor.Spec{{Name: "upper", DType: tensor.Bytes, Shape: []int64{-1}}, {Name: "is_yes", DType: tensor.Bool, Shape: []int64{-1}}}
	named := func(p outguard.Policy, label, scores string) outguard.Policy {
		p.LabelOutput, p.ScoresOutput = label, scores
		return p
	}
	tests := []struct {
		name   string
		policy outguard.Policy
		specs  []tensor.Spec
		want   string // "" for no error
	}{
		{"digits default", outguard.Default(), digitsSpecs, ""},
		{"digits label", outguard.Policy{Detail: pipeline.OutputLabel}, digitsSpecs, ""},
		{"dtype model: shape is not a label", outguard.Default(), dtypeModel, ""},
		{"multi_io default is ambiguous", outguard.Default(), multiIO, "both look like scores"},
		{"multi_io full needs nothing", outguard.Full(), multiIO, ""},
		{"multi_io named", named(outguard.Default(), "", "sum"), multiIO, ""},
		{"missing scores name", named(outguard.Default(), "", "probs"), digitsSpecs, `scores_output "probs"`},
		{"missing label name", named(outguard.Default(), "lbl", ""), digitsSpecs, `label_output "lbl"`},
		{"label named wrong type", named(outguard.Default(), "probabilities", ""), digitsSpecs, "want INT64 or INT32"},
		{"label with nothing to serve", outguard.Policy{Detail: pipeline.OutputLabel}, stringsModel, "no label or scores"},
		{"invalid policy", outguard.Policy{Detail: "all"}, digitsSpecs, "detail"},
		{"reserved name", outguard.Default(), append(slices.Clone(digitsSpecs), tensor.Spec{Name: "topk_values", DType: tensor.Bool, Shape: []int64{1}}), "reserved"},
	}
	for _, tc := range tests {
		err := outguard.Check(tc.policy, tc.specs)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLabels(t *testing.T) {
	got, err := outguard.Labels([]tensor.Tensor{fp32("probabilities", probRows)}, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	equalInts(t, "labels from scores", got, probLabels)
	got, err = outguard.Labels([]tensor.Tensor{i64("label", []int64{3}, 7, 8, 9), fp32("probabilities", probRows)}, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	equalInts(t, "labels from the label output", got, []int64{7, 8, 9})
	if _, err := outguard.Labels([]tensor.Tensor{{Name: "s", DType: tensor.Bytes, Shape: []int64{1}}}, nil, "", ""); !errors.Is(err, outguard.ErrLayout) {
		t.Errorf("no label or scores: got %v, want ErrLayout", err)
	}
}

func TestReadAnswers(t *testing.T) {
	a, err := outguard.ReadAnswers([]tensor.Tensor{i64("label", []int64{3}, 7, 8, 9), fp32("probabilities", probRows)}, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	equalInts(t, "labels", a.Labels, []int64{7, 8, 9})
	if a.Classes != len(probRows[0]) || len(a.Scores) != len(probRows)*a.Classes {
		t.Fatalf("got %d classes, %d scores", a.Classes, len(a.Scores))
	}
	for r, row := range probRows {
		got := a.Row(r)
		for c := range row {
			if got[c] != float64(float32(row[c])) { // FP32 on the wire
				t.Errorf("row %d: got %v, want %v", r, got, row)
				break
			}
		}
	}
	// A label output alone: labels, no scores.
	a, err = outguard.ReadAnswers([]tensor.Tensor{i64("label", []int64{3}, 7, 8, 9)}, nil, "", "")
	if err != nil || a.Scores != nil || a.Row(0) != nil {
		t.Errorf("label only: %+v, %v", a, err)
	}
	equalInts(t, "labels", a.Labels, []int64{7, 8, 9})
}
