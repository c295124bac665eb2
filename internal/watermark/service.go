package watermark

import (
	"context"
	"slices"
	"time"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Anonymous is the principal pairs are recorded under when a request
// carries none.
const Anonymous = "anonymous"

// Service marks responses and records the marked pairs of each principal.
// It implements outguard.Marker; give it to outguard.Guard.
type Service struct {
	// Models returns the watermarker of a model version, or nil when the
	// model is not watermarked.
	Models func(pipeline.Target) *Watermarker
	// Recorder stores the marked pairs; nil marks without recording
	// (useless as evidence, but the answers stay consistent).
	Recorder *Recorder
	// Now returns the time recorded with a pair; nil means time.Now.
	Now func() time.Time
}

// Marks implements outguard.Marker: the models Models gives a watermarker.
func (s *Service) Marks(model pipeline.Target) bool {
	return s.Models != nil && model != nil && s.Models(model) != nil
}

// Mark implements outguard.Marker: every row whose label is in range is
// hashed; the marked ones get their watermark label and their pair is
// queued for recording under the request's principal.
func (s *Service) Mark(ctx context.Context, model pipeline.Target, inputs []tensor.Tensor, labels []int64, classes int) {
	if s.Models == nil || model == nil {
		return
	}
	w := s.Models(model)
	if w == nil || (classes != 0 && classes != w.classes) {
		// A scores output with another class count than configured:
		// the model changed under the configuration; do not mark.
		return
	}
	principal := Anonymous
	if p := pipeline.PrincipalFrom(ctx); p != nil && p.ID != "" {
		principal = p.ID
	}
	batch := len(labels)
	for r, y := range labels {
		row := RowInputs(inputs, r, batch)
		c, marked, mac := w.markRow(row, int(y))
		if !marked {
			continue
		}
		labels[r] = int64(c)
		if s.Recorder == nil {
			continue
		}
		now := time.Now
		if s.Now != nil {
			now = s.Now
		}
		s.Recorder.Record(principal, Pair{
			Time:      now().UTC(),
			Model:     model.Name(),
			Version:   model.Version(),
			Classes:   w.classes,
			Label:     c,
			TrueLabel: int(y),
			Inputs:    copyInputs(row),
			MAC:       mac,
		})
	}
}

// copyInputs copies row's data out of the request's buffers, which the
// transport reuses once the response is written.
func copyInputs(row []tensor.Tensor) []tensor.Tensor {
	out := make([]tensor.Tensor, len(row))
	for i, t := range row {
		out[i] = tensor.Tensor{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
		for _, s := range t.Strings {
			out[i].Strings = append(out[i].Strings, slices.Clone(s))
		}
	}
	return out
}
