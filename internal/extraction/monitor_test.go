package extraction

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConcurrentObserve(t *testing.T) {
	cfg := testConfig(t)
	cfg.QueueSize = 64 // small, so that some observations are dropped
	m := newMonitor(t, cfg)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for p := range 4 {
				m.Decision(fmt.Sprintf("key:%d", p))
				m.Status(fmt.Sprintf("key:%d", p), false)
			}
			m.Snapshot()
			m.Stats()
		}
	}()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 0))
			qs := benignStream(rng, each)
			groups := []string{"tenant:a", NetGroup(netip.MustParseAddr("127.0.0.1"))}
			for i, q := range qs {
				m.Observe(fmt.Sprintf("key:%d", (w+i)%4), groups, q.x, q.label)
				if i%100 == 0 {
					m.Reset(fmt.Sprintf("key:%d", w%4), false)
				}
			}
		}()
	}
	wg.Wait()
	m.Flush()
	close(stop)
	readers.Wait()
	s := m.Stats()
	if s.Observed+s.Dropped != writers*each {
		t.Errorf("observed %d + dropped %d, want %d", s.Observed, s.Dropped, writers*each)
	}
	t.Logf("stats %+v", s)
}

func TestObserveRejectsAndDrops(t *testing.T) {
	m := newMonitor(t, testConfig(t))
	m.Observe("key:a", nil, make([]float32, 63), 1)
	m.ObserveBatch("key:a", nil, make([]float32, 64*3), []int{1, 2})
	m.ObserveBatch("key:a", nil, make([]float32, 64*2), []int{1, 2})
	m.Flush()
	if s := m.Stats(); s.Rejected != 3 || s.Observed != 2 {
		t.Errorf("stats %+v, want 3 rejected and 2 observed", s)
	}
	m.Close()
	m.Observe("key:a", nil, make([]float32, 64), 1)
	if s := m.Stats(); s.Dropped != 1 {
		t.Errorf("after Close: dropped %d, want 1", s.Dropped)
	}
	m.Flush() // returns at once after Close
	m.Close() // twice is fine
}

// TestAlarmLatchAndReset: an alarm holds for LatchFor after its condition
// was last met, even through benign queries, and Reset clears it at once.
func TestAlarmLatchAndReset(t *testing.T) {
	cfg := testConfig(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg.LatchFor = time.Hour
	m := newMonitor(t, cfg)
	rng := rand.New(rand.NewPCG(1, 1))
	if got := firstFlagged(m, "key:x", nil, uniformStream(rng, 50)); got == 0 {
		t.Fatal("uniform stream not flagged")
	}
	alerts := 0
	// Benign queries flush the OOD window: the condition ends, the latch holds.
	for _, q := range benignStream(rng, 200) {
		m.Observe("key:x", nil, q.x, q.label)
	}
	m.Flush()
	if a := m.Decision("key:x"); a < ActionAlert {
		t.Errorf("within LatchFor: Decision %v, want at least alert", a)
	}
	advance(2 * time.Hour)
	q := benignStream(rng, 1)[0]
	m.Observe("key:x", nil, q.x, q.label)
	m.Flush()
	if a := m.Decision("key:x"); a != ActionNone {
		st, _ := m.Status("key:x", false)
		t.Errorf("after LatchFor: Decision %v, want none (%+v)", a, st)
	}
	_ = alerts

	// Reset forgets at once.
	if got := firstFlagged(m, "key:y", nil, uniformStream(rng, 50)); got == 0 {
		t.Fatal("uniform stream not flagged")
	}
	m.Reset("key:y", false)
	if a := m.Decision("key:y"); a != ActionNone {
		t.Errorf("after Reset: Decision %v, want none", a)
	}
	if _, ok := m.Status("key:y", false); ok {
		t.Error("after Reset: Status still found")
	}
}

func TestAlerts(t *testing.T) {
	cfg := testConfig(t)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	for _, q := range uniformStream(rng, 30) {
		m.Observe("key:eq", []string{"tenant:t"}, q.x, q.label)
	}
	m.Flush()
	var got []Alert
	for len(m.Alerts()) > 0 {
		got = append(got, <-m.Alerts())
	}
	subjects := map[string]Alert{}
	for _, a := range got {
		if _, seen := subjects[a.Subject]; !seen {
			subjects[a.Subject] = a
		}
	}
	for _, want := range []struct {
		name  string
		group bool
	}{{"key:eq", false}, {"tenant:t", true}} {
		a, ok := subjects[want.name]
		if !ok {
			t.Errorf("no alert for %s in %d alerts", want.name, len(got))
			continue
		}
		if a.Group != want.group || len(a.Raised) != 1 || a.Raised[0] != DetectorOODRate || a.Action != ActionThrottle || a.Previous != ActionNone {
			t.Errorf("first alert for %s: %+v, want ood_rate raised, none → throttle", want.name, a)
		}
	}
}

// TestEvictsIdleSubjects: at MaxSubjects, the least recently seen subject
// without an action makes room; flagged ones are kept.
func TestEvictsIdleSubjects(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSubjects = 3
	m := newMonitor(t, cfg)
	rng := rand.New(rand.NewPCG(3, 3))
	if firstFlagged(m, "key:bad", nil, uniformStream(rng, 30)) == 0 {
		t.Fatal("not flagged")
	}
	for _, p := range []string{"key:a", "key:b", "key:c", "key:d"} {
		q := benignStream(rng, 1)[0]
		m.Observe(p, nil, q.x, q.label)
		m.Flush()
	}
	if _, ok := m.Status("key:bad", false); !ok {
		t.Error("flagged subject was evicted")
	}
	if _, ok := m.Status("key:a", false); ok {
		t.Error("key:a still tracked, want evicted")
	}
	if s := m.Stats(); s.Subjects != 3 || s.Evicted != 2 {
		t.Errorf("stats %+v, want 3 subjects, 2 evicted", s)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"dim", func(c *Config) { c.Dim = 0 }, "dim"},
		{"delta", func(c *Config) { c.PRADA.Delta = 1 }, "prada.delta"},
		{"window above 5000", func(c *Config) { c.PRADA.Window = 6000 }, "prada.window"},
		{"min distances", func(c *Config) { c.PRADA.MinDistances = 2 }, "prada.min_distances"},
		{"knn threshold uncalibrated", func(c *Config) { c.KNN.Threshold = 0 }, "knn.threshold"},
		{"knn window", func(c *Config) { c.KNN.Window = 1000 }, "knn.window"},
		{"knn alarm count", func(c *Config) { c.KNN.AlarmCount = 0 }, "knn.alarm_count"},
		{"ood missing", func(c *Config) { c.OOD = nil }, "ood"},
		{"ood base rate", func(c *Config) { c.OODRate.BaseRate = 0 }, "ood_rate.base_rate"},
		{"ood alpha", func(c *Config) { c.OODRate.Alpha = 1 }, "ood_rate.alpha"},
		{"no detectors", func(c *Config) { c.PRADA.Disabled, c.KNN.Disabled, c.OODRate.Disabled = true, true, true }, "detectors"},
		{"zero policy", func(c *Config) { c.Policy = Policy{} }, "policy.alert"},
		{"queue", func(c *Config) { c.QueueSize = 0 }, "queue_size"},
		{"memory", func(c *Config) { c.KNN.History = 5000 }, "max_bytes_per_subject"},
		{"latch", func(c *Config) { c.LatchFor = -time.Second }, "latch_for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.edit(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field+" ") {
				t.Errorf("got %v, want ErrConfig naming %s", err, tt.field)
			}
		})
	}
	cfg := testConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Errorf("testConfig: %v", err)
	}
}

func TestPolicyAndRisk(t *testing.T) {
	p := DefaultPolicy()
	one := [numDetectors]bool{true}
	two := [numDetectors]bool{true, true}
	three := [numDetectors]bool{true, true, true}
	tests := []struct {
		name     string
		alarms   [numDetectors]bool
		progress [numDetectors]float64
		risk     float64
		action   Action
	}{
		{"quiet", [numDetectors]bool{}, [numDetectors]float64{}, 0, ActionNone},
		{"benign PRADA W 0.97", [numDetectors]bool{}, [numDetectors]float64{0.375, 0, 0.1}, 1 - (1-0.09)*(1-0.024), ActionNone},
		{"all three at the brink", [numDetectors]bool{}, [numDetectors]float64{1, 1, 1}, 1 - math.Pow(0.76, 3), ActionAlert},
		{"one alarm", one, [numDetectors]float64{}, 0.6, ActionThrottle},
		{"two alarms", two, [numDetectors]float64{}, 0.84, ActionDegrade},
		{"three alarms", three, [numDetectors]float64{}, 0.936, ActionBlock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Risk(tt.alarms, tt.progress)
			if math.Abs(r-tt.risk) > 1e-12 {
				t.Errorf("Risk = %v, want %v", r, tt.risk)
			}
			if a := p.Action(r); a != tt.action {
				t.Errorf("Action(%v) = %v, want %v", r, a, tt.action)
			}
		})
	}
	if a := (Policy{}).Action(0); a != ActionBlock {
		t.Errorf("zero Policy: Action(0) = %v, want block (fail closed)", a)
	}
	if got := Action(9).String(); got != "action(9)" {
		t.Errorf("Action(9).String() = %q", got)
	}
}

func TestOutcomesRing(t *testing.T) {
	var o outcomes
	rng := rand.New(rand.NewPCG(4, 4))
	var hist []bool
	const window = 100
	for range 1000 {
		v := rng.IntN(3) == 0
		o.add(v, window)
		hist = append(hist, v)
		want := 0
		for _, h := range hist[max(0, len(hist)-window):] {
			if h {
				want++
			}
		}
		if o.yes != want || o.recount() != want || o.count != min(len(hist), window) {
			t.Fatalf("after %d: yes %d (bits %d), count %d; want %d, %d", len(hist), o.yes, o.recount(), o.count, want, min(len(hist), window))
		}
	}
}

// TestBinomialAlarmCounts against scipy.stats.binom.sf: the smallest k with
// P(X ≥ k) ≤ 1e-9 for X ~ Binomial(n, 0.03).
func TestBinomialAlarmCounts(t *testing.T) {
	k := binomialAlarmCounts(128, 0.03, 1e-9)
	for n, want := range map[int]int{1: 2, 5: 6, 10: 8, 20: 10, 64: 15, 128: 21} {
		if k[n] != want {
			t.Errorf("kmin[%d] = %d, want %d", n, k[n], want)
		}
	}
}

func TestNetGroup(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.77":        "net:203.0.113.0/24",
		"::ffff:203.0.113.77": "net:203.0.113.0/24",
		"2001:db8:1:2::7":     "net:2001:db8:1::/48",
	} {
		if got := NetGroup(netip.MustParseAddr(in)); got != want {
			t.Errorf("NetGroup(%s) = %s, want %s", in, got, want)
		}
	}
	if got := NetGroup(netip.Addr{}); got != "net:invalid" {
		t.Errorf("NetGroup(zero) = %s", got)
	}
}

func TestCalibrateKNN(t *testing.T) {
	loadFixtures(t)
	t.Logf("k=1 threshold at the 0.1%% quantile of the reference sample's nearest-neighbour distances: %.3f", fixtures.knnThresh)
	if fixtures.knnThresh < 5 || fixtures.knnThresh > 12 {
		t.Errorf("threshold %.3f, want between 5 and 12 (digits' nearest neighbours are 10..25 apart)", fixtures.knnThresh)
	}
	if _, err := CalibrateKNN(fixtures.reference[:1], 1, 0.001); !errors.Is(err, ErrConfig) {
		t.Errorf("one sample: got %v, want ErrConfig", err)
	}
}

// TestGroupResetRejoins: after a group is reset, its members' next
// observations reach a fresh group that Status can see.
func TestGroupResetRejoins(t *testing.T) {
	m := newMonitor(t, testConfig(t))
	rng := rand.New(rand.NewPCG(5, 5))
	qs := benignStream(rng, 2)
	m.Observe("key:a", []string{"tenant:t"}, qs[0].x, qs[0].label)
	m.Flush()
	m.Reset("tenant:t", true)
	if _, ok := m.Status("tenant:t", true); ok {
		t.Fatal("group still tracked after Reset")
	}
	m.Observe("key:a", []string{"tenant:t"}, qs[1].x, qs[1].label)
	m.Flush()
	st, ok := m.Status("tenant:t", true)
	if !ok || st.Queries != 1 {
		t.Errorf("group after rejoining: %+v (found %v), want 1 query", st, ok)
	}
}

// TestObserveEncodedIsObserveBatch: rows and labels handed over as a
// model's tensor bytes make the same observations as decoded ones, and
// malformed lengths are rejected.
func TestObserveEncodedIsObserveBatch(t *testing.T) {
	qs := benignStream(rand.New(rand.NewPCG(3, 3)), 300)
	decoded, encoded := newMonitor(t, testConfig(t)), newMonitor(t, testConfig(t))
	groups := []string{"tenant:a"}
	for i := 0; i < len(qs); i += 3 {
		var rows []float32
		var labels []int
		var rowBytes, labelBytes []byte
		for _, q := range qs[i:min(i+3, len(qs))] {
			rows = append(rows, q.x...)
			labels = append(labels, q.label)
			for _, v := range q.x {
				rowBytes = binary.LittleEndian.AppendUint32(rowBytes, math.Float32bits(v))
			}
			labelBytes = binary.LittleEndian.AppendUint64(labelBytes, uint64(q.label))
		}
		decoded.ObserveBatch("key:a", groups, rows, labels)
		encoded.ObserveEncoded("key:a", groups, rowBytes, labelBytes)
	}
	decoded.Flush()
	encoded.Flush()
	for _, who := range []struct {
		name  string
		group bool
	}{{"key:a", false}, {"tenant:a", true}} {
		a, okA := decoded.Status(who.name, who.group)
		b, okB := encoded.Status(who.name, who.group)
		if !okA || !okB || !reflect.DeepEqual(a, b) {
			t.Errorf("%s: decoded %+v (%v), encoded %+v (%v)", who.name, a, okA, b, okB)
		}
		if a.Queries != uint64(len(qs)) {
			t.Errorf("%s: %d queries, want %d", who.name, a.Queries, len(qs))
		}
	}
	encoded.ObserveEncoded("key:b", nil, make([]byte, 64*4*2), make([]byte, 8*3)) // 2 rows, 3 labels
	encoded.ObserveEncoded("key:b", nil, make([]byte, 64*4), make([]byte, 7))     // a label cut short
	encoded.Flush()
	if s := encoded.Stats(); s.Rejected != 4 {
		t.Errorf("%d rejected, want 4 (3 rows and 1)", s.Rejected)
	}
}
