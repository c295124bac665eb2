package app

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// maxVerifyRows bounds a watermark verification request.
const maxVerifyRows = 5000

// WatermarkVerdict is the answer of POST /admin/v1/watermark/verify.
type WatermarkVerdict struct {
	Model string `json:"model"`
	// Marked is how many of the inputs the watermark marks; Matched how
	// many of those the suspect answered with the watermark label.
	Marked  int     `json:"marked"`
	Matched int     `json:"matched"`
	PValue  float64 `json:"p_value"`
	// Log2PValue keeps the figure exact far below 2^-64.
	Log2PValue float64          `json:"log2_p_value"`
	Result     watermark.Result `json:"result"`
}

// VerifyWatermark tests a suspect model's answers (labels, its top-1 on
// inputs, and optionally scores, one per class) against the watermark of
// model: the server runs its own model on the inputs, finds the ones its
// watermark marks and with which label, and tests the suspect's answers on
// those as watermark.Verify does. A suspect trained on the server's marked
// answers reproduces the marks, or ranks them next, far more often than
// chance.
func (s *Server) VerifyWatermark(ctx context.Context, model string, inputs [][]float32, labels []int64, scores [][]float64) (WatermarkVerdict, error) {
	if len(inputs) == 0 || len(inputs) != len(labels) || len(inputs) > maxVerifyRows {
		return WatermarkVerdict{}, apierr.Invalid("want 1..%d inputs and as many labels", maxVerifyRows)
	}
	if scores != nil && len(scores) != len(inputs) {
		return WatermarkVerdict{}, apierr.Invalid("want scores for every input or none")
	}
	v, release, err := s.Registry.Acquire(model, "")
	if err != nil {
		return WatermarkVerdict{}, apierr.New(apierr.NotFound, "unknown model %q", model)
	}
	defer release()
	w := v.Watermarker()
	if w == nil {
		return WatermarkVerdict{}, apierr.New(apierr.NotFound, "model %q is not watermarked", model)
	}
	specs := v.Inputs()
	if len(specs) != 1 || specs[0].DType != tensor.FP32 || len(specs[0].Shape) != 2 || specs[0].Shape[1] < 1 {
		return WatermarkVerdict{}, apierr.Invalid("verification takes models with one FP32 [batch, features] input")
	}
	dim := int(specs[0].Shape[1])
	in := tensor.Tensor{Name: specs[0].Name, DType: tensor.FP32, Shape: []int64{int64(len(inputs)), int64(dim)}}
	in.Data = make([]byte, 0, 4*dim*len(inputs))
	for i, row := range inputs {
		if len(row) != dim {
			return WatermarkVerdict{}, apierr.Invalid("input %d has %d values, want %d", i, len(row), dim)
		}
		for _, x := range row {
			in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(x))
		}
	}
	res, err := v.Session().Run(ctx, []*tensor.Tensor{&in})
	if err != nil {
		return WatermarkVerdict{}, apierr.Wrap(apierr.Internal, err, "the model could not run on these inputs")
	}
	defer res.Release()
	truth, err := outguard.Labels(res.Outputs, v.Outputs(), v.Outguard().LabelOutput, v.Outguard().ScoresOutput)
	if err != nil {
		return WatermarkVerdict{}, apierr.Wrap(apierr.Internal, err, "cannot read the model's labels")
	}
	marked := append([]int64(nil), truth...)
	svc := &watermark.Service{Models: func(pipeline.Target) *watermark.Watermarker { return w }}
	classes := 0
	for _, o := range v.Outputs() {
		if (o.DType == tensor.FP32 || o.DType == tensor.FP64) && len(o.Shape) == 2 && o.Shape[1] > 0 {
			classes = int(o.Shape[1])
		}
	}
	// Mark each row as a batch-1 request carrying it was marked.
	for r := range inputs {
		row := watermark.RowInputs([]tensor.Tensor{in}, r, len(inputs))
		svc.Mark(ctx, v, row, marked[r:r+1], classes)
	}
	if classes < 3 {
		return WatermarkVerdict{}, errors.New("watermark: model has fewer than 3 classes")
	}
	var pairs []watermark.Pair
	var rows []int
	for r := range marked {
		if marked[r] != truth[r] {
			pairs = append(pairs, watermark.Pair{Classes: classes, Label: int(marked[r]), TrueLabel: int(truth[r])})
			rows = append(rows, r)
		}
	}
	if len(pairs) == 0 {
		return WatermarkVerdict{}, apierr.Invalid("none of these inputs is marked: send the queries the suspect was trained on")
	}
	i := 0 // Verify asks in the order of pairs
	tested, err := watermark.Verify(pairs, func(*watermark.Pair) (watermark.Answer, error) {
		r := rows[i]
		i++
		a := watermark.Answer{Label: labels[r]}
		if scores != nil {
			a.Scores = scores[r]
		}
		return a, nil
	})
	if errors.Is(err, watermark.ErrScoreClasses) {
		return WatermarkVerdict{}, apierr.Invalid("want %d scores per input, one per class", classes)
	}
	if err != nil {
		return WatermarkVerdict{}, fmt.Errorf("watermark: %w", err)
	}
	verdict := WatermarkVerdict{Model: model, Marked: tested.Pairs, Matched: tested.AgreeWatermark, Result: tested}
	verdict.Log2PValue = verdict.Result.Log2P
	verdict.PValue = verdict.Result.P()
	return verdict, nil
}
