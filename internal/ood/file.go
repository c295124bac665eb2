package ood

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
)

// FormatVersion is the version of the JSON file Write produces.
const FormatVersion = 1

// maxFileBytes bounds what Read accepts: 4,096 features in float64 text.
const maxFileBytes = 256 << 20

// fileModel is the JSON form of a Model. Every field is required.
type fileModel struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	Dim       int       `json:"dim"`
	Samples   int       `json:"samples"`
	FPR       float64   `json:"fpr"`
	Shrinkage float64   `json:"shrinkage"`
	Threshold float64   `json:"threshold"`
	Mean      []float64 `json:"mean"`
	// Whiten is L⁻¹·diag(1/sd), lower triangle, row by row.
	Whiten []float64 `json:"whiten"`
}

const formatName = "aegis-ood-mahalanobis"

// MaxDim is the largest number of features a serialised model may have.
const MaxDim = 4096

// Write writes m as JSON. Floats are written in the shortest form that
// reads back to the same float64, so Read(Write(m)) scores exactly as m.
func (m *Model) Write(w io.Writer) error {
	f := fileModel{
		Format: formatName, Version: FormatVersion, Dim: m.dim, Samples: m.samples,
		FPR: m.fpr, Shrinkage: m.shrinkage, Threshold: m.threshold, Mean: m.mean, Whiten: m.whiten,
	}
	enc := json.NewEncoder(w)
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("write ood model: %w", err)
	}
	return nil
}

// WriteFile writes m to path (mode 0644), replacing it.
func (m *Model) WriteFile(path string) error {
	var b bytes.Buffer
	if err := m.Write(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write ood model: %w", err)
	}
	return nil
}

// Read reads a model written by Write. Unknown fields, a wrong format or
// version, inconsistent lengths and non-finite numbers are errors
// (ErrInvalid).
func Read(r io.Reader) (*Model, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read ood model: %w", err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%w: ood model larger than %d bytes", ErrInvalid, maxFileBytes)
	}
	return Decode(b)
}

// Load reads the model in the file at path.
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load ood model: %w", err)
	}
	defer f.Close()
	m, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("load ood model %s: %w", path, err)
	}
	return m, nil
}

// Decode parses the JSON form of a model.
func Decode(b []byte) (*Model, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f fileModel
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the model", ErrInvalid)
	}
	switch {
	case f.Format != formatName:
		return nil, fmt.Errorf("%w: format %q, want %q", ErrInvalid, f.Format, formatName)
	case f.Version != FormatVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalid, f.Version, FormatVersion)
	case f.Dim < 1 || f.Dim > MaxDim:
		return nil, fmt.Errorf("%w: dim %d: want 1..%d", ErrInvalid, f.Dim, MaxDim)
	case len(f.Mean) != f.Dim:
		return nil, fmt.Errorf("%w: mean has %d values, want dim %d", ErrInvalid, len(f.Mean), f.Dim)
	case len(f.Whiten) != f.Dim*(f.Dim+1)/2:
		return nil, fmt.Errorf("%w: whiten has %d values, want %d", ErrInvalid, len(f.Whiten), f.Dim*(f.Dim+1)/2)
	case f.Samples < MinSamples:
		return nil, fmt.Errorf("%w: samples %d: want at least %d", ErrInvalid, f.Samples, MinSamples)
	case !(f.FPR > 0 && f.FPR <= 0.5):
		return nil, fmt.Errorf("%w: fpr %v: want 0 < fpr <= 0.5", ErrInvalid, f.FPR)
	case !(f.Shrinkage >= 0 && f.Shrinkage <= 1):
		return nil, fmt.Errorf("%w: shrinkage %v: want 0..1", ErrInvalid, f.Shrinkage)
	case !(f.Threshold > 0) || math.IsInf(f.Threshold, 0):
		return nil, fmt.Errorf("%w: threshold %v: want a positive finite number", ErrInvalid, f.Threshold)
	}
	for i, v := range f.Mean {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: mean[%d] is %v", ErrInvalid, i, v)
		}
	}
	for i, v := range f.Whiten {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: whiten[%d] is %v", ErrInvalid, i, v)
		}
	}
	// A whitening matrix with a zero or negative diagonal would score some
	// directions as never out of distribution.
	for i, k := 0, 0; i < f.Dim; i++ {
		k += i
		if !(f.Whiten[k+i] > 0) {
			return nil, fmt.Errorf("%w: whiten diagonal %d is %v, want > 0", ErrInvalid, i, f.Whiten[k+i])
		}
	}
	return &Model{
		dim: f.Dim, mean: f.Mean, whiten: f.Whiten, threshold: f.Threshold,
		samples: f.Samples, fpr: f.FPR, shrinkage: f.Shrinkage,
	}, nil
}

// MaxSampleBytes bounds a reference sample file.
const MaxSampleBytes = 64 << 20

// ReadSample reads a reference sample of normal inputs: JSON
// {"inputs": [[...], ...]}, rows of dim values each, at least twice as
// many rows as features (what Fit needs for a stable covariance), the file
// at most MaxSampleBytes.
func ReadSample(path string, dim int) ([][]float32, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxSampleBytes {
		return nil, fmt.Errorf("%d bytes, over %d", fi.Size(), MaxSampleBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ref struct {
		Inputs [][]float32 `json:"inputs"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		return nil, err
	}
	if len(ref.Inputs) < 2*dim {
		return nil, fmt.Errorf("%d rows, want at least %d (twice the features)", len(ref.Inputs), 2*dim)
	}
	for r, row := range ref.Inputs {
		if len(row) != dim {
			return nil, fmt.Errorf("row %d has %d values, want %d", r, len(row), dim)
		}
	}
	return ref.Inputs, nil
}

// Widen copies a sample read as float32 (ReadSample's rows) into the
// float64 rows Fit takes.
func Widen(rows [][]float32) [][]float64 {
	out := make([][]float64, len(rows))
	for i, row := range rows {
		out[i] = make([]float64, len(row))
		for j, v := range row {
			out[i][j] = float64(v)
		}
	}
	return out
}
