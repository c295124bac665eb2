package watermark_test

import (
	"fmt"
	"testing"

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
