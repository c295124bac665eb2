package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
	"github.com/aegis-inference/aegis/bench/extraction/learn"
	"github.com/aegis-inference/aegis/internal/watermark"
)

// options configure one run.
type options struct {
	seeds         int
	scenarios     []string // name patterns
	policies      []string
	policyDir     string // "" for the embedded policies
	quick         bool
	epochs        int           // the attackers' training epochs; 0: learn.DefaultTrain's
	mix           float64       // natural queries per attack query (interleave)
	split         int           // principals of a split attack
	benign        int           // benign clients
	benignQueries int           // held-out rows each benign client replays (to each victim)
	overhead      int           // measured requests per instance for the overhead
	poll          int           // poll the alarm status every this many queries
	blockAfter    int           // consecutive refusals after which the attacker gives up
	patient       bool          // wait out 429s (Retry-After) and try again
	maxWait       time.Duration // at most this long per run (all its principals)
	work          string        // work directory
	keep          bool          // keep instance directories
	root, lib     string
	out           string
	progress      io.Writer
	command       string
	cpuProfile    string // -cpuprofile
}

// bench is one run of the benchmark.
type bench struct {
	opt      options
	h        *heldout
	srv      *servers
	policies []*policy
	scen     []scenario
	ref      map[string][]int // victim -> its raw top-1 on every held-out row
	rep      *report
}

func (b *bench) logf(format string, args ...any) {
	if b.opt.progress != nil {
		fmt.Fprintf(b.opt.progress, format+"\n", args...)
	}
}

func run(opt options) (*report, error) {
	start := time.Now()
	h, err := loadHeldout(opt.root)
	if err != nil {
		return nil, err
	}
	names := opt.policies
	policies, err := loadPolicies(opt.policyDir, opt.root, names)
	if err != nil {
		return nil, err
	}
	scen, err := selectScenarios(allScenarios(opt.split), opt.scenarios)
	if err != nil {
		return nil, err
	}
	srv, err := newServers(opt.work, opt.root, opt.lib, opt.keep)
	if err != nil {
		return nil, err
	}
	b := &bench{opt: opt, h: h, srv: srv, policies: policies, scen: scen, ref: map[string][]int{},
		rep: &report{opt: opt, policies: policies, scenarios: scen, started: start}}
	if err := b.reference(); err != nil {
		return nil, fmt.Errorf("reference answers: %w", err)
	}
	for _, p := range policies {
		if err := b.probe(p); err != nil {
			return nil, err
		}
	}
	for _, p := range policies {
		if !p.supported() {
			continue
		}
		for _, s := range scen {
			for seed := 1; seed <= opt.seeds; seed++ {
				t0 := time.Now()
				if s.kind == "benign" {
					r, err := b.runBenign(p, uint64(seed))
					if err != nil {
						return nil, fmt.Errorf("%s %s seed %d: %w", p.name, s.name, seed, err)
					}
					b.rep.benign = append(b.rep.benign, r)
					b.logf("%-10s %-32s seed %d: %d clients, agreement with raw %v, flagged %s (%.1fs)",
						p.name, s.name, seed, r.clients, r.agree, fmtFlagged(r.flagged), time.Since(t0).Seconds())
					continue
				}
				r, err := b.runAttack(p, s, uint64(seed))
				if err != nil {
					return nil, fmt.Errorf("%s %s seed %d: %w", p.name, s.name, seed, err)
				}
				b.rep.runs = append(b.rep.runs, r)
				last := r.curve[len(r.curve)-1]
				b.logf("%-10s %-32s seed %d: %d queries, agreement %.3f, first alarm %s (%.1fs)",
					p.name, s.name, seed, r.sent, last.agreement, fmtAlarm(r.firstAlarm), time.Since(t0).Seconds())
			}
		}
	}
	for _, p := range policies {
		if p.name == "raw" || !p.supported() {
			continue
		}
		o, err := b.measureOverhead(p)
		if err != nil {
			return nil, fmt.Errorf("overhead of %s: %w", p.name, err)
		}
		b.rep.overhead = append(b.rep.overhead, o)
	}
	b.rep.elapsed = time.Since(start)
	return b.rep, nil
}

// reference records the victims' raw answers on every held-out row, from
// an instance without defences.
func (b *bench) reference() error {
	raw, err := loadPolicies(b.opt.policyDir, b.opt.root, []string{"raw"})
	if err != nil {
		return err
	}
	in, err := b.srv.start(raw[0])
	if err != nil {
		return err
	}
	defer in.stop()
	c, err := in.newClient("reference")
	if err != nil {
		return err
	}
	for _, v := range []string{victimLogreg, victimMLP} {
		r, err := c.infer(context.Background(), v, b.h.Inputs)
		if err != nil {
			return err
		}
		if r.status != 200 {
			return fmt.Errorf("%s: status %d", v, r.status)
		}
		labels := make([]int, len(r.answers))
		correct := 0
		for i, a := range r.answers {
			if a.Probs == nil {
				return fmt.Errorf("%s: the raw server served no probabilities", v)
			}
			labels[i] = a.Label
			if a.Label == b.h.Labels[i] {
				correct++
			}
		}
		b.ref[v] = labels
		b.rep.victimAccuracy = append(b.rep.victimAccuracy, victimAcc{v, float64(correct) / float64(len(labels))})
	}
	b.rep.ortVersion = in.srv.Library.Version
	return nil
}

// probe starts and stops an instance under p, to learn whether the
// server accepts it.
func (b *bench) probe(p *policy) error {
	in, err := b.srv.start(p)
	var pe *policyError
	if errors.As(err, &pe) {
		p.unsupported = pe.Error()
		b.logf("policy %s: not supported by this server: %s", p.name, p.unsupported)
		return nil
	}
	if err != nil {
		return fmt.Errorf("policy %s: %w", p.name, err)
	}
	return in.stop()
}

// point is one measurement of an attacker's model.
type point struct {
	own       int // the attack's own queries
	sent      int // every query sent (cover queries included)
	agreement float64
}

// attackRun is one attack's result.
type attackRun struct {
	policy   string
	scenario scenario
	seed     uint64
	curve    []point
	sent     int // queries sent
	refused  int
	waited   time.Duration // waiting out rate limits
	blocked  bool          // the attacker gave up after blockAfter refusals in a row
	// firstAlarm is the number of queries sent when the first alarm
	// implicating the attacker was raised: 0 none, -1 not supported.
	firstAlarm int
	detector   string // of the first alarm
	firstGroup bool   // the first alarm was on a group (aggregated traffic)
	aggregate  bool   // a group alarm implicated the attacker
	flagged    int    // attacker principals any alarm implicated
	ownFlagged int    // attacker principals an alarm on their own traffic implicated
	principals int
	risk       float64           // highest risk of an attacker principal; NaN unknown
	watermark  *watermark.Result // the surrogate against the recorded marks
	indep      *watermark.Result // a model trained without the server
	wmNote     string            // why there is no watermark result
}

func (b *bench) runAttack(p *policy, s scenario, seed uint64) (*attackRun, error) {
	ctx := context.Background()
	in, err := b.srv.start(p)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	n := 1
	if s.spread == "split" {
		n = b.opt.split
	}
	m := &meter{at: map[string][]int{}, every: b.opt.poll}
	var oracles []attack.Oracle
	var principals []string
	for i := range n {
		c, err := in.newClient(fmt.Sprintf("attacker-%d", i))
		if err != nil {
			return nil, err
		}
		principals = append(principals, c.principal)
		oracles = append(oracles, &principalOracle{c: c, model: s.victim, m: m, blockAfter: b.opt.blockAfter, patient: b.opt.patient, maxWait: b.opt.maxWait})
	}
	oracle := oracles[0]
	switch s.spread {
	case "split":
		oracle = &attack.RoundRobin{Oracles: oracles}
	case "interleave":
		oracle = attack.NewInterleave(oracle, b.h.pool(), b.opt.mix, seed)
	}
	r := &attackRun{policy: p.name, scenario: s, seed: seed, principals: n, risk: math.NaN()}

	alarms := serverAlarms{in}
	supported := true
	seenAt := 0
	m.poll = func(ctx context.Context) error {
		if !supported || seenAt > 0 {
			return nil
		}
		st, err := alarms.Status(ctx)
		if errors.Is(err, errUnsupported) {
			supported = false
			return nil
		}
		if err != nil {
			return err
		}
		for _, a := range st.alarms() {
			if implicatesAny(a, principals, s.victim) {
				seenAt = m.sent
			}
		}
		return nil
	}

	evalX, evalY := b.h.eval(), b.ref[s.victim][poolSize:]
	var final learn.Classifier
	err = s.newAttack(b.h, seed, b.opt.train()).Run(ctx, oracle, s.checkpoints(b.opt.quick), func(own int, model learn.Classifier) error {
		r.curve = append(r.curve, point{own: own, sent: m.sent, agreement: learn.Agreement(model, evalX, evalY)})
		final = model
		return nil
	})
	switch {
	case errors.Is(err, attack.ErrBlocked):
		r.blocked = true
	case err != nil:
		return nil, err
	}
	r.sent, r.refused, r.waited = m.sent, m.refused, m.waited

	// Alarms, as the operator sees them at the end of the attack.
	r.firstAlarm = -1
	if supported {
		st, err := alarms.Status(ctx)
		switch {
		case errors.Is(err, errUnsupported):
		case err != nil:
			return nil, err
		default:
			r.firstAlarm = 0
			flagged, own := map[string]bool{}, map[string]bool{}
			for _, a := range st.alarms() {
				if !implicatesAny(a, principals, s.victim) {
					continue
				}
				for _, pr := range principals {
					if a.implicates(pr) {
						flagged[pr] = true
						if !a.aggregate {
							own[pr] = true
						}
					}
				}
				if a.aggregate {
					r.aggregate = true
				}
				at := m.place(a, seenAt)
				if r.firstAlarm == 0 || at < r.firstAlarm {
					r.firstAlarm, r.detector, r.firstGroup = at, a.detector, a.aggregate
				}
			}
			r.flagged, r.ownFlagged = len(flagged), len(own)
			if risk, ok := st.risk(s.victim, principals); ok {
				r.risk = risk
			}
		}
	}

	// The watermark: with the server stopped, does the surrogate
	// reproduce the marks its principals were answered with, where a
	// model trained without the server does not?
	if err := in.halt(); err != nil {
		return nil, err
	}
	switch {
	case final == nil:
		r.wmNote = "no model"
	default:
		ind, err := b.independent(s.victim, seed)
		if err != nil {
			return nil, err
		}
		res, err := verifyWatermark(in.stateDir, s.victim, principals, final, ind)
		switch {
		case errors.Is(err, errNoPairs):
			r.wmNote = "no marked answers"
		case err != nil:
			return nil, fmt.Errorf("watermark: %w", err)
		default:
			r.watermark, r.indep = &res[0], &res[1]
		}
	}
	return r, nil
}

func predictAll(c learn.Classifier, xs [][]float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = c.Predict(x)
	}
	return out
}

// independent trains, without querying the server, a model of the
// surrogate's architecture on the attacker's natural pool and its
// translations with their true labels: what a competitor who never saw
// the victim's answers would have.
func (b *bench) independent(victim string, seed uint64) (learn.Classifier, error) {
	var xs, ts [][]float64
	for i, x := range b.h.pool() {
		t := learn.OneHot(b.h.Labels[i], attack.Classes)
		xs, ts = append(xs, x), append(ts, t)
		for _, sh := range attack.Shifts {
			xs, ts = append(xs, attack.Translate(x, sh[0], sh[1])), append(ts, t)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x696e646570))
	net := learn.NewNet(sizes(victim), 1.0/attack.PixelMax, rng)
	train := learn.DefaultTrain
	if b.opt.quick {
		train = quickTrain
	}
	if err := net.Fit(xs, ts, train, rng); err != nil {
		return nil, err
	}
	return net, nil
}
