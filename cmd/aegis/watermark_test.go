package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
	"github.com/aegis-inference/aegis/internal/watermark/watermarktest"
)

// watermarkedState serves 2,000 digits queries to key:thief through the
// output guard and the watermark, as the server does, recording the marked
// pairs in a state directory. It returns the directory, the queries, the
// answers and the victim's own labels.
func watermarkedState(t *testing.T) (dir string, queries [][]float32, answers, truth []int64) {
	t.Helper()
	servertest.InitRuntime(t)
	root := servertest.RepoRoot(t)
	model, err := os.ReadFile(filepath.Join(root, "testdata", "models", "digits", "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	heldout, _, err := watermarktest.Heldout(root)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := onnx.NewSession(model, onnx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	dir = t.TempDir()
	store, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec, err := watermark.NewRecorder(store.DB(), watermark.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A fixed key, so the marks (and the figures in docs/watermark.md) are
	// the same every run.
	if err := os.WriteFile(filepath.Join(dir, watermark.KeyFile), bytes.Repeat([]byte{42}, watermark.KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := watermark.LoadOrCreateKey(filepath.Join(dir, watermark.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	w, err := watermark.DefaultConfig().Watermarker(key, sess.Outputs())
	if err != nil {
		t.Fatal(err)
	}
	full := &watermarktest.Victim{
		Session: sess,
		Target:  watermarktest.Target{Model: "digits", Ver: "1", Specs: sess.Outputs()},
		Guard:   &outguard.Guard{Policy: func(pipeline.Target) outguard.Policy { return outguard.Full() }},
	}
	marked := *full
	marked.Guard = &outguard.Guard{Marker: &watermark.Service{Models: func(pipeline.Target) *watermark.Watermarker { return w }, Recorder: rec}}
	queries = watermarktest.Queries(heldout, 2000, 7)
	for i := 0; i < len(queries); i += 250 {
		batch := queries[i : i+250]
		got, err := marked.Query(context.Background(), "key:thief", "input", batch)
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, got...)
		if got, err = full.Query(context.Background(), "key:thief", "input", batch); err != nil {
			t.Fatal(err)
		}
		truth = append(truth, got...)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, queries, answers, truth
}

func writeModel(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "suspect.onnx")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWatermarkVerifyCLI(t *testing.T) {
	dir, queries, answers, truth := watermarkedState(t)
	lib := servertest.LibraryPath(t)
	digits := filepath.Join(servertest.Models(t), "digits", "1", "model.onnx")
	verify := func(t *testing.T, model string, extra ...string) (verifyReport, string) {
		t.Helper()
		args := append([]string{"watermark", "verify", "--state-dir", dir, "--principal", "key:thief",
			"--model", model, "--onnxruntime-lib", lib}, extra...)
		var out, errb bytes.Buffer
		if err := run(append(args, "--json"), &out, &errb); err != nil {
			t.Fatalf("verify --json: %v\n%s", err, errb.String())
		}
		var rep verifyReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		out.Reset()
		if err := run(args, &out, &errb); err != nil {
			t.Fatalf("verify: %v\n%s", err, errb.String())
		}
		return rep, out.String()
	}

	t.Run("the thief's surrogate is identified", func(t *testing.T) {
		rep, text := verify(t, writeModel(t, watermarktest.NearestNeighbour(queries, answers)))
		t.Logf("\n%s", text)
		if !rep.Identified || !(rep.Log2P < -64) || rep.AgreeWatermark != rep.Pairs || rep.Pairs < 25 {
			t.Errorf("got %+v, want every pair matched and log2 p below -64", rep)
		}
		if rep.Victim != "digits" || rep.Classes != 10 || rep.P0 != 1.0/9 || rep.Principal != "key:thief" {
			t.Errorf("report %+v", rep)
		}
		if !strings.Contains(text, "IDENTIFIED") || !strings.Contains(text, "2^-") {
			t.Errorf("text report:\n%s", text)
		}
	})
	t.Run("a soft surrogate is identified by its scores", func(t *testing.T) {
		// It answers the true label on the marks but scores the mark next
		// (see internal/watermark's TestTheftIdentified).
		rep, text := verify(t, writeModel(t, watermarktest.SoftNeighbours(queries, answers, 10, 80)))
		t.Logf("\n%s", text)
		if !rep.Identified || rep.Scored != rep.Pairs || !(rep.Log2PLabels > -64) || !(rep.Log2PScores < -65) ||
			rep.Log2P != rep.Log2PScores+1 {
			t.Errorf("got %+v, want identified by the ranking alone", rep)
		}
		if !strings.Contains(text, "ranked first of the wrong classes in") || !strings.Contains(text, "twice the smaller") {
			t.Errorf("text report:\n%s", text)
		}
		// Its labels alone do not identify it.
		rep, text = verify(t, writeModel(t, watermarktest.SoftNeighbours(queries, answers, 10, 80)), "--labels-only")
		if rep.Identified || rep.Scored != 0 || rep.Log2P != rep.Log2PLabels || !strings.Contains(text, "the suspect gives no scores") {
			t.Errorf("--labels-only: got %+v\n%s", rep, text)
		}
	})
	t.Run("the victim itself is not", func(t *testing.T) {
		rep, text := verify(t, digits)
		if rep.Identified || !(rep.P > 0.01) || rep.AgreeTrue != rep.Pairs || rep.Scored != rep.Pairs {
			t.Errorf("got %+v, want the true label on every pair and p above 0.01", rep)
		}
		if !strings.Contains(text, "not identified") {
			t.Errorf("text report:\n%s", text)
		}
	})
	t.Run("a model of the true labels is not", func(t *testing.T) {
		rep, _ := verify(t, writeModel(t, watermarktest.NearestNeighbour(queries, truth)))
		if rep.Identified || !(rep.P > 0.01) {
			t.Errorf("got %+v, want p above 0.01", rep)
		}
	})
	t.Run("alpha", func(t *testing.T) {
		// Half the thief's answers: fewer marks learnt; a stricter alpha
		// than the evidence turns the verdict.
		rep, _ := verify(t, writeModel(t, watermarktest.NearestNeighbour(queries[:1000], answers[:1000])), "--alpha", "2^-500")
		if rep.Identified || rep.Alpha != math.Exp2(-500) {
			t.Errorf("got %+v, want not identified at 2^-500", rep)
		}
	})
	t.Run("list", func(t *testing.T) {
		var out bytes.Buffer
		if err := run([]string{"watermark", "list", "--state-dir", dir, "--json"}, &out, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
		var ps []watermark.Principal
		if err := json.Unmarshal(out.Bytes(), &ps); err != nil || len(ps) != 1 || ps[0].ID != "key:thief" || ps[0].Pairs < 25 {
			t.Errorf("list: %v %s", err, out.String())
		}
	})
	t.Run("errors", func(t *testing.T) {
		suspect := writeModel(t, watermarktest.NearestNeighbour(queries[:10], answers[:10]))
		int32Model := filepath.Join(servertest.Models(t), "dtype_int32", "1", "model.onnx")
		elevenClasses := writeModel(t, watermarktest.SoftNeighbours(queries[:10], answers[:10], 11, 80))
		base := []string{"watermark", "verify", "--state-dir", dir, "--onnxruntime-lib", lib}
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"no subcommand", []string{"watermark"}, "usage"},
			{"no principal", append(base, "--model", suspect), "usage"},
			{"unknown principal", append(base, "--model", suspect, "--principal", "key:nobody"), "no watermark pairs recorded for principal \"key:nobody\""},
			{"other victim", append(base, "--model", suspect, "--principal", "key:thief", "--victim", "mnist"), `from model "mnist"`},
			{"no state", []string{"watermark", "verify", "--principal", "key:thief", "--model", suspect}, "--state-dir"},
			{"missing state", []string{"watermark", "list", "--state-dir", filepath.Join(dir, "nope")}, "state directory"},
			{"bad alpha", append(base, "--model", suspect, "--principal", "key:thief", "--alpha", "2"), "not a probability"},
			{"missing model", append(base, "--model", filepath.Join(dir, "none.onnx"), "--principal", "key:thief"), "suspect model"},
			{"wrong input type", append(base, "--model", int32Model, "--principal", "key:thief"), "INT32"},
			{"scores for 11 classes", append(base, "--model", elevenClasses, "--principal", "key:thief"), "scores do not match the victim's classes: 11 scores, 10 classes (--labels-only"},
		}
		for _, tc := range tests {
			err := run(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
			}
		}
	})
	t.Run("server running", func(t *testing.T) {
		s, err := state.OpenBolt(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		err = run([]string{"watermark", "list", "--state-dir", dir}, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "is the server running") {
			t.Errorf("got %v, want a hint that the server holds the state", err)
		}
	})
}

func TestPString(t *testing.T) {
	tests := []struct {
		log2 float64
		want string
	}{
		{0, "1"},
		{-1, "0.5"},
		{math.Log2(0.0123), "0.0123"},
		{-64, "2^-64.0 (5.42e-20)"},
		{-168, "2^-168.0 (2.67e-51)"},
		{-5000, "2^-5000.0 (7.08e-1506)"},
	}
	for _, tc := range tests {
		if got := pString(tc.log2); got != tc.want {
			t.Errorf("pString(%v) = %q, want %q", tc.log2, got, tc.want)
		}
	}
}

func TestSuspectInputs(t *testing.T) {
	rec := []tensor.Tensor{{Name: "input", DType: tensor.FP32, Shape: []int64{1, 64}, Data: make([]byte, 256)}}
	tests := []struct {
		name      string
		specs     []tensor.Spec
		wantShape []int64
		wantErr   string
	}{
		{"same name", []tensor.Spec{{Name: "input", DType: tensor.FP32, Shape: []int64{-1, 64}}}, []int64{1, 64}, ""},
		{"renamed single input", []tensor.Spec{{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 64}}}, []int64{1, 64}, ""},
		{"image layout", []tensor.Spec{{Name: "x", DType: tensor.FP32, Shape: []int64{-1, 1, 8, 8}}}, []int64{1, 1, 8, 8}, ""},
		{"other type", []tensor.Spec{{Name: "x", DType: tensor.FP64, Shape: []int64{-1, 64}}}, nil, "FP64"},
		{"two inputs", []tensor.Spec{{Name: "a", DType: tensor.FP32}, {Name: "b", DType: tensor.FP32}}, nil, "2 inputs"},
	}
	for _, tc := range tests {
		in, err := suspectInputs(tc.specs, rec)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := in[0].Shape; len(got) != len(tc.wantShape) || got[len(got)-1] != tc.wantShape[len(tc.wantShape)-1] || in[0].Name != tc.specs[0].Name {
			t.Errorf("%s: got %s %v, want %s %v", tc.name, in[0].Name, got, tc.specs[0].Name, tc.wantShape)
		}
	}
	if rec[0].Shape[1] != 64 || rec[0].Name != "input" {
		t.Error("suspectInputs changed the recorded tensor")
	}
}
