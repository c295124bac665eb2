package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// copyFixture copies fixture model name into repo as model/version.
func copyFixture(t *testing.T, repo, name, model, version string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(servertest.Models(t), name, "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(repo, model, version, "model.onnx"), b)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// versionedRepo has model "calc" in version 1 (FP32 identity, output "y")
// and version 3 (sum to a scalar, output "total"), models that must fail to
// load without stopping the rest, and version directories to ignore.
func versionedRepo(t *testing.T) string {
	repo := t.TempDir()
	copyFixture(t, repo, "dtype_fp32", "calc", "1")
	copyFixture(t, repo, "scalar", "calc", "3")
	copyFixture(t, repo, "digits", "digits", "1")
	writeFile(t, filepath.Join(repo, "broken", "1", "model.onnx"), []byte("not a model"))
	copyFixture(t, repo, "digits", "partly", "1")
	writeFile(t, filepath.Join(repo, "partly", "2", "model.onnx"), []byte{0x08})
	copyFixture(t, repo, "digits", "badconfig", "1")
	writeFile(t, filepath.Join(repo, "badconfig", "config.yaml"), []byte("runtime:\n  sesions: 2\n"))
	copyFixture(t, repo, "digits", "tuned", "1")
	writeFile(t, filepath.Join(repo, "tuned", "config.yaml"), []byte("runtime:\n  sessions: 2\n  concurrency: 1\n"))
	copyFixture(t, repo, "digits", "oddversions", "007")
	copyFixture(t, repo, "digits", "oddversions", "2")
	if err := os.MkdirAll(filepath.Join(repo, "oddversions", "latest"), 0o755); err != nil {
		t.Fatal(err)
	}
	return repo
}

func TestRepositoryLoading(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, versionedRepo(t)))
	var names []string
	for _, m := range srv.Registry.Models() {
		names = append(names, m.Name)
	}
	if want := []string{"calc", "digits", "oddversions", "partly", "tuned"}; !slices.Equal(names, want) {
		t.Errorf("loaded %v, want %v", names, want)
	}
	failed := map[string]bool{}
	for _, f := range srv.Registry.Failures() {
		failed[f.Model+"/"+f.Version] = true
	}
	for _, want := range []string{"broken/", "partly/2", "badconfig/"} {
		if !failed[want] {
			t.Errorf("failure of %q not reported (got %v)", want, failed)
		}
	}
	m, _ := srv.Registry.Get("oddversions")
	if len(m.Versions) != 1 || m.Latest().Version() != "2" {
		t.Errorf("oddversions loaded %d versions, latest %s; want only 2", len(m.Versions), m.Latest().Version())
	}
}

// TestVersions: the newest version serves by default, a request may name
// another, and unknown versions are 404 / NotFound on both transports.
func TestVersions(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, versionedRepo(t)))
	x := fp32Tensor("x", []int64{1, 2}, []float32{1, 2})
	for _, c := range srv.Clients(t) {
		t.Run(c.Name(), func(t *testing.T) {
			resp, err := c.Infer(context.Background(), &servertest.Request{Model: "calc", Inputs: []tensor.Tensor{x}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Version != "3" || resp.Outputs[0].Name != "total" || fp32s(resp.Outputs[0])[0] != 3 {
				t.Errorf("default: version %s output %s, want version 3 total=3", resp.Version, resp.Outputs[0].Name)
			}
			resp, err = c.Infer(context.Background(), &servertest.Request{Model: "calc", Version: "1", Inputs: []tensor.Tensor{x}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Version != "1" || resp.Outputs[0].Name != "y" {
				t.Errorf("version 1: got version %s output %s", resp.Version, resp.Outputs[0].Name)
			}
			_, err = c.Infer(context.Background(), &servertest.Request{Model: "calc", Version: "2", Inputs: []tensor.Tensor{x}})
			if code := servertest.Code(err); code != "http 404" && code != "grpc NotFound" {
				t.Errorf("version 2: %s, want not found", code)
			}
			_, err = c.Infer(context.Background(), &servertest.Request{Model: "broken", Inputs: []tensor.Tensor{x}})
			if code := servertest.Code(err); code != "http 404" && code != "grpc NotFound" {
				t.Errorf("broken model: %s, want not found", code)
			}
		})
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", url, b, err)
	}
	return resp.StatusCode
}

// TestHealthAndMetadata covers every non-infer endpoint on both transports.
func TestHealthAndMetadata(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, versionedRepo(t)))
	u := srv.HTTPURL
	var m map[string]any
	if code := getJSON(t, u+"/v2/health/live", &m); code != 200 || m["live"] != true {
		t.Errorf("live: %d %v", code, m)
	}
	if code := getJSON(t, u+"/v2/health/ready", &m); code != 200 || m["ready"] != true {
		t.Errorf("ready: %d %v", code, m)
	}
	var sm struct {
		Name       string
		Version    string
		Extensions []string
	}
	if code := getJSON(t, u+"/v2", &sm); code != 200 || sm.Name != "aegis" || !slices.Contains(sm.Extensions, "binary_tensor_data") {
		t.Errorf("server metadata: %d %+v", code, sm)
	}
	var md struct {
		Name     string
		Versions []string
		Platform string
		Inputs   []struct {
			Name     string
			Datatype string
			Shape    []int64
		}
		Outputs []struct{ Name string }
	}
	if code := getJSON(t, u+"/v2/models/calc", &md); code != 200 || !slices.Equal(md.Versions, []string{"1", "3"}) || md.Platform != "onnxruntime_onnx" || md.Outputs[0].Name != "total" {
		t.Errorf("calc metadata: %d %+v", code, md)
	}
	if code := getJSON(t, u+"/v2/models/calc/versions/1", &md); code != 200 || md.Outputs[0].Name != "y" || !slices.Equal(md.Inputs[0].Shape, []int64{-1, -1}) {
		t.Errorf("calc v1 metadata: %d %+v", code, md)
	}
	if code := getJSON(t, u+"/v2/models/calc/versions/1/ready", &m); code != 200 || m["ready"] != true || m["name"] != "calc" {
		t.Errorf("calc v1 ready: %d %v", code, m)
	}
	for _, p := range []string{"/v2/models/nosuch", "/v2/models/nosuch/ready", "/v2/models/calc/versions/2/ready", "/v2/models/broken"} {
		var e map[string]string
		if code := getJSON(t, u+p, &e); code != 404 || e["error"] == "" {
			t.Errorf("%s: %d %v, want 404 with an error", p, code, e)
		}
	}

	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := pb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	if r, err := g.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.Live {
		t.Errorf("ServerLive: %v %v", r, err)
	}
	if r, err := g.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Errorf("ServerReady: %v %v", r, err)
	}
	if r, err := g.ServerMetadata(ctx, &pb.ServerMetadataRequest{}); err != nil || r.Name != "aegis" || !slices.Contains(r.Extensions, "binary_tensor_data") {
		t.Errorf("ServerMetadata: %v %v", r, err)
	}
	if r, err := g.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "calc", Version: "1"}); err != nil || r.Outputs[0].Name != "y" || !slices.Equal(r.Versions, []string{"1", "3"}) || r.Inputs[0].Datatype != "FP32" {
		t.Errorf("ModelMetadata: %v %v", r, err)
	}
	if r, err := g.ModelReady(ctx, &pb.ModelReadyRequest{Name: "digits"}); err != nil || !r.Ready {
		t.Errorf("ModelReady: %v %v", r, err)
	}
	for _, req := range []*pb.ModelMetadataRequest{{Name: "nosuch"}, {Name: "calc", Version: "2"}} {
		_, err := g.ModelMetadata(ctx, req)
		if st, _ := status.FromError(err); st.Code().String() != "NotFound" {
			t.Errorf("ModelMetadata(%v): %v, want NotFound", req, err)
		}
	}
	_, err = g.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nosuch"})
	if st, _ := status.FromError(err); st.Code().String() != "NotFound" {
		t.Errorf("ModelReady(nosuch): %v, want NotFound", err)
	}
}

// TestEmptyRepositoryNotReady: with nothing to serve, readiness fails
// while liveness holds.
func TestEmptyRepositoryNotReady(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, t.TempDir()))
	var m map[string]any
	if code := getJSON(t, srv.HTTPURL+"/v2/health/ready", &m); code != 503 || m["error"] == nil {
		t.Errorf("ready: %d %v, want 503 with an error", code, m)
	}
	if code := getJSON(t, srv.HTTPURL+"/v2/health/live", &m); code != 200 {
		t.Errorf("live: %d", code)
	}
}
