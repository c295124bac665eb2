// Package oip implements the Open Inference Protocol's REST encoding: the
// JSON infer request and response, tensor data as flat or nested JSON, and
// the binary tensor data extension. It turns bytes into pipeline.Requests
// and pipeline.Responses into bytes, and nothing else.
//
// Guarantees:
//   - Memory is bounded by Limits before it is allocated: a declared shape is
//     checked against MaxTensorBytes before any buffer is made, and JSON
//     nesting against MaxDepth before it is followed.
//   - Every malformed input is an *apierr.Error of kind InvalidArgument (or
//     TooLarge for a limit) with a short message naming the field.
package oip

// Limits bound what one request may ask the server to allocate.
type Limits struct {
	// MaxInputs is the most input tensors one request may carry.
	MaxInputs int
	// MaxTensorBytes is the most bytes all input tensors of one request may
	// decode to (BYTES elements count their length prefixes).
	MaxTensorBytes int64
	// MaxDepth is the deepest JSON nesting accepted anywhere in a body.
	MaxDepth int
	// MaxRank is the most dimensions a shape may have.
	MaxRank int
}

// DefaultLimits are generous for real models and small enough that a
// hostile request cannot take down the server.
func DefaultLimits() Limits {
	return Limits{MaxInputs: 64, MaxTensorBytes: 256 << 20, MaxDepth: 48, MaxRank: 16}
}
