package e2e

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// TestResultsIndependentOfFraming: a reduction's low bits depend on the
// alignment of its input buffer in ONNX Runtime's vectorised kernels. The
// binary extension puts input bytes at whatever offset the JSON header
// leaves, so the request id's length moves them; the result must not move.
func TestResultsIndependentOfFraming(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	rng := rand.New(rand.NewPCG(3, 4))
	x := randomTensor(rng, tensor.Spec{Name: "x", DType: tensor.FP32, Shape: []int64{7, 301}}, 0)
	want := inProcess(t, "scalar", []tensor.Tensor{x})[0]
	for _, c := range srv.Clients(t) {
		for pad := 0; pad < 16; pad++ {
			resp, err := c.Infer(context.Background(), &servertest.Request{Model: "scalar", ID: strings.Repeat("x", pad), Inputs: []tensor.Tensor{x}})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Outputs[0].Data; !bytes.Equal(got, want.Data) {
				t.Errorf("%s, id length %d: total % x, in-process % x", c.Name(), pad, got, want.Data)
			}
		}
	}
}
