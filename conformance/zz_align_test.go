package conformance

import (
	"context"
	"testing"
	"unsafe"

	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func TestZZAlign(t *testing.T) {
	servertest.InitRuntime(t)
	dir, _ := DataDir()
	for _, name := range []string{"node/test_reduce_sum_default_axes_keepdims_random", "node/test_einsum_sum", "node/test_layer_normalization_4d_axis1_expanded", "node/test_abs"} {
		c, err := LoadCase(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := onnx.NewSession(c.Model, onnx.Options{})
		if err != nil {
			t.Fatal(err)
		}
		run := func(off int) []tensor.Tensor {
			ins := make([]*tensor.Tensor, len(c.DataSets[0].Inputs))
			for i, in := range c.DataSets[0].Inputs {
				buf := make([]byte, len(in.Data)+64)
				// align base to 64 then add off
				base := int(uintptr(unsafe.Pointer(&buf[0])) % 64)
				start := (64-base)%64 + off
				_ = start
				cp := in
				cp.Data = buf[start : start+len(in.Data)]
				copy(cp.Data, in.Data)
				ins[i] = &cp
			}
			res, err := s.Run(context.Background(), ins)
			if err != nil {
				t.Fatal(err)
			}
			out := cloneTensors(res.Outputs)
			res.Release()
			return out
		}
		ref := run(0)
		for _, off := range []int{0, 1, 2, 4, 8, 16, 32} {
			got := run(off)
			t.Logf("%s offset %d: %v", name, off, CompareOutputs(got, ref, Exact))
		}
		s.Close()
	}
}
