package oip

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func f32bytes(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestDecodeFlatAndNestedAgree(t *testing.T) {
	flat := `{"id":"a","inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2.5,-3e2,0]}]}`
	nested := `{"inputs":[{"data":[[1,2.5],[-3e2,0]],"shape":[2,2],"datatype":"FP32","name":"x"}],"id":"a"}`
	want := f32bytes(1, 2.5, -300, 0)
	for name, body := range map[string]string{"flat": flat, "nested (data first)": nested} {
		t.Run(name, func(t *testing.T) {
			req, err := DecodeInferRequest([]byte(body), nil, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if req.ID != "a" {
				t.Errorf("id %q, want a", req.ID)
			}
			if got := req.Inputs[0].Data; string(got) != string(want) {
				t.Errorf("data % x, want % x", got, want)
			}
		})
	}
}

func TestDecodeEveryDatatypeFromJSON(t *testing.T) {
	tests := []struct {
		dt   string
		data string
		want []byte
	}{
		{"BOOL", "[true,false]", []byte{1, 0}},
		{"UINT8", "[0,255]", []byte{0, 255}},
		{"INT8", "[-128,127]", []byte{0x80, 0x7f}},
		{"UINT16", "[1,65535]", []byte{1, 0, 0xff, 0xff}},
		{"INT16", "[-1,2]", []byte{0xff, 0xff, 2, 0}},
		{"UINT32", "[1,4294967295]", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{"INT32", "[-2,3]", []byte{0xfe, 0xff, 0xff, 0xff, 3, 0, 0, 0}},
		{"UINT64", "[18446744073709551615,0]", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"INT64", "[-9223372036854775808,1]", []byte{0, 0, 0, 0, 0, 0, 0, 0x80, 1, 0, 0, 0, 0, 0, 0, 0}},
		{"FP32", `[1.5,"NaN"]`, f32bytes(1.5, float32(math.NaN()))},
		{"FP64", `["-Infinity",0.1]`, binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.Inf(-1))), math.Float64bits(0.1))},
	}
	for _, tc := range tests {
		t.Run(tc.dt, func(t *testing.T) {
			body := `{"inputs":[{"name":"x","datatype":"` + tc.dt + `","shape":[2],"data":` + tc.data + `}]}`
			req, err := DecodeInferRequest([]byte(body), nil, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			got := req.Inputs[0].Data
			if tc.dt == "FP32" {
				// NaN bit patterns vary; compare the first element and NaN-ness.
				if string(got[:4]) != string(tc.want[:4]) || !math.IsNaN(float64(math.Float32frombits(binary.LittleEndian.Uint32(got[4:])))) {
					t.Errorf("got % x", got)
				}
				return
			}
			if string(got) != string(tc.want) {
				t.Errorf("got % x, want % x", got, tc.want)
			}
		})
	}
}

func TestDecodeBytesAndEscapes(t *testing.T) {
	body := `{"inputs":[{"name":"s","datatype":"BYTES","shape":[3],"data":["plain","tab\tq\"\\ \u00e9\ud83d\ude00",""]}]}`
	req, err := DecodeInferRequest([]byte(body), nil, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"plain", "tab\tq\"\\ é😀", ""}
	for i, s := range req.Inputs[0].Strings {
		if string(s) != want[i] {
			t.Errorf("element %d = %q, want %q", i, s, want[i])
		}
	}
}

func TestDecodeBinaryExtension(t *testing.T) {
	hdr := `{"inputs":[{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},` +
		`{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":11}},` +
		`{"name":"j","datatype":"INT32","shape":[1],"data":[7]}],` +
		`"outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}`
	bin := append(f32bytes(1, 2), 2, 0, 0, 0, 'h', 'i', 1, 0, 0, 0, '!')
	req, err := DecodeInferRequest([]byte(hdr), bin, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if string(req.Inputs[0].Data) != string(f32bytes(1, 2)) {
		t.Errorf("a = % x", req.Inputs[0].Data)
	}
	if s := req.Inputs[1].Strings; len(s) != 2 || string(s[0]) != "hi" || string(s[1]) != "!" {
		t.Errorf("s = %q", s)
	}
	if req.Inputs[2].Data[0] != 7 {
		t.Errorf("j = % x", req.Inputs[2].Data)
	}
	if !req.Outputs[0].Binary || req.Outputs[1].Binary {
		t.Errorf("binary flags %v %v, want true false", req.Outputs[0].Binary, req.Outputs[1].Binary)
	}
}

func TestDecodeErrors(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxTensorBytes = 1 << 20
	tests := []struct {
		name string
		body string
		bin  []byte
		kind apierr.Kind
		msg  string
	}{
		{"no inputs", `{}`, nil, apierr.InvalidArgument, "no inputs"},
		{"id not a string", `{"id":1,"inputs":[]}`, nil, apierr.InvalidArgument, "'id'"},
		{"no shape", `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, nil, apierr.InvalidArgument, "no shape"},
		{"no data", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}`, nil, apierr.InvalidArgument, "no data"},
		{"no name", `{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}`, nil, apierr.InvalidArgument, "no name"},
		{"both data and binary", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, make([]byte, 4), apierr.InvalidArgument, "both"},
		{"over tensor budget", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000],"data":[1]}]}`, nil, apierr.TooLarge, "limit"},
		{"int with fraction", `{"inputs":[{"name":"x","datatype":"INT32","shape":[1],"data":[1.5]}]}`, nil, apierr.InvalidArgument, "INT32"},
		{"bool as number", `{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"data":[1]}]}`, nil, apierr.InvalidArgument, "true or false"},
		{"binary BOOL not 0 or 1", `{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":1}}]}`, []byte{2}, apierr.InvalidArgument, "0 or 1"},
		{"negative binary size", `{"inputs":[{"name":"x","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":-1}}]}`, nil, apierr.InvalidArgument, "non-negative"},
		{"nested parameter", `{"parameters":{"a":{"b":1}},"inputs":[]}`, nil, apierr.InvalidArgument, "string, number or boolean"},
		{"invalid UTF-8", "{\"inputs\":[{\"name\":\"\xff\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}", nil, apierr.InvalidArgument, "valid JSON string"},
		{"unescaped control char", "{\"id\":\"a\nb\",\"inputs\":[]}", nil, apierr.InvalidArgument, "string"},
		{"leading zero number", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[01,1]}]}`, nil, apierr.InvalidArgument, "malformed"},
		{"BYTES over budget", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["` + strings.Repeat("a", 1<<20) + `"]}]}`, nil, apierr.TooLarge, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeInferRequest([]byte(tc.body), tc.bin, lim)
			var e *apierr.Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want an *apierr.Error", err)
			}
			if e.Kind != tc.kind || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("got %s %q, want %s containing %q", e.Kind, e.Msg, tc.kind, tc.msg)
			}
		})
	}
}

func TestNumElementsRefusesOverflow(t *testing.T) {
	if _, err := tensor.NumElements([]int64{1 << 40, 1 << 40}); err == nil {
		t.Error("2^80 elements accepted")
	}
	if n, err := tensor.NumElements([]int64{0, 1 << 62}); err != nil || n != 0 {
		t.Errorf("got %d, %v; want 0 elements", n, err)
	}
	if n, err := tensor.NumElements(nil); err != nil || n != 1 {
		t.Errorf("scalar: got %d, %v; want 1", n, err)
	}
}
