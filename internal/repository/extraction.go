package repository

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

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

// maxReferenceBytes bounds a reference file.
const maxReferenceBytes = 64 << 20

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
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("extraction.reference: %w", err)
	}
	if fi.Size() > maxReferenceBytes {
		return nil, fmt.Errorf("extraction.reference: %d bytes, over %d", fi.Size(), maxReferenceBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("extraction.reference: %w", err)
	}
	var ref struct {
		Inputs [][]float32 `json:"inputs"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		return nil, fmt.Errorf("extraction.reference: %w", err)
	}
	dim := int(in.Shape[1])
	if len(ref.Inputs) < 2*dim {
		return nil, fmt.Errorf("extraction.reference: %d rows, want at least %d (twice the features)", len(ref.Inputs), 2*dim)
	}
	for r, row := range ref.Inputs {
		if len(row) != dim {
			return nil, fmt.Errorf("extraction.reference: row %d has %d values, want %d", r, len(row), dim)
		}
	}
	return &ExtractionSpec{Input: c.Input, LabelOutput: c.LabelOutput, Dim: dim, Reference: ref.Inputs}, nil
}
