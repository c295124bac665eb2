package ratelimit

import "math"

// A rule is a GCRA rate: one unit costs interval nanoseconds, and up to
// burst units may pass at once. The zero rule is unlimited.
type rule struct {
	interval int64 // ns per unit; 0: unlimited
	burst    int64 // units that may pass at once, ≥ 1 when limited
}

// newRule returns the rule for perSecond units a second with the given
// burst; perSecond 0 is unlimited. The interval is rounded up, so the rule
// never admits more than perSecond.
func newRule(perSecond float64, burst int64) rule {
	if perSecond <= 0 {
		return rule{}
	}
	return rule{interval: int64(math.Ceil(1e9 / perSecond)), burst: max(burst, 1)}
}

func (r rule) limited() bool { return r.interval > 0 }

// tolerance is how far past now a key's theoretical arrival time may run.
func (r rule) tolerance() int64 { return r.burst * r.interval }

// conform is GCRA on one key. tat is the key's theoretical arrival time (0
// for a key with no state: any time in the past is the same as a fresh
// key), now the current time and cost the units asked for, 1 ≤ cost ≤
// burst. It returns the key's new theoretical arrival time and true when
// the units conform, or how long until they would and false; a refused
// request changes nothing.
//
// It is the token bucket of capacity burst refilled at one unit per
// interval, with tokens = burst − (tat − now)/interval.
func conform(tat, now, interval, tolerance, cost int64) (newTAT, wait int64, ok bool) {
	if tat < now {
		tat = now
	}
	newTAT = tat + cost*interval
	if at := newTAT - tolerance; at > now {
		return tat, at - now, false
	}
	return newTAT, 0, true
}
