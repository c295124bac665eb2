package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
)

// meter counts the queries of one run and remembers when each principal
// sent each of its queries, to place the alarms the server reports.
type meter struct {
	sent, refused int
	waited        time.Duration    // waiting out rate limits
	at            map[string][]int // principal -> sent after each of its queries
	times         []time.Time      // when query i+1 was sent
	inputs        [][]float64      // every query, for watermark verification
	poll          func(ctx context.Context) error
	every         int
}

func (m *meter) record(ctx context.Context, principal string, x []float64, at time.Time) error {
	m.sent++
	m.at[principal] = append(m.at[principal], m.sent)
	m.times = append(m.times, at)
	m.inputs = append(m.inputs, x)
	if m.poll != nil && m.every > 0 && m.sent%m.every == 0 {
		return m.poll(ctx)
	}
	return nil
}

// principalOracle is the victim as one principal sees it: one query per
// request.
type principalOracle struct {
	c          *client
	model      string
	m          *meter
	streak     int // refusals in a row
	blockAfter int
	patient    bool
	maxWait    time.Duration
}

var _ attack.Oracle = (*principalOracle)(nil)

func (o *principalOracle) Query(ctx context.Context, xs [][]float64) ([]attack.Answer, error) {
	out := make([]attack.Answer, 0, len(xs))
	for _, x := range xs {
		t := time.Now()
		var budget time.Duration
		if o.patient {
			budget = max(0, o.maxWait-o.m.waited)
		}
		r, err := o.c.inferPatient(ctx, o.model, [][]float64{x}, budget)
		if err != nil {
			return out, err
		}
		o.m.waited += r.waited
		if err := o.m.record(ctx, o.c.principal, x, t); err != nil {
			return out, err
		}
		switch {
		case r.status == 200:
			o.streak = 0
			out = append(out, r.answers[0])
		case r.refused():
			o.m.refused++
			o.streak++
			out = append(out, attack.Answer{Label: -1, Refused: true})
			if o.streak >= o.blockAfter {
				return out, fmt.Errorf("%s: %d refusals in a row: %w", o.c.name, o.streak, attack.ErrBlocked)
			}
		default:
			return out, fmt.Errorf("%s: unexpected status %d", o.c.name, r.status)
		}
	}
	return out, nil
}

// implicatesAny reports whether alarm a concerns the attacker: it is on
// the victim and names one of its principals, or it is an aggregate alarm
// on the victim that names no one (the monitor no longer tracks its
// members).
func implicatesAny(a alarm, principals []string, model string) bool {
	if a.model != "" && a.model != model {
		return false
	}
	for _, p := range principals {
		if a.implicates(p) {
			return true
		}
	}
	return a.aggregate && len(a.principals) == 0
}

// place returns how many queries the run had sent when alarm a was
// raised: from the subject's query count the alarm carries (a principal's
// maps onto the harness's count for that principal; a group's is the
// run's, as only the attacker queries the instance), else from its time,
// else the poll that first saw it.
func (m *meter) place(a alarm, seenAt int) int {
	if a.queries > 0 {
		if !a.aggregate && len(a.principals) == 1 {
			if at := m.at[a.principals[0]]; int(a.queries) <= len(at) {
				return at[a.queries-1]
			}
		}
		if a.aggregate {
			return min(int(a.queries), m.sent)
		}
	}
	if !a.time.IsZero() {
		for i, t := range m.times {
			if !t.Before(a.time) {
				return i + 1
			}
		}
		return m.sent
	}
	if seenAt > 0 {
		return seenAt
	}
	return m.sent
}
