// Package tensor holds the one in-memory tensor representation shared by the
// protocol codecs, the validator and the engine.
//
// A Tensor keeps fixed-size elements as flat, row-major, little-endian bytes,
// exactly as the Open Inference Protocol's binary extension and gRPC raw
// contents carry them and as ONNX Runtime reads them, so the hot path moves
// bytes without converting them. BYTES tensors keep one []byte per element.
package tensor

import (
	"errors"
	"fmt"
	"math"
)

// DType is an Open Inference Protocol datatype. The zero value is Invalid.
type DType uint8

// The datatypes Aegis serves. Their names are the protocol's, case-sensitive.
const (
	Invalid DType = iota
	Bool
	Uint8
	Uint16
	Uint32
	Uint64
	Int8
	Int16
	Int32
	Int64
	FP16
	BF16
	FP32
	FP64
	Bytes
)

var dtypeNames = [...]string{
	Invalid: "INVALID",
	Bool:    "BOOL",
	Uint8:   "UINT8",
	Uint16:  "UINT16",
	Uint32:  "UINT32",
	Uint64:  "UINT64",
	Int8:    "INT8",
	Int16:   "INT16",
	Int32:   "INT32",
	Int64:   "INT64",
	FP16:    "FP16",
	BF16:    "BF16",
	FP32:    "FP32",
	FP64:    "FP64",
	Bytes:   "BYTES",
}

var dtypeSizes = [...]int{
	Bool: 1, Uint8: 1, Int8: 1,
	Uint16: 2, Int16: 2, FP16: 2, BF16: 2,
	Uint32: 4, Int32: 4, FP32: 4,
	Uint64: 8, Int64: 8, FP64: 8,
}

// String returns the protocol name of d.
func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return dtypeNames[Invalid]
}

// Size returns the size in bytes of one element, or 0 for BYTES and Invalid.
func (d DType) Size() int {
	if int(d) < len(dtypeSizes) {
		return dtypeSizes[d]
	}
	return 0
}

// Valid reports whether d is a datatype Aegis serves.
func (d DType) Valid() bool { return d > Invalid && d <= Bytes }

// BinaryOnly reports whether d may travel only as binary data (not in JSON
// or typed gRPC contents).
func (d DType) BinaryOnly() bool { return d == FP16 || d == BF16 }

// ParseDType returns the datatype named s. Names are case-sensitive.
func ParseDType(s string) (DType, bool) {
	for i := Bool; i <= Bytes; i++ {
		if dtypeNames[i] == s {
			return i, true
		}
	}
	return Invalid, false
}

// Tensor is a named, typed, shaped block of data.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Data holds fixed-size elements, row-major and little-endian.
	Data []byte
	// Strings holds the elements of a BYTES tensor.
	Strings [][]byte
}

// ErrShape reports a shape that is negative or overflows.
var ErrShape = errors.New("invalid shape")

// MaxElements bounds the element count any shape may declare; the real
// limit is the configured byte budget, checked against this product first.
const MaxElements = math.MaxInt64 / 16

// NumElements returns the element count of shape, refusing negative
// dimensions and products above MaxElements without overflowing. A rank-0
// shape is a scalar with one element.
func NumElements(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: dimension %d is %d", ErrShape, i, d)
		}
		if d == 0 {
			n = 0
			continue
		}
		if n != 0 && d > MaxElements/n {
			return 0, fmt.Errorf("%w: more than %d elements", ErrShape, int64(MaxElements))
		}
		n *= d
	}
	// A zero dimension anywhere makes the tensor empty, but every other
	// dimension must still be sane, which the loop above checked.
	return n, nil
}

// Elements returns the element count of t's shape; t's shape must already
// have been checked with NumElements.
func (t *Tensor) Elements() int64 {
	n, _ := NumElements(t.Shape)
	return n
}

// ByteSize returns the size of t's payload in bytes: the data length for
// fixed-size types, and for BYTES the sum of element lengths plus their
// 4-byte length prefixes as the binary framing carries them.
func (t *Tensor) ByteSize() int {
	if t.DType != Bytes {
		return len(t.Data)
	}
	n := 0
	for _, s := range t.Strings {
		n += 4 + len(s)
	}
	return n
}

// Spec declares a model input or output: its name, datatype and shape,
// where a dimension of -1 is variable.
type Spec struct {
	Name  string
	DType DType
	Shape []int64
}
