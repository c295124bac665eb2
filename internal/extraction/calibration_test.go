package extraction

import (
	"flag"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var (
	calibrate      = flag.Bool("calibrate", false, "run the long calibration of PRADA's δ and the kNN alarm count (docs/extraction-detection.md)")
	calibrateDelta = flag.Float64("calibrate-delta", 0, "with -calibrate: try this δ instead of the default")
)

// pradaTrace runs PRADA alone over qs and returns each test's W with the
// 1-based query after which it was computed.
func pradaTrace(cfg *PRADAConfig, qs []query) (ws []float64, at []int) {
	var s pradaState
	var sw swScratch
	pool := make([]float64, 0, cfg.Window)
	for i, q := range qs {
		if r := s.observe(q.x, q.label, cfg, 64, &sw, pool); r.tested {
			ws = append(ws, r.w)
			at = append(at, i+1)
		}
	}
	return ws, at
}

// persistentMin is the lowest value, over the tests, of the largest W of
// `persist` consecutive tests: the alarm fires iff it is below δ.
func persistentMin(ws []float64, persist int) float64 {
	m := 1.0
	for i := persist - 1; i < len(ws); i++ {
		m = min(m, slices.Max(ws[i-persist+1:i+1]))
	}
	return m
}

// firstAlarm is the query after which persist consecutive tests were below
// delta, or 0.
func firstAlarm(ws []float64, at []int, delta float64, persist int) int {
	run := 0
	for i, w := range ws {
		if w < delta {
			run++
		} else {
			run = 0
		}
		if run >= persist {
			return at[i]
		}
	}
	return 0
}

// knnTrace runs the kNN detector alone and returns the most suspicious
// queries ever in its window.
func knnTrace(cfg *KNNConfig, qs []query) int {
	var s knnState
	best := make([]float32, cfg.K)
	most := 0
	for _, q := range qs {
		s.observe(q.x, keyOf(q.x, nil), cfg, 64, best)
		most = max(most, s.win.yes)
	}
	return most
}

// benignStreams are the calibration's benign clients: held-out and
// reference digits, drawn with replacement or as a permutation, of several
// lengths, and mixtures of many clients (what a group sees).
func benignStreams(rng *rand.Rand, n int) [][]query {
	var out [][]query
	for i := range n {
		src := fixtures.heldout
		if i%2 == 1 {
			src = fixtures.reference
		}
		length := []int{150, 300, 600, 1500}[i%4]
		xs := make([][]float32, length)
		if i%3 == 0 {
			for j, k := range rng.Perm(len(src)) {
				if j == length {
					break
				}
				xs[j] = src[k]
			}
			xs = slices.DeleteFunc(xs, func(x []float32) bool { return x == nil })
		} else {
			for j := range xs {
				xs[j] = src[rng.IntN(len(src))]
			}
		}
		out = append(out, labelled(xs))
	}
	return out
}

// TestCalibrationPRADA: benign streams stay above δ; the Jacobian streams
// fall below it at their first or second test.
func TestCalibrationPRADA(t *testing.T) {
	loadFixtures(t)
	cfg := testConfig(t).PRADA
	streams := 40
	if raceEnabled {
		streams = 12
	}
	if *calibrate {
		streams = 5000
		if *calibrateDelta > 0 {
			cfg.Delta = *calibrateDelta
		}
	}
	rng := rand.New(rand.NewPCG(11, 11))
	benign := benignStreams(rng, streams)
	for _, persist := range []int{1, 2, 3} {
		var mins []float64
		for _, qs := range benign {
			ws, _ := pradaTrace(&cfg, qs)
			mins = append(mins, persistentMin(ws, persist))
		}
		slices.Sort(mins)
		t.Logf("benign, %d consecutive tests: %d streams, lowest W per stream: min %.4f, 0.1%% %.4f, 1%% %.4f, 5%% %.4f, median %.4f",
			persist, len(mins), mins[0], quantile(mins, 0.001), quantile(mins, 0.01), quantile(mins, 0.05), quantile(mins, 0.5))
		below := 0
		for _, w := range mins {
			if w < cfg.Delta {
				below++
			}
		}
		t.Logf("  %d of %d benign streams below δ %.3f", below, len(mins), cfg.Delta)
		if persist == cfg.Persist && below > 0 && !*calibrate {
			t.Errorf("a benign stream reached W %.4f < δ %.3f on %d consecutive tests", mins[0], cfg.Delta, persist)
		}
	}
	for _, a := range []struct {
		name string
		gen  func(*rand.Rand) []query
	}{
		{"jacobian λ=1.6 10 seeds", func(r *rand.Rand) []query { return jbdaStream(r, 10, 400, 1.6) }},
		{"jacobian λ=2 τ=3 25 seeds", func(r *rand.Rand) []query { return jbdaPeriodicStream(r, 25, 400, 2, 3) }},
		{"jacobian λ=1.6 50 seeds", func(r *rand.Rand) []query { return jbdaStream(r, 50, 400, 1.6) }},
		{"uniform random", func(r *rand.Rand) []query { return uniformStream(r, 400) }},
	} {
		var firsts []int
		for seed := range uint64(20) {
			ws, at := pradaTrace(&cfg, a.gen(rand.New(rand.NewPCG(seed, 5))))
			firsts = append(firsts, firstAlarm(ws, at, cfg.Delta, cfg.Persist))
		}
		t.Logf("%s: alarm (δ %.3f, %d consecutive) after queries %v", a.name, cfg.Delta, cfg.Persist, firsts)
	}
}

// TestCalibrationKNN: benign streams never put AlarmCount suspicious
// queries in one window.
func TestCalibrationKNN(t *testing.T) {
	loadFixtures(t)
	cfg := testConfig(t).KNN
	streams := 40
	if *calibrate {
		streams = 400
	}
	rng := rand.New(rand.NewPCG(12, 12))
	most := 0
	for _, qs := range benignStreams(rng, streams) {
		most = max(most, knnTrace(&cfg, qs))
	}
	t.Logf("benign: %d streams, most suspicious queries in a window of %d: %d (alarm at %d; threshold %.3f)",
		streams, cfg.Window, most, cfg.AlarmCount, cfg.Threshold)
	if most >= cfg.AlarmCount {
		t.Errorf("a benign stream had %d suspicious queries in a window, alarm count %d", most, cfg.AlarmCount)
	}
	if *calibrate {
		// Why k = 1: the share of small-step queries below each k's own
		// benign 0.1% threshold.
		for _, k := range []int{1, 3, 5, 10} {
			kc := cfg
			kc.K = k
			th, err := CalibrateKNN(fixtures.reference, k, 0.001)
			if err != nil {
				t.Fatal(err)
			}
			kc.Threshold = th
			below, scored := 0, 0
			for seed := range uint64(10) {
				var s knnState
				best := make([]float32, k)
				for _, q := range jbdaStream(rand.New(rand.NewPCG(seed, 6)), 10, 300, 0.5) {
					if r := s.observe(q.x, keyOf(q.x, nil), &kc, 64, best); r.scored {
						scored++
						if r.dist < th {
							below++
						}
					}
				}
			}
			t.Logf("k=%d: threshold %.2f; jacobian λ=0.5: %.0f%% of scored queries below it", k, th, 100*float64(below)/float64(scored))
		}
	}
	for _, lambda := range []float32{0.25, 0.5, 1, 1.6} {
		counts := 0
		for seed := range uint64(10) {
			counts += knnTrace(&cfg, jbdaStream(rand.New(rand.NewPCG(seed, 6)), 10, 150, lambda))
		}
		t.Logf("jacobian λ=%.2f 10 seeds, 150 queries: on average %.1f suspicious in the window", lambda, float64(counts)/10)
	}
}

func quantile(sorted []float64, q float64) float64 {
	return sorted[int(math.Floor(q*float64(len(sorted)-1)))]
}

// TestCalibrationOODRate: benign streams never come near the binomial
// alarm count; the margin is reported.
func TestCalibrationOODRate(t *testing.T) {
	loadFixtures(t)
	cfg := testConfig(t)
	kmin := binomialAlarmCounts(cfg.OODRate.Window, cfg.OODRate.BaseRate, cfg.OODRate.Alpha)
	streams := 40
	if *calibrate {
		streams = 2000
	}
	rng := rand.New(rand.NewPCG(13, 13))
	worst, flagged, total := 0.0, 0, 0
	for _, qs := range benignStreams(rng, streams) {
		var s oodRateState
		for _, q := range qs {
			o := cfg.OOD.OOD(q.x)
			s.win.add(o, cfg.OODRate.Window)
			total++
			if o {
				flagged++
			}
			if s.win.count >= cfg.OODRate.MinQueries {
				worst = max(worst, float64(s.win.yes)/float64(kmin[s.win.count]))
			}
			if s.alarm(&cfg.OODRate, kmin) {
				t.Errorf("benign stream alarmed: %d of %d out of distribution", s.win.yes, s.win.count)
				break
			}
		}
	}
	t.Logf("benign: %d streams, %d queries, %.2f%% out of distribution; closest approach to the alarm count: %.0f%% of it (alarm at %d of %d)",
		streams, total, 100*float64(flagged)/float64(total), 100*worst, kmin[cfg.OODRate.Window], cfg.OODRate.Window)
}
