package conformance

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// ValueKind is the kind of an ONNX value (TypeProto's oneof).
type ValueKind string

// The value kinds of TypeProto; only KindTensor has a protocol form.
const (
	KindTensor       ValueKind = "tensor"
	KindSequence     ValueKind = "sequence"
	KindMap          ValueKind = "map"
	KindOptional     ValueKind = "optional"
	KindSparseTensor ValueKind = "sparse tensor"
	KindUnknown      ValueKind = "untyped"
)

// ValueInfo is a graph input or output as the model declares it.
type ValueInfo struct {
	Name string
	Kind ValueKind
	// ElemType is the ONNX element type of a tensor (0 when unknown).
	ElemType int32
}

// Supported returns nil if the value can travel over the protocol, and an
// error wrapping ErrUnsupported that says why not otherwise.
func (v ValueInfo) Supported() error {
	if v.Kind != KindTensor {
		return fmt.Errorf("%q is a %s value: %w", v.Name, v.Kind, ErrUnsupported)
	}
	if _, err := DTypeOf(v.ElemType); err != nil {
		return fmt.Errorf("%q: %w", v.Name, err)
	}
	return nil
}

// Graph is what the conformance run needs of an ONNX model: its inputs (the
// graph inputs that are not initializers, in order, as ONNX Runtime takes
// them) and its outputs.
type Graph struct {
	IRVersion int64
	Inputs    []ValueInfo
	Outputs   []ValueInfo
}

// ParseModel reads the graph signature from a serialized onnx.ModelProto.
func ParseModel(b []byte) (*Graph, error) {
	g := &Graph{}
	var graph []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("model: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch num {
		case 1:
			var v uint64
			v, b, err = consumeVarint(b, typ, "ir_version")
			g.IRVersion = int64(v)
		case 7:
			graph, b, err = consumeBytes(b, typ, "graph")
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("model: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
	}
	if graph == nil {
		return nil, errors.New("model: no graph")
	}
	inits := map[string]bool{}
	var inputs []ValueInfo
	for b := graph; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("graph: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType || (num != 5 && num != 11 && num != 12 && num != 15) {
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("graph: field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		msg, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, fmt.Errorf("graph: field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch num {
		case 5: // initializer: TensorProto, name is field 8
			var name string
			name, err = stringField(msg, 8)
			inits[name] = true
		case 15: // sparse_initializer: SparseTensorProto, values (1) holds the name
			var values []byte
			if values, err = bytesField(msg, 1); err == nil {
				var name string
				name, err = stringField(values, 8)
				inits[name] = true
			}
		case 11, 12:
			var vi ValueInfo
			if vi, err = parseValueInfo(msg); err == nil {
				if num == 11 {
					inputs = append(inputs, vi)
				} else {
					g.Outputs = append(g.Outputs, vi)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("graph: %w", err)
		}
	}
	for _, in := range inputs {
		if !inits[in.Name] {
			g.Inputs = append(g.Inputs, in)
		}
	}
	return g, nil
}

// parseValueInfo reads ValueInfoProto: name (1), type (2).
func parseValueInfo(b []byte) (ValueInfo, error) {
	vi := ValueInfo{Kind: KindUnknown}
	name, err := stringField(b, 1)
	if err != nil {
		return vi, err
	}
	vi.Name = name
	tp, err := bytesField(b, 2)
	if err != nil || tp == nil {
		return vi, err
	}
	// TypeProto: tensor_type (1), sequence_type (4), map_type (5),
	// sparse_tensor_type (8), optional_type (9).
	kinds := []struct {
		num  protowire.Number
		kind ValueKind
	}{{1, KindTensor}, {4, KindSequence}, {5, KindMap}, {8, KindSparseTensor}, {9, KindOptional}}
	for _, k := range kinds {
		kind := k.kind
		sub, err := bytesField(tp, k.num)
		if err != nil {
			return vi, err
		}
		if sub == nil {
			continue
		}
		vi.Kind = kind
		if kind == KindTensor {
			// TypeProto.Tensor: elem_type (1).
			et, err := varintField(sub, 1)
			if err != nil {
				return vi, err
			}
			vi.ElemType = int32(et)
		}
	}
	return vi, nil
}

// bytesField returns the last length-delimited value of field num in msg
// (nil if absent).
func bytesField(msg []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			out = v
			if out == nil {
				out = []byte{}
			}
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return out, nil
}

func stringField(msg []byte, num protowire.Number) (string, error) {
	b, err := bytesField(msg, num)
	return string(b), err
}

// varintField returns the last varint value of field num in msg (0 if
// absent).
func varintField(msg []byte, num protowire.Number) (uint64, error) {
	var out uint64
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(msg)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			out = v
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return out, nil
}
