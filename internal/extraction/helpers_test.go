package extraction

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/ood"
)

// Test data: the digits reference sample (training split), the held-out
// digits and the digits model's weights, from scripts/extraction/digits_data.py.

type digitsFile struct {
	Inputs [][]float64 `json:"inputs"`
	Labels []int       `json:"labels"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func rows32(in [][]float64) [][]float32 {
	out := make([][]float32, len(in))
	for i, r := range in {
		out[i] = make([]float32, len(r))
		for j, v := range r {
			out[i][j] = float32(v)
		}
	}
	return out
}

var fixtures struct {
	once      sync.Once
	reference [][]float32
	axes      [][]float32 // PrincipalAxes of reference
	heldout   [][]float32
	mlp       mlp
	ood       *ood.Model
	knnThresh float64
	err       error
}

type mlp struct {
	W1 [][]float64 `json:"W1"` // [64 inputs][64 hidden]
	B1 []float64   `json:"b1"`
	W2 [][]float64 `json:"W2"` // [64 hidden][10 classes]
	B2 []float64   `json:"b2"`
}

func loadFixtures(t testing.TB) {
	t.Helper()
	fixtures.once.Do(func() {
		var ref, held digitsFile
		readJSON(t, "extraction/digits-reference.json", &ref)
		readJSON(t, "digits/heldout.json", &held)
		readJSON(t, "extraction/digits-mlp.json", &fixtures.mlp)
		fixtures.reference = rows32(ref.Inputs)
		fixtures.heldout = rows32(held.Inputs)
		fixtures.ood, fixtures.err = ood.Load(filepath.Join("..", "..", "testdata", "extraction", "digits-ood.json"))
		if fixtures.err != nil {
			return
		}
		fixtures.knnThresh, fixtures.err = CalibrateKNN(fixtures.reference, 1, 0.001)
		if fixtures.err == nil {
			fixtures.axes, fixtures.err = PrincipalAxes(fixtures.reference, SearchAxes)
		}
	})
	if fixtures.err != nil {
		t.Fatal(fixtures.err)
	}
}

// hidden returns the model's hidden pre-activations for x.
func (m *mlp) hidden(x []float32) []float64 {
	h := make([]float64, len(m.B1))
	copy(h, m.B1)
	for i, v := range x {
		if v == 0 {
			continue
		}
		s := float64(v) / 16
		for j, w := range m.W1[i] {
			h[j] += s * w
		}
	}
	return h
}

// predict is the digits model's label for x.
func (m *mlp) predict(x []float32) int {
	h := m.hidden(x)
	best, arg := 0.0, -1
	for c := range m.B2 {
		z := m.B2[c]
		for j, v := range h {
			if v > 0 {
				z += v * m.W2[j][c]
			}
		}
		if arg < 0 || z > best {
			best, arg = z, c
		}
	}
	return arg
}

// gradSign is sign(∂ logit_c / ∂x), the direction of Jacobian-based
// augmentation.
func (m *mlp) gradSign(x []float32, c int) []float32 {
	h := m.hidden(x)
	g := make([]float32, len(x))
	for i := range x {
		var s float64
		for j, v := range h {
			if v > 0 {
				s += m.W1[i][j] * m.W2[j][c]
			}
		}
		switch {
		case s > 0:
			g[i] = 1
		case s < 0:
			g[i] = -1
		}
	}
	return g
}

// query is one input and the label the model gives it.
type query struct {
	x     []float32
	label int
}

func labelled(xs [][]float32) []query {
	qs := make([]query, len(xs))
	for i, x := range xs {
		qs[i] = query{x, fixtures.mlp.predict(x)}
	}
	return qs
}

// benignStream draws n held-out digits with replacement.
func benignStream(rng *rand.Rand, n int) []query {
	xs := make([][]float32, n)
	for i := range xs {
		xs[i] = fixtures.heldout[rng.IntN(len(fixtures.heldout))]
	}
	return labelled(xs)
}

// uniformStream is n vectors of 64 uniform integers 0..16: the queries of
// an equation-solving attack.
func uniformStream(rng *rand.Rand, n int) []query {
	xs := make([][]float32, n)
	for i := range xs {
		xs[i] = make([]float32, 64)
		for j := range xs[i] {
			xs[i][j] = float32(rng.IntN(17))
		}
	}
	return labelled(xs)
}

// jbdaStream is Papernot et al.'s Jacobian-based dataset augmentation as
// the attacker queries it: the seeds, then round after round every point
// so far moved by λ·sign(∇ logit of its label), clipped to 0..16, until n
// queries. λ=1.6 is the usual 0.1 on the model's 0..1 scale.
func jbdaStream(rng *rand.Rand, seeds, n int, lambda float32) []query {
	return jbda(rng, seeds, n, lambda, 0, false)
}

// jbdaPeriodicStream is jbdaStream with Papernot et al.'s periodic step:
// the step's sign flips every tau rounds, moving later points back towards
// the decision boundaries (and onto earlier points).
func jbdaPeriodicStream(rng *rand.Rand, seeds, n int, lambda float32, tau int) []query {
	return jbda(rng, seeds, n, lambda, tau, false)
}

// jbdaRequeryStream is jbdaStream by an attacker who labels the whole set
// again every round, old points included (exact repeats).
func jbdaRequeryStream(rng *rand.Rand, seeds, n int, lambda float32) []query {
	return jbda(rng, seeds, n, lambda, 0, true)
}

func jbda(rng *rand.Rand, seeds, n int, lambda float32, tau int, requery bool) []query {
	var set [][]float32
	for _, i := range rng.Perm(len(fixtures.heldout))[:seeds] {
		set = append(set, fixtures.heldout[i])
	}
	out := slicesClone(set)
	for round := 0; len(out) < n; round++ {
		step := lambda
		if tau > 0 && (round/tau)%2 == 1 {
			step = -step
		}
		var next [][]float32
		for _, x := range set {
			g := fixtures.mlp.gradSign(x, fixtures.mlp.predict(x))
			y := make([]float32, len(x))
			for i := range x {
				y[i] = min(max(x[i]+step*g[i], 0), 16)
			}
			next = append(next, y)
		}
		set = append(set, next...)
		if requery {
			out = append(out, set...)
		} else {
			out = append(out, next...)
		}
	}
	return labelled(out[:n])
}

func slicesClone(xs [][]float32) [][]float32 { return append([][]float32(nil), xs...) }

// testConfig is Default(64) calibrated on the digits reference sample, with
// a fake clock.
func testConfig(t testing.TB) Config {
	loadFixtures(t)
	cfg := Default(64)
	cfg.OOD = fixtures.ood
	cfg.KNN.Threshold = fixtures.knnThresh
	cfg.KNN.Axes = fixtures.axes
	cfg.SweepEvery = time.Hour
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg.Now = func() time.Time { return clock }
	return cfg
}

func newMonitor(t testing.TB, cfg Config) *Monitor {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	go func() {
		for range m.Alerts() {
		}
	}()
	return m
}

// firstFlagged feeds qs as principal (in groups) one at a time and returns
// the 1-based index of the first query after which Decision is at least
// ActionAlert, or 0.
func firstFlagged(m *Monitor, principal string, groups []string, qs []query) int {
	for i, q := range qs {
		m.Observe(principal, groups, q.x, q.label)
		m.Flush()
		if m.Decision(principal) >= ActionAlert {
			return i + 1
		}
	}
	return 0
}
