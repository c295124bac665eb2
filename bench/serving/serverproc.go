package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/oip/pb"
)

// copyModels puts the benchmarked fixture models (and nothing else) in repo.
func (b *bench) copyModels(repo string) error {
	for _, name := range b.opt.models {
		src := filepath.Join(b.opt.root, "testdata", "models", name, "1", "model.onnx")
		dir := filepath.Join(repo, name, "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startChild starts the server process and waits for its addresses.
func (b *bench) startChild(repo string) error {
	env := []string{envChild + "=1", envRepo + "=" + repo, envLib + "=" + b.opt.lib}
	if b.opt.pin {
		env = append(env, envCPU+"=1")
	}
	child, err := benchutil.StartChild(env, `{"aegis_http"`, &b.addrs)
	if err != nil {
		return err
	}
	b.child = child
	b.logf("server process %d: aegis http %s grpc %s, floor http %s grpc %s",
		child.Pid(), b.addrs.AegisHTTP, b.addrs.AegisGRPC, b.addrs.FloorHTTP, b.addrs.FloorGRPC)
	return nil
}

// stopChild stops the server process (benchutil.Child.Stop).
func (b *bench) stopChild() {
	if b.child != nil {
		b.child.Stop()
		b.child = nil
	}
}

// control posts to the server process's control listener.
func (b *bench) control(path string, q url.Values, body []byte) error {
	u := "http://" + b.addrs.Control + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := b.ctl.Post(u, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("control %s: status %d: %s", path, resp.StatusCode, msg)
	}
	return nil
}

func inferPath(model string) string { return "/v2/models/" + model + "/infer" }

// capture sends every workload once to Aegis in each encoding, checks the
// outputs against bare ONNX Runtime, records the response sizes, and gives
// the responses to the floors as their fixed answers.
func (b *bench) capture() error {
	hc := &http.Client{Timeout: requestTimeout}
	conn, err := grpc.NewClient(b.addrs.AegisGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	gc := pb.NewGRPCInferenceServiceClient(conn)
	for _, w := range b.work {
		name := fmt.Sprintf("%s batch %d", w.model.name, w.batch)
		shape := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(w.input.Shape)), ","), "[]")
		q := url.Values{"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)}, "shape": {shape}}
		if err := b.control("/floor/ort", q, w.input.Data); err != nil {
			return err
		}
		for _, bin := range []bool{false, true} {
			body, hdrLen := w.jsonBody, -1
			if bin {
				body, hdrLen = w.binBody, w.binHdr
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+b.addrs.AegisHTTP+inferPath(w.model.name), bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if bin {
				req.Header.Set("Content-Type", "application/octet-stream")
				req.Header.Set(headerLength, strconv.Itoa(hdrLen))
			}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: aegis REST status %d: %s", name, resp.StatusCode, got)
			}
			respHdr := -1
			if h := resp.Header.Get(headerLength); h != "" {
				if respHdr, err = strconv.Atoi(h); err != nil {
					return fmt.Errorf("%s: bad %s %q", name, headerLength, h)
				}
			}
			if bin != (respHdr >= 0) {
				return fmt.Errorf("%s: binary request answered with %s %q", name, headerLength, resp.Header.Get(headerLength))
			}
			outs, err := restOutputs(got, respHdr)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := checkOutputs(w.want, outs); err != nil {
				return fmt.Errorf("%s: aegis REST (binary %v): %w", name, bin, err)
			}
			q := url.Values{
				"path": {inferPath(w.model.name)}, "size": {strconv.Itoa(len(body))}, "type": {resp.Header.Get("Content-Type")},
				"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)},
			}
			if bin {
				q.Set("hdr", strconv.Itoa(respHdr))
				w.binRespLen = len(got)
			} else {
				w.jsonRespLen = len(got)
			}
			if err := b.control("/floor/rest", q, got); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		gr, err := gc.ModelInfer(ctx, w.grpcReq)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		outs, err := grpcOutputs(gr)
		if err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		if err := checkOutputs(w.want, outs); err != nil {
			return fmt.Errorf("%s: aegis gRPC: %w", name, err)
		}
		w.grpcRespLen = grpcRawBytes(gr)
		msg, err := proto.Marshal(gr)
		if err != nil {
			return err
		}
		if err := b.control("/floor/grpc", url.Values{"model": {w.model.name}, "batch": {strconv.Itoa(w.batch)}}, msg); err != nil {
			return err
		}
	}
	return nil
}
