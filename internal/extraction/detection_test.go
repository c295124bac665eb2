package extraction

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// only returns testConfig with every detector but d disabled.
func only(t testing.TB, d Detector) Config {
	cfg := testConfig(t)
	cfg.PRADA.Disabled = d != DetectorPRADA
	cfg.KNN.Disabled = d != DetectorKNN
	cfg.OODRate.Disabled = d != DetectorOODRate
	return cfg
}

// TestBenignClientsNeverFlagged: 20 clients sending held-out digits, all in
// one network group, interleaved; no principal and not the group is ever
// flagged, by all detectors together and by each alone.
func TestBenignClientsNeverFlagged(t *testing.T) {
	loadFixtures(t)
	const clients, perClient = 20, 600
	for _, tc := range []struct {
		name string
		cfg  func() Config
	}{
		{"all detectors", func() Config { return testConfig(t) }},
		{"prada", func() Config { return only(t, DetectorPRADA) }},
		{"knn", func() Config { return only(t, DetectorKNN) }},
		{"ood rate", func() Config { return only(t, DetectorOODRate) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMonitor(t, tc.cfg())
			rng := rand.New(rand.NewPCG(7, 7))
			streams := make([][]query, clients)
			for c := range streams {
				streams[c] = benignStream(rng, perClient)
			}
			groups := []string{"net:127.0.0.0/24"}
			for i := range perClient {
				for c := range clients {
					p := fmt.Sprintf("key:benign-%02d", c)
					q := streams[c][i]
					m.Observe(p, groups, q.x, q.label)
				}
				m.Flush()
				for c := range clients {
					p := fmt.Sprintf("key:benign-%02d", c)
					if a := m.Decision(p); a != ActionNone {
						st, _ := m.Status(p, false)
						t.Fatalf("%s flagged (%v) after %d queries: %+v", p, a, i+1, st)
					}
				}
			}
			var minW, maxRisk float64 = 1, 0
			for _, st := range m.Snapshot() {
				minW = min(minW, st.PRADA.W)
				maxRisk = max(maxRisk, st.Risk)
				if len(st.Alarms) > 0 {
					t.Errorf("%s (group %v) has alarms %v", st.Subject, st.Group, st.Alarms)
				}
			}
			t.Logf("after %d queries from %d clients: lowest PRADA W %.4f, highest risk %.3f", perClient, clients, minW, maxRisk)
		})
	}
}

func TestAttacksFlagged(t *testing.T) {
	loadFixtures(t)
	tests := []struct {
		name   string
		cfg    func() Config
		stream func(*rand.Rand) []query
		within int
	}{
		{"uniform random, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return uniformStream(r, 300) }, 300},
		{"uniform random, ood rate", func() Config { return only(t, DetectorOODRate) }, func(r *rand.Rand) []query { return uniformStream(r, 300) }, 300},
		{"jacobian λ=1.6 10 seeds, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return jbdaStream(r, 10, 300, 1.6) }, 150},
		{"jacobian λ=1.6 10 seeds, prada", func() Config { return only(t, DetectorPRADA) }, func(r *rand.Rand) []query { return jbdaStream(r, 10, 300, 1.6) }, 170},
		{"jacobian λ=2 τ=3 25 seeds, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return jbdaPeriodicStream(r, 25, 400, 2, 3) }, 150},
		{"jacobian λ=2 τ=3 25 seeds, prada", func() Config { return only(t, DetectorPRADA) }, func(r *rand.Rand) []query { return jbdaPeriodicStream(r, 25, 400, 2, 3) }, 200},
		{"jacobian λ=2 τ=3 25 seeds, ood rate", func() Config { return only(t, DetectorOODRate) }, func(r *rand.Rand) []query { return jbdaPeriodicStream(r, 25, 400, 2, 3) }, 150},
		{"jacobian λ=1.6 10 seeds, ood rate", func() Config { return only(t, DetectorOODRate) }, func(r *rand.Rand) []query { return jbdaStream(r, 10, 300, 1.6) }, 150},
		{"jacobian λ=0.5 10 seeds, knn", func() Config { return only(t, DetectorKNN) }, func(r *rand.Rand) []query { return jbdaStream(r, 10, 300, 0.5) }, 150},
		{"jacobian λ=1.6 50 seeds, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return jbdaStream(r, 50, 300, 1.6) }, 150},
		{"jacobian λ=1.6 50 seeds, prada", func() Config { return only(t, DetectorPRADA) }, func(r *rand.Rand) []query { return jbdaStream(r, 50, 300, 1.6) }, 150},
		{"jacobian λ=1.6 10 seeds re-queried every round, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return jbdaRequeryStream(r, 10, 300, 1.6) }, 150},
		{"jacobian λ=1.6 100 seeds, all detectors", func() Config { return testConfig(t) }, func(r *rand.Rand) []query { return jbdaStream(r, 100, 300, 1.6) }, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var worst int
			for seed := range uint64(5) {
				m := newMonitor(t, tt.cfg())
				qs := tt.stream(rand.New(rand.NewPCG(seed, 99)))
				got := firstFlagged(m, "key:attacker", nil, qs)
				st, _ := m.Status("key:attacker", false)
				t.Logf("seed %d: flagged after %d queries, alarms %v, W %.4f, knn suspicious %d, ood rate %.2f", seed, got, st.Alarms, st.PRADA.W, st.KNN.Suspicious, st.OOD.Rate)
				if got == 0 || got > tt.within {
					t.Errorf("seed %d: flagged after %d queries, want within %d", seed, got, tt.within)
				}
				worst = max(worst, got)
			}
			t.Logf("worst: %d queries", worst)
		})
	}
}
