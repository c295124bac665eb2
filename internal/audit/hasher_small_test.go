package audit

import (
	"testing"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// BenchmarkHasherSumMLP hashes what one MLP batch-1 request carries: 784
// FP32 inputs and 10 FP32 outputs, in two sums, as the server does.
func BenchmarkHasherSumMLP(b *testing.B) {
	h, err := NewHasher(make([]byte, HMACKeySize))
	if err != nil {
		b.Fatal(err)
	}
	in := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 784}, Data: make([]byte, 784*4)}}
	out := []tensor.Tensor{{Name: "logits", DType: tensor.FP32, Shape: []int64{1, 10}, Data: make([]byte, 40)}}
	b.ReportAllocs()
	for b.Loop() {
		h.Sum(in)
		h.Sum(out)
	}
}
