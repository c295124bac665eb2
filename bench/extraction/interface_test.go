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

func TestExtractionStatusInterface(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/v1/extraction/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"alarms":[
			{"time":"2026-11-22T10:00:00Z","model":"digits_mlp","detector":"prada","scope":"principal","principal":"key:a","queries":120,"action":"alarm","score":0.97},
			{"time":"2026-11-22T10:00:01Z","model":"digits_mlp","detector":"aggregate","scope":"aggregate","principals":["key:b","key:c"],"queries":400,"action":"throttle"}],
			"principals":[{"principal":"key:a","model":"digits_mlp","queries":300,"risk":0.9,"flagged":true}]}`))
	})
	st, err := serverAlarms{fakeAdmin(t, mux)}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Alarms) != 2 || len(st.Principals) != 1 {
		t.Fatalf("got %d alarms and %d principals, want 2 and 1", len(st.Alarms), len(st.Principals))
	}
	if a := st.Alarms[0]; a.Principal != "key:a" || a.Queries != 120 || a.Detector != "prada" || a.Time.IsZero() {
		t.Errorf("first alarm decoded as %+v", a)
	}
	if a := st.Alarms[1]; !a.implicates("key:c") || a.implicates("key:a") || a.Scope != "aggregate" {
		t.Errorf("aggregate alarm %+v: implicates key:c %v, key:a %v; want true, false", a, a.implicates("key:c"), a.implicates("key:a"))
	}
	if p := st.Principals[0]; p.Risk != 0.9 || !p.Flagged {
		t.Errorf("principal decoded as %+v", p)
	}
}

func TestAlarmsFromAuditLog(t *testing.T) {
	in := fakeAdmin(t, http.NewServeMux()) // no status endpoint: 404
	if _, err := (serverAlarms{in}).Status(context.Background()); !errors.Is(err, errUnsupported) {
		t.Fatalf("no endpoint, no audit log: got %v, want errUnsupported", err)
	}
	log := `{"type":"request","seq":1,"principal":"key:a","model":"digits_mlp","decision":"allow","rule":"role:client"}
{"type":"request","seq":2,"time":"2026-11-22T10:00:00.000000000Z","principal":"key:a","model":"digits_mlp","decision":"deny","rule":"extraction:prada"}
{"type":"alarm","seq":3,"time":"2026-11-22T10:00:01.000000000Z","model":"digits_mlp","detector":"aggregate","scope":"aggregate","principals":["key:b"],"queries":40,"action":"alarm"}
`
	if err := os.WriteFile(in.audit, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := serverAlarms{in}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Alarms) != 2 {
		t.Fatalf("got %d alarms from the audit log, want 2: %+v", len(st.Alarms), st.Alarms)
	}
	if a := st.Alarms[0]; a.Principal != "key:a" || a.Detector != "extraction:prada" || a.Action != "deny" {
		t.Errorf("refused request read as %+v", a)
	}
	if a := st.Alarms[1]; !a.implicates("key:b") || a.Queries != 40 {
		t.Errorf("alarm record read as %+v", a)
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
