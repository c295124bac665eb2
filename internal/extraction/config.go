package extraction

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/aegis-inference/aegis/internal/ood"
)

// Config configures a Monitor: one Monitor watches the queries of one model,
// whose inputs are vectors of Dim features. Start from Default, set the
// calibrated values (KNN.Threshold, OOD), and Validate.
type Config struct {
	// Dim is the number of features of one input row.
	Dim int
	// OOD scores inputs for the out-of-distribution rate detector, fitted
	// from the model's reference sample (internal/ood). Required unless
	// OODRate.Disabled.
	OOD *ood.Model

	PRADA   PRADAConfig
	KNN     KNNConfig
	OODRate OODRateConfig
	Policy  Policy

	// QueueSize is how many observations may wait for the worker; Observe
	// drops (and counts) beyond it rather than block the request.
	QueueSize int
	// AlertBuffer is how many alerts may wait on Alerts(); more are dropped
	// and counted.
	AlertBuffer int
	// MaxSubjects bounds the principals and groups tracked at once. When it
	// is reached, the subject seen least recently whose action is none is
	// forgotten to make room.
	MaxSubjects int
	// MaxBytesPerSubject bounds the state of one principal or group; Validate
	// checks the bound the other fields imply against it.
	MaxBytesPerSubject int
	// LatchFor is how long a detector's alarm holds after its condition was
	// last met; 0 holds it until Reset.
	LatchFor time.Duration
	// SweepEvery is how often idle subjects' latches are re-evaluated.
	SweepEvery time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// PRADAConfig configures PRADA (Juuti et al., EuroS&P 2019).
type PRADAConfig struct {
	Disabled bool
	// Delta: the alarm is raised when the Shapiro–Wilk W of the pooled
	// minimum distances falls below it.
	Delta float64
	// Persist: the alarm needs W < Delta on this many consecutive tests
	// (1 is the paper's rule).
	Persist int
	// MinDistances: W is tested once the pool holds more than this many.
	MinDistances int
	// TestEvery: W is tested every this many new distances.
	TestEvery int
	// OutlierSigma: distances further than this many standard deviations
	// from the pool's mean are left out of the test.
	OutlierSigma float64
	// Window: the pool keeps the latest this many distances (≤ 5000, the
	// limit of Royston's approximation).
	Window int
	// MaxStored bounds the queries kept across all classes' growing sets;
	// MaxPerClass bounds one class's. When full, the oldest query of the
	// class holding most is replaced.
	MaxStored   int
	MaxPerClass int
	// MaxClasses: predicted labels outside 0..MaxClasses-1 are not tracked.
	MaxClasses int
}

// KNNConfig configures the k-nearest-neighbour stateful detector (Chen,
// Carlini and Wagner, 2020).
type KNNConfig struct {
	Disabled bool
	// K neighbours are averaged.
	K int
	// History is how many recent queries are kept to search.
	History int
	// Threshold: a query whose mean distance to its K nearest previous
	// queries is below it is suspicious. Calibrate with CalibrateKNN.
	Threshold float64
	// Window and AlarmCount: the alarm is raised when at least AlarmCount of
	// the last Window scored queries were suspicious.
	Window     int
	AlarmCount int
	// Axes (optional, at most MaxAxes orthonormal vectors of Dim features,
	// e.g. PrincipalAxes of a reference sample) let the search skip most
	// history rows on a few numbers each; the answers are the same without
	// them, only slower. Without Axes rows are skipped on their norms.
	Axes [][]float32
}

// OODRateConfig configures the out-of-distribution rate detector: the
// alarm is raised when the number k of out-of-distribution queries among the
// last n would happen with probability at most Alpha if the principal's
// queries were flagged at BaseRate: P(Binomial(n, BaseRate) ≥ k) ≤ Alpha.
// Uniform-random queries (every one flagged) are caught after MinQueries;
// a stream that starts with natural seeds is caught as soon as enough of
// its later queries are flagged, without waiting for a majority.
type OODRateConfig struct {
	Disabled bool
	// Window is how many recent queries are counted (≤ 256).
	Window int
	// MinQueries: the alarm needs at least this many queries in the window.
	MinQueries int
	// BaseRate is the rate at which benign queries are flagged, allowing for
	// drift: a multiple of the ood.Model's FPR.
	BaseRate float64
	// Alpha is the false-alarm probability of one test.
	Alpha float64
}

// maxWindow is the size of the outcome rings of the kNN and OOD detectors.
const maxWindow = 256

// MiB is 1<<20 bytes.
const MiB = 1 << 20

// Default returns the configuration calibrated on the digits data
// (docs/extraction-detection.md), for inputs of dim features; the stored
// query counts shrink for large dim to stay within 1 MiB per subject.
// KNN.Threshold and OOD are left for the caller to calibrate.
func Default(dim int) Config {
	vec := 4 * max(dim, 1)
	// About 45% of the budget each for the kNN history and PRADA's sets.
	fit := func(want int) int { return max(16, min(want, (MiB*45/100)/(vec+16))) }
	return Config{
		Dim: dim,
		PRADA: PRADAConfig{
			Delta: 0.90, Persist: 1, MinDistances: 100, TestEvery: 10, OutlierSigma: 3, Window: 1000,
			MaxStored: fit(1024), MaxPerClass: 256, MaxClasses: 1000,
		},
		KNN:                KNNConfig{K: 1, History: fit(1000), Window: 128, AlarmCount: 10},
		OODRate:            OODRateConfig{Window: 128, MinQueries: 10, BaseRate: 0.03, Alpha: 1e-9},
		Policy:             DefaultPolicy(),
		QueueSize:          8192,
		AlertBuffer:        256,
		MaxSubjects:        10000,
		MaxBytesPerSubject: MiB,
		LatchFor:           24 * time.Hour,
		SweepEvery:         time.Minute,
	}
}

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("extraction: invalid config")

func bad(field string, v any, want string) error {
	return fmt.Errorf("%w: %s %v: %s", ErrConfig, field, v, want)
}

// Validate reports the first bad field, by its name and value.
func (c *Config) Validate() error {
	if c.Dim < 1 || c.Dim > ood.MaxDim {
		return bad("dim", c.Dim, fmt.Sprintf("want 1..%d", ood.MaxDim))
	}
	if p := c.PRADA; !p.Disabled {
		switch {
		case !(p.Delta > 0 && p.Delta < 1):
			return bad("prada.delta", p.Delta, "want 0 < delta < 1")
		case p.Persist < 1:
			return bad("prada.persist", p.Persist, "want at least 1")
		case p.MinDistances < ShapiroMinN:
			return bad("prada.min_distances", p.MinDistances, fmt.Sprintf("want at least %d", ShapiroMinN))
		case p.TestEvery < 1:
			return bad("prada.test_every", p.TestEvery, "want at least 1")
		case !(p.OutlierSigma > 0):
			return bad("prada.outlier_sigma", p.OutlierSigma, "want > 0")
		case p.Window <= p.MinDistances || p.Window > ShapiroMaxN:
			return bad("prada.window", p.Window, fmt.Sprintf("want min_distances < window <= %d", ShapiroMaxN))
		case p.MaxStored < 1:
			return bad("prada.max_stored", p.MaxStored, "want at least 1")
		case p.MaxPerClass < 1:
			return bad("prada.max_per_class", p.MaxPerClass, "want at least 1")
		case p.MaxClasses < 1 || p.MaxClasses > 1<<20:
			return bad("prada.max_classes", p.MaxClasses, "want 1..1048576")
		}
	}
	if k := c.KNN; !k.Disabled {
		switch {
		case k.K < 1 || k.K > 64:
			return bad("knn.k", k.K, "want 1..64")
		case k.History < k.K:
			return bad("knn.history", k.History, "want at least k")
		case !(k.Threshold > 0) || math.IsInf(k.Threshold, 0):
			return bad("knn.threshold", k.Threshold, "want a positive distance (calibrate with CalibrateKNN)")
		case k.Window < 1 || k.Window > maxWindow:
			return bad("knn.window", k.Window, fmt.Sprintf("want 1..%d", maxWindow))
		case k.AlarmCount < 1 || k.AlarmCount > k.Window:
			return bad("knn.alarm_count", k.AlarmCount, "want 1..window")
		}
		if err := checkAxes(k.Axes, c.Dim); err != nil {
			return fmt.Errorf("%w: knn.axes: %v", ErrConfig, err)
		}
	}
	if o := c.OODRate; !o.Disabled {
		switch {
		case c.OOD == nil:
			return bad("ood", "nil", "want a fitted ood.Model (or ood_rate.disabled)")
		case c.OOD.Dim() != c.Dim:
			return bad("ood", fmt.Sprintf("dim %d", c.OOD.Dim()), fmt.Sprintf("want dim %d", c.Dim))
		case o.Window < 1 || o.Window > maxWindow:
			return bad("ood_rate.window", o.Window, fmt.Sprintf("want 1..%d", maxWindow))
		case o.MinQueries < 1 || o.MinQueries > o.Window:
			return bad("ood_rate.min_queries", o.MinQueries, "want 1..window")
		case !(o.BaseRate > 0 && o.BaseRate < 1):
			return bad("ood_rate.base_rate", o.BaseRate, "want 0 < rate < 1")
		case !(o.Alpha > 0 && o.Alpha < 1):
			return bad("ood_rate.alpha", o.Alpha, "want 0 < alpha < 1")
		}
	}
	if c.PRADA.Disabled && c.KNN.Disabled && c.OODRate.Disabled {
		return bad("detectors", "none", "want at least one enabled")
	}
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	switch {
	case c.QueueSize < 1:
		return bad("queue_size", c.QueueSize, "want at least 1")
	case c.AlertBuffer < 1:
		return bad("alert_buffer", c.AlertBuffer, "want at least 1")
	case c.MaxSubjects < 1:
		return bad("max_subjects", c.MaxSubjects, "want at least 1")
	case c.LatchFor < 0:
		return bad("latch_for", c.LatchFor, "want 0 (until reset) or a positive duration")
	case c.SweepEvery <= 0:
		return bad("sweep_every", c.SweepEvery, "want a positive duration")
	}
	if b := c.SubjectBytesBound(); c.MaxBytesPerSubject < 1 || b > c.MaxBytesPerSubject {
		return bad("max_bytes_per_subject", c.MaxBytesPerSubject,
			fmt.Sprintf("the configured history sizes need up to %d bytes per subject (reduce knn.history, prada.max_stored or prada.max_classes)", b))
	}
	return nil
}

// SubjectBytesBound is the most memory the state of one principal or group
// can hold under c, by accounting (the same accounting as Status.StateBytes).
func (c *Config) SubjectBytesBound() int {
	b := subjectFixedBytes
	if !c.KNN.Disabled {
		b += c.KNN.History * 4 * (c.Dim + keyLen(len(c.KNN.Axes))) // rows and their search keys
	}
	if !c.PRADA.Disabled {
		b += c.PRADA.MaxStored*(4*c.Dim+slotBytes) + c.PRADA.MaxClasses*classBytes + c.PRADA.Window*8
	}
	return b
}
