package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// control is the harness's side door into the server process.
type control struct {
	fixed *fixedSet
	repo  string

	mu       sync.Mutex // guards prof and sessions
	prof     *os.File
	sessions map[string]*onnx.Session
}

func (c *control) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /floor/ort", c.setORT)
	m.HandleFunc("POST /floor/rest", c.setREST)
	m.HandleFunc("POST /floor/grpc", c.setGRPC)
	m.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) { runtime.GC() })
	m.HandleFunc("POST /profile/start", c.startProfile)
	m.HandleFunc("POST /profile/stop", func(w http.ResponseWriter, r *http.Request) {
		if err := c.stopProfile(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return m
}

// setORT prepares the model run for model and batch: a session of the
// model (its own, with the same default options as Aegis's) and the input
// tensor, FP32 named "input", whose bytes are the body and whose shape is
// the comma-separated shape parameter.
func (c *control) setORT(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	model := q.Get("model")
	batch, err := strconv.ParseInt(q.Get("batch"), 10, 64)
	if err != nil || !validModel(model) {
		http.Error(w, "bad model or batch", http.StatusBadRequest)
		return
	}
	var shape []int64
	for _, f := range strings.Split(q.Get("shape"), ",") {
		d, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			http.Error(w, "bad shape", http.StatusBadRequest)
			return
		}
		shape = append(shape, d)
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	s, err := c.session(model)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: shape, Data: alignedBytes(len(data))}
	copy(in.Data, data)
	c.fixed.mu.Lock()
	c.fixed.ort[grpcKey{model: model, batch: batch}] = &ortJob{s: s, in: []*tensor.Tensor{in}}
	c.fixed.mu.Unlock()
}

func validModel(name string) bool {
	for _, m := range modelSpecs {
		if m.name == name {
			return true
		}
	}
	return false
}

func (c *control) session(model string) (*onnx.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sessions[model]; ok {
		return s, nil
	}
	b, err := os.ReadFile(filepath.Join(c.repo, model, "1", "model.onnx"))
	if err != nil {
		return nil, err
	}
	s, err := onnx.NewSession(b, onnx.Options{})
	if err != nil {
		return nil, err
	}
	if c.sessions == nil {
		c.sessions = map[string]*onnx.Session{}
	}
	c.sessions[model] = s
	return s, nil
}

func (c *control) closeSessions() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sessions {
		s.Close()
	}
	c.sessions = nil
}

func (c *control) setREST(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := strconv.Atoi(q.Get("size"))
	batch, berr := strconv.ParseInt(q.Get("batch"), 10, 64)
	body, rerr := io.ReadAll(r.Body)
	if err != nil || berr != nil || rerr != nil {
		http.Error(w, "bad size, batch or body", http.StatusBadRequest)
		return
	}
	fx := &fixedREST{body: body, contentType: q.Get("type"), contentLength: strconv.Itoa(len(body)), hdrLen: q.Get("hdr")}
	c.fixed.mu.Lock()
	fx.ort = c.fixed.ort[grpcKey{model: q.Get("model"), batch: batch}]
	c.fixed.rest[restKey{path: q.Get("path"), size: size}] = fx
	c.fixed.mu.Unlock()
}

func (c *control) setGRPC(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	batch, err := strconv.ParseInt(q.Get("batch"), 10, 64)
	body, rerr := io.ReadAll(r.Body)
	resp := &pb.ModelInferResponse{}
	if err != nil || rerr != nil || proto.Unmarshal(body, resp) != nil {
		http.Error(w, "bad batch or body", http.StatusBadRequest)
		return
	}
	c.fixed.mu.Lock()
	c.fixed.grpc[grpcKey{model: q.Get("model"), batch: batch}] = resp
	c.fixed.mu.Unlock()
}

func (c *control) startProfile(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prof != nil {
		http.Error(w, "a profile is already running", http.StatusConflict)
		return
	}
	f, err := os.Create(r.URL.Query().Get("file"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	c.prof = f
}

func (c *control) stopProfile() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prof == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := c.prof.Close()
	c.prof = nil
	return err
}
