package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// The benchmark asks the server whether a model carries its watermark
// (see docs/extraction.md, "What the benchmark expects from the server"):
//
//	POST /admin/v1/watermark/verify   (operator credential: admin)
//	{"model": "digits_mlp", "inputs": [[64 numbers]...], "labels": [int...]}
//
//	200 {"p_value": 1e-25, "log2_p_value": -83.0, "marked": 120, "matched": 118}
//	404 when the server has no watermark
//
// inputs are the queries a suspect model is asked (here: every query the
// attacker sent, at most 2,000), labels the suspect's top-1 answers to
// them. The server finds which of the inputs its watermark marks and tests
// whether the suspect reproduces the marked answers more often than a
// model independent of the server would: p_value is that test's p-value
// (log2_p_value keeps it exact below 2^-1074), marked and matched the
// counts it rests on.

// VerifyRequest is the body of POST /admin/v1/watermark/verify.
type VerifyRequest struct {
	Model  string      `json:"model"`
	Inputs [][]float64 `json:"inputs"`
	Labels []int       `json:"labels"`
}

// VerifyResult is its answer.
type VerifyResult struct {
	PValue     float64 `json:"p_value"`
	Log2PValue float64 `json:"log2_p_value"`
	Marked     int     `json:"marked"`
	Matched    int     `json:"matched"`
}

// watermarkVerifier tests a suspect's answers for the server's watermark.
type watermarkVerifier interface {
	// Verify returns the test's result for a suspect that answered labels
	// to inputs; errUnsupported when the server has no watermark.
	Verify(ctx context.Context, model string, inputs [][]float64, labels []int) (VerifyResult, error)
}

type serverWatermark struct{ in *instance }

var _ watermarkVerifier = serverWatermark{}

// Verify implements watermarkVerifier.
func (s serverWatermark) Verify(ctx context.Context, model string, inputs [][]float64, labels []int) (VerifyResult, error) {
	body, err := json.Marshal(VerifyRequest{Model: model, Inputs: inputs, Labels: labels})
	if err != nil {
		return VerifyResult{}, err
	}
	var r VerifyResult
	err = s.in.admin(ctx, http.MethodPost, "/admin/v1/watermark/verify", body, &r)
	if errors.Is(err, errNotFound) {
		return r, errUnsupported
	}
	return r, err
}
