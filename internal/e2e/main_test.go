// Package e2e tests Aegis end to end: a real server on loopback, real
// ONNX Runtime, and every protocol encoding, with the same test body run
// over REST (JSON and binary) and gRPC (typed and raw contents).
package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// randomTensor makes a deterministic tensor for spec, replacing variable
// dimensions with dyn.
func randomTensor(rng *rand.Rand, spec tensor.Spec, dyn int64) tensor.Tensor {
	shape := make([]int64, len(spec.Shape))
	for i, d := range spec.Shape {
		if d < 0 {
			d = dyn
		}
		shape[i] = d
	}
	t := tensor.Tensor{Name: spec.Name, DType: spec.DType, Shape: shape}
	n := t.Elements()
	switch spec.DType {
	case tensor.Bytes:
		words := []string{"yes", "no", "héllo", "ΑΒΓ", "mixed Case", "with \"quotes\" and \\", "tab\tnewline\n", "ok"}
		for i := int64(0); i < n; i++ {
			t.Strings = append(t.Strings, []byte(words[rng.IntN(len(words))]))
		}
	case tensor.Bool:
		for i := int64(0); i < n; i++ {
			t.Data = append(t.Data, byte(rng.IntN(2)))
		}
	case tensor.FP32:
		for i := int64(0); i < n; i++ {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(rng.NormFloat64()*3)))
		}
	case tensor.FP64:
		for i := int64(0); i < n; i++ {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(rng.NormFloat64()*1e6))
		}
	case tensor.FP16, tensor.BF16:
		// Finite values only: exponent bits not all ones.
		for i := int64(0); i < n; i++ {
			v := uint16(rng.Uint32())
			if spec.DType == tensor.FP16 {
				v &^= 0x4000 // clear the top exponent bit: never Inf or NaN
			} else {
				v &^= 0x4000
			}
			t.Data = binary.LittleEndian.AppendUint16(t.Data, v)
		}
	default:
		t.Data = make([]byte, n*int64(spec.DType.Size()))
		for i := range t.Data {
			t.Data[i] = byte(rng.Uint32())
		}
	}
	if t.Data == nil && spec.DType != tensor.Bytes {
		t.Data = []byte{}
	}
	return t
}

// fixtureModels lists the fixture models.
func fixtureModels(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(servertest.Models(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) < 20 {
		t.Fatalf("found %d fixture models, want at least 20", len(names))
	}
	return names
}

// inProcess runs a fixture on ONNX Runtime directly.
func inProcess(t *testing.T, model string, inputs []tensor.Tensor) []tensor.Tensor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(servertest.Models(t), model, "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := onnx.NewSession(b, onnx.Options{})
	if err != nil {
		t.Fatalf("%s: %v", model, err)
	}
	defer s.Close()
	ptrs := make([]*tensor.Tensor, len(inputs))
	for i := range inputs {
		ptrs[i] = &inputs[i]
	}
	res, err := s.Run(context.Background(), ptrs)
	if err != nil {
		t.Fatalf("%s: run: %v", model, err)
	}
	defer res.Release()
	out := make([]tensor.Tensor, len(res.Outputs))
	for i, o := range res.Outputs {
		o.Data = slices.Clone(o.Data)
		out[i] = o
	}
	return out
}

// sameTensor reports how got differs from want, or "" if it does not.
func sameTensor(got, want tensor.Tensor) string {
	switch {
	case got.Name != want.Name:
		return fmt.Sprintf("name %q, want %q", got.Name, want.Name)
	case got.DType != want.DType:
		return fmt.Sprintf("%s: datatype %s, want %s", want.Name, got.DType, want.DType)
	case !slices.Equal(got.Shape, want.Shape):
		return fmt.Sprintf("%s: shape %v, want %v", want.Name, got.Shape, want.Shape)
	}
	if want.DType == tensor.Bytes {
		if len(got.Strings) != len(want.Strings) {
			return fmt.Sprintf("%s: %d strings, want %d", want.Name, len(got.Strings), len(want.Strings))
		}
		for i := range want.Strings {
			if !bytes.Equal(got.Strings[i], want.Strings[i]) {
				return fmt.Sprintf("%s[%d]: %q, want %q", want.Name, i, got.Strings[i], want.Strings[i])
			}
		}
		return ""
	}
	if !bytes.Equal(got.Data, want.Data) {
		return fmt.Sprintf("%s: data differs (%d bytes, want %d)", want.Name, len(got.Data), len(want.Data))
	}
	return ""
}

func TestMain(m *testing.M) {
	if path := os.Getenv(childConfigEnv); path != "" {
		serveChild(path) // never returns
	}
	os.Exit(m.Run())
}

func newRNG() *rand.Rand { return rand.New(rand.NewPCG(11, 13)) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func fmtInt(n int) string { return fmt.Sprint(n) }

func newServer(cfg config.Config) (*app.Server, error) { return app.New(cfg, discardLogger()) }
