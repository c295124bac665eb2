// Package apierr carries errors from anywhere in the request path to the
// transports, which alone map them to status codes.
//
// An Error has a Kind (what the client did wrong, or that the server failed),
// a short public message that is safe to send, and an internal cause that is
// only ever logged. Clients never see the cause.
package apierr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error for the transports.
type Kind uint8

// Kinds, mirroring the status codes the Open Inference Protocol uses.
const (
	Internal Kind = iota // the zero value: an unclassified error is a server fault
	InvalidArgument
	NotFound
	Unavailable
	Unimplemented
	Unauthenticated
	PermissionDenied
	ResourceExhausted
	TooLarge // a request body or message over the configured limit
	DeadlineExceeded
	Canceled
)

var kindNames = [...]string{
	Internal:          "internal",
	InvalidArgument:   "invalid argument",
	NotFound:          "not found",
	Unavailable:       "unavailable",
	Unimplemented:     "unimplemented",
	Unauthenticated:   "unauthenticated",
	PermissionDenied:  "permission denied",
	ResourceExhausted: "resource exhausted",
	TooLarge:          "too large",
	DeadlineExceeded:  "deadline exceeded",
	Canceled:          "canceled",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Error is an error with a public message.
type Error struct {
	Kind Kind
	// Msg is sent to the client. It must not contain secrets or internals.
	Msg string
	// Cause is logged, never sent.
	Cause error
	// RetryAfter, when positive, is how long the client should wait before
	// trying again (rate limits, quotas, load shedding). Transports send it
	// as a Retry-After header in whole seconds, rounded up (REST), and as
	// "retry-after" metadata (gRPC).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Msg + ": " + e.Cause.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Cause }

// New returns an Error with a formatted public message.
func New(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with a public message and an internal cause.
func Wrap(kind Kind, cause error, msg string) *Error {
	return &Error{Kind: kind, Msg: msg, Cause: cause}
}

// Public returns the kind and client-safe message of err. Errors that are not
// an *Error are internal faults with a generic message.
func Public(err error) (Kind, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind, e.Msg
	}
	return Internal, "internal error"
}

// Invalid is shorthand for New(InvalidArgument, ...).
func Invalid(format string, args ...any) *Error {
	return New(InvalidArgument, format, args...)
}

// RetryAfterOf returns err's RetryAfter rounded up to whole seconds (at
// least 1) when it carries one, else 0.
func RetryAfterOf(err error) int {
	var e *Error
	if !errors.As(err, &e) || e.RetryAfter <= 0 {
		return 0
	}
	return int((e.RetryAfter + time.Second - 1) / time.Second)
}
