package grpcapi

import (
	"encoding/binary"
	"math"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/oip"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// decodeRequest turns a ModelInferRequest into a pipeline.Request. raw
// reports whether the inputs came as raw_input_contents, in which case the
// response carries raw_output_contents too.
func decodeRequest(r *pb.ModelInferRequest, lim oip.Limits) (*pipeline.Request, bool, error) {
	if len(r.Inputs) == 0 {
		return nil, false, apierr.Invalid("request has no inputs")
	}
	if len(r.Inputs) > lim.MaxInputs {
		return nil, false, apierr.Invalid("too many inputs (limit %d)", lim.MaxInputs)
	}
	if len(r.Outputs) > lim.MaxInputs {
		return nil, false, apierr.Invalid("too many requested outputs (limit %d)", lim.MaxInputs)
	}
	raw := len(r.RawInputContents) > 0
	if raw && len(r.RawInputContents) != len(r.Inputs) {
		return nil, false, apierr.Invalid("raw_input_contents has %d entries for %d inputs", len(r.RawInputContents), len(r.Inputs))
	}
	req := &pipeline.Request{
		ID:         r.Id,
		Model:      r.ModelName,
		Version:    r.ModelVersion,
		Parameters: params(r.Parameters),
		Inputs:     make([]tensor.Tensor, len(r.Inputs)),
	}
	budget := lim.MaxTensorBytes
	for i, in := range r.Inputs {
		if in.Name == "" {
			return nil, false, apierr.Invalid("input has no name")
		}
		dt, ok := tensor.ParseDType(in.Datatype)
		if !ok {
			return nil, false, apierr.Invalid("input %q: unknown datatype %q", in.Name, clip(in.Datatype))
		}
		if len(in.Shape) > lim.MaxRank {
			return nil, false, apierr.Invalid("input %q: shape has more than %d dimensions", in.Name, lim.MaxRank)
		}
		n, _, err := oip.CheckShape(in.Name, dt, in.Shape, budget)
		if err != nil {
			return nil, false, err
		}
		t := tensor.Tensor{Name: in.Name, DType: dt, Shape: in.Shape}
		if raw {
			if in.Contents != nil {
				return nil, false, apierr.Invalid("input %q sets contents alongside raw_input_contents", in.Name)
			}
			if err := oip.FromBinary(&t, n, r.RawInputContents[i]); err != nil {
				return nil, false, err
			}
		} else if err := fromContents(&t, n, in.Contents); err != nil {
			return nil, false, err
		}
		budget -= int64(t.ByteSize())
		req.Inputs[i] = t
	}
	for _, o := range r.Outputs {
		if o.Name == "" {
			return nil, false, apierr.Invalid("requested output has no name")
		}
		req.Outputs = append(req.Outputs, pipeline.RequestedOutput{Name: o.Name, Parameters: params(o.Parameters)})
	}
	return req, raw, nil
}

func params(m map[string]*pb.InferParameter) pipeline.Parameters {
	if len(m) == 0 {
		return nil
	}
	p := make(pipeline.Parameters, len(m))
	for k, v := range m {
		switch c := v.GetParameterChoice().(type) {
		case *pb.InferParameter_BoolParam:
			p[k] = c.BoolParam
		case *pb.InferParameter_Int64Param:
			p[k] = c.Int64Param
		case *pb.InferParameter_StringParam:
			p[k] = c.StringParam
		case *pb.InferParameter_DoubleParam:
			p[k] = c.DoubleParam
		case *pb.InferParameter_Uint64Param:
			p[k] = c.Uint64Param
		}
	}
	return p
}

// fromContents fills t from typed contents, checking the element count and
// each value's range.
func fromContents(t *tensor.Tensor, n int64, c *pb.InferTensorContents) error {
	if t.DType.BinaryOnly() {
		return apierr.Invalid("input %q: %s data must be sent in raw_input_contents", t.Name, t.DType)
	}
	count := func(got int) error {
		if int64(got) != n {
			return apierr.Invalid("input %q: got %d elements, shape %v needs %d", t.Name, got, t.Shape, n)
		}
		return nil
	}
	size := t.DType.Size()
	switch t.DType {
	case tensor.Bool:
		v := c.GetBoolContents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Data = make([]byte, n)
		for i, b := range v {
			if b {
				t.Data[i] = 1
			}
		}
	case tensor.Int8, tensor.Int16, tensor.Int32:
		v := c.GetIntContents()
		if err := count(len(v)); err != nil {
			return err
		}
		lo, hi := int32(math.MinInt32), int32(math.MaxInt32)
		if size < 4 {
			hi = int32(1)<<(size*8-1) - 1
			lo = -hi - 1
		}
		t.Data = make([]byte, 0, n*int64(size))
		for _, x := range v {
			if x < lo || x > hi {
				return apierr.Invalid("input %q: %d is out of range for %s", t.Name, x, t.DType)
			}
			t.Data = tensor.AppendLE(t.Data, uint64(x), size)
		}
	case tensor.Int64:
		v := c.GetInt64Contents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Data = make([]byte, 0, n*8)
		for _, x := range v {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(x))
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		v := c.GetUintContents()
		if err := count(len(v)); err != nil {
			return err
		}
		hi := uint32(math.MaxUint32)
		if size < 4 {
			hi = uint32(1)<<(size*8) - 1
		}
		t.Data = make([]byte, 0, n*int64(size))
		for _, x := range v {
			if x > hi {
				return apierr.Invalid("input %q: %d is out of range for %s", t.Name, x, t.DType)
			}
			t.Data = tensor.AppendLE(t.Data, uint64(x), size)
		}
	case tensor.Uint64:
		v := c.GetUint64Contents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Data = make([]byte, 0, n*8)
		for _, x := range v {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, x)
		}
	case tensor.FP32:
		v := c.GetFp32Contents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Data = make([]byte, 0, n*4)
		for _, x := range v {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(x))
		}
	case tensor.FP64:
		v := c.GetFp64Contents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Data = make([]byte, 0, n*8)
		for _, x := range v {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(x))
		}
	case tensor.Bytes:
		v := c.GetBytesContents()
		if err := count(len(v)); err != nil {
			return err
		}
		t.Strings = v
	}
	return nil
}

// encodeResponse builds the ModelInferResponse. With raw, every output goes
// in raw_output_contents; otherwise outputs use typed contents, except FP16
// and BF16, which only travel raw (and then every output does, as the
// protocol requires raw contents for all outputs or none).
func encodeResponse(resp *pipeline.Response, raw bool) (*pb.ModelInferResponse, error) {
	out := &pb.ModelInferResponse{
		ModelName:    resp.Model,
		ModelVersion: resp.Version,
		Id:           resp.ID,
		Outputs:      make([]*pb.ModelInferResponse_InferOutputTensor, len(resp.Outputs)),
	}
	for _, o := range resp.Outputs {
		if o.DType.BinaryOnly() {
			raw = true
		}
	}
	if raw {
		out.RawOutputContents = make([][]byte, len(resp.Outputs))
	}
	for i := range resp.Outputs {
		o := &resp.Outputs[i].Tensor
		ot := &pb.ModelInferResponse_InferOutputTensor{Name: o.Name, Datatype: o.DType.String(), Shape: o.Shape}
		out.Outputs[i] = ot
		if raw {
			// The output's memory is released after encoding, and gRPC
			// marshals after the handler returns, so copy.
			out.RawOutputContents[i] = append([]byte(nil), oip.ToBinary(o)...)
			continue
		}
		ot.Contents = toContents(o)
	}
	return out, nil
}

func toContents(t *tensor.Tensor) *pb.InferTensorContents {
	c := &pb.InferTensorContents{}
	b := t.Data
	size := t.DType.Size()
	switch t.DType {
	case tensor.Bool:
		c.BoolContents = make([]bool, len(b))
		for i, x := range b {
			c.BoolContents[i] = x != 0
		}
	case tensor.Int8, tensor.Int16, tensor.Int32:
		c.IntContents = make([]int32, 0, len(b)/size)
		for i := 0; i+size <= len(b); i += size {
			c.IntContents = append(c.IntContents, int32(tensor.ReadInt(b[i:], size)))
		}
	case tensor.Int64:
		c.Int64Contents = make([]int64, 0, len(b)/8)
		for i := 0; i+8 <= len(b); i += 8 {
			c.Int64Contents = append(c.Int64Contents, int64(binary.LittleEndian.Uint64(b[i:])))
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		c.UintContents = make([]uint32, 0, len(b)/size)
		for i := 0; i+size <= len(b); i += size {
			c.UintContents = append(c.UintContents, uint32(tensor.ReadUint(b[i:], size)))
		}
	case tensor.Uint64:
		c.Uint64Contents = make([]uint64, 0, len(b)/8)
		for i := 0; i+8 <= len(b); i += 8 {
			c.Uint64Contents = append(c.Uint64Contents, binary.LittleEndian.Uint64(b[i:]))
		}
	case tensor.FP32:
		c.Fp32Contents = make([]float32, 0, len(b)/4)
		for i := 0; i+4 <= len(b); i += 4 {
			c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
		}
	case tensor.FP64:
		c.Fp64Contents = make([]float64, 0, len(b)/8)
		for i := 0; i+8 <= len(b); i += 8 {
			c.Fp64Contents = append(c.Fp64Contents, math.Float64frombits(binary.LittleEndian.Uint64(b[i:])))
		}
	case tensor.Bytes:
		c.BytesContents = make([][]byte, len(t.Strings))
		for i, s := range t.Strings {
			c.BytesContents[i] = append([]byte(nil), s...)
		}
	}
	return c
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
