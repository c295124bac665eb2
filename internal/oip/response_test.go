package oip

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func TestResponseRoundTrip(t *testing.T) {
	resp := &pipeline.Response{Model: "m", Version: "2", ID: "q\"1", Outputs: []pipeline.OutputTensor{
		{Tensor: tensor.Tensor{Name: "p", DType: tensor.FP32, Shape: []int64{3}, Data: f32bytes(0.1, float32(math.Inf(1)), -2)}},
		{Tensor: tensor.Tensor{Name: "s", DType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("a\"\n"), []byte("é")}}},
		{Tensor: tensor.Tensor{Name: "h", DType: tensor.FP16, Shape: []int64{1}, Data: []byte{0, 0x3c}}},
		{Tensor: tensor.Tensor{Name: "b", DType: tensor.Int8, Shape: []int64{2}, Data: []byte{0xff, 1}}, Binary: true},
	}}
	js, bins, err := AppendInferResponse(nil, resp)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string `json:"id"`
		Outputs      []struct {
			Name       string         `json:"name"`
			Datatype   string         `json:"datatype"`
			Shape      []int64        `json:"shape"`
			Data       []any          `json:"data"`
			Parameters map[string]int `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, js)
	}
	if got.ModelName != "m" || got.ModelVersion != "2" || got.ID != "q\"1" {
		t.Errorf("header fields %+v", got)
	}
	if d := got.Outputs[0].Data; float32(d[0].(float64)) != float32(0.1) || d[1] != "Infinity" || d[2].(float64) != -2 {
		t.Errorf("p data %v", d)
	}
	if d := got.Outputs[1].Data; d[0] != "a\"\n" || d[1] != "é" {
		t.Errorf("s data %v", d)
	}
	// FP16 always travels as binary; b was asked for as binary.
	if len(bins) != 2 || got.Outputs[2].Parameters["binary_data_size"] != 2 || got.Outputs[3].Parameters["binary_data_size"] != 2 {
		t.Fatalf("binary outputs %v, params %v %v", bins, got.Outputs[2].Parameters, got.Outputs[3].Parameters)
	}
	if string(bins[1]) != "\xff\x01" {
		t.Errorf("binary b = % x", bins[1])
	}
}

func TestNonUTF8BytesOutputNeedsBinary(t *testing.T) {
	resp := &pipeline.Response{Model: "m", Outputs: []pipeline.OutputTensor{
		{Tensor: tensor.Tensor{Name: "s", DType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{{0xff}}}},
	}}
	if _, _, err := AppendInferResponse(nil, resp); err == nil {
		t.Error("non-UTF-8 BYTES encoded as JSON")
	}
	resp.Outputs[0].Binary = true
	_, bins, err := AppendInferResponse(nil, resp)
	if err != nil || string(bins[0]) != "\x01\x00\x00\x00\xff" {
		t.Errorf("binary: % x, %v", bins, err)
	}
}
