package extraction

import (
	"math/rand/v2"
	"testing"
)

// TestStateBoundedPerPrincipal fills one principal (and its group) with
// 100,000 queries over 10 classes and checks the state by accounting.
func TestStateBoundedPerPrincipal(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 1 << 17
	if b := cfg.SubjectBytesBound(); b > MiB {
		t.Fatalf("SubjectBytesBound %d > 1 MiB", b)
	}
	m := newMonitor(t, cfg)
	rng := rand.New(rand.NewPCG(1, 1))
	n := 100_000
	if testing.Short() || raceEnabled {
		n = 5_000 // every ring is full after about 2,000
	}
	x := make([]float32, 64)
	for i := range n {
		for j := range x {
			x[j] = float32(rng.IntN(17))
		}
		m.Observe("key:heavy", []string{"tenant:t"}, x, i%10)
	}
	m.Flush()
	if s := m.Stats(); s.Dropped != 0 || s.Observed != uint64(n) {
		t.Fatalf("stats %+v, want %d observed and none dropped", s, n)
	}
	for _, who := range []struct {
		name  string
		group bool
	}{{"key:heavy", false}, {"tenant:t", true}} {
		st, ok := m.Status(who.name, who.group)
		if !ok {
			t.Fatalf("no status for %s", who.name)
		}
		t.Logf("%s after %d queries: %d bytes (bound %d): knn history %d, prada stored %d, |D| %d",
			who.name, st.Queries, st.StateBytes, cfg.SubjectBytesBound(), st.KNN.History, st.PRADA.Stored, st.PRADA.Distances)
		if st.StateBytes > cfg.SubjectBytesBound() || st.StateBytes > MiB {
			t.Errorf("%s holds %d bytes, want at most %d and 1 MiB", who.name, st.StateBytes, cfg.SubjectBytesBound())
		}
	}
}

// TestDefaultFitsBudget: Default stays within 1 MiB per subject for inputs
// from 1 to 4,096 features, with many classes.
func TestDefaultFitsBudget(t *testing.T) {
	for _, dim := range []int{1, 64, 784, 3072, 4096} {
		cfg := Default(dim)
		cfg.OODRate.Disabled = true
		cfg.KNN.Threshold = 1
		if err := cfg.Validate(); err != nil {
			t.Errorf("dim %d: %v", dim, err)
		}
		if b := cfg.SubjectBytesBound(); b > MiB {
			t.Errorf("dim %d: bound %d bytes", dim, b)
		}
	}
}
