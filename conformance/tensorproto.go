package conformance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// ErrUnsupported marks an ONNX value the Open Inference Protocol cannot
// carry: a non-tensor value or an element type with no protocol datatype.
var ErrUnsupported = errors.New("not representable in the Open Inference Protocol")

// ONNX TensorProto.DataType values.
const (
	onnxFloat    = 1
	onnxUint8    = 2
	onnxInt8     = 3
	onnxUint16   = 4
	onnxInt16    = 5
	onnxInt32    = 6
	onnxInt64    = 7
	onnxString   = 8
	onnxBool     = 9
	onnxFloat16  = 10
	onnxDouble   = 11
	onnxUint32   = 12
	onnxUint64   = 13
	onnxBFloat16 = 16
)

var onnxTypeNames = map[int32]string{
	0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
	7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
	14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ",
	19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
	24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2",
}

// ONNXTypeName returns the ONNX name of a TensorProto.DataType value.
func ONNXTypeName(t int32) string {
	if n, ok := onnxTypeNames[t]; ok {
		return n
	}
	return "type " + strconv.Itoa(int(t))
}

var onnxToDType = map[int32]tensor.DType{
	onnxFloat: tensor.FP32, onnxUint8: tensor.Uint8, onnxInt8: tensor.Int8,
	onnxUint16: tensor.Uint16, onnxInt16: tensor.Int16, onnxInt32: tensor.Int32,
	onnxInt64: tensor.Int64, onnxString: tensor.Bytes, onnxBool: tensor.Bool,
	onnxFloat16: tensor.FP16, onnxDouble: tensor.FP64, onnxUint32: tensor.Uint32,
	onnxUint64: tensor.Uint64, onnxBFloat16: tensor.BF16,
}

// DTypeOf returns the protocol datatype of an ONNX element type, or an
// ErrUnsupported error.
func DTypeOf(t int32) (tensor.DType, error) {
	if d, ok := onnxToDType[t]; ok {
		return d, nil
	}
	return tensor.Invalid, fmt.Errorf("element type %s: %w", ONNXTypeName(t), ErrUnsupported)
}

// tensorProto is the subset of onnx.TensorProto that test data uses.
type tensorProto struct {
	dims     []uint64
	dataType int32
	name     string
	raw      []byte
	hasRaw   bool
	floats   []uint32 // bit patterns
	doubles  []uint64 // bit patterns
	int32s   []uint64 // as varints: int32 values sign-extended
	int64s   []uint64
	uint64s  []uint64
	strings  [][]byte
}

// DecodeTensor decodes a serialized onnx.TensorProto into a tensor. Element
// types without a protocol datatype give an error wrapping ErrUnsupported;
// external data and segments are refused as malformed for this purpose.
func DecodeTensor(b []byte) (tensor.Tensor, error) {
	var p tensorProto
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return tensor.Tensor{}, fmt.Errorf("tensor: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch num {
		case 1:
			p.dims, b, err = consumeVarints(b, typ, p.dims, "dims")
		case 2:
			var v uint64
			v, b, err = consumeVarint(b, typ, "data_type")
			p.dataType = int32(v)
		case 3:
			return tensor.Tensor{}, errors.New("tensor: segmented tensors are not supported")
		case 4:
			p.floats, b, err = consumeFixed(b, typ, p.floats, "float_data")
		case 5:
			p.int32s, b, err = consumeVarints(b, typ, p.int32s, "int32_data")
		case 6:
			var s []byte
			s, b, err = consumeBytes(b, typ, "string_data")
			p.strings = append(p.strings, s)
		case 7:
			p.int64s, b, err = consumeVarints(b, typ, p.int64s, "int64_data")
		case 8:
			var s []byte
			s, b, err = consumeBytes(b, typ, "name")
			p.name = string(s)
		case 9:
			p.raw, b, err = consumeBytes(b, typ, "raw_data")
			p.hasRaw = true
		case 10:
			p.doubles, b, err = consumeFixed(b, typ, p.doubles, "double_data")
		case 11:
			p.uint64s, b, err = consumeVarints(b, typ, p.uint64s, "uint64_data")
		case 13:
			return tensor.Tensor{}, errors.New("tensor: external data is not supported")
		case 14:
			var v uint64
			v, b, err = consumeVarint(b, typ, "data_location")
			if err == nil && v != 0 {
				return tensor.Tensor{}, errors.New("tensor: external data is not supported")
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return tensor.Tensor{}, fmt.Errorf("tensor: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
		if err != nil {
			return tensor.Tensor{}, fmt.Errorf("tensor: %w", err)
		}
	}
	return p.toTensor()
}

func (p *tensorProto) toTensor() (tensor.Tensor, error) {
	dt, err := DTypeOf(p.dataType)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("tensor %q: %w", p.name, err)
	}
	shape := make([]int64, len(p.dims))
	for i, d := range p.dims {
		shape[i] = int64(d)
		if shape[i] < 0 {
			return tensor.Tensor{}, fmt.Errorf("tensor %q: dimension %d is negative", p.name, i)
		}
	}
	n, err := tensor.NumElements(shape)
	if err != nil || n > 1<<31 {
		return tensor.Tensor{}, fmt.Errorf("tensor %q: shape %v is too large", p.name, shape)
	}
	t := tensor.Tensor{Name: p.name, DType: dt, Shape: shape}
	if dt == tensor.Bytes {
		if p.hasRaw {
			return t, fmt.Errorf("tensor %q: STRING in raw_data", p.name)
		}
		if int64(len(p.strings)) != n {
			return t, fmt.Errorf("tensor %q: %d strings for %d elements", p.name, len(p.strings), n)
		}
		t.Strings = p.strings
		if t.Strings == nil {
			t.Strings = [][]byte{}
		}
		return t, nil
	}
	size := int64(dt.Size())
	if p.hasRaw {
		if int64(len(p.raw)) != n*size {
			return t, fmt.Errorf("tensor %q: %d raw bytes for %d elements of %s", p.name, len(p.raw), n, dt)
		}
		t.Data = append([]byte{}, p.raw...)
		return t, nil
	}
	var vals []uint64
	switch p.dataType {
	case onnxFloat:
		if int64(len(p.floats)) != n {
			return t, fmt.Errorf("tensor %q: %d float_data for %d elements", p.name, len(p.floats), n)
		}
		t.Data = make([]byte, 0, n*4)
		for _, f := range p.floats {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, f)
		}
		return t, nil
	case onnxDouble:
		if int64(len(p.doubles)) != n {
			return t, fmt.Errorf("tensor %q: %d double_data for %d elements", p.name, len(p.doubles), n)
		}
		t.Data = make([]byte, 0, n*8)
		for _, f := range p.doubles {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, f)
		}
		return t, nil
	case onnxInt64:
		vals = p.int64s
	case onnxUint32, onnxUint64:
		vals = p.uint64s
	default: // INT32 and the narrower types, FLOAT16 and BFLOAT16 as bit patterns
		vals = p.int32s
	}
	if int64(len(vals)) != n {
		return t, fmt.Errorf("tensor %q: %d typed values for %d elements of %s", p.name, len(vals), n, ONNXTypeName(p.dataType))
	}
	t.Data = make([]byte, 0, n*size)
	for _, v := range vals {
		t.Data = tensor.AppendLE(t.Data, v, int(size))
	}
	return t, nil
}

func consumeVarint(b []byte, typ protowire.Type, field string) (uint64, []byte, error) {
	if typ != protowire.VarintType {
		return 0, b, fmt.Errorf("%s: wire type %d, want varint", field, typ)
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, b, fmt.Errorf("%s: %w", field, protowire.ParseError(n))
	}
	return v, b[n:], nil
}

func consumeBytes(b []byte, typ protowire.Type, field string) ([]byte, []byte, error) {
	if typ != protowire.BytesType {
		return nil, b, fmt.Errorf("%s: wire type %d, want bytes", field, typ)
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, b, fmt.Errorf("%s: %w", field, protowire.ParseError(n))
	}
	return v, b[n:], nil
}

// consumeVarints reads one element, or a packed run, of a repeated varint
// field.
func consumeVarints(b []byte, typ protowire.Type, dst []uint64, field string) ([]uint64, []byte, error) {
	if typ == protowire.VarintType {
		v, rest, err := consumeVarint(b, typ, field)
		return append(dst, v), rest, err
	}
	packed, rest, err := consumeBytes(b, typ, field)
	if err != nil {
		return dst, b, err
	}
	for len(packed) > 0 {
		v, n := protowire.ConsumeVarint(packed)
		if n < 0 {
			return dst, b, fmt.Errorf("%s: %w", field, protowire.ParseError(n))
		}
		dst = append(dst, v)
		packed = packed[n:]
	}
	return dst, rest, nil
}

// consumeFixed reads one fixed-width field (4 bytes for uint32, 8 for
// uint64), unpacked or packed, appending its values to dst.
func consumeFixed[T uint32 | uint64](b []byte, typ protowire.Type, dst []T, field string) ([]T, []byte, error) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	single, read := protowire.Fixed32Type, func(p []byte) T { return T(binary.LittleEndian.Uint32(p)) }
	if size == 8 {
		single, read = protowire.Fixed64Type, func(p []byte) T { return T(binary.LittleEndian.Uint64(p)) }
	}
	if typ == single {
		if len(b) < size {
			return dst, b, fmt.Errorf("%s: %w", field, protowire.ParseError(-1))
		}
		return append(dst, read(b)), b[size:], nil
	}
	packed, rest, err := consumeBytes(b, typ, field)
	if err != nil {
		return dst, b, err
	}
	if len(packed)%size != 0 {
		return dst, b, fmt.Errorf("%s: packed length %d is not a multiple of %d", field, len(packed), size)
	}
	for i := 0; i < len(packed); i += size {
		dst = append(dst, read(packed[i:]))
	}
	return dst, rest, nil
}

// float16 and bfloat16 conversions for comparing half-precision data.

func halfToFloat(h uint16) float64 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return float64(math.Float32frombits(sign | 0xff<<23 | mant<<13))
	case exp == 0 && mant == 0:
		return float64(math.Float32frombits(sign))
	case exp == 0: // subnormal: mant * 2^-24
		v := float64(mant) * math.Ldexp(1, -24)
		if sign != 0 {
			v = -v
		}
		return v
	}
	return float64(math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13))
}

func bfloatToFloat(h uint16) float64 {
	return float64(math.Float32frombits(uint32(h) << 16))
}
