// Package infer is the end of the request pipeline: it resolves the model
// version, validates the request against its signature, runs it on ONNX
// Runtime and shapes the response.
package infer

import (
	"context"
	"errors"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/validate"
)

// Handler serves inference from a registry.
type Handler struct {
	Registry *repository.Registry
}

var _ pipeline.Handler = (*Handler)(nil)

// Infer implements pipeline.Handler.
func (h *Handler) Infer(ctx context.Context, req *pipeline.Request) (*pipeline.Response, error) {
	v, release, err := h.Registry.Acquire(req.Model, req.Version)
	if err != nil {
		return nil, NotFound(req.Model, req.Version)
	}
	// A reload that retires v waits for this request before closing it.
	defer release()
	req.Target = v
	inputs, err := validate.Inputs(v.Inputs(), req)
	if err != nil {
		return nil, err
	}
	found, err := v.Checker().Check(inputs)
	if err != nil {
		return nil, err
	}
	req.Flags = append(req.Flags, found.Flags...)
	idx, bin, err := validate.Outputs(v.Outputs(), req)
	if err != nil {
		return nil, err
	}
	res, err := v.Session().Run(ctx, inputs)
	if err != nil {
		switch {
		case errors.Is(err, onnx.ErrBusy):
			return nil, apierr.Wrap(apierr.Unavailable, err, "the model is busy; retry later")
		case errors.Is(err, onnx.ErrClosed):
			return nil, apierr.Wrap(apierr.Unavailable, err, "the model is being unloaded; retry")
		case errors.Is(err, context.DeadlineExceeded):
			return nil, apierr.Wrap(apierr.DeadlineExceeded, err, "inference timed out")
		case errors.Is(err, context.Canceled):
			return nil, apierr.Wrap(apierr.Canceled, err, "request canceled")
		}
		// ONNX Runtime refuses inputs the signature cannot rule out (for
		// example, dimensions that do not broadcast); its message names
		// model internals, so it is logged, not returned.
		return nil, apierr.Wrap(apierr.InvalidArgument, err, "the model could not run on these inputs")
	}
	resp := &pipeline.Response{
		Model:   v.Name(),
		Version: v.Version(),
		ID:      req.ID,
		Outputs: make([]pipeline.OutputTensor, len(idx)),
		All:     res.Outputs,
	}
	for i, j := range idx {
		resp.Outputs[i] = pipeline.OutputTensor{Tensor: res.Outputs[j], Binary: bin[i]}
	}
	resp.SetRelease(res.Release)
	return resp, nil
}

// NotFound is the error for an unknown model or version.
func NotFound(model, version string) error {
	if version != "" {
		return apierr.New(apierr.NotFound, "unknown model %q version %q", clip(model), clip(version))
	}
	return apierr.New(apierr.NotFound, "unknown model %q", clip(model))
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
