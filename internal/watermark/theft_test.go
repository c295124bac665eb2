package watermark_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
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

var digitsSpecs = []tensor.Spec{
	{Name: "label", DType: tensor.Int64, Shape: []int64{-1}},
	{Name: "probabilities", DType: tensor.FP32, Shape: []int64{-1, 10}},
}

func session(t *testing.T, model []byte) *onnx.Session {
	t.Helper()
	s, err := onnx.NewSession(model, onnx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// labelsOf runs s on rows and returns its predicted labels.
func labelsOf(t *testing.T, s *onnx.Session, rows [][]float32) []int64 {
	t.Helper()
	in := watermarktest.FP32("input", rows)
	res, err := s.Run(context.Background(), []*tensor.Tensor{&in})
	if err != nil {
		t.Fatal(err)
	}
	labels, err := outguard.Labels(res.Outputs, s.Outputs(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	return labels
}

// predictor runs a suspect model on a pair's single FP32 input: its
// label, and its scores when it has a scores output.
func predictor(t *testing.T, s *onnx.Session) func(*watermark.Pair) (watermark.Answer, error) {
	return func(p *watermark.Pair) (watermark.Answer, error) {
		x := p.Inputs[0]
		row := make([]float32, len(x.Data)/4)
		for i := range row {
			row[i] = math.Float32frombits(binary.LittleEndian.Uint32(x.Data[4*i:]))
		}
		in := watermarktest.FP32("input", [][]float32{row})
		res, err := s.Run(context.Background(), []*tensor.Tensor{&in})
		if err != nil {
			return watermark.Answer{}, err
		}
		defer res.Release()
		a, err := outguard.ReadAnswers(res.Outputs, s.Outputs(), "", "")
		if err != nil {
			return watermark.Answer{}, err
		}
		return watermark.Answer{Label: a.Labels[0], Scores: a.Row(0)}, nil
	}
}

// TestTheftIdentified plays DAWN's scenario on the digits model: a thief
// sends 2,000 queries through the server's output guard (default policy)
// with the watermark at its default rate, and trains a surrogate on the
// answers; an honest party builds a model without them. The surrogate is
// identified with p < 2^-64, the others are not (p > 0.01).
func TestTheftIdentified(t *testing.T) {
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
	victim := session(t, model)
	store, err := state.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec, err := watermark.NewRecorder(store.DB(), watermark.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	w, err := watermark.DefaultConfig().Watermarker(testKey, victim.Outputs())
	if err != nil {
		t.Fatal(err)
	}
	v := &watermarktest.Victim{
		Session: victim,
		Target:  watermarktest.Target{Model: "digits", Ver: "1", Specs: victim.Outputs()},
		Guard: &outguard.Guard{
			Policy: func(pipeline.Target) outguard.Policy { return outguard.Default() },
			Marker: &watermark.Service{Models: func(pipeline.Target) *watermark.Watermarker { return w }, Recorder: rec},
		},
	}
	ctx := context.Background()
	ask := func(principal string, rows [][]float32) []int64 {
		var answers []int64
		for i := 0; i < len(rows); i += 100 {
			got, err := v.Query(ctx, principal, "input", rows[i:min(i+100, len(rows))])
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, got...)
		}
		return answers
	}

	queries := watermarktest.Queries(heldout, 2000, 1)
	answers := ask("key:thief", queries)
	truth := labelsOf(t, victim, queries)
	wrong := 0
	for i := range answers {
		if answers[i] != truth[i] {
			wrong++
		}
	}
	// Answers are stable: the same inputs in other batches get the same
	// answers.
	again := ask("key:someone-else", queries[:450])
	for i := range again {
		if again[i] != answers[i] {
			t.Fatalf("query %d: answered %d, then %d", i, answers[i], again[i])
		}
	}
	rec.Flush()
	pairs, err := watermark.Pairs(store.DB(), "key:thief")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2000 queries: %d answers marked, %d pairs recorded (rate %.3f)", wrong, len(pairs), watermark.DefaultRate)
	if len(pairs) != wrong || wrong < 25 {
		t.Fatalf("%d marked answers, %d pairs recorded; want equal and about 50", wrong, len(pairs))
	}
	for _, p := range pairs {
		if p.Label == p.TrueLabel || p.Classes != 10 || p.Model != "digits" || p.Version != "1" {
			t.Fatalf("pair %+v", p)
		}
	}

	// A second principal's surrogate, trained on other queries.
	other := watermarktest.Queries(heldout, 2450, 2)[450:]
	otherAnswers := ask("key:other", other)

	// The soft surrogate weighs its training inputs by exp(−d²/160): on a
	// marked input the mark weighs 1 against the neighbours that share the
	// true label, so it answers the true label there nearly always (the
	// labels test sees nothing) but scores the mark next (the scores test
	// sees it all).
	const tau = 80
	suspects := []struct {
		name       string
		model      []byte
		identified bool
		byScores   bool // identified by its scores, not its labels
	}{
		{"the thief's surrogate (nearest neighbour on its 2,000 answers)", watermarktest.NearestNeighbour(queries, answers), true, false},
		{"a surrogate on the thief's first 1,000 answers", watermarktest.NearestNeighbour(queries[:1000], answers[:1000]), true, false},
		{"the thief's soft surrogate (neighbours weighted, with scores)", watermarktest.SoftNeighbours(queries, answers, 10, tau), true, true},
		{"the victim itself", model, false, false},
		{"a model of the victim's true labels on the same inputs", watermarktest.NearestNeighbour(queries, truth), false, false},
		{"a soft model of the victim's true labels on the same inputs", watermarktest.SoftNeighbours(queries, truth, 10, tau), false, false},
		{"another principal's surrogate", watermarktest.NearestNeighbour(other, otherAnswers), false, false},
	}
	for _, s := range suspects {
		res, err := watermark.Verify(pairs, predictor(t, session(t, s.model)))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: n=%d k=%d m=%d top wrong %d of %d; log2 p=%.1f (p=%.3g): labels %.1f, scores %.1f, labels over all pairs %.1f",
			s.name, res.Pairs, res.AgreeWatermark, res.Disagree, res.TopWrong, res.Scored, res.Log2P, res.P(), res.Log2PLabels, res.Log2PScores, res.Log2PAll)
		if s.byScores && (res.Scored != res.Pairs || !(res.Log2PLabels > -64) || !(res.Log2PScores < -65)) {
			t.Errorf("%s: labels test log2 p %.1f, scores test %.1f over %d scored answers; want the scores alone to identify it", s.name, res.Log2PLabels, res.Log2PScores, res.Scored)
		}
		if s.identified && !(res.Log2P < -64) {
			t.Errorf("%s: log2 p = %.1f, want below -64", s.name, res.Log2P)
		}
		if !s.identified && !(res.P() > 0.01) {
			t.Errorf("%s: p = %v, want above 0.01", s.name, res.P())
		}
	}
}
