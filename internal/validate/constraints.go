package validate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync/atomic"
	"unicode/utf8"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/ood"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Actions a constraint takes on a violation.
const (
	ActionReject = "reject" // refuse the request (400); the default
	ActionFlag   = "flag"   // serve it, and say so in its audit record
	ActionCount  = "count"  // serve it, and count the violation
)

// Rules are a model's input constraints, from the `validation:` section of
// its config.yaml:
//
//	validation:
//	  inputs:
//	    input:
//	      min: 0
//	      max: 16
//	      action: reject
//	    text:
//	      max_string_bytes: 256
//	      allowed_strings: [yes, no]
//	      action: flag
type Rules struct {
	Inputs map[string]InputRule `yaml:"inputs"`
	// OOD checks every row of one input against a reference sample of
	// normal inputs supplied with the model.
	OOD *OODRule `yaml:"ood"`
}

// OODRule is the out-of-distribution check: each row of Input (FP32
// [batch, features]) is scored by its Mahalanobis distance from the
// reference sample (internal/ood, fitted when the model loads), and a row
// above the threshold calibrated at FPR is a violation:
//
//	validation:
//	  ood:
//	    input: input
//	    reference: reference.json   # {"inputs": [[...], ...]}, relative to the model directory
//	    fpr: 0.01                   # share of normal inputs flagged (default 0.01)
//	    action: flag
//
// A calibrated check refuses about FPR of normal inputs too: flag or count
// shows how often it fires before reject is chosen.
type OODRule struct {
	Input     string  `yaml:"input"`
	Reference string  `yaml:"reference"`
	FPR       float64 `yaml:"fpr"`
	// Action is reject (default), flag or count.
	Action string `yaml:"action"`
}

// InputRule constrains one input's values.
type InputRule struct {
	// Min and Max bound every numeric element (inclusive).
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
	// Allowed lists the only numeric values accepted.
	Allowed []float64 `yaml:"allowed"`
	// Finite refuses NaN and infinities. (With min or max set, NaN is
	// always a violation: it is in no range.)
	Finite bool `yaml:"finite"`
	// String constraints (BYTES inputs): byte lengths, valid UTF-8, and a
	// list of the only values accepted.
	MinStringBytes int      `yaml:"min_string_bytes"`
	MaxStringBytes int      `yaml:"max_string_bytes"`
	UTF8           bool     `yaml:"utf8"`
	AllowedStrings []string `yaml:"allowed_strings"`
	// Action is reject (default), flag or count.
	Action string `yaml:"action"`
}

// Checker applies compiled rules to a model version's inputs. It is safe
// for concurrent use.
type Checker struct {
	rules []compiledRule // by input position
	ood   *oodCheck      // nil without an ood rule
	// Violations counts violations per input position, whatever the
	// action.
	violations []atomic.Int64
}

// oodCheck is a compiled OODRule.
type oodCheck struct {
	input  int // position among the model's inputs
	name   string
	model  *ood.Model
	action string
}

type compiledRule struct {
	name     string
	dtype    tensor.DType
	min, max float64
	allowed  []float64 // sorted
	finite   bool
	minS     int
	maxS     int
	utf8     bool
	allowedS map[string]bool
	action   string
	active   bool
}

// Compile checks rules against a model's input specs and prepares them;
// an ood rule's reference sample is read (a relative path from dir) and
// fitted.
func Compile(r *Rules, specs []tensor.Spec, dir string) (*Checker, error) {
	c := &Checker{rules: make([]compiledRule, len(specs)), violations: make([]atomic.Int64, len(specs))}
	for i, s := range specs {
		c.rules[i] = compiledRule{name: s.Name, dtype: s.DType, min: math.Inf(-1), max: math.Inf(1), action: ActionReject}
	}
	if r == nil {
		return c, nil
	}
	for name, ir := range r.Inputs {
		i := slices.IndexFunc(specs, func(s tensor.Spec) bool { return s.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("validation.inputs: the model has no input %q", name)
		}
		cr := &c.rules[i]
		cr.active = true
		switch ir.Action {
		case "", ActionReject:
		case ActionFlag, ActionCount:
			cr.action = ir.Action
		default:
			return nil, fmt.Errorf("validation.inputs.%s.action: %q is not reject, flag or count", name, ir.Action)
		}
		numeric := cr.dtype != tensor.Bytes
		hasNum := ir.Min != nil || ir.Max != nil || len(ir.Allowed) > 0 || ir.Finite
		hasStr := ir.MinStringBytes != 0 || ir.MaxStringBytes != 0 || ir.UTF8 || len(ir.AllowedStrings) > 0
		if numeric && hasStr {
			return nil, fmt.Errorf("validation.inputs.%s: string constraints on a %s input", name, cr.dtype)
		}
		if !numeric && hasNum {
			return nil, fmt.Errorf("validation.inputs.%s: numeric constraints on a BYTES input", name)
		}
		if ir.Min != nil {
			cr.min = *ir.Min
		}
		if ir.Max != nil {
			cr.max = *ir.Max
		}
		if math.IsNaN(cr.min) || math.IsNaN(cr.max) || cr.min > cr.max {
			return nil, fmt.Errorf("validation.inputs.%s: min %v above max %v", name, cr.min, cr.max)
		}
		cr.finite = ir.Finite
		cr.allowed = slices.Sorted(slices.Values(ir.Allowed))
		if ir.MinStringBytes < 0 || ir.MaxStringBytes < 0 || (ir.MaxStringBytes > 0 && ir.MinStringBytes > ir.MaxStringBytes) {
			return nil, fmt.Errorf("validation.inputs.%s: string byte bounds %d..%d", name, ir.MinStringBytes, ir.MaxStringBytes)
		}
		cr.minS, cr.maxS, cr.utf8 = ir.MinStringBytes, ir.MaxStringBytes, ir.UTF8
		if len(ir.AllowedStrings) > 0 {
			cr.allowedS = map[string]bool{}
			for _, s := range ir.AllowedStrings {
				cr.allowedS[s] = true
			}
		}
	}
	if r.OOD != nil {
		oc, err := compileOOD(r.OOD, specs, dir)
		if err != nil {
			return nil, fmt.Errorf("validation.ood: %w", err)
		}
		c.ood = oc
	}
	return c, nil
}

func compileOOD(r *OODRule, specs []tensor.Spec, dir string) (*oodCheck, error) {
	i := slices.IndexFunc(specs, func(s tensor.Spec) bool { return s.Name == r.Input })
	if i < 0 {
		return nil, fmt.Errorf("input: the model has no input %q", r.Input)
	}
	in := specs[i]
	if in.DType != tensor.FP32 || len(in.Shape) != 2 || in.Shape[1] < 1 || in.Shape[1] > ood.MaxDim {
		return nil, fmt.Errorf("input: %q is %s %v, want FP32 [batch, features] with 1 to %d features", r.Input, in.DType, in.Shape, ood.MaxDim)
	}
	oc := &oodCheck{input: i, name: r.Input, action: ActionReject}
	switch r.Action {
	case "", ActionReject:
	case ActionFlag, ActionCount:
		oc.action = r.Action
	default:
		return nil, fmt.Errorf("action: %q is not reject, flag or count", r.Action)
	}
	opts := ood.DefaultOptions()
	if r.FPR != 0 {
		if !(r.FPR > 0 && r.FPR <= 0.5) {
			return nil, fmt.Errorf("fpr: %v; want a rate in (0, 0.5], or 0 for %v", r.FPR, opts.FPR)
		}
		opts.FPR = r.FPR
	}
	if r.Reference == "" {
		return nil, errors.New("reference: must be set")
	}
	path := r.Reference
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	sample, err := ood.ReadSample(path, int(in.Shape[1]))
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	if oc.model, err = ood.Fit(ood.Widen(sample), opts); err != nil {
		return nil, err
	}
	return oc, nil
}

// Result is what a check found that did not refuse the request.
type Result struct {
	// Flags name violations whose action is flag, for the audit record
	// ("validation:range:input").
	Flags []string
}

// Check applies the rules to inputs (ordered as the model's specs, nil for
// an input not sent). A violation of a reject rule is an InvalidArgument
// error naming the input and the rule, never the value.
func (c *Checker) Check(inputs []*tensor.Tensor) (Result, error) {
	var res Result
	for i, t := range inputs {
		if t == nil || i >= len(c.rules) {
			continue
		}
		cr := &c.rules[i]
		if !cr.active {
			continue
		}
		what := cr.violation(t)
		if what == "" {
			continue
		}
		if err := c.violated(i, cr.name, cr.action, what, &res); err != nil {
			return res, err
		}
	}
	if oc := c.ood; oc != nil && oc.input < len(inputs) && inputs[oc.input] != nil && oc.outOfDistribution(inputs[oc.input]) {
		if err := c.violated(oc.input, oc.name, oc.action, msgOOD, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// violated counts a violation of what by input i and takes action: an
// error to refuse with, or a flag in res.
func (c *Checker) violated(i int, name, action, what string, res *Result) error {
	c.violations[i].Add(1)
	switch action {
	case ActionReject:
		return apierr.Invalid("input %q: %s", name, what)
	case ActionFlag:
		res.Flags = append(res.Flags, "validation:"+ruleName(what)+":"+name)
	}
	return nil
}

// outOfDistribution reports whether any row of t is out of distribution
// (or t does not split into whole rows: fail closed).
func (oc *oodCheck) outOfDistribution(t *tensor.Tensor) bool {
	n := 4 * oc.model.Dim()
	if len(t.Data)%n != 0 {
		return true
	}
	th := oc.model.Threshold()
	for r := 0; r < len(t.Data); r += n {
		if !(oc.model.ScoreLE(t.Data[r:r+n]) <= th) {
			return true
		}
	}
	return false
}

// Violations returns how many violations each input has had, by name.
func (c *Checker) Violations() map[string]int64 {
	out := map[string]int64{}
	for i := range c.rules {
		if n := c.violations[i].Load(); n > 0 {
			out[c.rules[i].name] = n
		}
	}
	return out
}

func ruleName(what string) string {
	switch what {
	case msgRange:
		return "range"
	case msgAllowed, msgAllowedString:
		return "allowed"
	case msgFinite:
		return "finite"
	case msgOOD:
		return "ood"
	}
	return "string"
}

const (
	msgRange         = "a value is outside the allowed range"
	msgAllowed       = "a value is not one of the allowed values"
	msgFinite        = "a value is not finite"
	msgStringLen     = "a string's length is outside the allowed range"
	msgUTF8          = "a string is not valid UTF-8"
	msgAllowedString = "a string is not one of the allowed values"
	msgOOD           = "a row is out of distribution"
)

// violation returns what t violates, or "".
func (cr *compiledRule) violation(t *tensor.Tensor) string {
	if cr.dtype == tensor.Bytes {
		for _, s := range t.Strings {
			switch {
			case len(s) < cr.minS || (cr.maxS > 0 && len(s) > cr.maxS):
				return msgStringLen
			case cr.utf8 && !utf8.Valid(s):
				return msgUTF8
			case cr.allowedS != nil && !cr.allowedS[string(s)]:
				return msgAllowedString
			}
		}
		return ""
	}
	bounded := !math.IsInf(cr.min, -1) || !math.IsInf(cr.max, 1)
	if !bounded && len(cr.allowed) == 0 && !cr.finite {
		return ""
	}
	var bad string
	each(t, func(v float64) bool {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			if cr.finite {
				bad = msgFinite
				return false
			}
			if math.IsNaN(v) && (bounded || len(cr.allowed) > 0) {
				bad = msgRange
				return false
			}
		}
		if v < cr.min || v > cr.max {
			bad = msgRange
			return false
		}
		if len(cr.allowed) > 0 {
			if _, ok := slices.BinarySearch(cr.allowed, v); !ok {
				bad = msgAllowed
				return false
			}
		}
		return true
	})
	return bad
}

// each calls fn with every element of a numeric tensor as a float64 until
// fn returns false.
func each(t *tensor.Tensor, fn func(float64) bool) {
	d := t.Data
	switch t.DType {
	case tensor.FP32:
		for i := 0; i+4 <= len(d); i += 4 {
			if !fn(float64(math.Float32frombits(binary.LittleEndian.Uint32(d[i:])))) {
				return
			}
		}
	case tensor.FP64:
		for i := 0; i+8 <= len(d); i += 8 {
			if !fn(math.Float64frombits(binary.LittleEndian.Uint64(d[i:]))) {
				return
			}
		}
	case tensor.FP16:
		for i := 0; i+2 <= len(d); i += 2 {
			if !fn(float64(fp16(binary.LittleEndian.Uint16(d[i:])))) {
				return
			}
		}
	case tensor.BF16:
		for i := 0; i+2 <= len(d); i += 2 {
			if !fn(float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(d[i:])) << 16))) {
				return
			}
		}
	case tensor.Bool:
		for _, b := range d {
			if !fn(float64(b)) {
				return
			}
		}
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		n := t.DType.Size()
		for i := 0; i+n <= len(d); i += n {
			if !fn(float64(tensor.ReadInt(d[i:], n))) {
				return
			}
		}
	default: // unsigned
		n := t.DType.Size()
		for i := 0; i+n <= len(d); i += n {
			if !fn(float64(tensor.ReadUint(d[i:], n))) {
				return
			}
		}
	}
}

// fp16 converts an IEEE half-precision value.
func fp16(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch exp {
	case 0:
		// Zero or subnormal: frac × 2^-24.
		v := float32(frac) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(v) | sign)
	case 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
