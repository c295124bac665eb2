package outguard_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

type target struct {
	name    string
	outputs []tensor.Spec
}

func (t target) Name() string           { return t.name }
func (t target) Version() string        { return "1" }
func (t target) Outputs() []tensor.Spec { return t.outputs }

// model is a handler answering with fixed outputs, as infer.Handler would.
type model struct {
	outs     func() []pipeline.OutputTensor
	released int
}

func (m *model) Infer(_ context.Context, req *pipeline.Request) (*pipeline.Response, error) {
	req.Target = target{"m", probSpecs}
	resp := &pipeline.Response{Model: "m", Version: "1", Outputs: m.outs()}
	resp.SetRelease(func() { m.released++ })
	return resp, nil
}

// marker is a fake Marker.
type marker struct {
	MarksFunc func(model pipeline.Target) bool
	MarkFunc  func(ctx context.Context, model pipeline.Target, inputs []tensor.Tensor, labels []int64, classes int)
}

func (m marker) Marks(model pipeline.Target) bool { return m.MarksFunc(model) }

func (m marker) Mark(ctx context.Context, model pipeline.Target, inputs []tensor.Tensor, labels []int64, classes int) {
	m.MarkFunc(ctx, model, inputs, labels, classes)
}

func infer(t *testing.T, g *outguard.Guard, m *model, p *pipeline.Principal, req *pipeline.Request) (*pipeline.Response, error) {
	t.Helper()
	ctx := context.Background()
	if p != nil {
		ctx = pipeline.WithPrincipal(ctx, p)
	}
	if req == nil {
		req = &pipeline.Request{Model: "m"}
	}
	return pipeline.Chain(m, g.Stage).Infer(ctx, req)
}

func TestGuardPolicyPerModelNarrowedByScope(t *testing.T) {
	full := outguard.Full()
	g := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return full }}
	tests := []struct {
		name  string
		scope pipeline.Scopes
		want  []string
	}{
		{"no scope: the model's policy", pipeline.Scopes{}, []string{"label", "probabilities"}},
		{"top_k scope", pipeline.Scopes{OutputDetail: pipeline.OutputTopK, TopK: 2}, []string{"label", "topk_values", "topk_indices"}},
		{"label scope", pipeline.Scopes{OutputDetail: pipeline.OutputLabel}, []string{"label"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := infer(t, g, &model{outs: probOutputs}, &pipeline.Principal{ID: "key:a", Scopes: tc.scope}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(resp.Outputs); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGuardDefaultsWithoutPolicy(t *testing.T) {
	resp, err := infer(t, &outguard.Guard{}, &model{outs: probOutputs}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp.Outputs); !slices.Equal(got, []string{"label", "topk_values", "topk_indices"}) {
		t.Errorf("got %v, want the default top-1 answer", got)
	}
}

func TestGuardIgnoresCallerParameters(t *testing.T) {
	g := &outguard.Guard{}
	plain, err := infer(t, g, &model{outs: probOutputs}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	params := pipeline.Parameters{"top_k": int64(10), "output_detail": "full", "round": int64(-1), "classification": int64(10), "reverse_sigmoid": false}
	req := &pipeline.Request{Model: "m", Parameters: params, Outputs: []pipeline.RequestedOutput{{Name: "probabilities", Parameters: params}}}
	shaped, err := infer(t, g, &model{outs: probOutputs}, &pipeline.Principal{ID: "key:a"}, req)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plain.Outputs, shaped.Outputs) {
		t.Errorf("request parameters changed the answer:\n got %+v\nwant %+v", shaped.Outputs, plain.Outputs)
	}
}

func TestGuardMarksBeforeShaping(t *testing.T) {
	var gotClasses int
	var gotModel string
	mark := marker{
		MarksFunc: func(pipeline.Target) bool { return true },
		MarkFunc: func(_ context.Context, m pipeline.Target, _ []tensor.Tensor, labels []int64, classes int) {
			gotModel, gotClasses = m.Name(), classes
			labels[0] = 3 // row 0 answered 1; mark it 3
		},
	}
	for _, tc := range []struct {
		name   string
		policy outguard.Policy
	}{
		{"full", outguard.Full()},
		{"top_k 2, round 2", outguard.Policy{Detail: pipeline.OutputTopK, TopK: 2, Round: 2}},
		{"reverse sigmoid", outguard.Policy{Detail: pipeline.OutputFull, Round: 3, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return tc.policy }, Marker: mark}
			resp, err := infer(t, g, &model{outs: probOutputs}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if gotModel != "m" || gotClasses != 4 {
				t.Errorf("marker saw model %q and %d classes, want m and 4", gotModel, gotClasses)
			}
			equalInts(t, "label", intsOf(*byName(resp.Outputs, "label")), []int64{3, 0, 3})
			pred, _ := servedRows(t, resp.Outputs, 3, 4)
			equalInts(t, "served prediction", pred, []int64{3, 0, 3})
			if p := byName(resp.Outputs, "probabilities"); p != nil && !tc.policy.ReverseSigmoid.On() {
				// The top score and the watermark label's traded places.
				got := floatsOf(*p)[:4]
				if float32(got[3]) != 0.6 || float32(got[1]) != 0.05 {
					t.Errorf("row 0 scores %v, want 0.6 moved to class 3 and 0.05 to class 1", got)
				}
			}
		})
	}
}

// servedRows is served() for any class count.
func servedRows(t *testing.T, outs []pipeline.OutputTensor, rows, classes int) ([]int64, int) {
	t.Helper()
	pred := make([]int64, rows)
	if p := byName(outs, "probabilities"); p != nil {
		v := floatsOf(*p)
		for r := range rows {
			pred[r] = int64(argmaxOf(v[r*classes : r*classes+classes]))
		}
		return pred, classes
	}
	if p := byName(outs, "topk_indices"); p != nil {
		k := int(p.Shape[1])
		idx := intsOf(*p)
		for r := range rows {
			pred[r] = idx[r*k]
		}
		return pred, k
	}
	return intsOf(*byName(outs, "label")), 0
}

func TestGuardRefusals(t *testing.T) {
	// The caller asked only for an output the policy does not serve.
	m := &model{outs: func() []pipeline.OutputTensor {
		return outputs(fp32("embedding", [][]float64{{1, 2}}))
	}}
	g := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy {
		return outguard.Policy{Detail: pipeline.OutputLabel, ScoresOutput: "probabilities"}
	}}
	_, err := infer(t, g, m, nil, nil)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Kind != apierr.PermissionDenied {
		t.Errorf("got %v, want a permission-denied apierr", err)
	}
	if m.released != 1 {
		t.Errorf("response released %d times, want 1", m.released)
	}

	// Outputs the policy cannot tell apart: refused, not served unshaped.
	m = &model{outs: func() []pipeline.OutputTensor {
		return outputs(fp32("a", [][]float64{{1, 2}}), fp32("b", [][]float64{{1, 2}}))
	}}
	tg := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return outguard.Default() }}
	m2 := &model{outs: m.outs}
	_, err = pipeline.Chain(pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
		resp, err := m2.Infer(ctx, req)
		req.Target = target{"m", nil} // no declared outputs
		return resp, err
	}), tg.Stage).Infer(context.Background(), &pipeline.Request{})
	if !errors.As(err, &ae) || ae.Kind != apierr.Internal || !errors.Is(err, outguard.ErrLayout) {
		t.Errorf("got %v, want an internal apierr wrapping ErrLayout", err)
	}
	if m2.released != 1 {
		t.Errorf("response released %d times, want 1", m2.released)
	}
}

func TestGuardMarksOnlyMarkedModels(t *testing.T) {
	// multi_io's outputs cannot be told apart; served in full and not
	// watermarked, its answers must not be refused for that.
	outs := func() []pipeline.OutputTensor {
		return outputs(fp32("sum", [][]float64{{1, 2}}), fp32("square", [][]float64{{1, 4}}))
	}
	called := false
	m := marker{
		MarksFunc: func(t pipeline.Target) bool { return t.Name() == "watermarked" },
		MarkFunc:  func(context.Context, pipeline.Target, []tensor.Tensor, []int64, int) { called = true },
	}
	for _, tc := range []struct {
		model   string
		wantErr bool
	}{
		{"plain", false},
		{"watermarked", true}, // a marked model whose labels cannot be found: refused
	} {
		g := &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return outguard.Full() }, Marker: m}
		h := pipeline.Chain(pipeline.HandlerFunc(func(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
			req.Target = target{tc.model, nil}
			return &pipeline.Response{Outputs: outs()}, nil
		}), g.Stage)
		resp, err := h.Infer(context.Background(), &pipeline.Request{})
		if gotErr := err != nil; gotErr != tc.wantErr {
			t.Errorf("%s: got error %v, want error: %v", tc.model, err, tc.wantErr)
		}
		if !tc.wantErr && len(resp.Outputs) != 2 {
			t.Errorf("%s: got outputs %v", tc.model, names(resp.Outputs))
		}
	}
	if called {
		t.Error("Mark was called for a response whose labels could not be found")
	}
}

// The shaped outputs of a response live in memory the guard reuses once
// the response is released: a response held is never written by another,
// and releasing one also runs the model's release.
func TestGuardResponsesOwnTheirOutputs(t *testing.T) {
	g := &outguard.Guard{} // the default policy: label and top-1, reverse sigmoid, rounded
	m := &model{outs: probOutputs}
	first, err := infer(t, g, m, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := deepCopy(first.Outputs)
	// Another model's answers, shaped while the first is held, and
	// released: the memory behind them goes back for reuse.
	other := &model{outs: func() []pipeline.OutputTensor {
		return outputs(i64("label", []int64{3}, 0, 0, 0), fp32("probabilities", [][]float64{{0.97, 0.01, 0.01, 0.01}, {0.9, 0.05, 0.03, 0.02}, {0.6, 0.2, 0.1, 0.1}}))
	}}
	for range 100 {
		resp, err := infer(t, g, other, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v := intsOf(*byName(resp.Outputs, "label")); !slices.Equal(v, []int64{0, 0, 0}) {
			t.Fatalf("other model's labels: %v", v)
		}
		resp.Release()
	}
	if other.released != 100 {
		t.Errorf("the model's release ran %d times for 100 released responses", other.released)
	}
	if !reflect.DeepEqual(first.Outputs, want) {
		t.Fatalf("a held response changed while others were shaped:\n got %+v\nwant %+v", first.Outputs, want)
	}
	if m.released != 0 {
		t.Errorf("released %d times before Release", m.released)
	}
	first.Release()
	first.Release()
	if m.released != 1 {
		t.Errorf("the model's release ran %d times, want once", m.released)
	}
}

// deepCopy copies outputs with their names, shapes and data.
func deepCopy(outs []pipeline.OutputTensor) []pipeline.OutputTensor {
	c := make([]pipeline.OutputTensor, len(outs))
	for i, o := range outs {
		c[i] = o
		c[i].Shape = slices.Clone(o.Shape)
		c[i].Data = slices.Clone(o.Data)
	}
	return c
}
