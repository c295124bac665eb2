package e2e

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/validate"
)

// TestInputConstraints: a model's config.yaml constrains input values;
// a reject rule refuses out-of-range inputs with 400 over both transports,
// a flag rule serves them and marks their audit record.
func TestInputConstraints(t *testing.T) {
	repo := t.TempDir()
	copyFixture(t, repo, "digits", "digits", "1")
	copyFixture(t, repo, "dtype_fp32", "dtype_fp32", "1")
	writeFile(t, filepath.Join(repo, "digits", "config.yaml"), []byte("validation:\n  inputs:\n    input: {min: 0, max: 16}\n"))
	writeFile(t, filepath.Join(repo, "dtype_fp32", "config.yaml"), []byte("validation:\n  inputs:\n    x: {min: -1, max: 1, action: flag}\n"))
	policy := strings.Replace(accessPolicy, `models: ["digits"]`, `models: ["digits", "dtype_fp32"]`, 1)
	cfg, sec := servertest.SecureConfig(t, repo, policy)
	key := "Bearer " + servertest.CreateKey(t, cfg, "scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)

	if o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, digitsBody(1)); o.status != 200 {
		t.Fatalf("in range: %+v", o)
	}
	big := strings.Replace(string(digitsBody(1)), `"data":[1,`, `"data":[17,`, 1)
	o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, []byte(big))
	if o.status != 400 || !strings.Contains(o.msg, "outside the allowed range") || strings.Contains(o.msg, "17") {
		t.Errorf("out of range over REST: %d %q, want 400 naming the rule, not the value", o.status, o.msg)
	}
	if og, err := grpcInfer(withAuth(key), gc, "digits", 1); err != nil || og.status != 200 {
		t.Errorf("in range over gRPC (zeros): %+v %v", og, err)
	}
	flagged := a.rest(t, hc, "POST", servertest.Path("dtype_fp32", ""), key,
		[]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[0.5,2,0]}]}`))
	checkValidationRecords(t, a, flagged, "validation:range:x", o)
}

// checkValidationRecords checks that flagged was served and its audit
// record carries flag, and that refused's record has status 400.
func checkValidationRecords(t *testing.T, a *accessServer, flagged outcome, flag string, refused outcome) {
	t.Helper()
	if flagged.status != 200 {
		t.Fatalf("flag action: %+v", flagged)
	}
	byID, _ := a.auditRecords(t)
	if r := byID[flagged.id]; r == nil || r["flags"] != flag || r["decision"] != "allow" {
		t.Errorf("audit record of the flagged request: %v", r)
	}
	if r := byID[refused.id]; r == nil || r["status"].(float64) != 400 {
		t.Errorf("audit record of the refused request: %v", r)
	}
}

// TestInputOutOfDistribution: a model's config.yaml turns on the
// out-of-distribution check, fitted when the model loads from the
// reference sample shipped with it. A natural digit is served; a query of
// uniform random pixels, inside any range rule, is refused with 400 over
// both transports under reject, and served with its audit record flagged
// under flag.
func TestInputOutOfDistribution(t *testing.T) {
	repo := t.TempDir()
	ref, err := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "extraction", "digits-reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	for model, action := range map[string]string{"digits": "reject", "digits_flag": "flag"} {
		copyFixture(t, repo, "digits", model, "1")
		writeFile(t, filepath.Join(repo, model, "reference.json"), ref)
		writeFile(t, filepath.Join(repo, model, "config.yaml"), []byte("validation:\n  inputs:\n    input: {min: 0, max: 16}\n"+
			"  ood: {input: input, reference: reference.json, action: "+action+"}\n"))
	}
	policy := strings.Replace(accessPolicy, `models: ["digits"]`, `models: ["digits", "digits_flag"]`, 1)
	cfg, sec := servertest.SecureConfig(t, repo, policy)
	key := "Bearer " + servertest.CreateKey(t, cfg, "scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	operator := "Bearer " + servertest.CreateKey(t, cfg, "operator", []string{"operator"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)

	// A held-out digit the same check, fitted the same way, finds normal.
	checker, err := validate.Compile(&validate.Rules{OOD: &validate.OODRule{Input: "input", Reference: "digits-reference.json"}},
		[]tensor.Spec{{Name: "input", DType: tensor.FP32, Shape: []int64{-1, 64}}}, filepath.Join(servertest.RepoRoot(t), "testdata", "extraction"))
	if err != nil {
		t.Fatal(err)
	}
	var held struct {
		Inputs [][]float32 `json:"inputs"`
	}
	b, err := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "digits", "heldout.json"))
	if err != nil || json.Unmarshal(b, &held) != nil {
		t.Fatalf("held-out digits: %v", err)
	}
	var natural []float32
	for _, x := range held.Inputs {
		in := &tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 64}}
		for _, v := range x {
			in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(v))
		}
		if _, err := checker.Check([]*tensor.Tensor{in}); err == nil {
			natural = x
			break
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	random := make([]float32, 64)
	for i := range random {
		random[i] = float32(int(16*rng.Float64()*100)) / 100
	}
	body := func(x []float32) []byte {
		js, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "input", "datatype": "FP32", "shape": []int{1, 64}, "data": x}}})
		return js
	}

	if o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, body(natural)); o.status != 200 {
		t.Fatalf("natural digit: %+v", o)
	}
	o := a.rest(t, hc, "POST", servertest.Path("digits", ""), key, body(random))
	if o.status != 400 || !strings.Contains(o.msg, "out of distribution") || strings.Contains(o.msg, strconv.FormatFloat(float64(random[0]), 'g', -1, 32)) {
		t.Errorf("uniform random pixels over REST: %d %q, want 400 naming the rule, not the values", o.status, o.msg)
	}
	_, err = gc.ModelInfer(withAuth(key), grpcDigits(grpcInput("input", "FP32", []int64{1, 64}, &pb.InferTensorContents{Fp32Contents: random})))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "out of distribution") {
		t.Errorf("uniform random pixels over gRPC: %v, want InvalidArgument", err)
	}
	_, err = gc.ModelInfer(withAuth(key), grpcDigits(grpcInput("input", "FP32", []int64{1, 64}, &pb.InferTensorContents{Fp32Contents: natural})))
	if err != nil {
		t.Errorf("natural digit over gRPC: %v", err)
	}
	flagged := a.rest(t, hc, "POST", servertest.Path("digits_flag", ""), key, body(random))
	// Violations are counted whatever the action: two refused, one flagged.
	m := scrape(t, a, hc, operator)
	for model, want := range map[string]float64{"digits": 2, "digits_flag": 1} {
		if got := m[`aegis_validation_violations_total{model="`+model+`",version="1",input="input"}`]; got != want {
			t.Errorf("%s: %v violations in the metrics, want %v", model, got, want)
		}
	}
	checkValidationRecords(t, a, flagged, "validation:ood:input", o)
}
