package e2e

import (
	"context"
	"encoding/binary"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// TestGracefulShutdown stops the server while requests are running on both
// transports: every accepted request completes correctly, and the server
// accepts nothing afterwards.
func TestGracefulShutdown(t *testing.T) {
	cfg := servertest.Config(t, servertest.Models(t))
	cfg.Runtime.Concurrency = 1 // queue requests so some are in flight at the stop
	srv := servertest.Start(t, cfg)
	all := srv.Clients(t)
	clients := []servertest.Client{all[1], all[3]} // REST binary and gRPC raw: quick to encode

	const batch = 8192
	in := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{batch, 784}}
	for i := 0; i < batch*784; i++ {
		in.Data = binary.LittleEndian.AppendUint32(in.Data, math.Float32bits(float32(i%13)/13))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		for i := 0; i < 1; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Infer(context.Background(), &servertest.Request{Model: "mlp", Inputs: []tensor.Tensor{in}})
				if err == nil && (len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != batch*10*4) {
					t.Errorf("%s: incomplete response", c.Name())
				}
				errs <- err
			}()
		}
	}
	// Stop as soon as a request is inside the server. Every request the
	// server accepted must then complete; one it never accepted may only
	// fail to connect.
	deadline := time.Now().Add(30 * time.Second)
	var inside int64
	for inside == 0 && time.Now().Before(deadline) {
		inside = srv.InFlight()
		time.Sleep(50 * time.Microsecond)
	}
	if inside == 0 {
		t.Fatal("no request reached the server within 30s")
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "connection refused"):
			// Never accepted: dialled after the listener closed.
		default:
			t.Errorf("request failed during shutdown: %v", err)
		}
	}
	if int64(ok) < inside {
		t.Errorf("%d requests completed, but %d were in flight at the stop", ok, inside)
	}
	if _, err := http.Get(srv.HTTPURL + "/v2/health/live"); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}
