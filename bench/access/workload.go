package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"github.com/aegis-inference/aegis/internal/oip/pb"
)

// workload is one model at one batch size, prebuilt in both encodings the
// benchmark sends: the same inputs as bench/serving sends.
type workload struct {
	model    string
	features int
	batch    int
	requests int // measured requests per cell and round
	warmup   int // warm-up requests per client

	jsonBody []byte // REST, tensor data as a flat JSON array
	grpcReq  *pb.ModelInferRequest

	// Filled by check from the baseline's first answer: every response of
	// every instance must have these sizes.
	jsonRespLen, grpcRespLen int
}

func (w *workload) String() string { return fmt.Sprintf("%s batch %d", w.model, w.batch) }

// features of the fixture models the benchmark drives (one FP32 input
// named "input" of shape [batch, features]).
var modelFeatures = map[string]int{"digits": 64, "mlp": 784}

// newWorkload builds the requests for model at batch: held-out digits rows
// (raw 0..16 pixel values) for digits, standard normal values from a fixed
// seed (PCG 1) for mlp.
func newWorkload(root, model string, batch int) (*workload, error) {
	n, ok := modelFeatures[model]
	if !ok {
		return nil, fmt.Errorf("unknown model %q (want digits or mlp)", model)
	}
	vals := make([]float32, 0, batch*n)
	if model == "digits" {
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
			if len(row) != n {
				return nil, fmt.Errorf("heldout.json row has %d values, want %d", len(row), n)
			}
			vals = append(vals, row...)
		}
	} else {
		rng := rand.New(rand.NewPCG(1, 0x5eed))
		for range batch * n {
			vals = append(vals, float32(rng.NormFloat64()))
		}
	}
	shape := []int64{int64(batch), int64(n)}
	js := []byte(`{"inputs":[{"name":"input","shape":[`)
	js = strconv.AppendInt(js, int64(batch), 10)
	js = append(js, ',')
	js = strconv.AppendInt(js, int64(n), 10)
	js = append(js, `],"datatype":"FP32","data":[`...)
	raw := make([]byte, 4*len(vals))
	for i, v := range vals {
		if i > 0 {
			js = append(js, ',')
		}
		js = strconv.AppendFloat(js, float64(v), 'g', -1, 32)
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &workload{
		model: model, features: n, batch: batch,
		jsonBody: append(js, "]}]}"...),
		grpcReq: &pb.ModelInferRequest{
			ModelName:        model,
			Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: shape}},
			RawInputContents: [][]byte{raw},
		},
	}, nil
}

// rawBytes is the total size of a gRPC response's raw outputs.
func rawBytes(r *pb.ModelInferResponse) int {
	n := 0
	for _, b := range r.RawOutputContents {
		n += len(b)
	}
	return n
}
