package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// fakeAdmin stands for a server with the admin endpoints the benchmark
// expects, to pin the interface: the JSON it reads and sends.
func fakeAdmin(t *testing.T, mux *http.ServeMux) *instance {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer operator-key" {
			http.Error(w, `{"error":"unauthenticated"}`, http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return &instance{url: ts.URL, client: ts.Client(), operator: "operator-key", audit: filepath.Join(t.TempDir(), "audit.log")}
}

// statusJSON is what the endpoint serves: internal/extraction's Alert and
// Status as they marshal, per model.
const statusJSON = `{"models":[{"model":"digits_mlp",
	"alerts":[
		{"time":"2026-11-22T10:00:00Z","subject":"key:a","group":false,"raised":["prada"],"risk":0.6,"action":"throttle","previous":"none",
		 "status":{"subject":"key:a","group":false,"queries":120,"risk":0.6,"action":"throttle","alarms":["prada"]}},
		{"time":"2026-11-22T10:00:01Z","subject":"net:127.0.0.0/24","group":true,"raised":["ood_rate"],"risk":0.6,"action":"throttle","previous":"none",
		 "status":{"subject":"net:127.0.0.0/24","group":true,"queries":400}}],
	"subjects":[
		{"subject":"key:a","group":false,"groups":["net:127.0.1.0/24"],"queries":300,"risk":0.6,"action":"throttle","alarms":["prada"],"prada":{"w":0.8}},
		{"subject":"key:b","group":false,"groups":["net:127.0.0.0/24"],"queries":200,"risk":0.1,"action":"none"},
		{"subject":"key:c","group":false,"groups":["net:127.0.0.0/24"],"queries":200,"risk":0.2,"action":"none"},
		{"subject":"net:127.0.0.0/24","group":true,"queries":400,"risk":0.6,"action":"throttle"}]}]}`

func TestExtractionStatusInterface(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/v1/extraction/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(statusJSON))
	})
	st, err := serverAlarms{fakeAdmin(t, mux)}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	al := st.alarms()
	if len(al) != 2 {
		t.Fatalf("got %d alarms, want 2", len(al))
	}
	if a := al[0]; !a.implicates("key:a") || a.aggregate || a.queries != 120 || a.detector != "prada" || a.model != "digits_mlp" || a.time.IsZero() {
		t.Errorf("principal alert read as %+v", a)
	}
	if a := al[1]; !a.aggregate || !a.implicates("key:b") || !a.implicates("key:c") || a.implicates("key:a") || a.queries != 400 {
		t.Errorf("group alert read as %+v: want it to implicate key:b and key:c (its members), not key:a", a)
	}
	if r, ok := st.risk("digits_mlp", []string{"key:b", "key:c"}); !ok || r != 0.2 {
		t.Errorf("risk of key:b, key:c: got %v %v, want 0.2", r, ok)
	}
	if _, ok := st.risk("digits_logreg", []string{"key:a"}); ok {
		t.Error("risk on a model the status does not list: got one")
	}
}

func TestAlarmsFromAuditLog(t *testing.T) {
	in := fakeAdmin(t, http.NewServeMux()) // no status endpoint: 404
	if _, err := (serverAlarms{in}).Status(context.Background()); !errors.Is(err, errUnsupported) {
		t.Fatalf("no endpoint, no audit log: got %v, want errUnsupported", err)
	}
	log := `{"type":"request","seq":1,"principal":"key:a","model":"digits_mlp","decision":"allow","rule":"role:client"}
{"type":"request","seq":2,"time":"2026-11-22T10:00:00.000000000Z","principal":"key:a","model":"digits_mlp","decision":"deny","rule":"extraction:block"}
{"type":"event","seq":3,"time":"2026-11-22T10:00:01.000000000Z","kind":"extraction-alarm","principal":"key:b","detail":"model digits_mlp: risk 0.60, action throttle (was none), raised [knn,ood_rate], 40 queries"}
`
	if err := os.WriteFile(in.audit, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := serverAlarms{in}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	al := st.alarms()
	if len(al) != 2 {
		t.Fatalf("got %d alarms from the audit log, want 2: %+v", len(al), al)
	}
	if a := al[0]; !a.implicates("key:a") || a.detector != "extraction:block" || a.action != "deny" || a.model != "digits_mlp" {
		t.Errorf("refused request read as %+v", a)
	}
	if a := al[1]; !a.implicates("key:b") || a.queries != 40 || a.detector != "knn+ood_rate" || a.model != "digits_mlp" || a.action != "throttle" {
		t.Errorf("alert record read as %+v", a)
	}
}

// constClassifier answers every input with one class.
type constClassifier int

func (c constClassifier) Predict([]float64) int { return int(c) }

// TestVerifyWatermark records marked pairs as the server does and checks
// the harness reads them back and tests suspects against them: one that
// reproduces the marks is identified, one that answers the true labels
// is not.
func TestVerifyWatermark(t *testing.T) {
	dir := t.TempDir()
	st, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := watermark.NewRecorder(st.DB(), watermark.RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		row := make([]byte, 4*64)
		binary.LittleEndian.PutUint32(row, math.Float32bits(float32(i)))
		in := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 64}, Data: row}
		principal := []string{"key:a", "key:b"}[i%2]
		rec.Record(principal, watermark.Pair{Model: "digits_mlp", Version: "1", Classes: 10, Label: 7, TrueLabel: 3,
			Inputs: []tensor.Tensor{in}, MAC: []byte{byte(i)}})
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	res, err := verifyWatermark(dir, "digits_mlp", []string{"key:a", "key:b"}, constClassifier(7), constClassifier(3))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Pairs != 40 || res[0].AgreeWatermark != 40 || res[0].Log2P > -64 {
		t.Errorf("suspect reproducing every mark: %+v, want 40 pairs, 40 agreements, p < 2^-64", res[0])
	}
	if res[1].AgreeWatermark != 0 || res[1].Log2P != 0 {
		t.Errorf("suspect answering the true labels: %+v, want no agreement and p = 1", res[1])
	}
	if _, err := verifyWatermark(dir, "digits_logreg", []string{"key:a"}, constClassifier(7)); !errors.Is(err, errNoPairs) {
		t.Errorf("no pairs for the model: got %v, want errNoPairs", err)
	}
}
