package servertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Request is a transport-neutral inference request.
type Request struct {
	Model   string
	Version string
	ID      string
	Inputs  []tensor.Tensor
	Outputs []string // requested outputs; empty for all
}

// Response is a transport-neutral inference response.
type Response struct {
	Model   string
	Version string
	ID      string
	Outputs []tensor.Tensor
}

// Error is a failed call: the HTTP status or gRPC code, and the message.
type Error struct {
	HTTPStatus int    // REST
	GRPCCode   string // gRPC, e.g. "InvalidArgument"
	Message    string
}

func (e *Error) Error() string {
	if e.GRPCCode != "" {
		return fmt.Sprintf("grpc %s: %s", e.GRPCCode, e.Message)
	}
	return fmt.Sprintf("http %d: %s", e.HTTPStatus, e.Message)
}

// Client runs inference over one transport and encoding.
type Client interface {
	Name() string
	Infer(ctx context.Context, req *Request) (*Response, error)
}

// Clients returns one client per transport and encoding for s: REST JSON,
// REST binary, gRPC typed contents and gRPC raw contents.
func (s *Server) Clients(tb interface{ Cleanup(func()) }) []Client {
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		panic(err)
	}
	tb.Cleanup(func() { conn.Close() })
	g := pb.NewGRPCInferenceServiceClient(conn)
	hc := &http.Client{}
	return []Client{
		&RESTClient{URL: s.HTTPURL, HTTP: hc},
		&RESTClient{URL: s.HTTPURL, HTTP: hc, Binary: true},
		&GRPCClient{Conn: g},
		&GRPCClient{Conn: g, Raw: true},
	}
}

// RESTClient speaks REST, with JSON data or the binary extension.
type RESTClient struct {
	URL    string
	HTTP   *http.Client
	Binary bool
}

// Name implements Client.
func (c *RESTClient) Name() string {
	if c.Binary {
		return "rest-binary"
	}
	return "rest-json"
}

// Path returns the infer path for model and version.
func Path(model, version string) string {
	p := "/v2/models/" + model
	if version != "" {
		p += "/versions/" + version
	}
	return p + "/infer"
}

// Infer implements Client.
func (c *RESTClient) Infer(ctx context.Context, req *Request) (*Response, error) {
	body, hdrLen, err := EncodeREST(req, c.Binary)
	if err != nil {
		return nil, err
	}
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.URL+Path(req.Model, req.Version), bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	if hdrLen >= 0 {
		hr.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hdrLen))
		hr.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.HTTP.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("status %d with a body that is not an error object: %q", resp.StatusCode, b)
		}
		return nil, &Error{HTTPStatus: resp.StatusCode, Message: e.Error}
	}
	return DecodeREST(b, resp.Header.Get("Inference-Header-Content-Length"))
}

type restTensor struct {
	Name       string         `json:"name"`
	Shape      []int64        `json:"shape"`
	Datatype   string         `json:"datatype"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Data       any            `json:"data,omitempty"`
}

type restOutput struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// EncodeREST builds a REST body; with binary, every input and output uses
// the binary extension and hdrLen is the JSON length (else -1).
func EncodeREST(req *Request, bin bool) (body []byte, hdrLen int, err error) {
	type restRequest struct {
		ID         string         `json:"id,omitempty"`
		Parameters map[string]any `json:"parameters,omitempty"`
		Inputs     []restTensor   `json:"inputs"`
		Outputs    []restOutput   `json:"outputs,omitempty"`
	}
	r := restRequest{ID: req.ID}
	var tail []byte
	for i := range req.Inputs {
		t := &req.Inputs[i]
		rt := restTensor{Name: t.Name, Shape: t.Shape, Datatype: t.DType.String()}
		if bin || t.DType.BinaryOnly() {
			b := binaryOf(t)
			rt.Parameters = map[string]any{"binary_data_size": len(b)}
			tail = append(tail, b...)
			bin = true
		} else {
			rt.Data = jsonData(t)
		}
		r.Inputs = append(r.Inputs, rt)
	}
	for _, o := range req.Outputs {
		ro := restOutput{Name: o}
		if bin {
			ro.Parameters = map[string]any{"binary_data": true}
		}
		r.Outputs = append(r.Outputs, ro)
	}
	if bin && len(req.Outputs) == 0 {
		r.Parameters = map[string]any{"binary_data_output": true}
	}
	js, err := json.Marshal(r)
	if err != nil {
		return nil, 0, err
	}
	if !bin {
		return js, -1, nil
	}
	return append(js, tail...), len(js), nil
}

func binaryOf(t *tensor.Tensor) []byte {
	if t.DType != tensor.Bytes {
		return t.Data
	}
	var b []byte
	for _, s := range t.Strings {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// jsonData returns t's elements as a flat slice for encoding/json.
func jsonData(t *tensor.Tensor) any {
	n := int(t.Elements())
	out := make([]any, n)
	size := t.DType.Size()
	for i := 0; i < n; i++ {
		switch t.DType {
		case tensor.Bytes:
			out[i] = string(t.Strings[i])
		case tensor.Bool:
			out[i] = t.Data[i] != 0
		case tensor.FP32:
			out[i] = jsonFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))))
		case tensor.FP64:
			out[i] = jsonFloat(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
			out[i] = tensor.ReadUint(t.Data[size*i:], size)
		default:
			out[i] = tensor.ReadInt(t.Data[size*i:], size)
		}
	}
	return out
}

func jsonFloat(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
}

// DecodeREST decodes a REST response body.
func DecodeREST(b []byte, hdrLen string) (*Response, error) {
	js, tail := b, []byte(nil)
	if hdrLen != "" {
		n, err := strconv.Atoi(hdrLen)
		if err != nil || n < 0 || n > len(b) {
			return nil, fmt.Errorf("bad Inference-Header-Content-Length %q", hdrLen)
		}
		js, tail = b[:n], b[n:]
	}
	var r struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string `json:"id"`
		Outputs      []struct {
			Name       string            `json:"name"`
			Shape      []int64           `json:"shape"`
			Datatype   string            `json:"datatype"`
			Parameters map[string]any    `json:"parameters"`
			Data       []json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	resp := &Response{Model: r.ModelName, Version: r.ModelVersion, ID: r.ID}
	for _, o := range r.Outputs {
		t, n, err := newOutput(o.Name, o.Datatype, o.Shape)
		if err != nil {
			return nil, err
		}
		if sz, ok := o.Parameters["binary_data_size"]; ok {
			size, err := strconv.Atoi(fmt.Sprint(sz))
			if err != nil || size > len(tail) {
				return nil, fmt.Errorf("output %q: bad binary_data_size %v", o.Name, sz)
			}
			if err := fillBinary(&t, n, tail[:size]); err != nil {
				return nil, err
			}
			tail = tail[size:]
		} else if err := fillJSON(&t, n, o.Data); err != nil {
			return nil, err
		}
		resp.Outputs = append(resp.Outputs, t)
	}
	if len(tail) != 0 {
		return nil, fmt.Errorf("%d unclaimed bytes of binary data", len(tail))
	}
	return resp, nil
}

// newOutput starts an output tensor from its response metadata and returns
// its element count.
func newOutput(name, datatype string, shape []int64) (tensor.Tensor, int64, error) {
	dt, ok := tensor.ParseDType(datatype)
	if !ok {
		return tensor.Tensor{}, 0, fmt.Errorf("output %q: bad datatype %q", name, datatype)
	}
	n, err := tensor.NumElements(shape)
	if err != nil {
		return tensor.Tensor{}, 0, fmt.Errorf("output %q: %w", name, err)
	}
	return tensor.Tensor{Name: name, DType: dt, Shape: shape}, n, nil
}

func fillBinary(t *tensor.Tensor, n int64, b []byte) error {
	if t.DType != tensor.Bytes {
		if int64(len(b)) != n*int64(t.DType.Size()) {
			return fmt.Errorf("output %q: %d bytes for %d elements", t.Name, len(b), n)
		}
		t.Data = append([]byte(nil), b...)
		return nil
	}
	for i := int64(0); i < n; i++ {
		if len(b) < 4 {
			return fmt.Errorf("output %q: truncated BYTES", t.Name)
		}
		l := binary.LittleEndian.Uint32(b)
		if int(l) > len(b)-4 {
			return fmt.Errorf("output %q: truncated BYTES", t.Name)
		}
		t.Strings = append(t.Strings, append([]byte(nil), b[4:4+l]...))
		b = b[4+l:]
	}
	if len(b) != 0 {
		return fmt.Errorf("output %q: extra BYTES data", t.Name)
	}
	return nil
}

func fillJSON(t *tensor.Tensor, n int64, data []json.RawMessage) error {
	if int64(len(data)) != n {
		return fmt.Errorf("output %q: %d JSON elements, shape needs %d", t.Name, len(data), n)
	}
	size := t.DType.Size()
	for _, raw := range data {
		s := string(raw)
		switch t.DType {
		case tensor.Bytes:
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return err
			}
			t.Strings = append(t.Strings, []byte(v))
		case tensor.Bool:
			switch s {
			case "true":
				t.Data = append(t.Data, 1)
			case "false":
				t.Data = append(t.Data, 0)
			default:
				return fmt.Errorf("output %q: bad BOOL %s", t.Name, s)
			}
		case tensor.FP32, tensor.FP64:
			var f float64
			switch s {
			case `"NaN"`:
				f = math.NaN()
			case `"Infinity"`:
				f = math.Inf(1)
			case `"-Infinity"`:
				f = math.Inf(-1)
			default:
				var err error
				bits := 64
				if t.DType == tensor.FP32 {
					bits = 32
				}
				if f, err = strconv.ParseFloat(s, bits); err != nil {
					return fmt.Errorf("output %q: %w", t.Name, err)
				}
			}
			if t.DType == tensor.FP32 {
				t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(f)))
			} else {
				t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
			}
		case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
			u, err := strconv.ParseUint(s, 10, size*8)
			if err != nil {
				return fmt.Errorf("output %q: %w", t.Name, err)
			}
			t.Data = tensor.AppendLE(t.Data, u, size)
		default:
			i, err := strconv.ParseInt(s, 10, size*8)
			if err != nil {
				return fmt.Errorf("output %q: %w", t.Name, err)
			}
			t.Data = tensor.AppendLE(t.Data, uint64(i), size)
		}
	}
	if t.DType != tensor.Bytes && t.Data == nil {
		t.Data = []byte{}
	}
	return nil
}

// GRPCClient speaks gRPC with typed contents or raw contents.
type GRPCClient struct {
	Conn pb.GRPCInferenceServiceClient
	Raw  bool
}

// Name implements Client.
func (c *GRPCClient) Name() string {
	if c.Raw {
		return "grpc-raw"
	}
	return "grpc-typed"
}

// Infer implements Client.
func (c *GRPCClient) Infer(ctx context.Context, req *Request) (*Response, error) {
	r := EncodeGRPC(req, c.Raw)
	resp, err := c.Conn.ModelInfer(ctx, r)
	if err != nil {
		st, _ := status.FromError(err)
		return nil, &Error{GRPCCode: st.Code().String(), Message: st.Message()}
	}
	return DecodeGRPC(resp)
}

// EncodeGRPC builds a ModelInferRequest; with raw (or for FP16/BF16 inputs)
// every input goes in raw_input_contents.
func EncodeGRPC(req *Request, raw bool) *pb.ModelInferRequest {
	r := &pb.ModelInferRequest{ModelName: req.Model, ModelVersion: req.Version, Id: req.ID}
	for i := range req.Inputs {
		if req.Inputs[i].DType.BinaryOnly() {
			raw = true
		}
	}
	for i := range req.Inputs {
		t := &req.Inputs[i]
		in := &pb.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: t.DType.String(), Shape: t.Shape}
		if raw {
			r.RawInputContents = append(r.RawInputContents, binaryOf(t))
		} else {
			in.Contents = contentsOf(t)
		}
		r.Inputs = append(r.Inputs, in)
	}
	for _, o := range req.Outputs {
		r.Outputs = append(r.Outputs, &pb.ModelInferRequest_InferRequestedOutputTensor{Name: o})
	}
	return r
}

func contentsOf(t *tensor.Tensor) *pb.InferTensorContents {
	c := &pb.InferTensorContents{}
	n := int(t.Elements())
	size := t.DType.Size()
	for i := 0; i < n; i++ {
		switch t.DType {
		case tensor.Bytes:
			c.BytesContents = append(c.BytesContents, t.Strings[i])
		case tensor.Bool:
			c.BoolContents = append(c.BoolContents, t.Data[i] != 0)
		case tensor.FP32:
			c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		case tensor.FP64:
			c.Fp64Contents = append(c.Fp64Contents, math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		case tensor.Int8, tensor.Int16, tensor.Int32:
			c.IntContents = append(c.IntContents, int32(tensor.ReadInt(t.Data[size*i:], size)))
		case tensor.Int64:
			c.Int64Contents = append(c.Int64Contents, tensor.ReadInt(t.Data[8*i:], 8))
		case tensor.Uint8, tensor.Uint16, tensor.Uint32:
			c.UintContents = append(c.UintContents, uint32(tensor.ReadUint(t.Data[size*i:], size)))
		case tensor.Uint64:
			c.Uint64Contents = append(c.Uint64Contents, tensor.ReadUint(t.Data[8*i:], 8))
		}
	}
	return c
}

// DecodeGRPC converts a ModelInferResponse.
func DecodeGRPC(r *pb.ModelInferResponse) (*Response, error) {
	resp := &Response{Model: r.ModelName, Version: r.ModelVersion, ID: r.Id}
	raw := len(r.RawOutputContents) > 0
	if raw && len(r.RawOutputContents) != len(r.Outputs) {
		return nil, fmt.Errorf("%d raw outputs for %d outputs", len(r.RawOutputContents), len(r.Outputs))
	}
	for i, o := range r.Outputs {
		t, n, err := newOutput(o.Name, o.Datatype, o.Shape)
		if err != nil {
			return nil, err
		}
		dt := t.DType
		if raw {
			if err := fillBinary(&t, n, r.RawOutputContents[i]); err != nil {
				return nil, err
			}
		} else {
			c := o.Contents
			size := dt.Size()
			switch dt {
			case tensor.Bytes:
				t.Strings = c.GetBytesContents()
			case tensor.Bool:
				for _, b := range c.GetBoolContents() {
					t.Data = append(t.Data, map[bool]byte{false: 0, true: 1}[b])
				}
			case tensor.FP32:
				for _, f := range c.GetFp32Contents() {
					t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(f))
				}
			case tensor.FP64:
				for _, f := range c.GetFp64Contents() {
					t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
				}
			case tensor.Int8, tensor.Int16, tensor.Int32:
				for _, v := range c.GetIntContents() {
					t.Data = tensor.AppendLE(t.Data, uint64(v), size)
				}
			case tensor.Int64:
				for _, v := range c.GetInt64Contents() {
					t.Data = tensor.AppendLE(t.Data, uint64(v), 8)
				}
			case tensor.Uint8, tensor.Uint16, tensor.Uint32:
				for _, v := range c.GetUintContents() {
					t.Data = tensor.AppendLE(t.Data, uint64(v), size)
				}
			case tensor.Uint64:
				for _, v := range c.GetUint64Contents() {
					t.Data = tensor.AppendLE(t.Data, v, 8)
				}
			default:
				return nil, fmt.Errorf("output %q: %s in typed contents", o.Name, dt)
			}
			if dt != tensor.Bytes && t.Data == nil {
				t.Data = []byte{}
			}
			if got := t.ByteSize(); dt != tensor.Bytes && int64(got) != n*int64(size) {
				return nil, fmt.Errorf("output %q: %d bytes for %d elements", o.Name, got, n)
			}
			if dt == tensor.Bytes && int64(len(t.Strings)) != n {
				return nil, fmt.Errorf("output %q: %d strings for %d elements", o.Name, len(t.Strings), n)
			}
		}
		resp.Outputs = append(resp.Outputs, t)
	}
	return resp, nil
}

// Code returns the status of a client error as "http 400" or "grpc
// InvalidArgument", or the error text for any other error.
func Code(err error) string {
	if e, ok := err.(*Error); ok {
		if e.GRPCCode != "" {
			return "grpc " + e.GRPCCode
		}
		return "http " + strconv.Itoa(e.HTTPStatus)
	}
	if err == nil {
		return "ok"
	}
	return strings.TrimSpace(err.Error())
}
