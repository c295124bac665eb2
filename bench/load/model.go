package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// The benchmark model has L FP32 initializers W_1..W_L of shape [K, N],
// stored as raw_data, and computes y = Concat(MatMul(x, W_1), ...,
// MatMul(x, W_L)) on axis 1 (just y = MatMul(x, W) when L is 1), with x of
// shape [1, K] and y of shape [1, L*N]. N is fixed, so K grows with the
// model size over L and the input and output stay small.
const (
	modelCols   = 4096 // N
	opsetONNX   = 17
	irVersion   = 8
	onnxFloat   = 1 // TensorProto.DataType FLOAT
	weightsSeed = 0x5eed_1a7e
)

// modelShape is the shape of the benchmark model.
type modelShape struct {
	Layers int64 `json:"layers"` // L
	Rows   int64 `json:"rows"`   // K
}

// shapeFor returns the shape of a model whose L initializers hold size
// bytes together; size must be a positive multiple of L*N*4 bytes.
func shapeFor(size, layers int64) (modelShape, error) {
	if layers < 1 || layers > 1024 {
		return modelShape{}, fmt.Errorf("%d initializers: want 1 to 1024", layers)
	}
	row := layers * modelCols * 4
	if size < row || size%row != 0 {
		return modelShape{}, fmt.Errorf("model size %d is not a positive multiple of %d bytes (%d initializers of %d-column FP32 rows)", size, row, layers, modelCols)
	}
	if size > 1<<31-1<<20 {
		return modelShape{}, fmt.Errorf("model size %d exceeds what one protobuf message may hold (2 GiB)", size)
	}
	return modelShape{Layers: layers, Rows: size / row}, nil
}

// outCols is the width of y.
func (s modelShape) outCols() int64 { return s.Layers * modelCols }

// tensorBytes is the size of one initializer.
func (s modelShape) tensorBytes() int64 { return s.Rows * modelCols * 4 }

// weight returns element i of the weights, all initializers one after the
// other, row-major: a uniform value in [-0.5, 0.5) from a counter-based
// generator, so any element can be recomputed without the others.
func weight(i int64) float32 {
	z := uint64(i)*0x9e3779b97f4a7c15 + weightsSeed
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40)/(1<<24) - 0.5
}

// Field numbers of onnx.proto (ONNX IR version 8).
const (
	modelIRVersion   = 1
	modelOpsetImport = 8
	modelProducer    = 2
	modelGraph       = 7
	opsetVersion     = 2
	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphInput       = 11
	graphOutput      = 12
	nodeInput        = 1
	nodeOutput       = 2
	nodeName         = 3
	nodeOpType       = 4
	nodeAttribute    = 5
	attrName         = 1
	attrI            = 3
	attrType         = 20
	attrTypeInt      = 2
	tensorDims       = 1
	tensorDataType   = 2
	tensorName       = 8
	tensorRawData    = 9
	valueName        = 1
	valueType        = 2
	typeTensor       = 1
	tensorElemType   = 1
	tensorShape      = 2
	shapeDim         = 1
	dimValue         = 1
)

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// valueInfo encodes a ValueInfoProto for a FP32 tensor of shape dims.
func valueInfo(name string, dims ...int64) []byte {
	var shape []byte
	for _, d := range dims {
		shape = appendBytesField(shape, shapeDim, appendVarintField(nil, dimValue, uint64(d)))
	}
	var tt []byte
	tt = appendVarintField(tt, tensorElemType, onnxFloat)
	tt = appendBytesField(tt, tensorShape, shape)
	b := appendStringField(nil, valueName, name)
	return appendBytesField(b, valueType, appendBytesField(nil, typeTensor, tt))
}

// tensorHeader encodes TensorProto W_l up to its raw_data contents, which
// must follow it (raw_data is its last field).
func tensorHeader(sh modelShape, l int64) []byte {
	var t []byte
	t = appendVarintField(t, tensorDims, uint64(sh.Rows))
	t = appendVarintField(t, tensorDims, modelCols)
	t = appendVarintField(t, tensorDataType, onnxFloat)
	t = appendStringField(t, tensorName, weightName(sh, l))
	t = protowire.AppendTag(t, tensorRawData, protowire.BytesType)
	return protowire.AppendVarint(t, uint64(sh.tensorBytes()))
}

func weightName(sh modelShape, l int64) string {
	if sh.Layers == 1 {
		return "W"
	}
	return fmt.Sprintf("W%d", l)
}

// graphHeader encodes the GraphProto's fields other than the
// initializers, which follow it.
func graphHeader(sh modelShape) []byte {
	var graph []byte
	node := func(op, name string, ins []string, out string, attrs ...[]byte) {
		var n []byte
		for _, in := range ins {
			n = appendStringField(n, nodeInput, in)
		}
		n = appendStringField(n, nodeOutput, out)
		n = appendStringField(n, nodeName, name)
		n = appendStringField(n, nodeOpType, op)
		for _, a := range attrs {
			n = appendBytesField(n, nodeAttribute, a)
		}
		graph = appendBytesField(graph, graphNode, n)
	}
	if sh.Layers == 1 {
		node("MatMul", "matmul", []string{"x", "W"}, "y")
	} else {
		var parts []string
		for l := range sh.Layers {
			out := fmt.Sprintf("y%d", l)
			node("MatMul", fmt.Sprintf("matmul%d", l), []string{"x", weightName(sh, l)}, out)
			parts = append(parts, out)
		}
		axis := appendStringField(nil, attrName, "axis")
		axis = appendVarintField(axis, attrI, 1)
		axis = appendVarintField(axis, attrType, attrTypeInt)
		node("Concat", "concat", parts, "y", axis)
	}
	graph = appendStringField(graph, graphName, "bench_load")
	graph = appendBytesField(graph, graphInput, valueInfo("x", 1, sh.Rows))
	return appendBytesField(graph, graphOutput, valueInfo("y", 1, sh.outCols()))
}

// modelHeader encodes the ModelProto up to its graph's contents: the graph
// is the model's last field, so its length can be written before the
// weights exist.
func modelHeader(sh modelShape) []byte {
	graphLen := int64(len(graphHeader(sh)))
	for l := range sh.Layers {
		tl := int64(len(tensorHeader(sh, l))) + sh.tensorBytes()
		graphLen += int64(protowire.SizeTag(graphInitializer)+protowire.SizeVarint(uint64(tl))) + tl
	}
	var m []byte
	m = appendVarintField(m, modelIRVersion, irVersion)
	m = appendBytesField(m, modelOpsetImport, appendVarintField(nil, opsetVersion, opsetONNX))
	m = appendStringField(m, modelProducer, "aegis bench/load")
	m = protowire.AppendTag(m, modelGraph, protowire.BytesType)
	return protowire.AppendVarint(m, uint64(graphLen))
}

// writeModel writes the benchmark model of shape sh to a new file at path,
// returning its length.
func writeModel(path string, sh modelShape) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := writeModelTo(f, sh)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("write model: %w", err)
	}
	return n, nil
}

func writeModelTo(w io.Writer, sh modelShape) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countingWriter{w: bw}
	cw.Write(modelHeader(sh))
	cw.Write(graphHeader(sh))
	row := make([]byte, modelCols*4)
	for l := range sh.Layers {
		th := tensorHeader(sh, l)
		var b []byte
		b = protowire.AppendTag(b, graphInitializer, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(int64(len(th))+sh.tensorBytes()))
		cw.Write(append(b, th...))
		base := l * sh.Rows * modelCols
		for k := range sh.Rows {
			for j := range int64(modelCols) {
				binary.LittleEndian.PutUint32(row[j*4:], math.Float32bits(weight(base+k*modelCols+j)))
			}
			cw.Write(row)
		}
	}
	if cw.err != nil {
		return 0, cw.err
	}
	return cw.n, bw.Flush()
}

// countingWriter counts what it writes and keeps the first error.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

// probeInput returns the input the load check runs: x = e_0 + e_{K-1},
// so each y_l is the sum of W_l's first and last rows, which is exact in
// FP32 (every other product is an exact zero) and proves that every
// initializer was read whole.
func probeInput(sh modelShape) []byte {
	x := make([]byte, sh.Rows*4)
	binary.LittleEndian.PutUint32(x, math.Float32bits(1))
	binary.LittleEndian.PutUint32(x[(sh.Rows-1)*4:], math.Float32bits(1))
	return x
}

// checkProbeOutput compares y (little-endian FP32) with the expected sums.
func checkProbeOutput(sh modelShape, y []byte) error {
	if int64(len(y)) != sh.outCols()*4 {
		return fmt.Errorf("output is %d bytes, want %d", len(y), sh.outCols()*4)
	}
	for l := range sh.Layers {
		base := l * sh.Rows * modelCols
		for j := range int64(modelCols) {
			i := l*modelCols + j
			got := math.Float32frombits(binary.LittleEndian.Uint32(y[i*4:]))
			want := weight(base+j) + weight(base+(sh.Rows-1)*modelCols+j)
			if got != want {
				return fmt.Errorf("y[%d] = %v, want %v", i, got, want)
			}
		}
	}
	return nil
}
