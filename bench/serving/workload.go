package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// modelSpec is a fixture model the benchmark drives: one FP32 input named
// "input" whose rows hold features elements each.
type modelSpec struct {
	name     string
	features int
	shape    func(batch int) []int64
}

var modelSpecs = []modelSpec{
	{name: "digits", features: 64, shape: func(b int) []int64 { return []int64{int64(b), 64} }},
	{name: "mlp", features: 784, shape: func(b int) []int64 { return []int64{int64(b), 784} }},
	{name: "cnn", features: 784, shape: func(b int) []int64 { return []int64{int64(b), 1, 28, 28} }},
}

func lookupModel(name string) (modelSpec, error) {
	for _, m := range modelSpecs {
		if m.name == name {
			return m, nil
		}
	}
	return modelSpec{}, fmt.Errorf("unknown model %q (want digits, mlp or cnn)", name)
}

// workload is one model at one batch size: the same input prebuilt in every
// encoding the benchmark sends, and the outputs bare ONNX Runtime computes
// for it, against which every served response is checked.
type workload struct {
	model modelSpec
	batch int

	input tensor.Tensor // for the bare baseline

	jsonBody []byte // REST, tensor data as a flat JSON array
	binBody  []byte // REST, binary tensor data extension
	binHdr   int    // length of binBody's JSON header
	grpcReq  *pb.ModelInferRequest

	want map[string][]float64 // outputs by name, from bare ONNX Runtime

	// Response sizes, recorded from Aegis's first (verified) answer; every
	// later response, from Aegis or the floor, must have the same size.
	jsonRespLen, binRespLen, grpcRespLen int
}

// inputRows returns batch rows of realistic input for m: held-out digits
// for digits (raw 0..16 pixel values), standard normal values from a fixed
// seed for mlp and cnn. Row i is the same at every batch size.
func inputRows(root string, m modelSpec, batch int) ([]float32, error) {
	out := make([]float32, 0, batch*m.features)
	if m.name == "digits" {
		b, err := os.ReadFile(filepath.Join(root, "testdata", "digits", "heldout.json"))
		if err != nil {
			return nil, err
		}
		var held struct {
			Inputs [][]float32 `json:"inputs"`
		}
		if err := json.Unmarshal(b, &held); err != nil {
			return nil, fmt.Errorf("heldout.json: %w", err)
		}
		if len(held.Inputs) < batch {
			return nil, fmt.Errorf("heldout.json has %d rows, batch %d needs more", len(held.Inputs), batch)
		}
		for _, row := range held.Inputs[:batch] {
			if len(row) != m.features {
				return nil, fmt.Errorf("heldout.json row has %d values, want %d", len(row), m.features)
			}
			out = append(out, row...)
		}
		return out, nil
	}
	seed := uint64(1)
	if m.name == "cnn" {
		seed = 2
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for i := 0; i < batch*m.features; i++ {
		out = append(out, float32(rng.NormFloat64()))
	}
	return out, nil
}

func newWorkload(root string, m modelSpec, batch int) (*workload, error) {
	vals, err := inputRows(root, m, batch)
	if err != nil {
		return nil, err
	}
	shape := m.shape(batch)
	data := alignedBytes(4 * len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	w := &workload{
		model: m,
		batch: batch,
		input: tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: shape, Data: data},
	}

	// REST JSON: 784 (or 64) shortest-round-trip numbers per row.
	js := []byte(`{"inputs":[{"name":"input","shape":`)
	js = appendShape(js, shape)
	js = append(js, `,"datatype":"FP32","data":[`...)
	for i, v := range vals {
		if i > 0 {
			js = append(js, ',')
		}
		js = strconv.AppendFloat(js, float64(v), 'g', -1, 32)
	}
	w.jsonBody = append(js, "]}]}"...)

	// REST binary: a JSON header, then the raw little-endian tensor, and
	// every output asked for as binary data.
	hdr := []byte(`{"inputs":[{"name":"input","shape":`)
	hdr = appendShape(hdr, shape)
	hdr = append(hdr, `,"datatype":"FP32","parameters":{"binary_data_size":`...)
	hdr = strconv.AppendInt(hdr, int64(len(data)), 10)
	hdr = append(hdr, `}}],"parameters":{"binary_data_output":true}}`...)
	w.binHdr = len(hdr)
	w.binBody = append(hdr, data...)

	// gRPC with raw_input_contents (and so raw_output_contents back).
	w.grpcReq = &pb.ModelInferRequest{
		ModelName:        m.name,
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: shape}},
		RawInputContents: [][]byte{data},
	}
	return w, nil
}

// alignedBytes returns n zero bytes starting on a 64-byte boundary, the
// alignment internal/runtime/onnx wants (it copies inputs that are not), so
// the bare baseline and the floor's model run never pay for a copy.
func alignedBytes(n int) []byte {
	const alignment = 64
	buf := make([]byte, n+alignment)
	off := (alignment - int(uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%alignment)) % alignment
	return buf[off : off+n : off+n]
}

func appendShape(b []byte, shape []int64) []byte {
	b = append(b, '[')
	for i, d := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return append(b, ']')
}

// tensorValues returns t's elements as float64 (FP32 and INT64 outputs).
func tensorValues(t *tensor.Tensor) ([]float64, error) {
	return binaryValues(t.DType.String(), t.Data)
}

func binaryValues(datatype string, b []byte) ([]float64, error) {
	var out []float64
	switch datatype {
	case "FP32":
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))))
		}
	case "INT64":
		for i := 0; i+8 <= len(b); i += 8 {
			out = append(out, float64(int64(binary.LittleEndian.Uint64(b[i:]))))
		}
	default:
		return nil, fmt.Errorf("benchmark does not check %s outputs", datatype)
	}
	return out, nil
}

// restOutputs decodes a REST infer response body (with the binary extension
// when hdrLen >= 0) into outputs by name.
func restOutputs(body []byte, hdrLen int) (map[string][]float64, error) {
	js, tail := body, []byte(nil)
	if hdrLen >= 0 {
		if hdrLen > len(body) {
			return nil, fmt.Errorf("header length %d exceeds body %d", hdrLen, len(body))
		}
		js, tail = body[:hdrLen], body[hdrLen:]
	}
	var r struct {
		Outputs []struct {
			Name       string    `json:"name"`
			Datatype   string    `json:"datatype"`
			Data       []float64 `json:"data"`
			Parameters struct {
				BinaryDataSize *int `json:"binary_data_size"`
			} `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.NewDecoder(bytes.NewReader(js)).Decode(&r); err != nil {
		return nil, fmt.Errorf("decode response: %w (body %.200q)", err, js)
	}
	out := map[string][]float64{}
	for _, o := range r.Outputs {
		if n := o.Parameters.BinaryDataSize; n != nil {
			if *n > len(tail) {
				return nil, fmt.Errorf("output %q: binary_data_size %d, %d bytes left", o.Name, *n, len(tail))
			}
			v, err := binaryValues(o.Datatype, tail[:*n])
			if err != nil {
				return nil, err
			}
			out[o.Name], tail = v, tail[*n:]
			continue
		}
		out[o.Name] = o.Data
	}
	if len(tail) != 0 {
		return nil, fmt.Errorf("%d unclaimed bytes of binary data", len(tail))
	}
	return out, nil
}

// grpcOutputs decodes a raw-contents ModelInferResponse.
func grpcOutputs(r *pb.ModelInferResponse) (map[string][]float64, error) {
	if len(r.RawOutputContents) != len(r.Outputs) {
		return nil, fmt.Errorf("%d raw outputs for %d outputs", len(r.RawOutputContents), len(r.Outputs))
	}
	out := map[string][]float64{}
	for i, o := range r.Outputs {
		v, err := binaryValues(o.Datatype, r.RawOutputContents[i])
		if err != nil {
			return nil, err
		}
		out[o.Name] = v
	}
	return out, nil
}

// checkOutputs compares served outputs with bare ONNX Runtime's.
func checkOutputs(want, got map[string][]float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d outputs, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			return fmt.Errorf("output %q missing", name)
		}
		if len(g) != len(w) {
			return fmt.Errorf("output %q: got %d values, want %d", name, len(g), len(w))
		}
		for i := range w {
			if math.Abs(g[i]-w[i]) > 1e-5*math.Max(1, math.Abs(w[i])) {
				return fmt.Errorf("output %q[%d]: got %v, want %v", name, i, g[i], w[i])
			}
		}
	}
	return nil
}

func grpcRawBytes(r *pb.ModelInferResponse) int {
	n := 0
	for _, b := range r.RawOutputContents {
		n += len(b)
	}
	return n
}
