package outguard_test

import (
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
)

func TestValidate(t *testing.T) {
	ok := []struct {
		name string
		p    outguard.Policy
	}{
		{"default", outguard.Default()},
		{"full", outguard.Full()},
		{"label", outguard.Policy{Detail: pipeline.OutputLabel, Round: outguard.RoundOff}},
		{"reverse sigmoid", outguard.Policy{Detail: pipeline.OutputFull, Round: 3, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5, Gamma: 0.2}}},
		{"beta 1", outguard.Policy{Detail: pipeline.OutputFull, Round: 3, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 1, Gamma: 2}}},
	}
	for _, tc := range ok {
		if err := tc.p.Validate(); err != nil {
			t.Errorf("%s: got %v, want nil", tc.name, err)
		}
	}
	bad := []struct {
		name string
		p    outguard.Policy
		want string
	}{
		{"zero detail", outguard.Policy{}, "detail"},
		{"unknown detail", outguard.Policy{Detail: "everything"}, `"everything"`},
		{"top_k without k", outguard.Policy{Detail: pipeline.OutputTopK}, "top_k: 0"},
		{"negative k", outguard.Policy{Detail: pipeline.OutputFull, TopK: -2}, "top_k: -2"},
		{"round -2", outguard.Policy{Detail: pipeline.OutputFull, Round: -2}, "round: -2"},
		{"round 16", outguard.Policy{Detail: pipeline.OutputFull, Round: 16}, "round: 16"},
		{"beta above 1", outguard.Policy{Detail: pipeline.OutputFull, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 1.5, Gamma: 1}}, "reverse_sigmoid.beta: 1.5"},
		{"negative beta", outguard.Policy{Detail: pipeline.OutputFull, ReverseSigmoid: outguard.ReverseSigmoid{Beta: -0.1, Gamma: 1}}, "reverse_sigmoid.beta"},
		{"gamma without beta", outguard.Policy{Detail: pipeline.OutputFull, ReverseSigmoid: outguard.ReverseSigmoid{Gamma: 1}}, "reverse_sigmoid.beta: 0"},
		{"zero gamma", outguard.Policy{Detail: pipeline.OutputFull, ReverseSigmoid: outguard.ReverseSigmoid{Beta: 0.5}}, "reverse_sigmoid.gamma"},
		{"same names", outguard.Policy{Detail: pipeline.OutputFull, LabelOutput: "y", ScoresOutput: "y"}, "same output"},
	}
	for _, tc := range bad {
		err := tc.p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestNarrow(t *testing.T) {
	topk := func(k int) outguard.Policy {
		p := outguard.Default()
		p.TopK = k
		return p
	}
	full := outguard.Full()
	label := outguard.Policy{Detail: pipeline.OutputLabel, Round: 2}
	tests := []struct {
		name       string
		model      outguard.Policy
		scope      pipeline.Scopes
		wantDetail pipeline.OutputDetail
		wantK      int
	}{
		{"no scope keeps the model's", topk(3), pipeline.Scopes{}, pipeline.OutputTopK, 3},
		{"full scope does not widen top_k", topk(3), pipeline.Scopes{OutputDetail: pipeline.OutputFull}, pipeline.OutputTopK, 3},
		{"full scope does not widen label", label, pipeline.Scopes{OutputDetail: pipeline.OutputFull}, pipeline.OutputLabel, 0},
		{"top_k scope does not widen label", label, pipeline.Scopes{OutputDetail: pipeline.OutputTopK, TopK: 5}, pipeline.OutputLabel, 0},
		{"scope narrows full to top_k", full, pipeline.Scopes{OutputDetail: pipeline.OutputTopK, TopK: 2}, pipeline.OutputTopK, 2},
		{"scope narrows full to label", full, pipeline.Scopes{OutputDetail: pipeline.OutputLabel}, pipeline.OutputLabel, 0},
		{"smaller scope k wins", topk(5), pipeline.Scopes{OutputDetail: pipeline.OutputTopK, TopK: 2}, pipeline.OutputTopK, 2},
		{"smaller model k wins", topk(2), pipeline.Scopes{OutputDetail: pipeline.OutputTopK, TopK: 5}, pipeline.OutputTopK, 2},
		{"scope k 0 keeps the model's", topk(4), pipeline.Scopes{OutputDetail: pipeline.OutputTopK}, pipeline.OutputTopK, 4},
		{"unknown scope detail narrows to label", full, pipeline.Scopes{OutputDetail: "scores"}, pipeline.OutputLabel, 0},
		{"unknown model detail reads as label", outguard.Policy{Detail: "x"}, pipeline.Scopes{OutputDetail: pipeline.OutputFull}, pipeline.OutputLabel, 0},
		{"zero policy is label", outguard.Policy{}, pipeline.Scopes{}, pipeline.OutputLabel, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := outguard.Narrow(tc.model, tc.scope)
			if got.Detail != tc.wantDetail {
				t.Errorf("detail: got %q, want %q", got.Detail, tc.wantDetail)
			}
			if tc.wantDetail == pipeline.OutputTopK && got.TopK != tc.wantK {
				t.Errorf("k: got %d, want %d", got.TopK, tc.wantK)
			}
			if got.Round != tc.model.Round || got.ReverseSigmoid != tc.model.ReverseSigmoid {
				t.Errorf("rounding and perturbation changed: got %+v from %+v", got, tc.model)
			}
		})
	}
}
