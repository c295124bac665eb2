// Package pipeline defines the request path shared by both transports: one
// Request type, one Handler interface, and Stages that wrap a Handler. Every
// control (limits, authentication, authorization, validation, audit) is a
// Stage written once and run for REST and gRPC alike.
package pipeline

import (
	"context"
	"sync/atomic"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// Parameters are protocol parameters: values are string, bool, int64,
// uint64 or float64.
type Parameters map[string]any

// RequestedOutput is an output the client asked for by name.
type RequestedOutput struct {
	Name       string
	Parameters Parameters
	// Binary asks for the output as binary data (REST extension). Set by the
	// REST codec from the output's binary_data parameter or the request's
	// binary_data_output parameter.
	Binary bool
}

// Request is one inference request, whichever transport it came in on.
type Request struct {
	// ID is the client's request id, echoed in the response.
	ID string
	// Model and Version name the target; Version "" means the newest.
	Model   string
	Version string
	// Parameters are the request-level protocol parameters.
	Parameters Parameters
	Inputs     []tensor.Tensor
	// Outputs lists requested outputs; empty means all outputs.
	Outputs []RequestedOutput
	// BinaryOutputs asks for every output as binary data (REST).
	BinaryOutputs bool

	// Set by stages as the request goes through the chain.

	// Target is the model version that will serve the request, set by the
	// resolving stage.
	Target Target
	// Flags are findings that did not refuse the request (a value outside
	// a "flag" constraint), for its audit record.
	Flags []string
}

// BatchOf returns the request's batch size: the largest first dimension of
// its inputs (0 for scalars only).
func BatchOf(req *Request) int64 {
	var b int64
	for i := range req.Inputs {
		if s := req.Inputs[i].Shape; len(s) > 0 && s[0] > b {
			b = s[0]
		}
	}
	return b
}

// Target is a resolved model version: what a stage may learn about the
// model it is about to run.
type Target interface {
	// Name and Version identify the served model version.
	Name() string
	Version() string
}

// Response is the result of one inference.
type Response struct {
	Model   string
	Version string
	ID      string
	Outputs []OutputTensor
	// All holds every output the model computed, requested or not, until
	// Release: stages that must see the prediction (extraction monitoring)
	// read it here whatever outputs the caller asked for.
	All []tensor.Tensor
	// release frees the memory behind the outputs' data.
	release func()
}

// OutputTensor is a result tensor and how the client wants it encoded.
type OutputTensor struct {
	tensor.Tensor
	Binary bool
}

// Tensors returns the output tensors.
func (r *Response) Tensors() []tensor.Tensor {
	ts := make([]tensor.Tensor, len(r.Outputs))
	for i := range r.Outputs {
		ts[i] = r.Outputs[i].Tensor
	}
	return ts
}

// SetRelease records the function that frees the response's output memory.
func (r *Response) SetRelease(f func()) { r.release = f }

// Releaser returns the function SetRelease recorded (nil if none), for a
// stage that replaces the outputs to call from its own.
func (r *Response) Releaser() func() { return r.release }

// Release frees the memory behind the outputs. The transports call it once
// the response is encoded. It is safe to call more than once.
func (r *Response) Release() {
	if r != nil && r.release != nil {
		r.release()
		r.release = nil
	}
}

// Handler serves inference requests. Errors should be *apierr.Error; any
// other error is reported to the client as an internal error.
type Handler interface {
	Infer(ctx context.Context, req *Request) (*Response, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (*Response, error)

// Infer calls f.
func (f HandlerFunc) Infer(ctx context.Context, req *Request) (*Response, error) {
	return f(ctx, req)
}

// Stage wraps a Handler with one control.
type Stage func(next Handler) Handler

// Chain returns h wrapped in stages, the first stage outermost.
func Chain(h Handler, stages ...Stage) Handler {
	for i := len(stages) - 1; i >= 0; i-- {
		h = stages[i](h)
	}
	return h
}

// Count returns a stage that keeps n equal to the number of requests inside
// the stages after it.
func Count(n *atomic.Int64) Stage {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (*Response, error) {
			n.Add(1)
			defer n.Add(-1)
			return next.Infer(ctx, req)
		})
	}
}
