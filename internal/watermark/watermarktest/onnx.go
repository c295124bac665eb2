// Package watermarktest writes small ONNX models for watermark tests: a
// nearest-neighbour classifier that answers, for any input, the label of
// the closest of its training inputs. Trained on a server's answers it is
// the surrogate that memorises them best, watermark labels included.
//
// The model is encoded directly in protobuf wire format (protowire), so
// tests need neither Python nor the onnx package.
package watermarktest

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX enum values used here.
const (
	elemFloat = 1 // TensorProto.FLOAT
	elemInt64 = 7 // TensorProto.INT64
	attrInt   = 2 // AttributeProto.INT
)

// NearestNeighbour returns an ONNX model (opset 17) with one input,
// "input" FLOAT [batch, D], and one output, "label" INT64 [batch]: for
// each row, labels[i] of the xs[i] nearest to it in Euclidean distance
// (the first on ties). All xs must have length D.
//
// It computes argmax_i (x·xs[i] − ½|xs[i]|²), which is argmin_i |x −
// xs[i]|², with one Gemm, an ArgMax and a Gather.
func NearestNeighbour(xs [][]float32, labels []int64) []byte {
	d := 0
	if len(xs) > 0 {
		d = len(xs[0])
	}
	keys := make([]byte, 0, 4*len(xs)*d)
	bias := make([]byte, 0, 4*len(xs))
	for _, x := range xs {
		n := 0.0
		for _, v := range x {
			keys = binary.LittleEndian.AppendUint32(keys, math.Float32bits(v))
			n += float64(v) * float64(v)
		}
		bias = binary.LittleEndian.AppendUint32(bias, math.Float32bits(float32(-n/2)))
	}
	lab := make([]byte, 0, 8*len(labels))
	for _, l := range labels {
		lab = binary.LittleEndian.AppendUint64(lab, uint64(l))
	}
	m := int64(len(xs))

	var g []byte
	g = appendMsg(g, 1, node("nn_scores", "Gemm", []string{"input", "keys", "bias"}, []string{"scores"}, attr("transB", 1)))
	g = appendMsg(g, 1, node("nn_argmax", "ArgMax", []string{"scores"}, []string{"nearest"}, attr("axis", 1), attr("keepdims", 0)))
	g = appendMsg(g, 1, node("nn_label", "Gather", []string{"labels", "nearest"}, []string{"label"}, attr("axis", 0)))
	g = protowire.AppendTag(g, 2, protowire.BytesType)
	g = protowire.AppendString(g, "nearest_neighbour")
	g = appendMsg(g, 5, initializer("keys", elemFloat, []int64{m, int64(d)}, keys))
	g = appendMsg(g, 5, initializer("bias", elemFloat, []int64{m}, bias))
	g = appendMsg(g, 5, initializer("labels", elemInt64, []int64{m}, lab))
	g = appendMsg(g, 11, valueInfo("input", elemFloat, "batch", int64(d)))
	g = appendMsg(g, 12, valueInfo("label", elemInt64, "batch"))

	var model []byte
	model = protowire.AppendTag(model, 1, protowire.VarintType) // ir_version
	model = protowire.AppendVarint(model, 8)
	model = protowire.AppendTag(model, 2, protowire.BytesType) // producer_name
	model = protowire.AppendString(model, "aegis-watermarktest")
	model = appendMsg(model, 7, g)
	var opset []byte
	opset = protowire.AppendTag(opset, 1, protowire.BytesType) // domain ""
	opset = protowire.AppendString(opset, "")
	opset = protowire.AppendTag(opset, 2, protowire.VarintType) // version
	opset = protowire.AppendVarint(opset, 17)
	model = appendMsg(model, 8, opset)
	return model
}

func appendMsg(b []byte, field protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// node encodes a NodeProto.
func node(name, op string, in, out []string, attrs ...[]byte) []byte {
	var b []byte
	for _, s := range in {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	for _, s := range out {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, op)
	for _, a := range attrs {
		b = appendMsg(b, 5, a)
	}
	return b
}

// attr encodes an integer AttributeProto.
func attr(name string, v int64) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(v))
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	b = protowire.AppendVarint(b, attrInt)
	return b
}

// initializer encodes a TensorProto with raw little-endian data.
func initializer(name string, elem int, dims []int64, raw []byte) []byte {
	var b []byte
	for _, d := range dims {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(elem))
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	b = protowire.AppendBytes(b, raw)
	return b
}

// valueInfo encodes a ValueInfoProto for a tensor whose first dimension
// is the symbolic batch and the rest fixed.
func valueInfo(name string, elem int, batch string, dims ...int64) []byte {
	var shape []byte
	var dim []byte
	dim = protowire.AppendTag(dim, 2, protowire.BytesType) // dim_param
	dim = protowire.AppendString(dim, batch)
	shape = appendMsg(shape, 1, dim)
	for _, d := range dims {
		dim = dim[:0]
		dim = protowire.AppendTag(dim, 1, protowire.VarintType) // dim_value
		dim = protowire.AppendVarint(dim, uint64(d))
		shape = appendMsg(shape, 1, dim)
	}
	var tt []byte
	tt = protowire.AppendTag(tt, 1, protowire.VarintType) // elem_type
	tt = protowire.AppendVarint(tt, uint64(elem))
	tt = appendMsg(tt, 2, shape)
	var typ []byte
	typ = appendMsg(typ, 1, tt) // tensor_type
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = appendMsg(b, 2, typ)
	return b
}
