package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// restCall is a raw REST request.
type restCall struct {
	path   string
	header map[string]string
	body   []byte
}

// badCase is one hostile or malformed request, over REST and (where the
// protocol has an equivalent) over gRPC.
type badCase struct {
	name     string
	rest     *restCall
	wantHTTP int
	grpc     *pb.ModelInferRequest
	wantGRPC string
}

const digitsPath = "/v2/models/digits/infer"

func jsonCall(body string) *restCall { return &restCall{path: digitsPath, body: []byte(body)} }

func binCall(header string, tail []byte, hdrLen int) *restCall {
	return &restCall{
		path:   digitsPath,
		header: map[string]string{"Inference-Header-Content-Length": strconv.Itoa(hdrLen)},
		body:   append([]byte(header), tail...),
	}
}

func digitsInput(shape string, data string) string {
	return `{"inputs":[{"name":"input","datatype":"FP32","shape":` + shape + `,"data":` + data + `}]}`
}

func floats(n int) string {
	s := make([]string, n)
	for i := range s {
		s[i] = "1"
	}
	return "[" + strings.Join(s, ",") + "]"
}

func grpcInput(name, dt string, shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest_InferInputTensor {
	return &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: shape, Contents: c}
}

func grpcDigits(in ...*pb.ModelInferRequest_InferInputTensor) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: "digits", Inputs: in}
}

func fp32c(n int) *pb.InferTensorContents {
	return &pb.InferTensorContents{Fp32Contents: make([]float32, n)}
}

func badCases() []badCase {
	ok64 := floats(64)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	tooMany := `{"inputs":[` + strings.Repeat(`{"name":"input","datatype":"FP32","shape":[1,64],"data":`+ok64+`},`, 70)
	tooMany = strings.TrimSuffix(tooMany, ",") + `]}`
	var manyGRPC []*pb.ModelInferRequest_InferInputTensor
	for i := 0; i < 70; i++ {
		manyGRPC = append(manyGRPC, grpcInput("input", "FP32", []int64{1, 64}, fp32c(64)))
	}
	hdr := `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"parameters":{"binary_data_size":256}}]}`
	return []badCase{
		{name: "malformed JSON", rest: jsonCall(`{"inputs":[{"name":"input",`), wantHTTP: 400},
		{name: "not an object", rest: jsonCall(`[1,2,3]`), wantHTTP: 400},
		{name: "empty body", rest: jsonCall(``), wantHTTP: 400},
		{name: "trailing garbage", rest: jsonCall(digitsInput("[1,64]", ok64) + `}`), wantHTTP: 400},
		{name: "unknown model",
			rest: &restCall{path: "/v2/models/nosuch/infer", body: []byte(digitsInput("[1,64]", ok64))}, wantHTTP: 404,
			grpc: &pb.ModelInferRequest{ModelName: "nosuch", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, fp32c(64))}}, wantGRPC: "NotFound"},
		{name: "unknown version",
			rest: &restCall{path: "/v2/models/digits/versions/9/infer", body: []byte(digitsInput("[1,64]", ok64))}, wantHTTP: 404,
			grpc: &pb.ModelInferRequest{ModelName: "digits", ModelVersion: "9", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, fp32c(64))}}, wantGRPC: "NotFound"},
		{name: "non-numeric version",
			rest: &restCall{path: "/v2/models/digits/versions/01/infer", body: []byte(digitsInput("[1,64]", ok64))}, wantHTTP: 404,
			grpc: &pb.ModelInferRequest{ModelName: "digits", ModelVersion: "latest", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, fp32c(64))}}, wantGRPC: "NotFound"},
		{name: "wrong input name",
			rest: jsonCall(`{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,64],"data":` + ok64 + `}]}`), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("pixels", "FP32", []int64{1, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "missing input", rest: jsonCall(`{"inputs":[]}`), wantHTTP: 400,
			grpc: grpcDigits(), wantGRPC: "InvalidArgument"},
		{name: "input twice",
			rest: jsonCall(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":` + ok64 + `},{"name":"input","datatype":"FP32","shape":[1,64],"data":` + ok64 + `}]}`), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{1, 64}, fp32c(64)), grpcInput("input", "FP32", []int64{1, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "wrong datatype",
			rest: jsonCall(`{"inputs":[{"name":"input","datatype":"FP64","shape":[1,64],"data":` + ok64 + `}]}`), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP64", []int64{1, 64}, &pb.InferTensorContents{Fp64Contents: make([]float64, 64)})), wantGRPC: "InvalidArgument"},
		{name: "unknown datatype",
			rest: jsonCall(`{"inputs":[{"name":"input","datatype":"fp32","shape":[1,64],"data":` + ok64 + `}]}`), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FLOAT", []int64{1, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "wrong rank", rest: jsonCall(digitsInput("[64]", ok64)), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "wrong fixed dimension", rest: jsonCall(digitsInput("[1,63]", floats(63))), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{1, 63}, fp32c(63))), wantGRPC: "InvalidArgument"},
		{name: "data shorter than shape", rest: jsonCall(digitsInput("[2,64]", ok64)), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{2, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "data longer than shape", rest: jsonCall(digitsInput("[1,64]", floats(65))), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{1, 64}, fp32c(65))), wantGRPC: "InvalidArgument"},
		{name: "negative dimension", rest: jsonCall(digitsInput("[-1,64]", ok64)), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{-1, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "10^12 elements declared", rest: jsonCall(digitsInput("[15625000000,64]", ok64)), wantHTTP: 413,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{15625000000, 64}, fp32c(64))), wantGRPC: "ResourceExhausted"},
		{name: "shape product overflows int64", rest: jsonCall(digitsInput("[9223372036854775807,64]", ok64)), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{1 << 62, 64}, fp32c(64))), wantGRPC: "InvalidArgument"},
		{name: "dimension not an integer", rest: jsonCall(digitsInput("[1.5,64]", ok64)), wantHTTP: 400},
		{name: "too many dimensions", rest: jsonCall(digitsInput("["+strings.Repeat("1,", 40)+"1]", "[1]")), wantHTTP: 400,
			grpc: grpcDigits(grpcInput("input", "FP32", make([]int64, 40), fp32c(0))), wantGRPC: "InvalidArgument"},
		{name: "deeply nested arrays", rest: jsonCall(digitsInput("[1,64]", deep)), wantHTTP: 400},
		{name: "deeply nested parameters", rest: jsonCall(`{"parameters":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `,"inputs":[]}`), wantHTTP: 400},
		{name: "data nested deeper than shape", rest: jsonCall(digitsInput("[1,64]", "[["+floats(64)+"]]")), wantHTTP: 400},
		{name: "non-numeric value", rest: jsonCall(digitsInput("[1,2]", `[1,"x"]`)), wantHTTP: 400},
		{name: "boolean in FP32 data", rest: jsonCall(digitsInput("[1,2]", `[1,true]`)), wantHTTP: 400},
		{name: "number out of FP32 range", rest: jsonCall(digitsInput("[1,64]", strings.Replace(ok64, "1", "1e39", 1))), wantHTTP: 400},
		{name: "wrong typed contents field",
			grpc: grpcDigits(grpcInput("input", "FP32", []int64{1, 64}, &pb.InferTensorContents{IntContents: make([]int32, 64)})), wantGRPC: "InvalidArgument"},
		{name: "FP16 as JSON", rest: &restCall{path: "/v2/models/dtype_fp16/infer", body: []byte(`{"inputs":[{"name":"x","datatype":"FP16","shape":[1,1],"data":[1]}]}`)}, wantHTTP: 400,
			grpc: &pb.ModelInferRequest{ModelName: "dtype_fp16", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("x", "FP16", []int64{1, 1}, &pb.InferTensorContents{Fp32Contents: []float32{1}})}}, wantGRPC: "InvalidArgument"},
		{name: "INT8 out of range", rest: &restCall{path: "/v2/models/dtype_int8/infer", body: []byte(`{"inputs":[{"name":"x","datatype":"INT8","shape":[1,1],"data":[300]}]}`)}, wantHTTP: 400,
			grpc: &pb.ModelInferRequest{ModelName: "dtype_int8", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("x", "INT8", []int64{1, 1}, &pb.InferTensorContents{IntContents: []int32{300}})}}, wantGRPC: "InvalidArgument"},
		{name: "BYTES with NUL", rest: &restCall{path: "/v2/models/dtype_bytes/infer", body: []byte(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[1,1],"data":["a\u0000b"]}]}`)}, wantHTTP: 400,
			grpc: &pb.ModelInferRequest{ModelName: "dtype_bytes", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("x", "BYTES", []int64{1, 1}, &pb.InferTensorContents{BytesContents: [][]byte{[]byte("a\x00b")}})}}, wantGRPC: "InvalidArgument"},
		{name: "truncated binary data", rest: binCall(hdr, make([]byte, 200), len(hdr)), wantHTTP: 400,
			grpc: &pb.ModelInferRequest{ModelName: "digits", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, nil)}, RawInputContents: [][]byte{make([]byte, 200)}}, wantGRPC: "InvalidArgument"},
		{name: "binary_data_size not matching shape",
			rest: binCall(strings.Replace(hdr, "256", "252", 1), make([]byte, 252), len(hdr)), wantHTTP: 400},
		{name: "binary data beyond declared sizes", rest: binCall(hdr, make([]byte, 300), len(hdr)), wantHTTP: 400},
		{name: "header length beyond body", rest: binCall(hdr, nil, len(hdr)+10), wantHTTP: 400},
		{name: "header length not a number", rest: &restCall{path: digitsPath, header: map[string]string{"Inference-Header-Content-Length": "x"}, body: []byte(hdr)}, wantHTTP: 400},
		{name: "truncated BYTES element", rest: binCall(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[1,1],"parameters":{"binary_data_size":6}}]}`, []byte{9, 0, 0, 0, 'a', 'b'}, 92), wantHTTP: 400},
		{name: "raw contents count mismatch",
			grpc: &pb.ModelInferRequest{ModelName: "digits", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, nil)}, RawInputContents: [][]byte{make([]byte, 256), make([]byte, 256)}}, wantGRPC: "InvalidArgument"},
		{name: "too many inputs", rest: jsonCall(tooMany), wantHTTP: 400,
			grpc: grpcDigits(manyGRPC...), wantGRPC: "InvalidArgument"},
		{name: "unknown requested output",
			rest: jsonCall(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":` + ok64 + `}],"outputs":[{"name":"secret"}]}`), wantHTTP: 400,
			grpc: &pb.ModelInferRequest{ModelName: "digits", Inputs: []*pb.ModelInferRequest_InferInputTensor{grpcInput("input", "FP32", []int64{1, 64}, fp32c(64))}, Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "secret"}}}, wantGRPC: "InvalidArgument"},
		{name: "classification extension", rest: jsonCall(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":` + ok64 + `}],"outputs":[{"name":"label","parameters":{"classification":3}}]}`), wantHTTP: 501},
	}
}

// TestBadInput sends every malformed, oversized and hostile request over
// both transports and checks the status, that the error is short and in
// the protocol's shape, and that the server stays up with bounded memory.
func TestBadInput(t *testing.T) {
	cfg := servertest.Config(t, servertest.Models(t))
	cfg.Limits.MaxBodyBytes = 1 << 20
	srv := servertest.Start(t, cfg)
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := pb.NewGRPCInferenceServiceClient(conn)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	cases := badCases()
	// Oversized bodies: over the 1 MiB limit on both transports.
	big := `{"inputs":[{"name":"input","datatype":"FP32","shape":[9000,64],"data":` + floats(9000*64) + `}]}`
	cases = append(cases, badCase{name: "body over the limit", rest: jsonCall(big), wantHTTP: 413,
		grpc: grpcDigits(grpcInput("input", "FP32", []int64{9000, 64}, fp32c(9000*64))), wantGRPC: "ResourceExhausted"})

	for _, tc := range cases {
		if tc.rest != nil {
			t.Run("rest/"+tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, srv.HTTPURL+tc.rest.path, bytes.NewReader(tc.rest.body))
				for k, v := range tc.rest.header {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tc.wantHTTP {
					t.Errorf("status %d, want %d (body %.200s)", resp.StatusCode, tc.wantHTTP, b)
				}
				var e struct {
					Error string `json:"error"`
				}
				if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
					t.Errorf("body %.200q is not {\"error\": ...}", b)
				}
				checkMessage(t, e.Error)
			})
		}
		if tc.grpc != nil {
			t.Run("grpc/"+tc.name, func(t *testing.T) {
				_, err := g.ModelInfer(context.Background(), tc.grpc)
				st, _ := status.FromError(err)
				if st.Code().String() != tc.wantGRPC {
					t.Errorf("code %s (%q), want %s", st.Code(), st.Message(), tc.wantGRPC)
				}
				checkMessage(t, st.Message())
			})
		}
	}

	// Still up, still serving.
	resp, err := http.Get(srv.HTTPURL + "/v2/health/live")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server not live after bad input: %v", err)
	}
	resp.Body.Close()
	if _, err := srv.Clients(t)[0].Infer(context.Background(), &servertest.Request{Model: "digits", Inputs: nil}); err == nil {
		t.Error("request without inputs succeeded")
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB over the bad requests, want < 64", grown>>20)
	}
}

// checkMessage asserts an error message is short and reveals no internals.
func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if len(msg) > 300 {
		t.Errorf("error message is %d bytes long", len(msg))
	}
	for _, leak := range []string{"/work", ".go:", "onnxruntime", "goroutine", "panic"} {
		if strings.Contains(strings.ToLower(msg), leak) {
			t.Errorf("error message %q reveals %q", msg, leak)
		}
	}
}

// TestPathTricks checks that paths with dot segments, encoded separators or
// odd slashes never reach a model and are never redirected.
func TestPathTricks(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	body := digitsInput("[1,64]", floats(64))
	for _, p := range []string{
		"/v2/models/x/../digits/infer",
		"/v2/models/%2e%2e/digits/infer",
		"/v2/models/..%2Fdigits/infer",
		"/v2/models/digits%2Finfer",
		"/v2/models/DIGITS/infer",
		"/v2/models/digits/infer/",
		"/v2/models//digits/infer",
		"/v2/models/./digits/infer",
		"/v2/models/digits/versions/1/../1/infer",
	} {
		t.Run(p, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.HTTPURL+p, strings.NewReader(body))
			req.URL.RawPath = p
			req.URL.Opaque = p
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("status %d, want 404 or 405", resp.StatusCode)
			}
		})
	}
}
