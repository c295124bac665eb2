package outguard

import (
	"errors"
	"fmt"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// ErrLayout reports a model whose label and scores outputs cannot be told
// apart from the others: name them in the policy (label_output,
// scores_output).
var ErrLayout = errors.New("cannot tell which outputs are the label and the scores")

// layout says which of a response's outputs are the label and the scores;
// -1 for none.
type layout struct {
	label, scores int
	batch         int // rows: the label's length or the scores' first dimension
	classes       int // the scores' second dimension; 0 without scores
}

func isScoresType(d tensor.DType) bool { return d == tensor.FP32 || d == tensor.FP64 }
func isLabelType(d tensor.DType) bool  { return d == tensor.Int64 || d == tensor.Int32 }

// Check reports whether p can be applied to a model with the declared
// outputs: that its named outputs exist with the right datatype and rank,
// that unnamed ones can be found, and that p leaves something to serve.
// Run it when a model loads, so a misconfiguration fails there and not on
// every request.
func Check(p Policy, outputs []tensor.Spec) error {
	if err := p.Validate(); err != nil {
		return err
	}
	shapes := make([]outShape, len(outputs))
	for i, o := range outputs {
		shapes[i] = outShape{o.Name, o.DType, o.Shape}
	}
	l, err := find(p, shapes, true)
	if err != nil {
		if p.passThrough() {
			return nil
		}
		return err
	}
	if p.detail() == pipeline.OutputLabel && l.label < 0 && l.scores < 0 {
		return fmt.Errorf("%w: detail label, and the model has no label or scores output", ErrLayout)
	}
	for _, o := range outputs {
		if p.detail() == pipeline.OutputTopK && (o.Name == TopKValues || o.Name == TopKIndices) && l.scores >= 0 {
			return fmt.Errorf("output %q: the name is reserved for top_k answers", o.Name)
		}
	}
	return nil
}

type outShape struct {
	name  string
	dtype tensor.DType
	shape []int64
}

// find locates the label and scores among outs. declared says the shapes
// are a model's declarations (-1 for a variable dimension) rather than a
// response's. Named outputs that are absent are simply not there (the
// caller did not ask for them) unless declared.
func find(p Policy, outs []outShape, declared bool) (layout, error) {
	l := layout{label: -1, scores: -1}
	byName := func(name string) int {
		for i, o := range outs {
			if o.name == name {
				return i
			}
		}
		return -1
	}
	if p.ScoresOutput != "" {
		l.scores = byName(p.ScoresOutput)
		if l.scores < 0 && declared {
			return l, fmt.Errorf("scores_output %q: the model has no such output", p.ScoresOutput)
		}
	} else {
		for i, o := range outs {
			if isScoresType(o.dtype) && len(o.shape) == 2 && o.name != p.LabelOutput {
				if l.scores >= 0 {
					return l, fmt.Errorf("%w: %q and %q both look like scores", ErrLayout, outs[l.scores].name, o.name)
				}
				l.scores = i
			}
		}
	}
	if l.scores >= 0 {
		o := outs[l.scores]
		if !isScoresType(o.dtype) || len(o.shape) != 2 {
			return l, fmt.Errorf("scores output %q: %s %v; want FP32 or FP64 [batch, classes]", o.name, o.dtype, o.shape)
		}
	}
	if p.LabelOutput != "" {
		l.label = byName(p.LabelOutput)
		if l.label < 0 && declared {
			return l, fmt.Errorf("label_output %q: the model has no such output", p.LabelOutput)
		}
	} else {
		for i, o := range outs {
			if i == l.scores || !isLabelType(o.dtype) || len(o.shape) != 1 {
				continue
			}
			// A label has one entry per row: as many as the scores have
			// rows, or (declared, without scores) a variable length.
			switch {
			case l.scores >= 0 && o.shape[0] != outs[l.scores].shape[0]:
				continue
			case l.scores < 0 && declared && o.shape[0] != -1:
				continue
			}
			if l.label >= 0 {
				return l, fmt.Errorf("%w: %q and %q both look like labels", ErrLayout, outs[l.label].name, o.name)
			}
			l.label = i
		}
	}
	if l.label >= 0 {
		o := outs[l.label]
		if !isLabelType(o.dtype) || len(o.shape) != 1 {
			return l, fmt.Errorf("label output %q: %s %v; want INT64 or INT32 [batch]", o.name, o.dtype, o.shape)
		}
	}
	if l.scores >= 0 {
		l.batch, l.classes = int(outs[l.scores].shape[0]), int(outs[l.scores].shape[1])
		if l.label >= 0 && outs[l.label].shape[0] != outs[l.scores].shape[0] {
			return l, fmt.Errorf("%w: label %q has %d rows, scores %q %d", ErrLayout,
				outs[l.label].name, outs[l.label].shape[0], outs[l.scores].name, outs[l.scores].shape[0])
		}
	} else if l.label >= 0 {
		l.batch = int(outs[l.label].shape[0])
	}
	return l, nil
}

// locate finds the label and scores among a response's outputs, using the
// model's declared outputs when known: a caller who asks for one output by
// name gets it classified as the model's whole signature would have it.
func locate(p Policy, outs []tensor.Tensor, specs []tensor.Spec) (layout, error) {
	p, err := resolve(p, specs)
	if err != nil {
		return layout{label: -1, scores: -1}, err
	}
	return locateResolved(p, outs)
}

// resolve returns p with the label and scores outputs named from the
// model's declared outputs (specs), when it does not name them and specs
// are known: a response is then searched by name. An output the
// declaration does not have is named noOutput. Only for locating: the
// names are not the policy's.
func resolve(p Policy, specs []tensor.Spec) (Policy, error) {
	if len(specs) == 0 || (p.LabelOutput != "" && p.ScoresOutput != "") {
		return p, nil
	}
	var buf [8]outShape // no allocation for the usual few outputs
	decl := buf[:0]
	for _, s := range specs {
		decl = append(decl, outShape{s.Name, s.DType, s.Shape})
	}
	dl, err := find(p, decl, true)
	if err != nil {
		return p, err
	}
	if dl.label >= 0 {
		p.LabelOutput = specs[dl.label].Name
	}
	if dl.scores >= 0 {
		p.ScoresOutput = specs[dl.scores].Name
	}
	if dl.label < 0 && p.LabelOutput == "" {
		p.LabelOutput = noOutput
	}
	if dl.scores < 0 && p.ScoresOutput == "" {
		p.ScoresOutput = noOutput
	}
	return p, nil
}

// noOutput is a name no output can have.
const noOutput = "\x00none"

// locateResolved is locate for a policy resolve returned.
func locateResolved(p Policy, outs []tensor.Tensor) (layout, error) {
	var buf [8]outShape
	shapes := buf[:0]
	for i := range outs {
		shapes = append(shapes, outShape{outs[i].Name, outs[i].DType, outs[i].Shape})
	}
	l, err := find(p, shapes, false)
	if err != nil {
		return l, err
	}
	// The data must hold what the shapes say.
	if l.scores >= 0 {
		t := &outs[l.scores]
		if n, err := tensor.NumElements(t.Shape); err != nil || int64(len(t.Data)) != n*int64(t.DType.Size()) {
			return l, fmt.Errorf("scores %q: %d bytes for shape %v", t.Name, len(t.Data), t.Shape)
		}
	}
	if l.label >= 0 {
		t := &outs[l.label]
		if n, err := tensor.NumElements(t.Shape); err != nil || int64(len(t.Data)) != n*int64(t.DType.Size()) {
			return l, fmt.Errorf("label %q: %d bytes for shape %v", t.Name, len(t.Data), t.Shape)
		}
	}
	return l, nil
}
