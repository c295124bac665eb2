package conformance

import (
	"slices"
	"testing"
)

// quickCases is a representative subset of the ONNX backend test data for
// `go test`: every protocol datatype (BOOL, UINT8..UINT64, INT8..INT64,
// FP16, BF16, FP32, FP64, BYTES), scalar and empty tensors, NaN and
// infinities, several outputs, control flow, and models from all three
// suites. Each passes in-process with the pinned ONNX Runtime, so each must
// pass over every client.
var quickCases = []string{
	// FP32, broadcasting, several outputs of mixed types.
	"node/test_abs",
	"node/test_add_bcast",
	"node/test_matmul_2d",
	"node/test_softmax_axis_1",
	"node/test_gather_0",
	"node/test_top_k",
	"node/test_split_equal_parts_1d",
	// Control flow with scalar BOOL and INT64 inputs.
	"node/test_if",
	"node/test_loop11",
	// Scalar (rank-0) outputs.
	"node/test_det_2d",
	"node/test_dynamicquantizelinear",
	"node/test_einsum_inner_prod",
	"node/test_nllloss_NCd1_weight",
	// BOOL, and NaN and infinities in inputs.
	"node/test_and_bcast4v3d",
	"node/test_nonzero_example",
	"node/test_isnan",
	"node/test_isinf",
	// BYTES in, NaN and infinities out.
	"node/test_cast_STRING_to_FLOAT",
	"node/test_castlike_STRING_to_FLOAT",
	// FP16 and BF16, which travel as binary only.
	"node/test_cast_FLOAT_to_FLOAT16",
	"node/test_cast_FLOAT16_to_DOUBLE",
	"node/test_max_float16",
	"node/test_cast_BFLOAT16_to_FLOAT",
	// The integer types.
	"node/test_add_uint8",
	"node/test_clip_default_int8_min",
	"node/test_mod_mixed_sign_int16",
	"node/test_mod_uint16",
	"node/test_bitshift_left_uint32",
	"node/test_bitshift_right_uint64",
	"node/test_basic_convinteger",
	"node/test_shape",
	// Empty tensors.
	"node/test_constantofshape_int_shape_zero",
	"node/test_slice_start_out_of_bounds",
	"node/test_split_zero_size_splits",
	// data/simple.
	"simple/test_sign_model",
	"simple/test_single_relu_model",
	"simple/test_expand_shape_model1",
	"simple/test_shrink",
	// data/pytorch-converted.
	"pytorch-converted/test_Conv2d",
	"pytorch-converted/test_ConvTranspose2d",
	"pytorch-converted/test_Embedding",
	"pytorch-converted/test_LogSoftmax",
	"pytorch-converted/test_MaxPool2d",
}

// quickOthers are cases of the other categories, to check the classifier
// and that the server refuses what it cannot serve: a model that does not
// load is not found (http 404, grpc NotFound), and a request ONNX Runtime
// rejects is invalid (http 400, grpc InvalidArgument).
var quickOthers = map[string]struct {
	want Category
	code string // "404" or "400" for ORTUnsupported
}{
	"node/test_identity_sequence":          {want: ProtocolUnsupported}, // sequence input
	"node/test_optional_has_element":       {want: ProtocolUnsupported}, // optional input
	"node/test_constant":                   {want: ProtocolUnsupported}, // no inputs
	"pytorch-converted/test_AvgPool1d":     {ORTUnsupported, "404"},     // opset 1: ONNX Runtime starts at 7
	"node/test_gru_batchwise":              {ORTUnsupported, "404"},     // layout=1 is not implemented
	"node/test_castlike_FLOAT_to_BFLOAT16": {ORTUnsupported, "400"},     // test data rank differs from the model's
	"node/test_cast_FLOAT_to_STRING":       {want: InProcessFail},       // ONNX Runtime prints more digits
}

var codes = map[string][2]string{
	"404": {"http 404", "grpc NotFound"},
	"400": {"http 400", "grpc InvalidArgument"},
}

// TestQuickConformance runs the quick subset in-process and through a real
// server over every client.
func TestQuickConformance(t *testing.T) {
	dir, err := DataDir()
	if err != nil {
		t.Fatal(err)
	}
	names := append([]string(nil), quickCases...)
	for n := range quickOthers {
		names = append(names, n)
	}
	slices.Sort(names)
	rep := Run(t, dir, names, Options{})
	if len(rep.Clients) != 4 {
		t.Fatalf("got clients %v, want four", rep.Clients)
	}
	for _, res := range rep.Results {
		t.Run(res.Case, func(t *testing.T) {
			other, ok := quickOthers[res.Case]
			want := other.want
			if !ok {
				want = InProcessPass
			}
			if res.Category != want {
				t.Fatalf("in-process: got %q (%s %s), want %q", res.Category, res.InProcess.Status, res.InProcess.Reason, want)
			}
			if res.Served != res.LoadedInProcess {
				t.Errorf("server loaded the model: %v, ONNX Runtime in-process: %v; want the same", res.Served, res.LoadedInProcess)
			}
			for i, v := range res.Clients {
				switch want {
				case InProcessPass:
					if v.Status != Pass || !v.SameAsInProcess {
						t.Errorf("%s: got %s (identical to in-process: %v; %s), want a pass identical to in-process", rep.Clients[i], v.Status, v.SameAsInProcess, v.Reason)
					}
				case InProcessFail:
					// The transports must reproduce ONNX Runtime's answer, wrong
					// as it is, exactly.
					if v.Status != Fail || !v.SameAsInProcess {
						t.Errorf("%s: got %s (identical to in-process: %v; %s), want the in-process failure reproduced exactly", rep.Clients[i], v.Status, v.SameAsInProcess, v.Reason)
					}
				default:
					if v.Status != Unsupported {
						t.Errorf("%s: got %s (%s), want unsupported", rep.Clients[i], v.Status, v.Reason)
					}
					if c := codes[other.code]; want == ORTUnsupported && v.Code != c[0] && v.Code != c[1] {
						t.Errorf("%s: got %q, want %s", rep.Clients[i], v.Code, c)
					}
				}
			}
		})
	}
}
