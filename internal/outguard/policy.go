package outguard

import (
	"errors"
	"fmt"
	"math"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// Policy is how much of a model's output a response may reveal. Its zero
// value is the strictest policy (label only). Configuration decodes over
// Default().
type Policy struct {
	// Detail is full (every output), top_k (the TopK highest scores and
	// their class indices, with the label) or label (the label only).
	// Anything else, "" included, is treated as label.
	Detail pipeline.OutputDetail `yaml:"detail" json:"detail"`
	// TopK is k for top_k; values below 1 are treated as 1.
	TopK int `yaml:"top_k" json:"top_k"`
	// Round rounds every served score (every FP32/FP64 output under
	// full) to this many decimals; -1 turns rounding off.
	Round int `yaml:"round" json:"round"`
	// ReverseSigmoid perturbs the scores (Lee et al. 2019); off while
	// Beta is 0.
	ReverseSigmoid ReverseSigmoid `yaml:"reverse_sigmoid" json:"reverse_sigmoid"`
	// LabelOutput and ScoresOutput name the model's label output (integer,
	// [batch]) and scores output (FP32/FP64, [batch, classes]). Empty:
	// found by datatype and shape (see Check).
	LabelOutput  string `yaml:"label_output" json:"label_output,omitempty"`
	ScoresOutput string `yaml:"scores_output" json:"scores_output,omitempty"`
}

// ReverseSigmoid holds the parameters of the reverse sigmoid perturbation
// (Lee et al. 2019, "Defending against NN model stealing attacks using
// deceptive perturbations"): each probability y becomes
//
//	y' = α·(y − β·(s(γ·s⁻¹(y)) − ½))
//
// where s is the logistic sigmoid, s⁻¹ its inverse (the logit) and α
// renormalises the row to sum to 1.
type ReverseSigmoid struct {
	// Beta (β, in (0, 1]) scales the perturbation; 0 turns it off.
	Beta float64 `yaml:"beta" json:"beta"`
	// Gamma (γ > 0) sets its shape: below 1, small probabilities are
	// pushed up in reverse order, so log-ratios no longer follow the
	// model's logits.
	Gamma float64 `yaml:"gamma" json:"gamma"`
}

// On reports whether the perturbation is applied.
func (r ReverseSigmoid) On() bool { return r.Beta != 0 }

// RoundOff is the Round value that turns rounding off.
const RoundOff = -1

// MaxRound is the most decimals Round may ask for (beyond FP64 precision
// rounding is a no-op).
const MaxRound = 15

// Names of the outputs that replace the scores under top_k, and of the
// label output made from the scores under label when the model has none.
const (
	TopKValues   = "topk_values"
	TopKIndices  = "topk_indices"
	DefaultLabel = "label"
)

// Default returns the hardened policy: the top-1 class index and its score,
// perturbed by the reverse sigmoid and rounded to 2 decimals, with the
// label. One score per answer gives equation-solving no log-ratio to solve
// for; the perturbation keeps the one score from being fitted instead
// (docs/output-hardening.md has the figures). The served score is not a
// calibrated confidence.
func Default() Policy {
	return Policy{
		Detail:         pipeline.OutputTopK,
		TopK:           1,
		Round:          2,
		ReverseSigmoid: ReverseSigmoid{Beta: 0.5, Gamma: 0.2},
	}
}

// Full returns the policy that serves every output as computed: for models
// that are not classifiers, and for credentials trusted with everything.
func Full() Policy {
	return Policy{Detail: pipeline.OutputFull, Round: RoundOff}
}

// Validate reports the first field that is out of range, naming it.
func (p Policy) Validate() error {
	switch p.Detail {
	case pipeline.OutputFull, pipeline.OutputLabel:
	case pipeline.OutputTopK:
		if p.TopK < 1 {
			return fmt.Errorf("top_k: %d; must be at least 1 for detail top_k", p.TopK)
		}
	default:
		return fmt.Errorf("detail: %q is not full, top_k or label", p.Detail)
	}
	if p.TopK < 0 {
		return fmt.Errorf("top_k: %d is negative", p.TopK)
	}
	if p.Round < RoundOff || p.Round > MaxRound {
		return fmt.Errorf("round: %d; want -1 (off) or 0..%d decimals", p.Round, MaxRound)
	}
	rs := p.ReverseSigmoid
	if rs.On() || rs.Gamma != 0 {
		if !(rs.Beta > 0 && rs.Beta <= 1) {
			return fmt.Errorf("reverse_sigmoid.beta: %v; want 0 (off) or in (0, 1]", rs.Beta)
		}
		if !(rs.Gamma > 0) || math.IsInf(rs.Gamma, 0) {
			return fmt.Errorf("reverse_sigmoid.gamma: %v; must be positive and finite", rs.Gamma)
		}
	}
	if p.LabelOutput != "" && p.LabelOutput == p.ScoresOutput {
		return errors.New("label_output and scores_output name the same output")
	}
	return nil
}

// detailRank orders output details from most to least revealing; an
// unknown detail ranks as label.
func detailRank(d pipeline.OutputDetail) int {
	switch d {
	case pipeline.OutputFull:
		return 0
	case pipeline.OutputTopK:
		return 1
	}
	return 2
}

// detail is the policy's detail, unknown values read as label.
func (p Policy) detail() pipeline.OutputDetail {
	switch p.Detail {
	case pipeline.OutputFull, pipeline.OutputTopK:
		return p.Detail
	}
	return pipeline.OutputLabel
}

// k is the policy's k, at least 1.
func (p Policy) k() int { return max(p.TopK, 1) }

// Narrow returns p narrowed by a credential's scopes: the less revealing
// detail wins, and under top_k the smaller k (a scope's k of 0 means the
// model's). Rounding and the reverse sigmoid are the model's. An unknown
// scope detail narrows to label.
func Narrow(p Policy, s pipeline.Scopes) Policy {
	sd := s.OutputDetail
	if sd == "" {
		sd = pipeline.OutputFull
	}
	pr, sr := detailRank(p.Detail), detailRank(sd)
	switch {
	case sr > pr:
		p.Detail = sd
		if sr == 2 {
			p.Detail = pipeline.OutputLabel
		}
		if p.Detail == pipeline.OutputTopK && s.TopK > 0 {
			p.TopK = s.TopK
		}
	case sr == pr && sr == 1 && s.TopK > 0:
		p.TopK = min(p.k(), s.TopK)
	}
	p.Detail = p.detail()
	return p
}

// passThrough reports whether p leaves every output as computed.
func (p Policy) passThrough() bool {
	return p.detail() == pipeline.OutputFull && p.Round < 0 && !p.ReverseSigmoid.On()
}
