package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
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
{"type":"alert","seq":3,"time":"2026-11-22T10:00:01.000000000Z","model":"digits_mlp","subject":"key:b","group":false,"raised":["knn"],"action":"alert","status":{"queries":40}}
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
	if a := al[1]; !a.implicates("key:b") || a.queries != 40 || a.detector != "knn" {
		t.Errorf("alert record read as %+v", a)
	}
}

func TestWatermarkInterface(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/v1/watermark/verify", func(w http.ResponseWriter, r *http.Request) {
		var req VerifyRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "digits_mlp" || len(req.Inputs) != 2 || len(req.Labels) != 2 {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		w.Write([]byte(`{"p_value":1e-30,"log2_p_value":-99.7,"marked":100,"matched":99}`))
	})
	in := fakeAdmin(t, mux)
	res, err := serverWatermark{in}.Verify(context.Background(), "digits_mlp", [][]float64{make([]float64, 64), make([]float64, 64)}, []int{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.PValue != 1e-30 || res.Log2PValue != -99.7 || res.Marked != 100 || res.Matched != 99 {
		t.Errorf("got %+v", res)
	}
	if _, err := (serverWatermark{fakeAdmin(t, http.NewServeMux())}).Verify(context.Background(), "digits_mlp", nil, nil); !errors.Is(err, errUnsupported) {
		t.Errorf("no endpoint: got %v, want errUnsupported", err)
	}
}
