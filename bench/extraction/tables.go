package main

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// attackScenarios returns the selected attack scenarios, equation-solving
// or the others.
func (r *report) attackScenarios(eq bool) []scenario {
	var out []scenario
	for _, s := range r.scenarios {
		if s.kind != "benign" && (s.kind == "eqsolve") == eq {
			out = append(out, s)
		}
	}
	return out
}

func (r *report) curves(b *strings.Builder, p string) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, eq := range []bool{true, false} {
		scen := r.attackScenarios(eq)
		if len(scen) == 0 {
			continue
		}
		cps := scen[0].checkpoints(r.opt.quick)
		what := "learning attacks"
		if eq {
			what = "equation-solving"
		}
		w("## Agreement against queries: %s, policy %s\n\n", what, p)
		w("Mean agreement over seeds after the attack's own queries (columns); the last columns give every query sent at the budget ")
		w("(cover queries included), queries refused, time spent waiting out rate limits (429, Retry-After), and the range over seeds at the budget.\n\n")
		w("| scenario |")
		for _, c := range cps {
			w(" %d |", c)
		}
		w(" sent | refused | waited | range at budget |\n|---|")
		for range cps {
			w("---|")
		}
		w("---|---|---|---|\n")
		for _, s := range scen {
			runs := r.runsOf(p, s.name)
			if len(runs) == 0 {
				continue
			}
			w("| %s |", s.name)
			for _, c := range cps {
				var vs []float64
				for _, run := range runs {
					if v, ok := run.agreementAt(c); ok {
						vs = append(vs, v)
					}
				}
				if len(vs) < len(runs) {
					w(" |")
					continue
				}
				w(" %.3f |", mean(vs))
			}
			var sent, refused, waited, last []float64
			for _, run := range runs {
				waited = append(waited, run.waited.Seconds())
				sent = append(sent, float64(run.sent))
				refused = append(refused, float64(run.refused))
				last = append(last, run.curve[len(run.curve)-1].agreement)
			}
			w(" %.0f | %.0f | %.1f s | %.3f–%.3f |\n", mean(sent), mean(refused), mean(waited), slices.Min(last), slices.Max(last))
		}
		w("\n")
	}
}

func (r *report) to98(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Queries to %.0f%% agreement\n\n", target*100)
	w("The attack's own queries at the first checkpoint where its model agreed with the victim on at least %.0f%% of the evaluation digits: ", target*100)
	w("median over seeds, and the seeds' values; \">N\" when a seed never got there within its budget N.\n\n| scenario |")
	ps := r.policies
	for _, p := range ps {
		w(" %s |", p.name)
	}
	w("\n|---|")
	for range ps {
		w("---|")
	}
	w("\n")
	for _, s := range r.scenarios {
		if s.kind == "benign" {
			continue
		}
		w("| %s |", s.name)
		for _, p := range ps {
			runs := r.runsOf(p.name, s.name)
			if !p.supported() {
				w(" n/a |")
				continue
			}
			if len(runs) == 0 {
				w(" |")
				continue
			}
			var vals []string
			var qs []float64
			for _, run := range runs {
				if q, ok := run.queriesTo(target); ok {
					vals, qs = append(vals, fmt.Sprint(q)), append(qs, float64(q))
				} else {
					vals = append(vals, fmt.Sprintf(">%d", run.curve[len(run.curve)-1].own))
				}
			}
			med := "never"
			if len(qs)*2 > len(runs) {
				med = fmt.Sprint(medianWithMisses(qs, len(runs)))
			}
			w(" %s (%s) |", med, strings.Join(vals, ", "))
		}
		w("\n")
	}
	if raw, ok := r.extremeTo98("raw", "eqsolve@logreg", true); ok {
		w("\nAgainst raw probabilities, equation-solving reaches %.0f%% within %d queries on every seed.", target*100, raw)
		for _, p := range ps {
			if p.name == "raw" || !p.supported() {
				continue
			}
			runs := r.runsOf(p.name, "eqsolve@logreg")
			if len(runs) == 0 {
				continue
			}
			blocked, best := 0, 0.0
			for _, run := range runs {
				if run.blocked {
					blocked++
				}
				for _, pt := range run.curve {
					best = max(best, pt.agreement)
				}
			}
			if blocked > 0 {
				w(" Under %s the attacker is refused for good on %d of %d seeds, after at most %d of its queries, its best agreement %.3f.",
					p.name, blocked, len(runs), maxOwn(runs), best)
				continue
			}
			// Conservative for the defence: its fewest over seeds against
			// raw's most; a seed that never got there counts as its budget.
			h, _ := r.extremeTo98(p.name, "eqsolve@logreg", false)
			w(" Under %s it needs at least %d on every seed (%s): %.1f× as many.", p.name, h, reached(runs), float64(h)/float64(raw))
		}
		w("\n")
	}
	w("\n")
}

// extremeTo98 returns the most (worst) or the fewest queries any seed of
// scen under p needed to reach the target; a seed that never did counts
// as its budget. ok is false when there are no runs, or (most) when a
// seed never reached it.
func (r *report) extremeTo98(p, scen string, most bool) (int, bool) {
	runs := r.runsOf(p, scen)
	if len(runs) == 0 {
		return 0, false
	}
	ext, ok := -1, true
	for _, run := range runs {
		q, reached := run.queriesTo(target)
		if !reached {
			q, ok = run.curve[len(run.curve)-1].own, false
		}
		if ext < 0 || (most && q > ext) || (!most && q < ext) {
			ext = q
		}
	}
	return ext, ok || !most
}

// maxOwn is the most of its own queries any run's attack measured.
func maxOwn(runs []*attackRun) int {
	n := 0
	for _, run := range runs {
		n = max(n, run.curve[len(run.curve)-1].own)
	}
	return n
}

// reached says how many runs reached the target.
func reached(runs []*attackRun) string {
	n := 0
	for _, run := range runs {
		if _, ok := run.queriesTo(target); ok {
			n++
		}
	}
	return fmt.Sprintf("%d of %d seeds reached %.0f%% within their budget", n, len(runs), target*100)
}

// medianWithMisses is the median of n values of which qs are known and
// the rest are larger than all of them.
func medianWithMisses(qs []float64, n int) float64 {
	s := slices.Clone(qs)
	slices.Sort(s)
	for len(s) < n {
		s = append(s, math.Inf(1))
	}
	return benchutil.Median(s)
}

func (r *report) detection(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Detection\n\n")
	w("Queries sent (all of the run's, cover queries included) when the first alarm implicating the attacker was raised, as the server ")
	w("reports it (GET /admin/v1/extraction/status; an alert's status.queries places it): median and range over the seeds that raised one, ")
	w("and how many did. \"detector\": the detectors the first alert raised, and whether it was on the principal's own traffic or on a group's ")
	w("(its client /24: every attacker key connects from 127.0.0.1). \"own\" and \"any\": attacker keys an alert on their own traffic, or ")
	w("any alert (group alerts included), implicated (most over seeds). \"risk\": the highest risk the server gave an attacker key at the end.\n\n")
	w("| scenario | policy | first alarm at | seeds alarmed | detector | own | any | risk |\n|---|---|---|---|---|---|---|---|\n")
	var without []string
	for _, p := range r.policies {
		if p.name == "raw" || !p.supported() {
			continue
		}
		monitored := false
		for _, run := range r.runs {
			if run.policy == p.name && run.firstAlarm >= 0 {
				monitored = true
			}
		}
		if !monitored {
			without = append(without, p.name)
		}
	}
	for _, s := range r.scenarios {
		if s.kind == "benign" {
			continue
		}
		for _, p := range r.policies {
			if p.name == "raw" || slices.Contains(without, p.name) {
				continue
			}
			runs := r.runsOf(p.name, s.name)
			if !p.supported() || len(runs) == 0 {
				continue
			}
			var at, risk []float64
			var det string
			own, flagged := 0, 0
			for _, run := range runs {
				if run.firstAlarm > 0 {
					at = append(at, float64(run.firstAlarm))
					if det == "" {
						det = run.detector + map[bool]string{true: " (group)", false: " (own)"}[run.firstGroup]
					}
				}
				own, flagged = max(own, run.ownFlagged), max(flagged, run.flagged)
				if !math.IsNaN(run.risk) {
					risk = append(risk, run.risk)
				}
			}
			first := "none"
			if len(at) > 0 {
				first = fmt.Sprintf("%.0f (%.0f–%.0f)", benchutil.Median(at), slices.Min(at), slices.Max(at))
			}
			rs := "–"
			if len(risk) > 0 {
				rs = fmt.Sprintf("%.2f", slices.Max(risk))
			}
			n := runs[0].principals
			w("| %s | %s | %s | %d/%d | %s | %d/%d | %d/%d | %s |\n", s.name, p.name, first, len(at), len(runs), det, own, n, flagged, n, rs)
		}
	}
	r.notAccepted(b, 8)
	w("\n")
	if len(without) > 0 {
		w("No extraction monitoring (alarm columns n/a) under: %s.\n\n", strings.Join(without, ", "))
	}
}

func (r *report) benignTable(b *strings.Builder) {
	if len(r.benign) == 0 {
		return
	}
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Benign clients\n\n")
	w("%d clients, each with its own key, replaying %d held-out digits each to both victims, one per request, taking turns. ", r.opt.benign, min(r.opt.benignQueries, 450))
	w("\"Flagged\": clients any alarm ever implicated (the most over seeds). Top-1 agreement: the served top-1 against the victim's raw top-1 ")
	w("on the same digit (refusals count as disagreement); the accuracy cost is 1 minus it.\n\n")
	w("| policy | flagged | risk | agreement %s | agreement %s | refused | waited |\n|---|---|---|---|---|---|---|\n", victimLogreg, victimMLP)
	for _, p := range r.policies {
		var runs []*benignRun
		for _, br := range r.benign {
			if br.policy == p.name {
				runs = append(runs, br)
			}
		}
		if !p.supported() {
			w("| %s | n/a (policy not accepted) | | | | | |\n", p.name)
			continue
		}
		if len(runs) == 0 {
			continue
		}
		flagged, risk := "n/a", "–"
		if runs[0].flagged >= 0 {
			f := 0
			var rs []float64
			for _, br := range runs {
				f = max(f, br.flagged)
				if !math.IsNaN(br.risk) {
					rs = append(rs, br.risk)
				}
			}
			flagged = fmt.Sprintf("%d/%d", f, runs[0].clients)
			if len(rs) > 0 {
				risk = fmt.Sprintf("%.2f", slices.Max(rs))
			}
		}
		var lr, mlp, waited []float64
		refused := 0
		for _, br := range runs {
			waited = append(waited, br.waited.Seconds())
			lr, mlp = append(lr, br.agree[victimLogreg]), append(mlp, br.agree[victimMLP])
			refused += br.refused[victimLogreg] + br.refused[victimMLP]
		}
		w("| %s | %s | %s | %.4f | %.4f | %d | %.1f s |\n", p.name, flagged, risk, mean(lr), mean(mlp), refused, mean(waited))
	}
	w("\n")
}

func (r *report) watermarkTable(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Watermark\n\n")
	w("Verified as an operator does (`aegis watermark verify`, docs/watermark.md): with the server stopped, the marked answers it ")
	w("recorded for the attacker's keys are read from its state store, and the attacker's final model answers each recorded input; ")
	w("two exact tests give the chance that a model built without those answers does as well: the labels test (it answers the watermark ")
	w("label; binomial, 1/9 per answer that is not the true label) and the ranking test (its scores rank the watermark label first ")
	w("of the classes other than the true one; binomial, 1/9 per answer); the verdict's p-value is twice the smaller. The same for a model of ")
	w("the surrogate's architecture trained without the server on the attacker's natural pool with true labels. \"queries\": sent by the ")
	w("attacker (the issue's criterion is for at most 2,000); surrogate: the largest verdict p over seeds (log2), the largest labels-test p, ")
	w("the marks reproduced and the marks ranked first of the wrong classes, of those recorded (all seeds); independent: the smallest verdict p. ")
	w("Runs with no recorded marks (no watermark on the model) are left out.\n\n")
	w("| scenario | policy | queries | surrogate log2 p | labels test alone | marks reproduced | marks ranked first | independent log2 p | independent p |\n|---|---|---|---|---|---|---|---|---|\n")
	rows := 0
	indep, indepLow, indepID := 0, 0, 0 // independent models tested; below p = 0.01; below 2^-64
	for _, s := range r.scenarios {
		for _, p := range r.policies {
			if s.kind == "benign" {
				continue
			}
			runs := r.runsOf(p.name, s.name)
			if !p.supported() || len(runs) == 0 {
				continue
			}
			var sl, ll, il, sent []float64
			agree, top, pairs := 0, 0, 0
			for _, run := range runs {
				if run.watermark == nil {
					continue
				}
				sl, il = append(sl, run.watermark.Log2P), append(il, run.indep.Log2P)
				ll = append(ll, run.watermark.Log2PLabels)
				indep++
				if run.indep.Log2P < math.Log2(0.01) {
					indepLow++
				}
				if run.indep.Log2P < -64 {
					indepID++
				}
				sent = append(sent, float64(run.sent))
				agree, top, pairs = agree+run.watermark.AgreeWatermark, top+run.watermark.TopWrong, pairs+run.watermark.Pairs
			}
			if len(sl) == 0 {
				continue
			}
			w("| %s | %s | %.0f | %.1f | %.1f | %d/%d | %d/%d | %.2f | %.3g |\n", s.name, p.name, mean(sent), slices.Max(sl), slices.Max(ll),
				agree, pairs, top, pairs, slices.Min(il), math.Exp2(slices.Min(il)))
			rows++
		}
	}
	if r.notAccepted(b, 9) == 0 && rows == 0 {
		w("| – | – | n/a (no marked answers recorded under any policy) | | | | | | |\n")
	}
	w("\n")
	if indep > 0 {
		// The test is exact for a model built without the marks (the
		// watermark label is uniform over the other classes whatever
		// the model answers), so about 1% of independent models fall
		// below 0.01 by chance: the count, not the smallest p, is the
		// test's false-positive rate.
		w("Independent models below p = 0.01: %d of %d (%.1f%%; the test is exact, so about 1%% fall below it by chance). ", indepLow, indep, 100*float64(indepLow)/float64(indep))
		w("Below the identification level, p < 2^-64: %d.\n\n", indepID)
	}
}

func (r *report) overheadTable(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## Per-request overhead of the defences\n\n")
	w("Single-row REST JSON requests to the `digits` model, alternating between an instance under the policy and one without ")
	w("defences (raw) in the same process and run; %d measured requests each after a warm-up, each timed on its answered attempt ", r.opt.overhead)
	w("(a 429 is waited out and retried: \"rate limited\" counts them). Per-principal rate limits, where the policy has them, are raised to ")
	w("a million a second for this measurement: the limiter decides every request, but does not pace the client. The client and both servers share the machine's CPUs, so the ")
	w("difference, not the level, is the figure.\n\n")
	w("\"In process\": the same requests handed to each server's HTTP handler directly, without TLS or the network (median handler time): the defences' own cost on the request path. ")
	w("Work the defences do off the request path (the monitor's detectors, the watermark's writer) shows in neither. ")
	w("\"Server's span\": the servers' own time for the requests that came over the network, from authentication to the audit record, ")
	w("as the audit records give it (`latency_us`; the mean of the fastest 90%%, since the records count whole microseconds): ")
	w("the same work as in process, but run between the client's, TLS's and the kernel's work on the same CPUs.\n\n")
	w("| policy | raw p50 | policy p50 | added p50 | raw p99 | policy p99 | rate limited | in process: raw | policy | added | server's span: raw | policy | added |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.policies {
		if p.name == "raw" {
			continue
		}
		if !p.supported() {
			w("| %s | n/a (policy not accepted) | | | | | | | | | | | |\n", p.name)
			continue
		}
		for _, o := range r.overhead {
			if o.policy == p.name {
				span := "n/a | n/a | n/a"
				if o.rawSpan > 0 && o.polSpan > 0 {
					span = us(o.rawSpan) + " | " + us(o.polSpan) + " | " + us(o.polSpan-o.rawSpan)
				}
				w("| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |\n", o.policy, us(o.rawP50), us(o.polP50), us(o.polP50-o.rawP50), us(o.rawP99), us(o.polP99), o.refused,
					us(o.rawInProc), us(o.polInProc), us(o.polInProc-o.rawInProc), span)
			}
		}
	}
	for _, o := range r.overhead {
		if o.screened > 0 {
			w("\n%s: %d of the held-out digits are refused by its input validation and left out of the measurement.\n", o.policy, o.screened)
		}
	}
	w("\n")
}
