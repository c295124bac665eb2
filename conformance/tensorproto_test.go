package conformance

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// tp builds a serialized TensorProto field by field.
type tp []byte

func (b tp) dims(ds ...int64) tp {
	for _, d := range ds {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	return b
}

func (b tp) varint(num protowire.Number, v uint64) tp {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (b tp) dtype(t int32) tp { return b.varint(2, uint64(t)) }

func (b tp) bytes(num protowire.Number, v []byte) tp {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// packedVarints writes a packed repeated varint field.
func (b tp) packedVarints(num protowire.Number, vs ...uint64) tp {
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	return b.bytes(num, p)
}

func (b tp) packedFloats(vs ...float32) tp {
	var p []byte
	for _, v := range vs {
		p = binary.LittleEndian.AppendUint32(p, math.Float32bits(v))
	}
	return b.bytes(4, p)
}

func (b tp) unpackedFloats(vs ...float32) tp {
	for _, v := range vs {
		b = protowire.AppendTag(b, 4, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(v))
	}
	return b
}

func (b tp) packedDoubles(vs ...float64) tp {
	var p []byte
	for _, v := range vs {
		p = binary.LittleEndian.AppendUint64(p, math.Float64bits(v))
	}
	return b.bytes(10, p)
}

func le32(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func TestDecodeTensor(t *testing.T) {
	neg := func(v int64) uint64 { return uint64(v) } // protobuf sign-extends int32 and int64
	tests := []struct {
		name string
		in   tp
		want tensor.Tensor
	}{
		{"packed float_data", tp{}.dims(2, 2).dtype(onnxFloat).packedFloats(1, -2, 3.5, 0).bytes(8, []byte("x")),
			tensor.Tensor{Name: "x", DType: tensor.FP32, Shape: []int64{2, 2}, Data: le32(1, -2, 3.5, 0)}},
		{"unpacked float_data", tp{}.dims(2).dtype(onnxFloat).unpackedFloats(1, 2),
			tensor.Tensor{DType: tensor.FP32, Shape: []int64{2}, Data: le32(1, 2)}},
		{"raw float", tp{}.dims(2).dtype(onnxFloat).bytes(9, le32(1, 2)),
			tensor.Tensor{DType: tensor.FP32, Shape: []int64{2}, Data: le32(1, 2)}},
		{"scalar", tp{}.dtype(onnxFloat).packedFloats(7),
			tensor.Tensor{DType: tensor.FP32, Shape: []int64{}, Data: le32(7)}},
		{"empty", tp{}.dims(3, 0).dtype(onnxFloat),
			tensor.Tensor{DType: tensor.FP32, Shape: []int64{3, 0}, Data: []byte{}}},
		{"negative INT8 in int32_data", tp{}.dims(3).dtype(onnxInt8).packedVarints(5, neg(-5), neg(-128), 127),
			tensor.Tensor{DType: tensor.Int8, Shape: []int64{3}, Data: []byte{0xfb, 0x80, 0x7f}}},
		{"unpacked int32_data", tp{}.dims(2).dtype(onnxInt32).varint(5, neg(-1)).varint(5, 2),
			tensor.Tensor{DType: tensor.Int32, Shape: []int64{2}, Data: []byte{0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0}}},
		{"INT16", tp{}.dims(1).dtype(onnxInt16).packedVarints(5, neg(-2)),
			tensor.Tensor{DType: tensor.Int16, Shape: []int64{1}, Data: []byte{0xfe, 0xff}}},
		{"UINT16", tp{}.dims(1).dtype(onnxUint16).packedVarints(5, 65535),
			tensor.Tensor{DType: tensor.Uint16, Shape: []int64{1}, Data: []byte{0xff, 0xff}}},
		{"UINT8", tp{}.dims(2).dtype(onnxUint8).packedVarints(5, 0, 255),
			tensor.Tensor{DType: tensor.Uint8, Shape: []int64{2}, Data: []byte{0, 255}}},
		{"BOOL", tp{}.dims(2).dtype(onnxBool).packedVarints(5, 1, 0),
			tensor.Tensor{DType: tensor.Bool, Shape: []int64{2}, Data: []byte{1, 0}}},
		{"FLOAT16 bit patterns", tp{}.dims(2).dtype(onnxFloat16).packedVarints(5, 0x3c00, 0xc000),
			tensor.Tensor{DType: tensor.FP16, Shape: []int64{2}, Data: []byte{0x00, 0x3c, 0x00, 0xc0}}},
		{"BFLOAT16 bit patterns", tp{}.dims(1).dtype(onnxBFloat16).packedVarints(5, 0x3f80),
			tensor.Tensor{DType: tensor.BF16, Shape: []int64{1}, Data: []byte{0x80, 0x3f}}},
		{"INT64", tp{}.dims(2).dtype(onnxInt64).packedVarints(7, neg(-1), 1<<40),
			tensor.Tensor{DType: tensor.Int64, Shape: []int64{2}, Data: binary.LittleEndian.AppendUint64(
				binary.LittleEndian.AppendUint64(nil, math.MaxUint64), 1<<40)}},
		{"UINT64", tp{}.dims(1).dtype(onnxUint64).packedVarints(11, math.MaxUint64),
			tensor.Tensor{DType: tensor.Uint64, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint64(nil, math.MaxUint64)}},
		{"UINT32 in uint64_data", tp{}.dims(1).dtype(onnxUint32).packedVarints(11, math.MaxUint32),
			tensor.Tensor{DType: tensor.Uint32, Shape: []int64{1}, Data: []byte{0xff, 0xff, 0xff, 0xff}}},
		{"DOUBLE", tp{}.dims(1).dtype(onnxDouble).packedDoubles(math.Inf(-1)),
			tensor.Tensor{DType: tensor.FP64, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.Inf(-1)))}},
		{"STRING", tp{}.dims(2).dtype(onnxString).bytes(6, []byte("a")).bytes(6, []byte{}),
			tensor.Tensor{DType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("a"), {}}}},
		{"unknown fields skipped", tp{}.dims(1).dtype(onnxFloat).bytes(12, []byte("doc")).packedFloats(1),
			tensor.Tensor{DType: tensor.FP32, Shape: []int64{1}, Data: le32(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTensor(tt.in)
			if err != nil {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if got.Name != tt.want.Name || got.DType != tt.want.DType || !slices.Equal(got.Shape, tt.want.Shape) {
				t.Fatalf("got %q %s %v, want %q %s %v", got.Name, got.DType, got.Shape, tt.want.Name, tt.want.DType, tt.want.Shape)
			}
			if tt.want.DType == tensor.Bytes {
				if !slices.EqualFunc(got.Strings, tt.want.Strings, func(a, b []byte) bool { return string(a) == string(b) }) {
					t.Fatalf("got strings %q, want %q", got.Strings, tt.want.Strings)
				}
			} else if string(got.Data) != string(tt.want.Data) || got.Data == nil {
				t.Fatalf("got data % x, want % x", got.Data, tt.want.Data)
			}
		})
	}
}

func TestDecodeTensorErrors(t *testing.T) {
	tests := []struct {
		name        string
		in          tp
		unsupported bool
	}{
		{"too few values", tp{}.dims(3).dtype(onnxFloat).packedFloats(1, 2), false},
		{"too many values", tp{}.dims(1).dtype(onnxInt64).packedVarints(7, 1, 2), false},
		{"raw size mismatch", tp{}.dims(2).dtype(onnxFloat).bytes(9, le32(1)), false},
		{"STRING in raw_data", tp{}.dims(1).dtype(onnxString).bytes(9, []byte("abcd")), false},
		{"external data", tp{}.dims(1).dtype(onnxFloat).varint(14, 1), false},
		{"segment", tp{}.dims(1).dtype(onnxFloat).bytes(3, nil), false},
		{"truncated", tp{}.dims(1).dtype(onnxFloat).packedFloats(1)[:5], false},
		{"packed floats not a multiple of 4", tp{}.dims(1).dtype(onnxFloat).bytes(4, []byte{1, 2, 3}), false},
		{"wrong wire type for dtype", tp{}.bytes(2, []byte{1}), false},
		{"negative dimension", tp{}.dims(-1).dtype(onnxFloat), false},
		{"COMPLEX64", tp{}.dims(1).dtype(14).packedFloats(1, 2), true},
		{"FLOAT8E4M3FN", tp{}.dims(1).dtype(17).bytes(9, []byte{1}), true},
		{"INT4", tp{}.dims(2).dtype(22).bytes(9, []byte{1}), true},
		{"UNDEFINED", tp{}.dims(1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTensor(tt.in)
			if err == nil {
				t.Fatalf("got %s %v, want an error", got.DType, got.Shape)
			}
			if errors.Is(err, ErrUnsupported) != tt.unsupported {
				t.Fatalf("got %v; ErrUnsupported: %v, want %v", err, errors.Is(err, ErrUnsupported), tt.unsupported)
			}
		})
	}
}

// valueInfo builds a ValueInfoProto; kind is the TypeProto field number.
func valueInfo(name string, kind protowire.Number, elem int32) []byte {
	var inner []byte
	if kind == 1 {
		inner = tp{}.varint(1, uint64(elem))
	} else {
		inner = tp{}.bytes(1, tp{}.bytes(1, tp{}.varint(1, uint64(elem)))) // elem_type wrapped in a TypeProto
	}
	typ := tp{}.bytes(kind, inner)
	return tp{}.bytes(1, []byte(name)).bytes(2, typ)
}

func TestParseModel(t *testing.T) {
	graph := tp{}.
		bytes(1, []byte("node, skipped")).
		bytes(5, tp{}.dims(1).dtype(onnxFloat).packedFloats(1).bytes(8, []byte("w"))).
		bytes(15, tp{}.bytes(1, tp{}.bytes(8, []byte("sp")))).
		bytes(11, valueInfo("x", 1, onnxFloat)).
		bytes(11, valueInfo("w", 1, onnxFloat)).
		bytes(11, valueInfo("sp", 8, onnxFloat)).
		bytes(11, valueInfo("s", 4, onnxFloat)).
		bytes(12, valueInfo("y", 9, onnxFloat)).
		bytes(12, valueInfo("z", 1, 17))
	model := tp{}.varint(1, 8).bytes(8, []byte("opset")).bytes(7, graph)
	g, err := ParseModel(model)
	if err != nil {
		t.Fatal(err)
	}
	if g.IRVersion != 8 {
		t.Errorf("got IR version %d, want 8", g.IRVersion)
	}
	wantIn := []ValueInfo{{"x", KindTensor, onnxFloat}, {"s", KindSequence, 0}}
	if !slices.Equal(g.Inputs, wantIn) {
		t.Errorf("got inputs %+v, want %+v (initializers dropped)", g.Inputs, wantIn)
	}
	wantOut := []ValueInfo{{"y", KindOptional, 0}, {"z", KindTensor, 17}}
	if !slices.Equal(g.Outputs, wantOut) {
		t.Errorf("got outputs %+v, want %+v", g.Outputs, wantOut)
	}
	for _, v := range []ValueInfo{g.Inputs[1], g.Outputs[0], g.Outputs[1]} {
		if err := v.Supported(); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", v.Name, err)
		}
	}
	if err := g.Inputs[0].Supported(); err != nil {
		t.Errorf("x: got %v, want supported", err)
	}
	if _, err := ParseModel(tp{}.varint(1, 8)); err == nil {
		t.Error("a model without a graph parsed")
	}
}

func TestModelName(t *testing.T) {
	tests := map[string]string{
		"node/test_abs":                    "node.test_abs",
		"pytorch-converted/test_AvgPool1d": "pytorch-converted.test_AvgPool1d",
		"simple/test a+b":                  "simple.test_a_b",
		"node/" + strings.Repeat("x", 200): "node." + strings.Repeat("x", 123),
	}
	for in, want := range tests {
		if got := ModelName(in); got != want {
			t.Errorf("ModelName(%q) = %q, want %q", in, got, want)
		}
		if !repository.ValidModelName(ModelName(in)) {
			t.Errorf("ModelName(%q) = %q is not a valid model name", in, ModelName(in))
		}
	}
}

func TestSortNumbered(t *testing.T) {
	got := []string{"d/input_10.pb", "d/input_2.pb", "d/input_0.pb", "d/input_9.pb"}
	sortNumbered(got)
	want := []string{"d/input_0.pb", "d/input_2.pb", "d/input_9.pb", "d/input_10.pb"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestHalfToFloat(t *testing.T) {
	tests := []struct {
		bits uint16
		want float64
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, math.Ldexp(1, -24)},
		{0x8001, -math.Ldexp(1, -24)}, {0x0400, math.Ldexp(1, -14)}, {0x7c00, math.Inf(1)},
		{0xfc00, math.Inf(-1)}, {0x3555, 0.333251953125},
	}
	for _, tt := range tests {
		if got := halfToFloat(tt.bits); got != tt.want {
			t.Errorf("halfToFloat(%#04x) = %v, want %v", tt.bits, got, tt.want)
		}
	}
	if got := halfToFloat(0x7e00); !math.IsNaN(got) {
		t.Errorf("halfToFloat(0x7e00) = %v, want NaN", got)
	}
	if got := halfToFloat(0x8000); got != 0 || !math.Signbit(got) {
		t.Errorf("halfToFloat(0x8000) = %v, want -0", got)
	}
	if got := bfloatToFloat(0x3f80); got != 1 {
		t.Errorf("bfloatToFloat(0x3f80) = %v, want 1", got)
	}
}

// TestCaseNamesAreServable checks every case of the installed test data
// maps to a distinct valid model name.
func TestCaseNamesAreServable(t *testing.T) {
	dir, err := DataDir()
	if err != nil {
		t.Fatal(err)
	}
	names, err := CaseNames(dir, Suites...)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 1000 {
		t.Errorf("got %d cases, want the 1000-odd of libonnx-testdata", len(names))
	}
	seen := map[string]string{}
	for _, n := range names {
		m := ModelName(n)
		if !repository.ValidModelName(m) {
			t.Errorf("%s: model name %q is invalid", n, m)
		}
		if other, ok := seen[m]; ok {
			t.Errorf("%s and %s both map to %q", n, other, m)
		}
		seen[m] = n
	}
}

func FuzzDecodeTensor(f *testing.F) {
	f.Add([]byte(tp{}.dims(2, 2).dtype(onnxFloat).packedFloats(1, 2, 3, 4)))
	f.Add([]byte(tp{}.dims(2).dtype(onnxString).bytes(6, []byte("a")).bytes(6, []byte("b"))))
	f.Add([]byte(tp{}.dims(3).dtype(onnxInt8).packedVarints(5, 1, 2, 3)))
	f.Add([]byte(tp{}.dims(1).dtype(onnxFloat16).bytes(9, []byte{0, 0x3c})))
	f.Add([]byte(tp{}.dims(1<<40, 1<<40).dtype(onnxFloat)))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeTensor(b)
		if err != nil {
			return
		}
		n, err := tensor.NumElements(got.Shape)
		if err != nil {
			t.Fatalf("decoded an invalid shape %v: %v", got.Shape, err)
		}
		if got.DType == tensor.Bytes {
			if int64(len(got.Strings)) != n {
				t.Fatalf("%d strings for shape %v", len(got.Strings), got.Shape)
			}
		} else if int64(len(got.Data)) != n*int64(got.DType.Size()) {
			t.Fatalf("%d bytes for shape %v of %s", len(got.Data), got.Shape, got.DType)
		}
	})
}

func FuzzParseModel(f *testing.F) {
	graph := tp{}.bytes(11, valueInfo("x", 1, onnxFloat)).bytes(12, valueInfo("y", 4, onnxFloat))
	f.Add([]byte(tp{}.varint(1, 8).bytes(7, graph)))
	f.Add([]byte(tp{}.bytes(7, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseModel(b)
		if err != nil {
			return
		}
		for _, v := range slices.Concat(g.Inputs, g.Outputs) {
			_ = v.Supported() // must not panic
		}
	})
}
