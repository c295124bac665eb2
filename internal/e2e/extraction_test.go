package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestExtractionMonitoring: a model monitored for extraction (its
// config.yaml names the input, the label output and a reference sample).
// A principal sending uniform random queries is flagged within the first
// few dozen, audited as an extraction alarm, and throttled (429); a
// principal replaying natural held-out digits is never flagged; the admin
// API shows the alarm.
func TestExtractionMonitoring(t *testing.T) {
	cfg, sec := servertest.SecureConfig(t, monitoredDigits(t), accessPolicy)
	cfg.Extraction.GroupByNetwork = false // attacker and benign client share 127.0.0.1 here
	attacker := "Bearer " + servertest.CreateKey(t, cfg, "attacker", []string{"scorer"}, pipeline.Scopes{}, 0)
	benign := "Bearer " + servertest.CreateKey(t, cfg, "benign", []string{"scorer"}, pipeline.Scopes{}, 0)
	operator := "Bearer " + servertest.CreateKey(t, cfg, "operator", []string{"operator"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	hc := a.httpClient(t, nil)
	infer := servertest.Path("digits", "")

	held := heldoutDigits(t)
	// Benign traffic first, then the attack, then benign traffic again.
	for i := 0; i < 100; i++ {
		if o := a.rest(t, hc, "POST", infer, benign, digitsRow(held[i])); o.status != 200 {
			t.Fatalf("benign query %d: %+v", i, o)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	throttledAt := 0
	for q := 1; q <= 300 && throttledAt == 0; q++ {
		row := make([]float64, 64)
		for i := range row {
			row[i] = float64(rng.IntN(17))
		}
		o := a.rest(t, hc, "POST", infer, attacker, digitsRow(row))
		switch o.status {
		case 200:
		case 429:
			throttledAt = q
		default:
			t.Fatalf("attack query %d: %+v", q, o)
		}
	}
	if throttledAt == 0 {
		t.Fatal("uniform random queries were never throttled within 300")
	}
	t.Logf("attacker throttled at query %d", throttledAt)
	for i := 100; i < 200; i++ {
		if o := a.rest(t, hc, "POST", infer, benign, digitsRow(held[i])); o.status != 200 {
			t.Fatalf("benign query %d after the attack: %+v", i, o)
		}
	}
	st := extractionStatus(t, a, hc, operator)
	attackerID := "key:" + strings.Split(strings.TrimPrefix(attacker, "Bearer "), "_")[1]
	benignID := "key:" + strings.Split(strings.TrimPrefix(benign, "Bearer "), "_")[1]
	alarmed := map[string]bool{}
	for _, al := range st.Alerts {
		alarmed[al.Subject] = true
	}
	if !alarmed[attackerID] || alarmed[benignID] {
		t.Errorf("alerts for %v; want the attacker %s and not the benign client", alarmed, attackerID)
	}
	if o := a.rest(t, hc, "GET", "/admin/v1/extraction/status", attacker, nil); o.status != 403 {
		t.Errorf("extraction status for a scorer: %d, want 403", o.status)
	}
	// The metrics give every principal's risk, as the status does.
	risk := map[string]float64{}
	for _, sub := range st.Subjects {
		risk[sub.Subject] = sub.Risk
	}
	m := scrape(t, a, hc, operator)
	for _, id := range []string{attackerID, benignID} {
		key := `aegis_extraction_risk{model="digits",subject="` + id + `",kind="principal"}`
		if got, ok := m[key]; !ok || got != risk[id] {
			t.Errorf("%s = %v (present: %v); the status says %v", key, got, ok, risk[id])
		}
	}
	if risk[attackerID] < 0.6 || risk[benignID] >= 0.5 {
		t.Errorf("risk: attacker %v, benign %v", risk[attackerID], risk[benignID])
	}
	if got := m[`aegis_extraction_alerts_total{model="digits"}`]; got < 1 {
		t.Errorf("aegis_extraction_alerts_total = %v, want at least 1", got)
	}
	if got, sent := m["aegis_requests_admitted_total"], float64(200+throttledAt); got < sent {
		t.Errorf("aegis_requests_admitted_total = %v, want at least the %v inference requests sent", got, sent)
	}
	for who, auth := range map[string]string{"a scorer": attacker, "no credential": ""} {
		if o := a.rest(t, hc, "GET", "/admin/v1/metrics", auth, nil); o.status != 403 && o.status != 401 || (auth == "" && o.status != 401) {
			t.Errorf("metrics for %s: %d, want 401 without a credential, 403 without audit:read", who, o.status)
		}
	}
	_, all := a.auditRecords(t)
	events := 0
	for _, r := range all {
		if r["type"] == "event" && r["kind"] == "extraction-alarm" && r["principal"] == attackerID {
			events++
		}
		if r["type"] == "event" && r["principal"] == benignID {
			t.Errorf("benign client in an audit event: %v", r)
		}
	}
	if events == 0 {
		t.Error("no extraction-alarm event in the audit log")
	}
}

// TestExtractionGroupsByNetwork: two keys calling from the same address
// are one network group, whose history holds both keys' queries, over
// shared keep-alive connections as over their own.
func TestExtractionGroupsByNetwork(t *testing.T) {
	cfg, sec := servertest.SecureConfig(t, monitoredDigits(t), accessPolicy)
	cfg.Extraction.GroupByNetwork = true
	keys := []string{
		"Bearer " + servertest.CreateKey(t, cfg, "one", []string{"scorer"}, pipeline.Scopes{}, 0),
		"Bearer " + servertest.CreateKey(t, cfg, "two", []string{"scorer"}, pipeline.Scopes{}, 0),
	}
	operator := "Bearer " + servertest.CreateKey(t, cfg, "operator", []string{"operator"}, pipeline.Scopes{}, 0)
	a := &accessServer{sec: sec, cfg: cfg, srv: servertest.Start(t, cfg)}
	shared := a.httpClient(t, nil)
	own := []*http.Client{a.httpClient(t, nil), a.httpClient(t, nil)}
	infer := servertest.Path("digits", "")
	held := heldoutDigits(t) // natural digits: nothing to alarm on
	for i := range 40 {
		hc := shared // alternate keys on one connection, then each on its own
		if i >= 20 {
			hc = own[i%2]
		}
		if o := a.rest(t, hc, "POST", infer, keys[i%2], digitsRow(held[i])); o.status != 200 {
			t.Fatalf("query %d: %+v", i, o)
		}
	}
	st := extractionStatus(t, a, shared, operator)
	const net = "net:127.0.0.0/24"
	found := map[string]int{}
	for _, s := range st.Subjects {
		found[s.Subject] = s.Queries
		if !s.Group && !slices.Equal(s.Groups, []string{net}) {
			t.Errorf("%s is in groups %v, want [%s]", s.Subject, s.Groups, net)
		}
	}
	if found[net] != 40 {
		t.Errorf("group %s saw %d queries, want 40 (both keys'); subjects %v", net, found[net], found)
	}
	for _, k := range keys {
		id := "key:" + strings.Split(strings.TrimPrefix(k, "Bearer "), "_")[1]
		if found[id] != 20 {
			t.Errorf("%s: %d queries, want 20", id, found[id])
		}
	}
}

// digitsRepo returns a model repository holding the digits MLP as model
// "digits", with config as its config.yaml.
func digitsRepo(t *testing.T, config string) string {
	t.Helper()
	repo := t.TempDir()
	b, err := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "models", "digits_mlp", "1", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(repo, "digits", "1", "model.onnx"), b)
	writeFile(t, filepath.Join(repo, "digits", "config.yaml"), []byte(config))
	return repo
}

// monitoredDigits is digitsRepo with extraction monitoring on the model.
func monitoredDigits(t *testing.T) string {
	return digitsRepo(t, fmt.Sprintf("extraction:\n  input: input\n  label_output: label\n  reference: %s\n",
		filepath.Join(servertest.RepoRoot(t), "testdata", "extraction", "digits-reference.json")))
}

// heldoutDigits returns the held-out digits (64 features each).
func heldoutDigits(t *testing.T) [][]float64 {
	t.Helper()
	var held struct {
		Inputs [][]float64 `json:"inputs"`
	}
	hb, err := os.ReadFile(filepath.Join(servertest.RepoRoot(t), "testdata", "digits", "heldout.json"))
	if err != nil || json.Unmarshal(hb, &held) != nil {
		t.Fatal("held-out digits", err)
	}
	return held.Inputs
}

// digitsRow is an inference request for one digit, as JSON.
func digitsRow(row []float64) []byte {
	s := make([]string, len(row))
	for i, v := range row {
		s[i] = fmt.Sprint(v)
	}
	return []byte(`{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[` + strings.Join(s, ",") + `]}]}`)
}

// modelStatus is one model's part of GET /admin/v1/extraction/status.
type modelStatus struct {
	Model  string
	Alerts []struct {
		Subject string
		Action  string
	}
	Subjects []struct {
		Subject string
		Group   bool
		Groups  []string
		Queries int
		Risk    float64
	}
}

// extractionStatus asks the admin API for the monitoring status, which
// must cover one model, and returns that model's.
// scrape reads GET /admin/v1/metrics as an operator: each sample's value
// by its name and labels as written.
func scrape(t *testing.T, a *accessServer, hc *http.Client, operator string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest("GET", a.srv.HTTPURL+"/admin/v1/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", operator)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %s: %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func extractionStatus(t *testing.T, a *accessServer, hc *http.Client, operator string) modelStatus {
	t.Helper()
	o := a.rest(t, hc, "GET", "/admin/v1/extraction/status", operator, nil)
	if o.status != 200 {
		t.Fatalf("extraction status: %+v", o)
	}
	var st struct{ Models []modelStatus }
	if err := json.Unmarshal([]byte(o.msg), &st); err != nil || len(st.Models) != 1 {
		t.Fatalf("status %s: %v", o.msg, err)
	}
	return st.Models[0]
}
