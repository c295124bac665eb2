package oip

import (
	"testing"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// FuzzDecodeInferRequest feeds arbitrary JSON headers and binary tails to
// the decoder: it must never panic, and whatever it accepts must be
// consistent with the declared shapes and within the limits.
func FuzzDecodeInferRequest(f *testing.F) {
	f.Add([]byte(`{"id":"a","inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"data":["a","\u00e9"]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}`), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":9}}]}`), []byte{1, 0, 0, 0, 'a', 0, 0, 0, 0})
	f.Add([]byte(`{"parameters":{"binary_data_output":true},"inputs":[{"name":"b","datatype":"BOOL","shape":[],"data":true}]}`), []byte(nil))
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"FP16","shape":[1],"parameters":{"binary_data_size":2}}]}`), []byte{0, 0x3c})
	lim := Limits{MaxInputs: 8, MaxTensorBytes: 1 << 16, MaxDepth: 16, MaxRank: 8}
	f.Fuzz(func(t *testing.T, header, bin []byte) {
		req, err := DecodeInferRequest(header, bin, lim)
		if err != nil {
			return
		}
		if len(req.Inputs) == 0 || len(req.Inputs) > lim.MaxInputs {
			t.Fatalf("accepted %d inputs", len(req.Inputs))
		}
		total := 0
		for _, in := range req.Inputs {
			n, err := tensor.NumElements(in.Shape)
			if err != nil {
				t.Fatalf("accepted shape %v: %v", in.Shape, err)
			}
			if len(in.Shape) > lim.MaxRank {
				t.Fatalf("accepted rank %d", len(in.Shape))
			}
			if in.DType == tensor.Bytes {
				if int64(len(in.Strings)) != n {
					t.Fatalf("%d strings for shape %v", len(in.Strings), in.Shape)
				}
			} else if int64(len(in.Data)) != n*int64(in.DType.Size()) {
				t.Fatalf("%d bytes for shape %v of %s", len(in.Data), in.Shape, in.DType)
			}
			total += in.ByteSize()
		}
		if int64(total) > lim.MaxTensorBytes {
			t.Fatalf("decoded %d bytes, limit %d", total, lim.MaxTensorBytes)
		}
	})
}

// FuzzFromBinary checks the binary framing of every datatype: no panic, and
// accepted data always matches the element count exactly.
func FuzzFromBinary(f *testing.F) {
	f.Add(uint8(tensor.Bytes), int64(2), []byte{1, 0, 0, 0, 'a', 0, 0, 0, 0})
	f.Add(uint8(tensor.FP32), int64(1), []byte{0, 0, 0x80, 0x3f})
	f.Add(uint8(tensor.Bool), int64(2), []byte{0, 1})
	f.Add(uint8(tensor.Bytes), int64(1), []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, dt uint8, n int64, b []byte) {
		d := tensor.DType(dt)
		if !d.Valid() || n < 0 || n > 1<<20 {
			return
		}
		tt := tensor.Tensor{Name: "x", DType: d, Shape: []int64{n}}
		if err := FromBinary(&tt, n, b); err != nil {
			return
		}
		if d == tensor.Bytes {
			if int64(len(tt.Strings)) != n || tt.ByteSize() != len(b) {
				t.Fatalf("%d strings / %d bytes from %d bytes, want %d", len(tt.Strings), tt.ByteSize(), len(b), n)
			}
		} else if int64(len(tt.Data)) != n*int64(d.Size()) {
			t.Fatalf("%d bytes for %d elements of %s", len(tt.Data), n, d)
		}
	})
}
