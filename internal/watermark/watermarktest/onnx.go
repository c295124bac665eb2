// Package watermarktest writes small ONNX models for watermark tests:
// nearest-neighbour classifiers over a set of training inputs. Trained on
// a server's answers, the hard one (the label of the closest input) is the
// surrogate that memorises them best, watermark labels included; the soft
// one (class scores weighted by closeness) learns a mark but may still
// answer the true label there, ranking the mark second.
//
// The models are encoded directly in protobuf wire format (protowire), so
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
	attrFloat = 1 // AttributeProto.FLOAT
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
	lab := make([]byte, 0, 8*len(labels))
	for _, l := range labels {
		lab = binary.LittleEndian.AppendUint64(lab, uint64(l))
	}
	m := int64(len(xs))
	g := appendMsg(nil, 1, node("nn_scores", "Gemm", []string{"input", "keys", "bias"}, []string{"scores"}, attr("transB", 1)))
	g = appendMsg(g, 1, node("nn_argmax", "ArgMax", []string{"scores"}, []string{"nearest"}, attr("axis", 1), attr("keepdims", 0)))
	g = appendMsg(g, 1, node("nn_label", "Gather", []string{"labels", "nearest"}, []string{"label"}, attr("axis", 0)))
	g = protowire.AppendTag(g, 2, protowire.BytesType)
	g = protowire.AppendString(g, "nearest_neighbour")
	g = appendKeys(g, xs)
	g = appendMsg(g, 5, initializer("labels", elemInt64, []int64{m}, lab))
	g = appendMsg(g, 11, valueInfo("input", elemFloat, "batch", dimOf(xs)))
	g = appendMsg(g, 12, valueInfo("label", elemInt64, "batch"))
	return modelOf(g)
}

// SoftNeighbours returns an ONNX model (opset 17) with one input, "input"
// FLOAT [batch, D], and two outputs, "probabilities" FLOAT [batch,
// classes] and "label" INT64 [batch] (their argmax): each class's score
// is the share of the weights exp(−|x − xs[i]|²/(2·tau)) carried by the
// xs[i] labelled with it. On one of its own training inputs the input
// itself weighs 1 and its neighbours less; a larger tau lets neighbours
// that share another label outvote it.
//
// It computes softmax_i((x·xs[i] − ½|xs[i]|²)/tau), the same weights
// normalised, with a Gemm and a Softmax, then multiplies them by the
// labels' one-hot matrix.
func SoftNeighbours(xs [][]float32, labels []int64, classes int, tau float32) []byte {
	m := int64(len(xs))
	onehot := make([]byte, 0, 4*len(labels)*classes)
	for _, l := range labels {
		for c := range classes {
			v := float32(0)
			if int64(c) == l {
				v = 1
			}
			onehot = binary.LittleEndian.AppendUint32(onehot, math.Float32bits(v))
		}
	}
	g := appendMsg(nil, 1, node("sn_logits", "Gemm", []string{"input", "keys", "bias"}, []string{"logits"},
		attr("transB", 1), attrF("alpha", 1/tau), attrF("beta", 1/tau)))
	g = appendMsg(g, 1, node("sn_weights", "Softmax", []string{"logits"}, []string{"weights"}, attr("axis", 1)))
	g = appendMsg(g, 1, node("sn_scores", "MatMul", []string{"weights", "onehot"}, []string{"probabilities"}))
	g = appendMsg(g, 1, node("sn_label", "ArgMax", []string{"probabilities"}, []string{"label"}, attr("axis", 1), attr("keepdims", 0)))
	g = protowire.AppendTag(g, 2, protowire.BytesType)
	g = protowire.AppendString(g, "soft_neighbours")
	g = appendKeys(g, xs)
	g = appendMsg(g, 5, initializer("onehot", elemFloat, []int64{m, int64(classes)}, onehot))
	g = appendMsg(g, 11, valueInfo("input", elemFloat, "batch", dimOf(xs)))
	g = appendMsg(g, 12, valueInfo("probabilities", elemFloat, "batch", int64(classes)))
	g = appendMsg(g, 12, valueInfo("label", elemInt64, "batch"))
	return modelOf(g)
}

func dimOf(xs [][]float32) int64 {
	if len(xs) == 0 {
		return 0
	}
	return int64(len(xs[0]))
}

// appendKeys adds the initializers both models share: "keys" [m, D], the
// training inputs, and "bias" [m], −½|xs[i]|².
func appendKeys(g []byte, xs [][]float32) []byte {
	d := dimOf(xs)
	keys := make([]byte, 0, 4*len(xs)*int(d))
	bias := make([]byte, 0, 4*len(xs))
	for _, x := range xs {
		n := 0.0
		for _, v := range x {
			keys = binary.LittleEndian.AppendUint32(keys, math.Float32bits(v))
			n += float64(v) * float64(v)
		}
		bias = binary.LittleEndian.AppendUint32(bias, math.Float32bits(float32(-n/2)))
	}
	m := int64(len(xs))
	g = appendMsg(g, 5, initializer("keys", elemFloat, []int64{m, d}, keys))
	return appendMsg(g, 5, initializer("bias", elemFloat, []int64{m}, bias))
}

// modelOf wraps a graph in a ModelProto (IR 8, opset 17).
func modelOf(g []byte) []byte {
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
	return appendMsg(model, 8, opset)
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

// attrF encodes a float AttributeProto.
func attrF(name string, v float32) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, math.Float32bits(v))
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	b = protowire.AppendVarint(b, attrFloat)
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
