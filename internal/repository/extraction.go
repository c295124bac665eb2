package repository

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/aegis-inference/aegis/internal/ood"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// ExtractionConfig, in a model's config.yaml, turns on extraction
// monitoring for the model (docs/extraction-detection.md): which input the
// detectors see, which output carries the predicted label, and a
// reference sample of normal inputs from which the out-of-distribution
// scorer is fitted and the kNN threshold calibrated.
//
//	extraction:
//	  input: input
//	  label_output: label
//	  reference: reference.json   # {"inputs": [[...], ...]}, relative to the model directory
type ExtractionConfig struct {
	Input       string `yaml:"input"`
	LabelOutput string `yaml:"label_output"`
	Reference   string `yaml:"reference"`
}

// ExtractionSpec is a version's extraction monitoring, checked against its
// signature at load.
type ExtractionSpec struct {
	Input       string
	LabelOutput string
	// Dim is the number of features of one input row (the input is
	// FP32 [batch, Dim]).
	Dim int
	// Reference is the normal sample, rows of Dim values.
	Reference [][]float32
}

// loadExtraction checks c against the version's inputs and outputs and
// reads its reference sample.
func loadExtraction(c *ExtractionConfig, modelDir string, inputs, outputs []tensor.Spec) (*ExtractionSpec, error) {
	if c == nil {
		return nil, nil
	}
	i := slices.IndexFunc(inputs, func(s tensor.Spec) bool { return s.Name == c.Input })
	if i < 0 {
		return nil, fmt.Errorf("extraction.input: the model has no input %q", c.Input)
	}
	in := inputs[i]
	if in.DType != tensor.FP32 || len(in.Shape) != 2 || in.Shape[1] < 1 {
		return nil, fmt.Errorf("extraction.input: %q is %s %v, want FP32 [batch, features]", c.Input, in.DType, in.Shape)
	}
	o := slices.IndexFunc(outputs, func(s tensor.Spec) bool { return s.Name == c.LabelOutput })
	if o < 0 || outputs[o].DType != tensor.Int64 || len(outputs[o].Shape) != 1 {
		return nil, fmt.Errorf("extraction.label_output: want an INT64 [batch] output, the model has no such %q", c.LabelOutput)
	}
	if c.Reference == "" {
		return nil, fmt.Errorf("extraction.reference: must be set")
	}
	path := c.Reference
	if !filepath.IsAbs(path) {
		path = filepath.Join(modelDir, path)
	}
	dim := int(in.Shape[1])
	ref, err := ood.ReadSample(path, dim)
	if err != nil {
		return nil, fmt.Errorf("extraction.reference: %w", err)
	}
	return &ExtractionSpec{Input: c.Input, LabelOutput: c.LabelOutput, Dim: dim, Reference: ref}, nil
}
