package e2e

import (
	"context"
	"encoding/binary"
	"math"
	"net/http"
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
	// Stop once both requests are inside the server: one running, one
	// queued behind it.
	deadline := time.Now().Add(20 * time.Second)
	for srv.InFlight() < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	if n := srv.InFlight(); n < 2 {
		t.Fatalf("only %d requests in flight; the test proves nothing", n)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("in-flight request failed during shutdown: %v", err)
		}
	}
	if _, err := http.Get(srv.HTTPURL + "/v2/health/live"); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}
