package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func p50(s sample) time.Duration { return s.p50() }
func p99(s sample) time.Duration { return s.p99() }

// median returns the median over rounds of f applied to c's samples.
func median(c *cell, f func(sample) time.Duration) time.Duration {
	xs := make([]float64, len(c.samples))
	for i, s := range c.samples {
		xs[i] = float64(f(s))
	}
	return time.Duration(medianOf(xs))
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// inferences returns c's throughput per round in inferences per second.
func (c *cell) inferences() []float64 {
	out := make([]float64, len(c.samples))
	for i, s := range c.samples {
		out[i] = s.throughput() * float64(c.batch)
	}
	return out
}

// overhead returns Aegis's own overhead in µs as the criterion defines it:
// its p50 minus the floor's p50 minus bare ONNX Runtime's p50, each p50 the
// median over rounds (the figures the tables show).
func overhead(aegis, floor, bare *cell) float64 {
	return us(median(aegis, p50) - median(floor, p50) - median(bare, p50))
}

// overheads returns the same difference within each round, to show how
// much it moves between rounds.
func overheads(aegis, floor, bare *cell) []float64 {
	out := make([]float64, len(aegis.samples))
	for r := range out {
		out[r] = us(aegis.samples[r].p50() - floor.samples[r].p50() - bare.samples[r].p50())
	}
	return out
}

// code returns Aegis's p50 minus the p50 of the floor that also runs the
// model, in µs: what Aegis's own code adds.
func code(aegis, floorORT *cell) float64 {
	return us(median(aegis, p50) - median(floorORT, p50))
}

// codeCost returns the same difference within each round.
func codeCost(aegis, floorORT *cell) []float64 {
	out := make([]float64, len(aegis.samples))
	for r := range out {
		out[r] = us(aegis.samples[r].p50() - floorORT.samples[r].p50())
	}
	return out
}

// throughputRatios returns Aegis's throughput over bare's per round.
func throughputRatios(aegis, bare *cell) []float64 {
	a, b := aegis.inferences(), bare.inferences()
	out := make([]float64, len(a))
	for r := range out {
		out[r] = a[r] / b[r]
	}
	return out
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fmtUS(v float64) string {
	if v > -100 && v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// fmtRange formats the median of xs, with the range over rounds when there
// is more than one.
func fmtRange(xs []float64, f func(float64) string) string {
	return fmtWith(medianOf(xs), xs, f)
}

// fmtWith formats v, with the range of the per-round values xs when there
// is more than one.
func fmtWith(v float64, xs []float64, f func(float64) string) string {
	if len(xs) <= 1 {
		return f(v)
	}
	return fmt.Sprintf("%s [%s, %s]", f(v), f(slices.Min(xs)), f(slices.Max(xs)))
}

func fmtRatio(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }

type cellKey struct {
	model          string
	batch, clients int
	path           pathKind
}

func (r *report) index() map[cellKey]*cell {
	m := map[cellKey]*cell{}
	for _, c := range r.cells {
		m[cellKey{c.model, c.batch, c.clients, c.path}] = c
	}
	return m
}

// markdown renders the report: the run, the targets, one table per model,
// and the profiles.
func (r *report) markdown() string {
	var b strings.Builder
	o, e := r.opt, r.env
	idx := r.index()
	fmt.Fprintf(&b, "## Run\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", strings.TrimSpace(o.command))
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, Linux %s\n", e.cpus, e.cpuModel, e.kernel)
	fmt.Fprintf(&b, "- Software: %s, ONNX Runtime %s, Aegis at %s\n", e.goVersion, e.ortVersion, e.revision)
	fmt.Fprintf(&b, "- Layout: Aegis and the floors in one server process; clients and bare ONNX Runtime in the harness process; loopback only\n")
	if o.pin {
		fmt.Fprintf(&b, "- Pinned: harness bound to CPU 0, server process to CPU 1, each with GOMAXPROCS 1 (so Aegis's default session concurrency, and the bare baseline's, is 1)\n")
	} else {
		fmt.Fprintf(&b, "- Not pinned: both processes may use every CPU (GOMAXPROCS %d each)\n", e.gomaxprocs)
	}
	fmt.Fprintf(&b, "- Per cell and round: %d requests at batch 1 (%d warm-up per client), %d at larger batches (%d warm-up); %d round(s), medians reported\n",
		o.requests1, o.warmup1, o.requestsN, o.warmupN, o.rounds)
	fmt.Fprintf(&b, "- Wall time: %.0f s; load average before the run %s, after %s (the machine is shared; each model's table ends with the load other work put on it)\n",
		r.elapsed.Seconds(), e.loadBefore, r.loadAfter)
	if o.quick {
		fmt.Fprintf(&b, "- **Quick (smoke) run: the figures are not meaningful.**\n")
	}

	fmt.Fprintf(&b, "\n## Targets (mlp)\n\n")
	fmt.Fprintf(&b, "Overhead = Aegis p50 − floor p50 − bare p50, each p50 the median over rounds as in the tables below; [min, max] is the same difference taken within each round. ")
	fmt.Fprintf(&b, "It splits into *ORT in a server* (floor+ort p50 − floor p50 − bare p50: running the model inside a network server rather than in a tight loop) ")
	fmt.Fprintf(&b, "and *Aegis code* (Aegis p50 − floor+ort p50: decoding, validation, encoding, the pipeline).\n\n")
	fmt.Fprintf(&b, "| target | overhead µs | ORT in a server µs | Aegis code µs | verdict |\n|---|---|---|---|---|\n")
	for _, t := range []struct {
		path  pathKind
		limit float64
	}{{pathAegisGRPC, 15}, {pathAegisJSON, 25}, {pathAegisBin, -1}} {
		a, ok := idx[cellKey{"mlp", 1, 1, t.path}]
		f := idx[cellKey{"mlp", 1, 1, t.path.floor()}]
		fo := idx[cellKey{"mlp", 1, 1, t.path.withORT()}]
		bare := idx[cellKey{"mlp", 1, 1, pathBare}]
		if !ok || f == nil || fo == nil || bare == nil {
			continue
		}
		ov := overhead(a, f, bare)
		name := fmt.Sprintf("batch 1, 1 client, %s (no target)", t.path)
		verdict := "—"
		if t.limit >= 0 {
			name = fmt.Sprintf("≤ %.0f µs, batch 1, 1 client, %s", t.limit, t.path)
			verdict = verdictMax(ov, t.limit)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", name, fmtWith(ov, overheads(a, f, bare), fmtUS),
			fmtWith(overhead(fo, f, bare), overheads(fo, f, bare), fmtUS),
			fmtWith(code(a, fo), codeCost(a, fo), fmtUS), verdict)
	}
	fmt.Fprintf(&b, "\n| target | Aegis / bare throughput | floor+ort / bare | verdict |\n|---|---|---|---|\n")
	for _, batch := range o.batches {
		if batch == 1 {
			continue
		}
		for _, clients := range o.clients {
			bare := idx[cellKey{"mlp", batch, clients, pathBare}]
			for _, p := range []pathKind{pathAegisGRPC, pathAegisBin, pathAegisJSON} {
				a := idx[cellKey{"mlp", batch, clients, p}]
				if a == nil || bare == nil {
					continue
				}
				ratio := throughputRatios(a, bare)
				v := medianOf(ratio)
				verdict := "met"
				if v < 0.90 {
					verdict = fmt.Sprintf("missed by %.0f points", 100*(0.90-v))
				}
				fo := "—"
				if c := idx[cellKey{"mlp", batch, clients, p.withORT()}]; c != nil {
					fo = fmtRange(throughputRatios(c, bare), fmtRatio)
				}
				fmt.Fprintf(&b, "| ≥ 90%% of bare, batch %d, %d client(s), %s | %s | %s | %s |\n",
					batch, clients, p, fmtRange(ratio, fmtRatio), fo, verdict)
			}
		}
	}

	for _, model := range o.models {
		fmt.Fprintf(&b, "\n## %s\n\n", model)
		fmt.Fprintf(&b, "p50 and p99 are per request (a request carries `batch` inferences); inferences/s = requests/s × batch.\n")
		fmt.Fprintf(&b, "*over floor* = p50 − its floor's p50 (server-side work, ONNX Runtime included); ")
		fmt.Fprintf(&b, "*overhead* = p50 − floor p50 − bare p50; *Aegis code* = p50 − floor+ort p50; [min, max] is the same difference within each round.\n\n")
		fmt.Fprintf(&b, "| batch | clients | path | p50 µs | p99 µs | inferences/s | vs bare | over floor µs | overhead µs | Aegis code µs |\n")
		fmt.Fprintf(&b, "|---:|---:|---|---:|---:|---:|---:|---:|---|---|\n")
		for _, batch := range o.batches {
			for _, clients := range o.clients {
				bare := idx[cellKey{model, batch, clients, pathBare}]
				for p := range numPaths {
					c := idx[cellKey{model, batch, clients, p}]
					if c == nil {
						continue
					}
					vsBare, over, ov, codeUS := "", "", "", ""
					if p != pathBare && bare != nil {
						vsBare = fmtRatio(medianOf(throughputRatios(c, bare)))
					}
					if f := idx[cellKey{model, batch, clients, p.floor()}]; f != nil && bare != nil {
						over = fmtUS(us(median(c, p50) - median(f, p50)))
						ov = fmtWith(overhead(c, f, bare), overheads(c, f, bare), fmtUS)
					}
					if fo := idx[cellKey{model, batch, clients, p.withORT()}]; fo != nil {
						codeUS = fmtWith(code(c, fo), codeCost(c, fo), fmtUS)
					}
					fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %.0f | %s | %s | %s | %s |\n",
						batch, clients, p, fmtUS(us(median(c, p50))), fmtUS(us(median(c, p99))),
						medianOf(c.inferences()), vsBare, over, ov, codeUS)
				}
			}
		}
		var loads []string
		for _, g := range r.groups {
			if g.model == model && g.others >= 0 {
				loads = append(loads, fmt.Sprintf("batch %d × %d client(s) %.2f", g.batch, g.clients, g.others))
			}
		}
		if len(loads) > 0 {
			fmt.Fprintf(&b, "\nOther load while measuring (CPUs busy with other processes or stolen by the hypervisor, of %d): %s.\n",
				e.cpus, strings.Join(loads, "; "))
		}
	}

	if len(r.profiles) > 0 {
		fmt.Fprintf(&b, "\n## Profiles\n\nServer-process CPU profiles, 1 client (%d requests each at batch 1, %d at larger batches):\n\n", o.profileRequests, max(1, o.profileRequests/10))
		for _, p := range r.profiles {
			if rel, err := filepath.Rel(o.root, p); err == nil && !strings.HasPrefix(rel, "..") {
				p = rel
			}
			fmt.Fprintf(&b, "- `%s`\n", p)
		}
		fmt.Fprintf(&b, "\nRead with `go tool pprof -top <file>`.\n")
	}
	return b.String()
}

func verdictMax(v, limit float64) string {
	if v <= limit {
		return "met"
	}
	return fmt.Sprintf("missed by %s µs", fmtUS(v-limit))
}
