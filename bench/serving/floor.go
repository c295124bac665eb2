package main

import (
	"context"
	"net/http"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// fixedSet holds the floors' fixed answers and ONNX Runtime jobs, loaded
// by the harness through the control listener before any measurement.
type fixedSet struct {
	mu   sync.RWMutex // guards the maps
	rest map[restKey]*fixedREST
	grpc map[grpcKey]*pb.ModelInferResponse
	ort  map[grpcKey]*ortJob
}

// restKey picks a fixed response by request path and body size (the JSON and
// binary bodies of each model and batch all differ in size).
type restKey struct {
	path string
	size int
}

type fixedREST struct {
	body          []byte
	contentType   string
	contentLength string
	hdrLen        string  // binary extension header; "" for JSON
	ort           *ortJob // the model run for the same request
}

// grpcKey picks a fixed response by model and batch size.
type grpcKey struct {
	model string
	batch int64
}

// ortJob is one model run on a prebuilt input: what Aegis's engine does for
// a request, without any of the protocol work.
type ortJob struct {
	s  *onnx.Session
	in []*tensor.Tensor
}

func (j *ortJob) run(ctx context.Context) error {
	res, err := j.s.Run(ctx, j.in)
	if err != nil {
		return err
	}
	res.Release()
	return nil
}

// floorREST is the do-nothing REST server: it reads the whole request body
// into a pooled buffer, as Aegis does, and answers with a fixed response of
// exactly the size Aegis answers the same request with. With runORT it
// first runs the model on a prebuilt input.
type floorREST struct {
	fixed  *fixedSet
	runORT bool
	bufs   sync.Pool
}

func (f *floorREST) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bufp, _ := f.bufs.Get().(*[]byte)
	if bufp == nil {
		b := make([]byte, 0, 16<<10)
		bufp = &b
	}
	defer f.bufs.Put(bufp)
	body, err := readAllInto(r.Body, (*bufp)[:0])
	*bufp = body[:0]
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	f.fixed.mu.RLock()
	fx := f.fixed.rest[restKey{path: r.URL.Path, size: len(body)}]
	f.fixed.mu.RUnlock()
	if fx == nil || (f.runORT && fx.ort == nil) {
		http.Error(w, "no fixed response for this request", http.StatusNotFound)
		return
	}
	if f.runORT {
		if err := fx.ort.run(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	h := w.Header()
	h.Set("Content-Type", fx.contentType)
	h.Set("Content-Length", fx.contentLength)
	if fx.hdrLen != "" {
		h.Set(headerLength, fx.hdrLen)
	}
	w.WriteHeader(http.StatusOK)
	w.Write(fx.body)
}

// floorGRPC is the do-nothing gRPC server: grpc-go decodes the request, and
// ModelInfer returns a prebuilt response of the size Aegis returns. With
// runORT it first runs the model on a prebuilt input.
type floorGRPC struct {
	pb.UnimplementedGRPCInferenceServiceServer
	fixed  *fixedSet
	runORT bool
}

var _ pb.GRPCInferenceServiceServer = (*floorGRPC)(nil)

func (f *floorGRPC) ModelInfer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	k := grpcKey{model: r.ModelName}
	if len(r.Inputs) > 0 && len(r.Inputs[0].Shape) > 0 {
		k.batch = r.Inputs[0].Shape[0]
	}
	f.fixed.mu.RLock()
	resp, job := f.fixed.grpc[k], f.fixed.ort[k]
	f.fixed.mu.RUnlock()
	if resp == nil || (f.runORT && job == nil) {
		return nil, status.Error(codes.NotFound, "no fixed response for this request")
	}
	if f.runORT {
		if err := job.run(ctx); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return resp, nil
}
