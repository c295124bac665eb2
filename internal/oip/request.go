package oip

import (
	"encoding/binary"
	"math"
	"strconv"
	"unsafe"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// rawInput is an input object as read, before its data is decoded.
type rawInput struct {
	name       string
	datatype   string
	shape      []int64
	hasShape   bool
	params     pipeline.Parameters
	data       []byte // the JSON text of "data", when it came before datatype and shape
	decoded    *tensor.Tensor
	binarySize int64 // -1 when absent
}

// DecodeInferRequest decodes a REST infer request. header is the JSON part
// and bin the binary tensor data that followed it (nil without the binary
// extension). Tensors decoded from bin alias it.
func DecodeInferRequest(header, bin []byte, lim Limits) (*pipeline.Request, error) {
	s := &scanner{b: header, maxDepth: lim.MaxDepth}
	req := &pipeline.Request{}
	var raws []rawInput
	sawInputs := false
	budget := lim.MaxTensorBytes
	err := s.object(func(key string) error {
		switch key {
		case "id":
			id, err := s.str()
			if err != nil {
				return apierr.Invalid("'id' must be a valid JSON string")
			}
			req.ID = id
		case "parameters":
			p, err := decodeParameters(s)
			if err != nil {
				return err
			}
			req.Parameters = p
			if v, ok := p["binary_data_output"]; ok {
				b, ok := v.(bool)
				if !ok {
					return apierr.Invalid("parameter 'binary_data_output' must be a boolean")
				}
				req.BinaryOutputs = b
			}
		case "inputs":
			sawInputs = true
			return s.array(func() error {
				if len(raws) >= lim.MaxInputs {
					return apierr.Invalid("too many inputs (limit %d)", lim.MaxInputs)
				}
				in, err := decodeInput(s, lim, &budget)
				if err != nil {
					return err
				}
				raws = append(raws, in)
				return nil
			})
		case "outputs":
			return s.array(func() error {
				if len(req.Outputs) >= lim.MaxInputs {
					return apierr.Invalid("too many requested outputs (limit %d)", lim.MaxInputs)
				}
				out, err := decodeRequestedOutput(s)
				if err != nil {
					return err
				}
				req.Outputs = append(req.Outputs, out)
				return nil
			})
		default:
			return s.skip()
		}
		return nil
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return nil, asInvalid(err)
	}
	if !sawInputs || len(raws) == 0 {
		return nil, apierr.Invalid("request has no inputs")
	}
	req.Inputs = make([]tensor.Tensor, len(raws))
	for i := range raws {
		t, rest, err := buildInput(&raws[i], bin, &budget)
		if err != nil {
			return nil, err
		}
		bin = rest
		req.Inputs[i] = t
	}
	if len(bin) != 0 {
		return nil, apierr.Invalid("binary data has %d bytes more than the inputs declare", len(bin))
	}
	for i := range req.Outputs {
		if req.BinaryOutputs {
			req.Outputs[i].Binary = true
		}
	}
	return req, nil
}

// asInvalid turns scanner errors into public InvalidArgument errors.
func asInvalid(err error) error {
	if _, ok := err.(*apierr.Error); ok {
		return err
	}
	if err == errDepth {
		return apierr.Invalid("JSON nested too deeply")
	}
	return apierr.Wrap(apierr.InvalidArgument, err, "malformed JSON request")
}

// decodeInput reads one input object. When "data" follows "datatype" and
// "shape", as clients write it, the data is decoded in the same pass;
// otherwise its text is kept for buildInput.
func decodeInput(s *scanner, lim Limits, budget *int64) (rawInput, error) {
	in := rawInput{binarySize: -1}
	err := s.object(func(key string) error {
		var err error
		switch key {
		case "name":
			in.name, err = s.str()
			if err != nil {
				return apierr.Invalid("input 'name' must be a valid JSON string")
			}
		case "datatype":
			in.datatype, err = s.str()
			if err != nil {
				return apierr.Invalid("input 'datatype' must be a valid JSON string")
			}
		case "shape":
			in.hasShape = true
			in.shape, err = decodeShape(s, lim.MaxRank)
			return err
		case "parameters":
			in.params, err = decodeParameters(s)
			if err != nil {
				return err
			}
			if v, ok := in.params["binary_data_size"]; ok {
				n, ok := v.(int64)
				if !ok || n < 0 {
					return apierr.Invalid("parameter 'binary_data_size' must be a non-negative integer")
				}
				in.binarySize = n
			}
		case "data":
			if in.decoded != nil || in.data != nil {
				return apierr.Invalid("input %q has 'data' twice", in.name)
			}
			if in.datatype != "" && in.hasShape {
				t, n, err := jsonTensor(&in, *budget)
				if err != nil {
					return err
				}
				if err := decodeDataAt(&t, n, s, *budget); err != nil {
					return err
				}
				*budget -= int64(t.ByteSize())
				in.decoded = &t
				return nil
			}
			s.ws()
			start := s.i
			if err := s.skip(); err != nil {
				return err
			}
			in.data = s.b[start:s.i]
		default:
			return s.skip()
		}
		return nil
	})
	return in, err
}

func decodeShape(s *scanner, maxRank int) ([]int64, error) {
	shape := make([]int64, 0, 4)
	err := s.array(func() error {
		if len(shape) >= maxRank {
			return apierr.Invalid("shape has more than %d dimensions", maxRank)
		}
		txt, err := s.number()
		if err != nil {
			return apierr.Invalid("shape dimensions must be integers")
		}
		d, err := strconv.ParseInt(unsafeString(txt), 10, 64)
		if err != nil {
			return apierr.Invalid("shape dimension %s is not a 64-bit integer", clip(txt))
		}
		shape = append(shape, d)
		return nil
	})
	return shape, err
}

func decodeParameters(s *scanner) (pipeline.Parameters, error) {
	p := pipeline.Parameters{}
	err := s.object(func(key string) error {
		if len(p) >= 64 {
			return apierr.Invalid("too many parameters")
		}
		switch c := s.peek(); {
		case c == '"':
			v, err := s.str()
			if err != nil {
				return err
			}
			p[key] = v
		case c == 't' || c == 'f':
			switch {
			case s.literal("true"):
				p[key] = true
			case s.literal("false"):
				p[key] = false
			default:
				return s.errorf("bad literal")
			}
		case c == '-' || (c >= '0' && c <= '9'):
			txt, err := s.number()
			if err != nil {
				return err
			}
			if i, err := strconv.ParseInt(unsafeString(txt), 10, 64); err == nil {
				p[key] = i
			} else if u, err := strconv.ParseUint(unsafeString(txt), 10, 64); err == nil {
				p[key] = u
			} else if f, err := strconv.ParseFloat(unsafeString(txt), 64); err == nil {
				p[key] = f
			} else {
				return apierr.Invalid("parameter %q is out of range", key)
			}
		default:
			return apierr.Invalid("parameter %q must be a string, number or boolean", key)
		}
		return nil
	})
	return p, err
}

func decodeRequestedOutput(s *scanner) (pipeline.RequestedOutput, error) {
	var out pipeline.RequestedOutput
	err := s.object(func(key string) error {
		var err error
		switch key {
		case "name":
			out.Name, err = s.str()
			if err != nil {
				return apierr.Invalid("output 'name' must be a valid JSON string")
			}
		case "parameters":
			out.Parameters, err = decodeParameters(s)
			if err != nil {
				return err
			}
			if v, ok := out.Parameters["binary_data"]; ok {
				b, ok := v.(bool)
				if !ok {
					return apierr.Invalid("parameter 'binary_data' must be a boolean")
				}
				out.Binary = b
			}
			if _, ok := out.Parameters["classification"]; ok {
				return apierr.New(apierr.Unimplemented, "the classification extension is not supported")
			}
		default:
			return s.skip()
		}
		return nil
	})
	if err == nil && out.Name == "" {
		err = apierr.Invalid("requested output has no name")
	}
	return out, err
}

// CheckShape validates a declared shape and returns its element count and
// payload size in bytes for fixed-size types, refusing anything over budget
// before a byte is allocated.
func CheckShape(name string, dt tensor.DType, shape []int64, budget int64) (n int64, size int64, err error) {
	n, err = tensor.NumElements(shape)
	if err != nil {
		return 0, 0, apierr.Invalid("input %q: %v", name, err)
	}
	per := int64(dt.Size())
	if dt == tensor.Bytes {
		per = 4 // every element carries at least its length prefix
	}
	if n > budget/max(per, 1) {
		return 0, 0, apierr.New(apierr.TooLarge, "input %q: tensor exceeds the request size limit", name)
	}
	return n, n * per, nil
}

// jsonTensor starts the tensor for an input whose data is JSON, checking
// its datatype and shape against the budget.
func jsonTensor(in *rawInput, budget int64) (tensor.Tensor, int64, error) {
	t, n, err := newTensor(in, budget)
	if err == nil && t.DType.BinaryOnly() {
		err = apierr.Invalid("input %q: %s data must be sent as binary data", in.name, t.DType)
	}
	return t, n, err
}

func newTensor(in *rawInput, budget int64) (tensor.Tensor, int64, error) {
	if in.name == "" {
		return tensor.Tensor{}, 0, apierr.Invalid("input has no name")
	}
	dt, ok := tensor.ParseDType(in.datatype)
	if !ok {
		return tensor.Tensor{}, 0, apierr.Invalid("input %q: unknown datatype %q", in.name, clip([]byte(in.datatype)))
	}
	if !in.hasShape {
		return tensor.Tensor{}, 0, apierr.Invalid("input %q has no shape", in.name)
	}
	n, _, err := CheckShape(in.name, dt, in.shape, budget)
	if err != nil {
		return tensor.Tensor{}, 0, err
	}
	return tensor.Tensor{Name: in.name, DType: dt, Shape: in.shape}, n, nil
}

func buildInput(in *rawInput, bin []byte, budget *int64) (tensor.Tensor, []byte, error) {
	hasData := in.data != nil || in.decoded != nil
	if in.binarySize >= 0 && hasData {
		return tensor.Tensor{}, bin, apierr.Invalid("input %q has both 'data' and 'binary_data_size'", in.name)
	}
	if in.decoded != nil {
		if in.name == "" {
			return tensor.Tensor{}, bin, apierr.Invalid("input has no name")
		}
		return *in.decoded, bin, nil
	}
	switch {
	case in.binarySize >= 0:
		t, n, err := newTensor(in, *budget)
		if err != nil {
			return t, bin, err
		}
		if in.binarySize > int64(len(bin)) {
			return t, bin, apierr.Invalid("input %q: binary_data_size %d exceeds the %d bytes of binary data left", in.name, in.binarySize, len(bin))
		}
		chunk := bin[:in.binarySize]
		if err := FromBinary(&t, n, chunk); err != nil {
			return t, bin, err
		}
		*budget -= int64(len(chunk))
		return t, bin[in.binarySize:], nil
	case in.data != nil:
		t, n, err := jsonTensor(in, *budget)
		if err != nil {
			return t, bin, err
		}
		if err := decodeData(&t, n, in.data, *budget); err != nil {
			return t, bin, err
		}
		*budget -= int64(t.ByteSize())
		return t, bin, nil
	}
	return tensor.Tensor{}, bin, apierr.Invalid("input %q has no data", in.name)
}

// FromBinary fills t (whose DType and Shape are set, with n elements) from
// raw little-endian bytes, aliasing b for fixed-size types. BYTES elements
// are 4-byte little-endian lengths followed by their bytes.
func FromBinary(t *tensor.Tensor, n int64, b []byte) error {
	if t.DType != tensor.Bytes {
		want := n * int64(t.DType.Size())
		if int64(len(b)) != want {
			return apierr.Invalid("input %q: got %d bytes of data, shape %v of %s needs %d", t.Name, len(b), t.Shape, t.DType, want)
		}
		if t.DType == tensor.Bool {
			for _, c := range b {
				if c > 1 {
					return apierr.Invalid("input %q: BOOL elements must be 0 or 1", t.Name)
				}
			}
		}
		t.Data = b
		return nil
	}
	strs := make([][]byte, 0, min(n, int64(len(b)/4)))
	for int64(len(strs)) < n {
		if len(b) < 4 {
			return apierr.Invalid("input %q: BYTES data is truncated", t.Name)
		}
		l := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return apierr.Invalid("input %q: BYTES element length %d exceeds the data left", t.Name, l)
		}
		strs = append(strs, b[:l:l])
		b = b[l:]
	}
	if len(b) != 0 {
		return apierr.Invalid("input %q: BYTES data has %d bytes beyond its %d elements", t.Name, len(b), n)
	}
	t.Strings = strs
	return nil
}

// decodeData parses JSON tensor data kept as text.
func decodeData(t *tensor.Tensor, n int64, data []byte, budget int64) error {
	s := &scanner{b: data}
	if err := decodeDataAt(t, n, s, budget); err != nil {
		return err
	}
	if err := s.end(); err != nil {
		return apierr.Wrap(apierr.InvalidArgument, err, "input "+strconv.Quote(t.Name)+": malformed data")
	}
	return nil
}

// decodeDataAt parses JSON tensor data, flat or nested no deeper than the
// shape's rank, at the scanner's position into t.
func decodeDataAt(t *tensor.Tensor, n int64, s *scanner, budget int64) error {
	saved := s.maxDepth
	s.maxDepth = s.depth + max(len(t.Shape), 1)
	defer func() { s.maxDepth = saved }()
	d := &dataDecoder{t: t, n: n, budget: budget}
	if t.DType == tensor.Bytes {
		d.strs = make([][]byte, 0, min(n, 1<<16))
	} else {
		d.buf = make([]byte, 0, n*int64(t.DType.Size()))
	}
	var err error
	if s.peek() == '[' {
		err = d.array(s)
	} else {
		err = d.leaf(s)
	}
	if err != nil {
		if err == errDepth {
			return apierr.Invalid("input %q: data is nested deeper than its shape", t.Name)
		}
		if _, ok := err.(*apierr.Error); ok {
			return err
		}
		return apierr.Wrap(apierr.InvalidArgument, err, "input "+strconv.Quote(t.Name)+": malformed data")
	}
	if d.count != n {
		return apierr.Invalid("input %q: got %d elements, shape %v needs %d", t.Name, d.count, t.Shape, n)
	}
	t.Data = d.buf
	t.Strings = d.strs
	return nil
}

type dataDecoder struct {
	t      *tensor.Tensor
	n      int64
	count  int64
	budget int64
	used   int64
	buf    []byte
	strs   [][]byte
}

func (d *dataDecoder) array(s *scanner) error {
	if d.t.DType == tensor.FP32 || d.t.DType == tensor.FP64 {
		return d.floats(s)
	}
	return s.array(func() error {
		if s.peek() == '[' {
			return d.array(s)
		}
		return d.leaf(s)
	})
}

func (d *dataDecoder) leaf(s *scanner) error {
	if d.count >= d.n {
		return apierr.Invalid("input %q: more elements than shape %v holds", d.t.Name, d.t.Shape)
	}
	d.count++
	name := d.t.Name
	switch dt := d.t.DType; dt {
	case tensor.Bytes:
		b, err := s.strBytes(nil)
		if err != nil {
			return apierr.Invalid("input %q: BYTES elements must be JSON strings", name)
		}
		d.used += 4 + int64(len(b))
		if d.used > d.budget {
			return apierr.New(apierr.TooLarge, "input %q: tensor exceeds the request size limit", name)
		}
		d.strs = append(d.strs, b)
	case tensor.Bool:
		switch {
		case s.literal("true"):
			d.buf = append(d.buf, 1)
		case s.literal("false"):
			d.buf = append(d.buf, 0)
		default:
			return apierr.Invalid("input %q: BOOL elements must be true or false", name)
		}
	case tensor.FP32, tensor.FP64:
		f, err := parseFloat(s, dt)
		if err != nil {
			return apierr.Invalid("input %q: %v", name, err)
		}
		if dt == tensor.FP32 {
			d.buf = binary.LittleEndian.AppendUint32(d.buf, math.Float32bits(float32(f)))
		} else {
			d.buf = binary.LittleEndian.AppendUint64(d.buf, math.Float64bits(f))
		}
	default:
		txt, err := s.number()
		if err != nil {
			return apierr.Invalid("input %q: %s elements must be numbers", name, dt)
		}
		bits := dt.Size() * 8
		switch dt {
		case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
			u, err := strconv.ParseUint(unsafeString(txt), 10, bits)
			if err != nil {
				return apierr.Invalid("input %q: %s is not a valid %s", name, clip(txt), dt)
			}
			d.buf = tensor.AppendLE(d.buf, u, dt.Size())
		default:
			i, err := strconv.ParseInt(unsafeString(txt), 10, bits)
			if err != nil {
				return apierr.Invalid("input %q: %s is not a valid %s", name, clip(txt), dt)
			}
			d.buf = tensor.AppendLE(d.buf, uint64(i), dt.Size())
		}
	}
	return nil
}

// floats is array specialised for FP32 and FP64, whose flat arrays of
// numbers are most of what JSON requests carry: one tight loop per element
// instead of a callback chain.
func (d *dataDecoder) floats(s *scanner) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		s.depth--
		return nil
	}
	bits := 64
	if d.t.DType == tensor.FP32 {
		bits = 32
	}
	for {
		c := byte(0)
		if s.i < len(s.b) && s.b[s.i] > ' ' {
			c = s.b[s.i] // no white space to skip: the usual case
		} else {
			c = s.peek()
		}
		switch c {
		case '[':
			if err := d.floats(s); err != nil {
				return err
			}
		case '"':
			if err := d.leaf(s); err != nil {
				return err
			}
		default:
			if d.count >= d.n {
				return apierr.Invalid("input %q: more elements than shape %v holds", d.t.Name, d.t.Shape)
			}
			if bits == 32 {
				if v, ok := s.float32Fast(); ok {
					d.count++
					d.buf = binary.LittleEndian.AppendUint32(d.buf, math.Float32bits(v))
					break
				}
			}
			start := s.i
			f, ok, err := s.float(bits)
			if !ok {
				return apierr.Invalid("input %q: %s elements must be numbers", d.t.Name, d.t.DType)
			}
			if err != nil {
				return apierr.Invalid("input %q: %s is out of range for %s", d.t.Name, clip(s.b[start:s.i]), d.t.DType)
			}
			d.count++
			if bits == 32 {
				d.buf = binary.LittleEndian.AppendUint32(d.buf, math.Float32bits(float32(f)))
			} else {
				d.buf = binary.LittleEndian.AppendUint64(d.buf, math.Float64bits(f))
			}
		}
		c = 0
		if s.i < len(s.b) && s.b[s.i] > ' ' {
			c = s.b[s.i]
		} else {
			c = s.peek()
		}
		switch c {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.errorf("want ',' or ']' in array")
		}
	}
}

// parseFloat reads a JSON number, or one of the strings "NaN", "Infinity"
// and "-Infinity" that Aegis uses for values JSON numbers cannot carry.
func parseFloat(s *scanner, dt tensor.DType) (float64, error) {
	bits := 64
	if dt == tensor.FP32 {
		bits = 32
	}
	if s.peek() == '"' {
		v, err := s.str()
		if err != nil {
			return 0, err
		}
		switch v {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
		return 0, apierr.Invalid("%s elements must be numbers", dt)
	}
	start := s.i
	f, ok, err := s.float(bits)
	if !ok {
		return 0, apierr.Invalid("%s elements must be numbers", dt)
	}
	if err != nil {
		return 0, apierr.Invalid("%s is out of range for %s", clip(s.b[start:s.i]), dt)
	}
	return f, nil
}

// unsafeString views b as a string without copying; the string must not
// outlive b or be retained.
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// clip shortens client text echoed in an error message.
func clip(b []byte) string {
	const n = 32
	if len(b) > n {
		return strconv.Quote(string(b[:n]) + "...")
	}
	return strconv.Quote(string(b))
}
