package e2e

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// TestFixturesMatchONNXRuntime runs every fixture model, every datatype,
// through every transport and encoding, and checks the outputs are exactly
// what ONNX Runtime returns when called directly.
func TestFixturesMatchONNXRuntime(t *testing.T) {
	srv := servertest.Start(t, servertest.Config(t, servertest.Models(t)))
	clients := srv.Clients(t)
	for _, model := range fixtureModels(t) {
		m, ok := srv.Registry.Get(model)
		if !ok {
			t.Errorf("fixture %s did not load", model)
			continue
		}
		v := m.Latest()
		for _, batch := range []int64{1, 3} {
			rng := rand.New(rand.NewPCG(uint64(batch), 7))
			var inputs []tensor.Tensor
			for _, spec := range v.Inputs() {
				inputs = append(inputs, randomTensor(rng, spec, batch))
			}
			want := inProcess(t, model, inputs)
			for _, c := range clients {
				t.Run(model+"/"+c.Name()+"/batch"+string(rune('0'+batch)), func(t *testing.T) {
					resp, err := c.Infer(context.Background(), &servertest.Request{Model: model, ID: "req-" + model, Inputs: inputs})
					if err != nil {
						t.Fatalf("infer: %v", err)
					}
					if resp.Model != model || resp.Version != "1" || resp.ID != "req-"+model {
						t.Errorf("got model %q version %q id %q, want %q 1 req-%s", resp.Model, resp.Version, resp.ID, model, model)
					}
					if len(resp.Outputs) != len(want) {
						t.Fatalf("got %d outputs, want %d", len(resp.Outputs), len(want))
					}
					for i := range want {
						if d := sameTensor(resp.Outputs[i], want[i]); d != "" {
							t.Error(d)
						}
					}
				})
			}
		}
	}
}
