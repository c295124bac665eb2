package extraction

import (
	"fmt"
	"math"
)

// Action is what the server should do with a principal's requests, from
// least to most severe. Each includes the ones before it.
type Action int32

const (
	// ActionNone: serve as usual.
	ActionNone Action = iota
	// ActionAlert: serve, and the principal has been reported (an Alert was
	// sent for the server to audit and forward to the webhook).
	ActionAlert
	// ActionThrottle: serve at a reduced rate.
	ActionThrottle
	// ActionDegrade: serve degraded outputs (the predicted label only).
	ActionDegrade
	// ActionBlock: refuse.
	ActionBlock
)

var actionNames = [...]string{"none", "alert", "throttle", "degrade", "block"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int32(a))
}

// MarshalText writes the action's name.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Policy maps a risk score in [0, 1] to an action: the most severe action
// whose threshold the risk reaches. A threshold above 1 never applies. The
// zero value blocks everyone (every threshold is 0), so Validate refuses
// thresholds that are not positive.
type Policy struct {
	Alert    float64 `json:"alert" yaml:"alert"`
	Throttle float64 `json:"throttle" yaml:"throttle"`
	Degrade  float64 `json:"degrade" yaml:"degrade"`
	Block    float64 `json:"block" yaml:"block"`
}

// DefaultPolicy: one detector in alarm (risk 0.6) alerts and throttles; two
// (0.84) degrade outputs; all three (0.936) block. See Risk.
func DefaultPolicy() Policy {
	return Policy{Alert: 0.5, Throttle: 0.6, Degrade: 0.8, Block: 0.9}
}

// Validate reports the first bad threshold.
func (p Policy) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"policy.alert", p.Alert}, {"policy.throttle", p.Throttle}, {"policy.degrade", p.Degrade}, {"policy.block", p.Block}} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			return bad(f.name, f.v, "want a positive threshold (above 1 to never apply)")
		}
	}
	return nil
}

// Action returns the action for a risk score.
func (p Policy) Action(risk float64) Action {
	switch {
	case risk >= p.Block:
		return ActionBlock
	case risk >= p.Degrade:
		return ActionDegrade
	case risk >= p.Throttle:
		return ActionThrottle
	case risk >= p.Alert:
		return ActionAlert
	}
	return ActionNone
}

// Weights of the risk score: a detector in alarm contributes alarmWeight,
// one not in alarm at most progressWeight (in proportion to how close its
// statistic is to the alarm threshold).
const (
	alarmWeight    = 0.6
	progressWeight = 0.24
)

// Risk combines the detectors' states into a score in [0, 1]:
//
//	risk = 1 − Π_i (1 − c_i),  c_i = 0.6 if detector i is in alarm,
//	                           else 0.24 × progress_i (progress in [0, 1])
//
// so one alarm gives 0.6, two 0.84, three 0.936, while detectors that are
// all short of alarm give at most 0.56 (all three at the brink) and benign
// traffic stays near 0.1.
func Risk(alarms [numDetectors]bool, progress [numDetectors]float64) float64 {
	q := 1.0
	for i := range alarms {
		c := progressWeight * min(max(progress[i], 0), 1)
		if alarms[i] {
			c = alarmWeight
		}
		q *= 1 - c
	}
	return 1 - q
}

// Detector names one detector, as in Alert.Detectors and metrics labels.
type Detector int

const (
	DetectorPRADA Detector = iota
	DetectorKNN
	DetectorOODRate
	numDetectors
)

var detectorNames = [...]string{"prada", "knn", "ood_rate"}

func (d Detector) String() string {
	if d >= 0 && d < numDetectors {
		return detectorNames[d]
	}
	return fmt.Sprintf("detector(%d)", int(d))
}

// MarshalText writes the detector's name.
func (d Detector) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
