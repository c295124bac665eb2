package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// client is one principal: an API key and the requests it sends, over
// REST with JSON tensors, as an external caller would.
type client struct {
	in        *instance
	hc        *http.Client
	key       string
	principal string // the server's name for it: key:<id>
	name      string
}

type restTensor struct {
	Name     string    `json:"name"`
	Shape    []int64   `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float64 `json:"data"`
}

type restResponse struct {
	Outputs []restTensor `json:"outputs"`
}

// reply is one request's result.
type reply struct {
	status     int
	answers    []attack.Answer // one per row when status is 200
	latency    time.Duration
	retryAfter time.Duration // the Retry-After of a 429, if any
	waited     time.Duration // time spent waiting out 429s (patient)
	// screened: a 400 from an input validation rule (a value range, the
	// out-of-distribution check): the defence refused the query. Any
	// other 400 is the harness's fault.
	screened bool
}

// refused reports whether a defence refused the request.
func (r reply) refused() bool { return refused(r.status) || r.screened }

// infer sends xs as one request (a batch of len(xs) rows) to model.
func (c *client) infer(ctx context.Context, model string, xs [][]float64) (reply, error) {
	data := make([]float64, 0, len(xs)*attack.Dim)
	for _, x := range xs {
		data = append(data, x...)
	}
	body, err := json.Marshal(map[string]any{"inputs": []restTensor{{
		Name: "input", Shape: []int64{int64(len(xs)), attack.Dim}, Datatype: "FP32", Data: data}}})
	if err != nil {
		return reply{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.in.url+"/v2/models/"+model+"/infer", bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	r := reply{status: resp.StatusCode, latency: time.Since(start)}
	if err != nil {
		return r, err
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
			r.retryAfter = time.Duration(secs * float64(time.Second))
		}
	}
	if resp.StatusCode == http.StatusBadRequest {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil {
			r.screened = strings.Contains(e.Error, "out of distribution") || strings.Contains(e.Error, "outside the allowed range")
		}
	}
	if resp.StatusCode != http.StatusOK {
		return r, nil
	}
	var rr restResponse
	if err := json.Unmarshal(b, &rr); err != nil {
		return r, fmt.Errorf("%s: decode response: %w", model, err)
	}
	r.answers, err = answersOf(rr.Outputs, len(xs))
	if err != nil {
		return r, fmt.Errorf("%s: %w", model, err)
	}
	return r, nil
}

// Patience: a client the server rate-limits (429) waits as long as the
// Retry-After header says (default retryDefault, at most retryMax at a
// time) and tries again, up to retryTries times, as a real client
// library would; an attacker who hammered on regardless would only make
// rate limits look better than they are.
const (
	retryDefault = 100 * time.Millisecond
	retryMax     = 5 * time.Second
	retryTries   = 50
)

// inferPatient is infer, waiting out rate limits for at most budget in
// all (0: not at all).
func (c *client) inferPatient(ctx context.Context, model string, xs [][]float64, budget time.Duration) (reply, error) {
	var waited time.Duration
	for try := 0; ; try++ {
		r, err := c.infer(ctx, model, xs)
		r.waited = waited
		if err != nil || r.status != http.StatusTooManyRequests || try+1 >= retryTries {
			return r, err
		}
		d := r.retryAfter
		if d <= 0 {
			d = retryDefault
		}
		d = min(d, retryMax)
		if waited+d > budget {
			return r, nil
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return r, ctx.Err()
		}
		waited += d
	}
}

// answersOf reads what the server served for n rows, whatever output
// hardening left of it:
//
//   - an FP32 (or FP64) output of shape [n,10] is the probabilities
//     (withheld classes may be 0);
//   - an FP32 output of shape [n,k] with an INT64/INT32 output of the same
//     shape (outguard's topk_values and topk_indices) is the top k scores
//     and their classes, spread into a probability vector with the other
//     classes at 0;
//   - an INT64 output of shape [n] is the label;
//
// the top-1 label is the argmax of the probabilities when served, else the
// label output. A response with neither is an error: the harness cannot
// tell what the server answered.
func answersOf(outs []restTensor, n int) ([]attack.Answer, error) {
	var label, probs *restTensor
	var floats, ints []*restTensor // [n,k]
	for i := range outs {
		o := &outs[i]
		switch {
		case len(o.Shape) == 1 && o.Shape[0] == int64(n) && isInt(o.Datatype):
			if label == nil || o.Name == "label" {
				label = o
			}
		case len(o.Shape) == 2 && o.Shape[0] == int64(n) && isFloat(o.Datatype):
			floats = append(floats, o)
		case len(o.Shape) == 2 && o.Shape[0] == int64(n) && isInt(o.Datatype):
			ints = append(ints, o)
		}
	}
	// Scores with class indices of the same shape are top-k (even k = 10:
	// the scores are then in rank order, not class order).
	for _, f := range floats {
		for _, ix := range ints {
			if probs != nil || f.Shape[1] != ix.Shape[1] || len(f.Data) != len(ix.Data) {
				continue
			}
			k := int(f.Shape[1])
			spread := restTensor{Name: f.Name, Shape: []int64{int64(n), attack.Classes}, Data: make([]float64, n*attack.Classes)}
			for r := range n {
				for j := range k {
					c := int(ix.Data[r*k+j])
					if c >= 0 && c < attack.Classes {
						spread.Data[r*attack.Classes+c] = f.Data[r*k+j]
					}
				}
			}
			probs = &spread
		}
	}
	for _, f := range floats {
		if probs == nil && f.Shape[1] == attack.Classes {
			probs = f
		}
	}
	if probs == nil && label == nil {
		return nil, fmt.Errorf("response has neither probabilities nor a label (%d outputs)", len(outs))
	}
	for _, t := range []*restTensor{probs, label} {
		if t != nil && len(t.Data) != int(t.Shape[0])*max(1, int(lastDim(t.Shape))) {
			return nil, fmt.Errorf("output %s: %d values for shape %v", t.Name, len(t.Data), t.Shape)
		}
	}
	out := make([]attack.Answer, n)
	for r := range n {
		a := attack.Answer{Label: -1}
		if probs != nil {
			a.Probs = probs.Data[r*attack.Classes : (r+1)*attack.Classes]
			a.Label = learn.Argmax(a.Probs)
			if a.Probs[a.Label] <= 0 || math.IsNaN(a.Probs[a.Label]) {
				a.Label = -1
			}
		}
		if a.Label < 0 && label != nil {
			a.Label = int(label.Data[r])
		}
		out[r] = a
	}
	return out, nil
}

func lastDim(s []int64) int64 {
	if len(s) < 2 {
		return 1
	}
	return s[len(s)-1]
}

func isInt(dt string) bool {
	switch dt {
	case "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64":
		return true
	}
	return false
}

func isFloat(dt string) bool { return dt == "FP32" || dt == "FP64" || dt == "FP16" }

// refused reports whether status is a refusal by a defence: rate limited
// (429) or denied (403) once the principal is known to be allowed.
func refused(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusForbidden
}

// inProcessAddr is the peer address of requests handed to a server's
// handler in process: port 0, which no connection has, so that the audit
// records tell them from requests that came over the network.
const inProcessAddr = "127.0.0.1:0"

// inferInProcess hands one single-row request to the server's HTTP handler
// in this process, without the network, and returns how long the handler
// took and the status it answered.
func (c *client) inferInProcess(model string, x []float64) (time.Duration, int, error) {
	body, err := json.Marshal(map[string]any{"inputs": []restTensor{{
		Name: "input", Shape: []int64{1, attack.Dim}, Datatype: "FP32", Data: x}}})
	if err != nil {
		return 0, 0, err
	}
	req := httptest.NewRequest(http.MethodPost, "/v2/models/"+model+"/infer", bytes.NewReader(body))
	req.RemoteAddr = inProcessAddr
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h := c.in.srv.HTTPHandler()
	var d time.Duration
	// Labelled for profiles (-cpuprofile: go tool pprof -tagfocus inproc=NAME).
	pprof.Do(context.Background(), pprof.Labels("inproc", c.in.policy.name), func(context.Context) {
		start := time.Now()
		h.ServeHTTP(w, req)
		d = time.Since(start)
	})
	return d, w.Code, nil
}
