package watermark_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// BenchmarkMark measures deciding one row: the canonical bytes and their
// HMAC, for a digits row (64 FP32) and a 224×224×3 FP32 image.
func BenchmarkMark(b *testing.B) {
	w, err := watermark.New(testKey, watermark.DefaultRate, 10)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{64, 224 * 224 * 3} {
		row := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, int64(n)}, Data: make([]byte, 4*n)}}
		b.Run(fmt.Sprintf("fp32x%d", n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				w.Mark(watermark.Canonical(row), 3)
			}
		})
	}
}

type benchTarget struct{}

func (benchTarget) Name() string    { return "digits" }
func (benchTarget) Version() string { return "1" }

// BenchmarkServiceMark measures what a request pays: Service.Mark on a
// one-row digits request (nothing recorded: the row is not marked).
func BenchmarkServiceMark(b *testing.B) {
	w, err := watermark.New(testKey, watermark.DefaultRate, 10)
	if err != nil {
		b.Fatal(err)
	}
	svc := &watermark.Service{Models: func(pipeline.Target) *watermark.Watermarker { return w }}
	in := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 64}, Data: make([]byte, 256)}}
	labels := []int64{3}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		labels[0] = 3
		svc.Mark(ctx, benchTarget{}, in, labels, 10)
	}
}
