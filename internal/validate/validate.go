// Package validate checks an inference request against the signature the
// model declares, before any of it reaches ONNX Runtime.
//
// Every input the model declares must be present exactly once, with the
// declared datatype and rank, and every fixed dimension as declared; no
// undeclared input is accepted; requested outputs must exist and be named
// once. Element counts already match shapes (the codecs check that).
package validate

import (
	"bytes"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Inputs returns req's inputs in the order of specs, or an InvalidArgument
// error naming the first problem.
func Inputs(specs []tensor.Spec, req *pipeline.Request) ([]*tensor.Tensor, error) {
	if len(req.Inputs) > len(specs) {
		return nil, apierr.Invalid("got %d inputs, the model takes %d", len(req.Inputs), len(specs))
	}
	ordered := make([]*tensor.Tensor, len(specs))
	for i := range req.Inputs {
		in := &req.Inputs[i]
		j := indexOf(specs, in.Name)
		if j < 0 {
			return nil, apierr.Invalid("unexpected input %q", clip(in.Name))
		}
		if ordered[j] != nil {
			return nil, apierr.Invalid("input %q given more than once", in.Name)
		}
		if err := check(&specs[j], in); err != nil {
			return nil, err
		}
		ordered[j] = in
	}
	for j, t := range ordered {
		if t == nil {
			return nil, apierr.Invalid("missing input %q", specs[j].Name)
		}
	}
	return ordered, nil
}

func check(spec *tensor.Spec, in *tensor.Tensor) error {
	if in.DType != spec.DType {
		return apierr.Invalid("input %q: datatype %s, the model expects %s", in.Name, in.DType, spec.DType)
	}
	if len(in.Shape) != len(spec.Shape) {
		return apierr.Invalid("input %q: shape %v has rank %d, the model expects rank %d (shape %v)", in.Name, in.Shape, len(in.Shape), len(spec.Shape), spec.Shape)
	}
	for i, d := range spec.Shape {
		if d >= 0 && in.Shape[i] != d {
			return apierr.Invalid("input %q: shape %v, the model expects %v", in.Name, in.Shape, spec.Shape)
		}
	}
	if in.DType == tensor.Bytes {
		// ONNX Runtime's string tensors are C strings.
		for _, s := range in.Strings {
			if bytes.IndexByte(s, 0) >= 0 {
				return apierr.Invalid("input %q: BYTES elements may not contain NUL bytes", in.Name)
			}
		}
	}
	return nil
}

// Outputs returns the indexes into specs of the outputs req asks for (all,
// when it names none) and whether each is wanted as binary data.
func Outputs(specs []tensor.Spec, req *pipeline.Request) ([]int, []bool, error) {
	if len(req.Outputs) == 0 {
		idx := make([]int, len(specs))
		bin := make([]bool, len(specs))
		for i := range specs {
			idx[i] = i
			bin[i] = req.BinaryOutputs
		}
		return idx, bin, nil
	}
	idx := make([]int, 0, len(req.Outputs))
	bin := make([]bool, 0, len(req.Outputs))
	for _, o := range req.Outputs {
		j := indexOf(specs, o.Name)
		if j < 0 {
			return nil, nil, apierr.Invalid("unknown output %q", clip(o.Name))
		}
		for _, k := range idx {
			if k == j {
				return nil, nil, apierr.Invalid("output %q requested more than once", o.Name)
			}
		}
		idx = append(idx, j)
		bin = append(bin, o.Binary || req.BinaryOutputs)
	}
	return idx, bin, nil
}

func indexOf(specs []tensor.Spec, name string) int {
	for i := range specs {
		if specs[i].Name == name {
			return i
		}
	}
	return -1
}

// clip shortens a client-chosen name echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
