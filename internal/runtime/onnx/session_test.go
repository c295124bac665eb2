package onnx_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func loadFixture(t *testing.T, name string, opts onnx.Options) *onnx.Session {
	t.Helper()
	servertest.InitRuntime(t)
	b, err := os.ReadFile(filepath.Join(servertest.Models(t), name, "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := onnx.NewSession(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMetadataFromModel(t *testing.T) {
	s := loadFixture(t, "multi_io", onnx.Options{})
	defer s.Close()
	in, out := s.Inputs(), s.Outputs()
	if len(in) != 2 || in[0].Name != "a" || in[0].DType != tensor.FP32 || in[1].DType != tensor.Int64 {
		t.Errorf("inputs %+v", in)
	}
	if len(in[0].Shape) != 2 || in[0].Shape[0] != -1 || in[0].Shape[1] != 4 {
		t.Errorf("input a shape %v, want [-1 4]", in[0].Shape)
	}
	if len(out) != 3 || out[2].Name != "argmax" || out[2].DType != tensor.Int64 {
		t.Errorf("outputs %+v", out)
	}
}

func TestCorruptModelRefused(t *testing.T) {
	servertest.InitRuntime(t)
	for name, b := range map[string][]byte{"garbage": []byte("not an onnx model"), "empty": nil} {
		if s, err := onnx.NewSession(b, onnx.Options{}); err == nil {
			s.Close()
			t.Errorf("%s model accepted", name)
		}
	}
}

func fp16Tensor(vals ...uint16) *tensor.Tensor {
	t := &tensor.Tensor{Name: "x", DType: tensor.FP16, Shape: []int64{1, int64(len(vals))}}
	for _, v := range vals {
		t.Data = binary.LittleEndian.AppendUint16(t.Data, v)
	}
	return t
}

// TestFP16OutputsWhole guards the patched output copy: 16-bit outputs come
// back with every byte.
func TestFP16OutputsWhole(t *testing.T) {
	s := loadFixture(t, "dtype_fp16", onnx.Options{})
	defer s.Close()
	in := fp16Tensor(0x3c00, 0xc000, 0x7bff) // 1, -2, 65504
	res, err := s.Run(context.Background(), []*tensor.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if got := res.Outputs[0].Data; string(got) != string(in.Data) {
		t.Errorf("y = % x, want % x", got, in.Data)
	}
}

// TestEmptyTensor runs a zero-element batch.
func TestEmptyTensor(t *testing.T) {
	s := loadFixture(t, "dtype_fp32", onnx.Options{})
	defer s.Close()
	res, err := s.Run(context.Background(), []*tensor.Tensor{{Name: "x", DType: tensor.FP32, Shape: []int64{0, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	if o := res.Outputs[0]; len(o.Data) != 0 || o.Shape[0] != 0 || o.Shape[1] != 3 {
		t.Errorf("got shape %v with %d bytes, want [0 3] and none", o.Shape, len(o.Data))
	}
}

// TestCloseWaitsForRuns checks that Close lets in-flight runs finish and
// that runs after Close fail cleanly.
func TestCloseWaitsForRuns(t *testing.T) {
	s := loadFixture(t, "mlp", onnx.Options{Concurrency: 2})
	in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{64, 784}}
	for i := 0; i < 64*784; i++ {
		in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(float32(i%7)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Run(context.Background(), []*tensor.Tensor{in})
			if err == nil {
				if len(res.Outputs[0].Data) != 64*10*4 {
					t.Errorf("got %d output bytes", len(res.Outputs[0].Data))
				}
				res.Release()
			}
			errs <- err
		}()
	}
	time.Sleep(time.Millisecond)
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && err != onnx.ErrClosed {
			t.Errorf("run: %v", err)
		}
	}
	if _, err := s.Run(context.Background(), []*tensor.Tensor{in}); err != onnx.ErrClosed {
		t.Errorf("run after close: %v, want ErrClosed", err)
	}
}

// TestRunHonoursContext: a run waiting for a slot gives up with its context.
func TestRunHonoursContext(t *testing.T) {
	s := loadFixture(t, "digits", onnx.Options{Concurrency: 1})
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 64}, Data: make([]byte, 256)}
	if _, err := s.Run(ctx, []*tensor.Tensor{in}); err != context.Canceled {
		t.Errorf("run with a cancelled context: %v, want context.Canceled", err)
	}
}

// TestBusyAfterMaxWait: with every slot taken, a run gives up with ErrBusy
// after MaxWait instead of queueing without bound.
func TestBusyAfterMaxWait(t *testing.T) {
	s := loadFixture(t, "mlp", onnx.Options{Concurrency: 1, MaxWait: 5 * time.Millisecond})
	defer s.Close()
	big := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{8192, 784}, Data: make([]byte, 8192*784*4)}
	small := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 784}, Data: make([]byte, 784*4)}
	done := make(chan error, 1)
	go func() {
		res, err := s.Run(context.Background(), []*tensor.Tensor{big})
		if err == nil {
			res.Release()
		}
		done <- err
	}()
	// Until the big run holds the only slot, small runs succeed; once it
	// does, they must fail fast with ErrBusy.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		res, err := s.Run(context.Background(), []*tensor.Tensor{small})
		if err == onnx.ErrBusy {
			if err := <-done; err != nil {
				t.Fatalf("big run: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		select {
		case err := <-done:
			t.Fatalf("big run finished (%v) before any run was refused", err)
		default:
		}
	}
	t.Fatal("no run was refused with ErrBusy")
}

// TestDisablePrepackingSameResults: the option changes memory, not numbers.
func TestDisablePrepackingSameResults(t *testing.T) {
	a := loadFixture(t, "mlp", onnx.Options{})
	defer a.Close()
	b := loadFixture(t, "mlp", onnx.Options{DisablePrepacking: true})
	defer b.Close()
	in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{4, 784}}
	for i := 0; i < 4*784; i++ {
		in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(float32(i%17)/17-0.5))
	}
	ra, err := a.Run(context.Background(), []*tensor.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Run(context.Background(), []*tensor.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range ra.Outputs[0].Data {
		if d := int(x) - int(rb.Outputs[0].Data[i]); d != 0 {
			// Prepacked and plain kernels may sum in a different order;
			// compare as floats with a tight tolerance.
			fa := math.Float32frombits(binary.LittleEndian.Uint32(ra.Outputs[0].Data[i/4*4:]))
			fb := math.Float32frombits(binary.LittleEndian.Uint32(rb.Outputs[0].Data[i/4*4:]))
			if math.Abs(float64(fa-fb)) > 1e-4*math.Max(1, math.Abs(float64(fa))) {
				t.Fatalf("output %d: %v with prepacking, %v without", i/4, fa, fb)
			}
		}
	}
}
