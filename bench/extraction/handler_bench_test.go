package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// BenchmarkHandler is the overhead table's in-process column as a Go
// benchmark, for profiling: one single-row REST JSON request to the
// digits model handed to the HTTP handler of a real server under each
// policy (rate limits unthrottled, as in the table), without TLS or the
// network. Compare each policy's ns/op with raw's from the same run:
//
//	go test ./bench/extraction -run XXX -bench Handler -benchtime 100000x
//	go test ./bench/extraction -run XXX -bench Handler/hardened -cpuprofile cpu.out
func BenchmarkHandler(b *testing.B) {
	root := servertest.RepoRoot(b)
	h, err := loadHeldout(root)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := newServers(b.TempDir(), root, servertest.LibraryPath(b), false)
	if err != nil {
		b.Fatal(err)
	}
	policies, err := loadPolicies("", root, []string{"raw", "limits", "monitor", "harden", "watermark", "hardened"})
	if err != nil {
		b.Fatal(err)
	}
	// Bodies made once: the benchmark times the handler, not the client.
	bodies := make([][]byte, len(h.Inputs))
	for i, x := range h.Inputs {
		if bodies[i], err = json.Marshal(map[string]any{"inputs": []restTensor{{
			Name: "input", Shape: []int64{1, attack.Dim}, Datatype: "FP32", Data: x}}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range policies {
		b.Run(p.name, func(b *testing.B) {
			in, err := srv.start(p, unthrottled)
			if err != nil {
				b.Fatal(err)
			}
			defer in.stop()
			c, err := in.newClient("bench")
			if err != nil {
				b.Fatal(err)
			}
			handler := in.srv.HTTPHandler()
			serve := func(i int) {
				req := httptest.NewRequest(http.MethodPost, "/v2/models/"+overheadModel+"/infer", bytes.NewReader(bodies[i%len(bodies)]))
				req.RemoteAddr = "127.0.0.1:40000"
				req.Header.Set("Authorization", "Bearer "+c.key)
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				handler.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			for i := range 200 { // warm up: caches, pools, the monitor's first use
				serve(i)
			}
			b.ResetTimer()
			for i := range b.N {
				serve(i)
			}
		})
	}
}
