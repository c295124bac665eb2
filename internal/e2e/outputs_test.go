package e2e

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// TestOutputHardeningAndWatermark: a model whose config.yaml asks for the
// hardened output policy and a watermark answers with the label and its
// top-1 score only, a credential scoped to labels gets the label alone,
// and a fraction of answers near the configured rate is marked and
// recorded for the principal, stably for repeated inputs.
func TestOutputHardeningAndWatermark(t *testing.T) {
	cfg, sec := servertest.SecureConfig(t, digitsRepo(t, "outguard: {}\nwatermark: {rate: 0.05}\n"), accessPolicy)
	cfg.RateLimit.Requests.PerSecond = 0
	key := servertest.CreateKey(t, cfg, "scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	labelOnly := servertest.CreateKey(t, cfg, "labels", []string{"scorer"}, pipeline.Scopes{OutputDetail: pipeline.OutputLabel}, 0)
	admin := servertest.CreateKey(t, cfg, "operator", []string{"operator"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	hc := a.httpClient(t, nil)
	infer := servertest.Path("digits", "")

	var held struct {
		Inputs [][]float64 `json:"inputs"`
		Labels []int64     `json:"labels"`
	}
	hb, _ := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "digits", "heldout.json"))
	if err := json.Unmarshal(hb, &held); err != nil {
		t.Fatal(err)
	}
	type resp struct {
		Outputs []struct {
			Name  string
			Shape []int64
			Data  []float64
		}
	}
	names := func(o outcome) string {
		var r resp
		if err := json.Unmarshal([]byte(o.msg), &r); err != nil {
			t.Fatalf("%s: %v", o.msg, err)
		}
		var n []string
		for _, x := range r.Outputs {
			n = append(n, x.Name)
		}
		return strings.Join(n, ",")
	}
	o := a.rest(t, hc, "POST", infer, "Bearer "+key, digitsRow(held.Inputs[0]))
	if o.status != 200 || names(o) != "label,topk_values,topk_indices" && names(o) != "label,topk_indices,topk_values" {
		t.Fatalf("hardened answer: %d %s", o.status, o.msg)
	}
	if strings.Contains(o.msg, `"probabilities"`) {
		t.Error("full probabilities served under the hardened policy")
	}
	// Asking for the probabilities by name does not get them.
	asked := strings.Replace(string(digitsRow(held.Inputs[0])), `]}]}`, `]}],"outputs":[{"name":"probabilities"}]}`, 1)
	if o := a.rest(t, hc, "POST", infer, "Bearer "+key, []byte(asked)); strings.Contains(o.msg, `"probabilities"`) && !strings.Contains(o.msg, "error") {
		t.Errorf("requested probabilities served: %s", o.msg)
	}
	if o := a.rest(t, hc, "POST", infer, "Bearer "+labelOnly, digitsRow(held.Inputs[0])); o.status != 200 || names(o) != "label" {
		t.Errorf("label-only credential: %d %s", o.status, o.msg)
	}
	// Every held-out digit, twice: the answers must repeat exactly.
	first := map[int]string{}
	for round := 0; round < 2; round++ {
		for i, row := range held.Inputs {
			o := a.rest(t, hc, "POST", infer, "Bearer "+key, digitsRow(row))
			if o.status != 200 {
				t.Fatalf("query %d: %+v", i, o)
			}
			if round == 0 {
				first[i] = o.msg
			} else if o.msg != first[i] {
				t.Fatalf("query %d answered differently the second time", i)
			}
		}
	}
	// The server's forensic test: answers copied from the server (a
	// surrogate that learned them) against the true labels (a model that
	// never saw the server).
	served := make([]int64, len(held.Inputs))
	for i := range held.Inputs {
		var r resp
		json.Unmarshal([]byte(first[i]), &r)
		for _, x := range r.Outputs {
			if x.Name == "label" {
				served[i] = int64(x.Data[0])
			}
		}
	}
	verifyScored := func(labels []int64, scores [][]float64) (float64, int) {
		inputs, _ := json.Marshal(held.Inputs)
		lb, _ := json.Marshal(labels)
		body := `{"model":"digits","inputs":` + string(inputs) + `,"labels":` + string(lb)
		if scores != nil {
			sc, _ := json.Marshal(scores)
			body += `,"scores":` + string(sc)
		}
		o := a.rest(t, hc, "POST", "/admin/v1/watermark/verify", "Bearer "+admin, []byte(body+`}`))
		if o.status != 200 {
			t.Fatalf("watermark verify: %+v", o)
		}
		var v struct {
			Log2PValue float64 `json:"log2_p_value"`
			Marked     int     `json:"marked"`
		}
		json.Unmarshal([]byte(o.msg), &v)
		return v.Log2PValue, v.Marked
	}
	verify := func(labels []int64) (float64, int) { return verifyScored(labels, nil) }
	if l2, marked := verify(served); l2 > -20 || marked == 0 {
		t.Errorf("the server's own answers: log2 p %v over %d marks, want identified", l2, marked)
	} else {
		t.Logf("copied answers: log2 p = %.1f over %d marks", l2, marked)
	}
	if l2, _ := verify(held.Labels); l2 < math.Log2(0.01) {
		t.Errorf("true labels: log2 p %v, want not identified (p > 0.01)", l2)
	}
	// A suspect that answers the true labels but scores the server's
	// answer next: its labels say nothing, its scores give it away.
	ranked := make([][]float64, len(held.Inputs))
	for i := range ranked {
		ranked[i] = make([]float64, 10)
		ranked[i][served[i]] = 0.3
		ranked[i][held.Labels[i]] = 0.6
	}
	if l2, _ := verifyScored(held.Labels, ranked); l2 > -20 {
		t.Errorf("true labels, the served answer ranked next: log2 p %v, want identified", l2)
	} else {
		t.Logf("true labels, the served answer ranked next: log2 p = %.1f", l2)
	}
	if o := a.rest(t, hc, "POST", "/admin/v1/watermark/verify", "Bearer "+admin,
		[]byte(`{"model":"digits","inputs":[[0]],"labels":[1],"scores":[[1],[2]]}`)); o.status != 400 {
		t.Errorf("scores for two inputs of one: %d %s", o.status, o.msg)
	}
	nine := make([][]float64, len(held.Inputs))
	for i := range nine {
		nine[i] = make([]float64, 9)
	}
	inputs, _ := json.Marshal(held.Inputs)
	lb, _ := json.Marshal(held.Labels)
	sc, _ := json.Marshal(nine)
	if o := a.rest(t, hc, "POST", "/admin/v1/watermark/verify", "Bearer "+admin,
		[]byte(`{"model":"digits","inputs":`+string(inputs)+`,"labels":`+string(lb)+`,"scores":`+string(sc)+`}`)); o.status != 400 || !strings.Contains(o.msg, "want 10 scores per input") {
		t.Errorf("nine scores for a 10-class model: %d %s", o.status, o.msg)
	}
	if err := a.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	st, err := state.OpenBolt(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keyID := "key:" + strings.Split(key, "_")[1]
	pairs, err := watermark.Pairs(st.DB(), keyID)
	if err != nil {
		t.Fatal(err)
	}
	n := len(held.Inputs)
	t.Logf("%d of %d distinct inputs marked (rate 0.05), recorded for %s", len(pairs), n, keyID)
	if len(pairs) < n/100 || len(pairs) > 2*n*2*5/100 {
		t.Errorf("%d pairs recorded for %d queries (twice %d inputs) at rate 0.05", len(pairs), 2*n, n)
	}
}
