package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/ratelimit"
)

// benignRun is the benign clients' result under one policy and seed.
type benignRun struct {
	policy  string
	seed    uint64
	clients int
	// flagged is how many clients any alarm implicated; -1 when the
	// server reports no alarms (not supported).
	flagged int
	risk    float64            // highest risk of a benign client; NaN unknown
	queries map[string]int     // per victim
	agree   map[string]float64 // per victim: served top-1 = raw top-1
	refused map[string]int     // per victim
	waited  time.Duration      // waiting out rate limits
}

// runBenign has every benign client, each with its own key, replay the
// held-out digits in its own order, one per request, to each victim in
// turn; the clients take turns, as concurrent traffic interleaves. Each
// client connects from its own loopback network (benignAddr), as
// independent clients would, so that a monitor aggregating by network
// does not take twenty users for one.

func (b *bench) runBenign(p *policy, seed uint64) (*benignRun, error) {
	ctx := context.Background()
	in, err := b.srv.start(p)
	if err != nil {
		return nil, err
	}
	defer in.stop()
	r := &benignRun{policy: p.name, seed: seed, clients: b.opt.benign, risk: math.NaN(),
		queries: map[string]int{}, agree: map[string]float64{}, refused: map[string]int{}}
	var clients []*client
	var orders [][]int
	for i := range b.opt.benign {
		c, err := in.newClientFrom(fmt.Sprintf("benign-%d", i), benignAddr(i))
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		orders = append(orders, rng.Perm(len(b.h.Inputs))[:min(b.opt.benignQueries, len(b.h.Inputs))])
	}
	same := map[string]int{}
	victims := []string{victimLogreg, victimMLP}
	for k := range orders[0] {
		for i, c := range clients {
			row := orders[i][k]
			for _, v := range victims {
				var budget time.Duration
				if b.opt.patient {
					budget = max(0, b.opt.maxWait-r.waited)
				}
				rep, err := c.inferPatient(ctx, v, [][]float64{b.h.Inputs[row]}, budget)
				if err != nil {
					return nil, err
				}
				r.waited += rep.waited
				r.queries[v]++
				switch {
				case rep.status == 200:
					if rep.answers[0].Label == b.ref[v][row] {
						same[v]++
					}
				case rep.refused():
					r.refused[v]++
				default:
					return nil, fmt.Errorf("%s: %s: unexpected status %d", c.name, v, rep.status)
				}
			}
		}
	}
	for _, v := range victims {
		r.agree[v] = float64(same[v]) / float64(r.queries[v])
	}
	r.flagged = -1
	st, err := serverAlarms{in}.Status(ctx)
	switch {
	case errors.Is(err, errUnsupported):
	case err != nil:
		return nil, err
	default:
		flagged := 0
		var names []string
		for _, c := range clients {
			names = append(names, c.principal)
			for _, a := range st.alarms() {
				if a.implicates(c.principal) {
					flagged++
					break
				}
			}
		}
		if risk, ok := st.risk("", names); ok {
			r.risk = risk
		}
		r.flagged = flagged
	}
	return r, nil
}

// benignAddr is benign client i's address: 127.0.<i+1>.1, each in its own
// /24 (attackers connect from 127.0.0.1).
func benignAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, byte(1 + i%250), 1}) }

// overheadRun compares the latency of single-row requests to the digits
// model under a policy with the same requests without defences, measured
// in the same run, alternating between the two instances.
type overheadRun struct {
	policy         string
	requests       int
	rawP50, rawP99 time.Duration
	polP50, polP99 time.Duration
	refused        int
	// The same requests handed to each server's HTTP handler in process,
	// without the network: the handler's own time.
	rawInProc, polInProc time.Duration
	// The servers' own span of the requests that came over the network,
	// from authentication to the audit record (the records' latency_us):
	// the mean of the fastest 90%, since the records count whole
	// microseconds. 0 if the audit logs could not be read.
	rawSpan, polSpan time.Duration
	// screened: held-out digits the policy's input validation refuses,
	// left out of the measurement.
	screened int
}

// unthrottled raises the per-principal rate limits a policy has to a
// million a second: the limiter still decides every request, but the
// measuring client, which sends as fast as it can, is not held to the
// policy's pace (which would change what is measured: the latency of
// requests spaced 5ms apart, on both instances).
func unthrottled(c *config.Config) {
	for _, r := range []*ratelimit.Rate{&c.RateLimit.Requests, &c.RateLimit.Elements} {
		if r.PerSecond > 0 {
			*r = ratelimit.Rate{PerSecond: 1e6, Burst: 1e6}
		}
	}
}

func (b *bench) measureOverhead(p *policy) (*overheadRun, error) {
	ctx := context.Background()
	raw, err := loadPolicies(b.opt.policyDir, b.opt.root, []string{"raw"})
	if err != nil {
		return nil, err
	}
	ins := make([]*instance, 2)
	clients := make([]*client, 2)
	for i, q := range []*policy{raw[0], p} {
		in, err := b.srv.start(q, unthrottled)
		if err != nil {
			return nil, err
		}
		defer in.stop()
		ins[i] = in
		if clients[i], err = in.newClient("overhead"); err != nil {
			return nil, err
		}
	}
	o := &overheadRun{policy: p.name, requests: b.opt.overhead}
	// The rows the policy answers: input validation may refuse a few
	// held-out digits (an out-of-distribution check at its false-positive
	// rate), and a refusal is not an answer to compare. Found with a key
	// of its own, so that the timed requests' audit records are only theirs.
	rows, err := b.answeredRows(ins[1])
	if err != nil {
		return nil, err
	}
	o.screened = len(b.h.Inputs) - len(rows)
	lat := [2][]time.Duration{}
	warm := min(50, b.opt.overhead)
	for k := range warm + b.opt.overhead {
		x := rows[k%len(rows)]
		for j := range 2 {
			i := (j + k) % 2 // alternate which instance goes first
			rep, err := clients[i].inferPatient(ctx, overheadModel, [][]float64{x}, time.Minute)
			if err != nil {
				return nil, err
			}
			if rep.waited > 0 {
				o.refused++
			}
			if rep.status != 200 {
				return nil, fmt.Errorf("%s: status %d", ins[i].policy.name, rep.status)
			}
			if k >= warm {
				lat[i] = append(lat[i], rep.latency)
			}
		}
	}
	for i := range lat {
		slices.Sort(lat[i])
	}
	o.rawP50, o.rawP99 = benchutil.Percentile(lat[0], 0.5), benchutil.Percentile(lat[0], 0.99)
	o.polP50, o.polP99 = benchutil.Percentile(lat[1], 0.5), benchutil.Percentile(lat[1], 0.99)
	in := [2][]time.Duration{}
	for k := range warm + b.opt.overhead {
		x := rows[k%len(rows)]
		for j := range 2 {
			i := (j + k) % 2
			d, status, err := clients[i].inferInProcess(overheadModel, x)
			if err != nil {
				return nil, err
			}
			if status != 200 {
				return nil, fmt.Errorf("%s in process: status %d", ins[i].policy.name, status)
			}
			if k >= warm {
				in[i] = append(in[i], d)
			}
		}
	}
	for i := range in {
		slices.Sort(in[i])
	}
	o.rawInProc, o.polInProc = benchutil.Percentile(in[0], 0.5), benchutil.Percentile(in[1], 0.5)
	for i, span := range []*time.Duration{&o.rawSpan, &o.polSpan} {
		// Halted, so that every record is in the log.
		if err := ins[i].halt(); err != nil {
			return nil, err
		}
		spans, err := networkSpans(ins[i].audit, clients[i].principal, overheadModel)
		if err != nil {
			return nil, fmt.Errorf("%s: audit log: %w", ins[i].policy.name, err)
		}
		*span = fastMean(spans, 0.9)
	}
	return o, nil
}

// answeredRows returns the held-out rows in answers with 200, each sent
// once by a client of its own; an error if it refuses any other way, or
// answers none.
func (b *bench) answeredRows(in *instance) ([][]float64, error) {
	c, err := in.newClient("overhead-rows")
	if err != nil {
		return nil, err
	}
	var rows [][]float64
	for _, x := range b.h.Inputs {
		rep, err := c.inferPatient(context.Background(), overheadModel, [][]float64{x}, time.Minute)
		switch {
		case err != nil:
			return nil, err
		case rep.status == 200:
			rows = append(rows, x)
		case !rep.screened:
			return nil, fmt.Errorf("%s: status %d", in.policy.name, rep.status)
		}
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: answered none of the held-out digits", in.policy.name)
	}
	return rows, nil
}

// networkSpans returns the latency_us of the answered (200) requests to
// model by principal that came over the network, from the audit log at
// path (rotated files included).
func networkSpans(path, principal, model string) ([]time.Duration, error) {
	files, err := audit.Files(path)
	if err != nil {
		return nil, err
	}
	var spans []time.Duration
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), audit.MaxLineBytes+1)
		for sc.Scan() {
			var r struct {
				Type, Principal, Model, Client string
				Status                         int
				Latency                        int64 `json:"latency_us"`
			}
			if json.Unmarshal(sc.Bytes(), &r) != nil || r.Type != "request" {
				continue
			}
			if r.Principal == principal && r.Model == model && r.Status == 200 && r.Client != inProcessAddr {
				spans = append(spans, time.Duration(r.Latency)*time.Microsecond)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return spans, nil
}

// fastMean is the mean of the fastest share of xs (0 if there are none).
func fastMean(xs []time.Duration, share float64) time.Duration {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	n := int(float64(len(xs)) * share)
	if n == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range xs[:n] {
		sum += x
	}
	return sum / time.Duration(n)
}
