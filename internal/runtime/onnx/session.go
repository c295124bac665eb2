package onnx

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// Options tunes the sessions of one model version.
type Options struct {
	// Sessions is the number of ONNX Runtime sessions in the pool; each holds
	// its own copy of the weights. Default 1.
	Sessions int
	// Concurrency is how many runs may use one session at once (ONNX Runtime
	// sessions are safe for concurrent Run). Default GOMAXPROCS.
	Concurrency int
	// IntraOpThreads and InterOpThreads size ONNX Runtime's thread pools per
	// session. Default 1 each: the server's concurrency comes from parallel
	// requests, not from splitting one small run across cores.
	IntraOpThreads int
	InterOpThreads int
	// MaxWait is the longest Run waits for a free slot before it returns
	// ErrBusy. Zero means it waits as long as its context allows.
	MaxWait time.Duration
	// DisablePrepacking keeps ONNX Runtime from repacking weights (for
	// MatMul) at load: less memory at load and after it, and faster
	// session creation, at a possible cost per run.
	DisablePrepacking bool
}

func (o Options) withDefaults() Options {
	if o.Sessions <= 0 {
		o.Sessions = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = runtime.GOMAXPROCS(0)
	}
	if o.IntraOpThreads <= 0 {
		o.IntraOpThreads = 1
	}
	if o.InterOpThreads <= 0 {
		o.InterOpThreads = 1
	}
	return o
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("session closed")

// ErrBusy is returned by Run when no slot came free within MaxWait.
var ErrBusy = errors.New("no session slot free within the wait limit")

// Session is a pool of ONNX Runtime sessions for one model version.
type Session struct {
	inputs   []tensor.Spec
	outputs  []tensor.Spec
	sessions []*ort.DynamicAdvancedSession
	// slots holds one token per permitted concurrent run; a token names the
	// session it runs on. Close takes every token back.
	slots   chan *ort.DynamicAdvancedSession
	closed  chan struct{}
	maxWait time.Duration
}

// NewSession creates a session pool from in-memory ONNX model bytes. The
// caller may wipe model once NewSession returns: ONNX Runtime keeps its own
// copy.
func NewSession(model []byte, opts Options) (*Session, error) {
	if _, ok := Loaded(); !ok {
		return nil, errors.New("onnx runtime is not initialised")
	}
	if len(model) == 0 {
		return nil, errors.New("empty model")
	}
	opts = opts.withDefaults()
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("intra-op threads: %w", err)
	}
	if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
		return nil, fmt.Errorf("inter-op threads: %w", err)
	}
	if opts.DisablePrepacking {
		if err := so.AddSessionConfigEntry("session.disable_prepacking", "1"); err != nil {
			return nil, fmt.Errorf("disable prepacking: %w", err)
		}
	}
	defer trimHeap()
	s := &Session{closed: make(chan struct{}), maxWait: opts.MaxWait}
	for i := 0; i < opts.Sessions; i++ {
		ds, in, out, err := ort.NewDynamicAdvancedSessionForAllIO(model, so)
		if err != nil {
			s.destroy()
			return nil, fmt.Errorf("create session: %w", err)
		}
		s.sessions = append(s.sessions, ds)
		if i == 0 {
			if s.inputs, err = convertInfo(in); err != nil {
				s.destroy()
				return nil, fmt.Errorf("input %w", err)
			}
			if s.outputs, err = convertInfo(out); err != nil {
				s.destroy()
				return nil, fmt.Errorf("output %w", err)
			}
			if len(s.inputs) == 0 || len(s.outputs) == 0 {
				s.destroy()
				return nil, errors.New("model declares no inputs or no outputs")
			}
		}
	}
	s.slots = make(chan *ort.DynamicAdvancedSession, opts.Sessions*opts.Concurrency)
	for i := 0; i < opts.Concurrency; i++ {
		for _, ds := range s.sessions {
			s.slots <- ds
		}
	}
	return s, nil
}

func convertInfo(infos []ort.InputOutputInfo) ([]tensor.Spec, error) {
	out := make([]tensor.Spec, len(infos))
	for i, in := range infos {
		if in.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%q: %s values are not supported", in.Name, in.OrtValueType)
		}
		dt, ok := fromORT(in.DataType)
		if !ok {
			return nil, fmt.Errorf("%q: element type %s is not supported", in.Name, in.DataType)
		}
		shape := make([]int64, len(in.Dimensions))
		for j, d := range in.Dimensions {
			if d < 0 {
				d = -1
			}
			shape[j] = d
		}
		out[i] = tensor.Spec{Name: in.Name, DType: dt, Shape: shape}
	}
	return out, nil
}

// Inputs returns the model's declared inputs, in the order Run takes them.
func (s *Session) Inputs() []tensor.Spec { return s.inputs }

// Outputs returns the model's declared outputs, in the order Run returns them.
func (s *Session) Outputs() []tensor.Spec { return s.outputs }

// Result holds the outputs of one run, copied out of ONNX Runtime into Go
// memory.
type Result struct {
	Outputs []tensor.Tensor
}

// Release ends the caller's use of the outputs, which must not be used
// afterwards. (Their memory is Go's; Release is where pooling would return
// it.)
func (r *Result) Release() {
	r.Outputs = nil
}

// Run runs the model on inputs, which must be given in Inputs() order and
// already validated against it (datatype, rank, element counts). It waits
// for a free slot until ctx is done.
func (s *Session) Run(ctx context.Context, inputs []*tensor.Tensor) (*Result, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("got %d inputs, want %d", len(inputs), len(s.inputs))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ds, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { s.slots <- ds }()

	in := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := toValue(t)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", t.Name, err)
		}
		in[i] = v
	}
	out, err := ds.RunCopyOutputs(in, nil)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	res := &Result{Outputs: make([]tensor.Tensor, len(out))}
	for i, o := range out {
		dt, ok := fromORT(o.DataType)
		if !ok {
			return nil, fmt.Errorf("output %q: unsupported element type %s", s.outputs[i].Name, o.DataType)
		}
		t := tensor.Tensor{Name: s.outputs[i].Name, DType: dt, Shape: []int64(o.Shape), Data: o.Data}
		if dt == tensor.Bytes {
			t.Data = nil
			t.Strings = make([][]byte, len(o.Strings))
			for j, str := range o.Strings {
				t.Strings[j] = []byte(str)
			}
		}
		res.Outputs[i] = t
	}
	return res, nil
}

// acquire takes a slot: at once when one is free (no timer on the fast
// path), else waiting until one frees, the session closes, ctx ends or
// MaxWait passes.
func (s *Session) acquire(ctx context.Context) (*ort.DynamicAdvancedSession, error) {
	select {
	case ds := <-s.slots:
		select {
		case <-s.closed:
			s.slots <- ds
			return nil, ErrClosed
		default:
			return ds, nil
		}
	default:
	}
	var expired <-chan time.Time
	if s.maxWait > 0 {
		t := time.NewTimer(s.maxWait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case ds := <-s.slots:
		return ds, nil
	case <-s.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-expired:
		return nil, ErrBusy
	}
}

// Close stops new runs, waits for in-flight runs to finish, and frees the
// ONNX Runtime sessions. It is safe to call once.
func (s *Session) Close() {
	close(s.closed)
	for i := 0; i < cap(s.slots); i++ {
		<-s.slots
	}
	s.destroy()
}

func (s *Session) destroy() {
	for _, ds := range s.sessions {
		ds.Destroy()
	}
	s.sessions = nil
}

func toValue(t *tensor.Tensor) (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	if t.DType == tensor.Bytes {
		st, err := ort.NewStringTensor(shape)
		if err != nil {
			return nil, err
		}
		strs := make([]string, len(t.Strings))
		for i, b := range t.Strings {
			strs[i] = string(b)
		}
		if err := st.SetContents(strs); err != nil {
			st.Destroy()
			return nil, err
		}
		return st, nil
	}
	return ort.NewCustomDataTensor(shape, aligned(t.Data), toORT(t.DType))
}

// alignment is the byte alignment ONNX Runtime gives its own buffers. Its
// vectorised kernels sum in a different order on misaligned data, so the
// same request could give different low bits depending on where its bytes
// sat in the request body.
const alignment = 64

// aligned returns b if it starts on an alignment boundary, else an aligned
// copy. Input bytes that alias a request body (binary REST data, gRPC raw
// contents) start wherever the framing put them.
func aligned(b []byte) []byte {
	if len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%alignment == 0 {
		return b
	}
	buf := make([]byte, len(b)+alignment)
	off := (alignment - int(uintptr(unsafe.Pointer(&buf[0]))%alignment)) % alignment
	c := buf[off : off+len(b) : off+len(b)]
	copy(c, b)
	return c
}

var ortTypes = map[tensor.DType]ort.TensorElementDataType{
	tensor.Bool:   ort.TensorElementDataTypeBool,
	tensor.Uint8:  ort.TensorElementDataTypeUint8,
	tensor.Uint16: ort.TensorElementDataTypeUint16,
	tensor.Uint32: ort.TensorElementDataTypeUint32,
	tensor.Uint64: ort.TensorElementDataTypeUint64,
	tensor.Int8:   ort.TensorElementDataTypeInt8,
	tensor.Int16:  ort.TensorElementDataTypeInt16,
	tensor.Int32:  ort.TensorElementDataTypeInt32,
	tensor.Int64:  ort.TensorElementDataTypeInt64,
	tensor.FP16:   ort.TensorElementDataTypeFloat16,
	tensor.BF16:   ort.TensorElementDataTypeBFloat16,
	tensor.FP32:   ort.TensorElementDataTypeFloat,
	tensor.FP64:   ort.TensorElementDataTypeDouble,
	tensor.Bytes:  ort.TensorElementDataTypeString,
}

func toORT(d tensor.DType) ort.TensorElementDataType { return ortTypes[d] }

var dtypes = func() map[ort.TensorElementDataType]tensor.DType {
	m := make(map[ort.TensorElementDataType]tensor.DType, len(ortTypes))
	for d, o := range ortTypes {
		m[o] = d
	}
	return m
}()

func fromORT(t ort.TensorElementDataType) (tensor.DType, bool) {
	d, ok := dtypes[t]
	return d, ok
}
