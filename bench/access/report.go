package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

func p50(s sample) time.Duration { return s.p50() }
func p99(s sample) time.Duration { return s.p99() }

// median returns the median over rounds of f applied to c's samples.
func median(c *cell, f func(sample) time.Duration) time.Duration {
	xs := make([]float64, len(c.samples))
	for i, s := range c.samples {
		xs[i] = float64(f(s))
	}
	return time.Duration(benchutil.Median(xs))
}

// diffs returns f(c) − f(base) in µs within each round.
func diffs(c, base *cell, f func(sample) time.Duration) []float64 {
	out := make([]float64, min(len(c.samples), len(base.samples)))
	for r := range out {
		out[r] = us(f(c.samples[r]) - f(base.samples[r]))
	}
	return out
}

// throughputs returns c's requests/s in each round.
func throughputs(c *cell) []float64 {
	out := make([]float64, len(c.samples))
	for i, s := range c.samples {
		out[i] = s.throughput()
	}
	return out
}

// perBatch is the request records per write(2) (per fdatasync in durable
// mode) over all of c's rounds, 0 if unknown.
func perBatch(c *cell) float64 {
	var rec, bat uint64
	for _, s := range c.samples {
		rec += s.records
		bat += s.batches
	}
	if bat == 0 {
		return 0
	}
	return float64(rec) / float64(bat)
}

// syscalls formats the server process's read and write system calls per
// measured request, medians over rounds.
func syscalls(c *cell) string {
	var r, w []float64
	for _, s := range c.samples {
		if s.requests > 0 && s.syscr+s.syscw > 0 {
			r = append(r, float64(s.syscr)/float64(s.requests))
			w = append(w, float64(s.syscw)/float64(s.requests))
		}
	}
	if len(r) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f / %.2f", benchutil.Median(r), benchutil.Median(w))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fmtUS(v float64) string {
	if v > -100 && v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// fmtRange formats the median of the per-round values xs, with their range
// when there is more than one.
func fmtRange(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	v := fmtUS(benchutil.Median(xs))
	if len(xs) == 1 {
		return v
	}
	return fmt.Sprintf("%s [%s, %s]", v, fmtUS(slices.Min(xs)), fmtUS(slices.Max(xs)))
}

// parent is the path each path adds one thing to, for the "step" column.
var parent = map[string]string{
	"tls":                "baseline",
	"tls+apikey":         "tls",
	"secure-apikey":      "tls+apikey",
	"secure-jwt":         "secure-apikey",
	"secure-jwt-nocache": "secure-jwt",
	"secure-durable":     "secure-apikey",
}

// targetLimit is the criterion's limit on the added p50, in µs, for the
// paths it names (API keys and JWTs, connections kept alive).
var targetLimit = map[string]float64{"secure-apikey": 15, "secure-jwt": 15}

func (r *report) cell(work int, tr transport, clients int, inst string) *cell {
	return r.cells[cellKey{work, tr, clients, inst}]
}

// headline is the workload the targets are judged on: the MLP at batch 1
// (as in bench/serving), else the first.
func (r *report) headline() int {
	for i, w := range r.work {
		if w.model == "mlp" && w.batch == 1 {
			return i
		}
	}
	return 0
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	o, e := r.opt, r.env
	rel := func(p string) string {
		if x, err := filepath.Rel(o.root, p); err == nil && !strings.HasPrefix(x, "..") {
			return x
		}
		return p
	}
	fmt.Fprintf(&b, "## Run\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", o.command)
	fmt.Fprintf(&b, "- Machine: %d CPUs, %s, Linux %s\n", e.cpus, e.cpuModel, e.kernel)
	fmt.Fprintf(&b, "- Software: %s, ONNX Runtime %s, Aegis at %s\n", e.goVersion, e.ortVersion, e.revision)
	fmt.Fprintf(&b, "- Layout: %d Aegis instances (app.New from config.Default) in one server process; the clients in the harness process; loopback only\n", len(instances))
	switch {
	case o.pin && o.serverProcs > 0:
		fmt.Fprintf(&b, "- Pinned: harness bound to CPU 0 with GOMAXPROCS 1, server process to CPU 1 with **GOMAXPROCS %d**\n", o.serverProcs)
	case o.pin:
		fmt.Fprintf(&b, "- Pinned: harness bound to CPU 0, server process to CPU 1, each with GOMAXPROCS 1\n")
	case o.serverProcs > 0:
		fmt.Fprintf(&b, "- Not pinned: both processes may use every CPU; server process GOMAXPROCS %d\n", o.serverProcs)
	default:
		fmt.Fprintf(&b, "- Not pinned: both processes may use every CPU\n")
	}
	fmt.Fprintf(&b, "- Per cell and round: %d requests at batch 1 (%d warm-up per client), %d at batch 64 (%d warm-up); %d round(s), medians reported\n",
		o.requests1, o.warmup1, o.requestsN, o.warmupN, o.rounds)
	fmt.Fprintf(&b, "- Audit logs (and state): `%s/<instance>/state/audit/audit.log`, on %s\n", rel(filepath.Join(o.dir, "work")), e.fsType)
	if e.fsync50 > 0 {
		fmt.Fprintf(&b, "- write(2) of one record-sized line + fdatasync on that file system, measured before the run (harness, 500 times): p50 %s µs, p99 %s µs\n",
			fmtUS(us(e.fsync50)), fmtUS(us(e.fsync99)))
	}
	fmt.Fprintf(&b, "- Wall time: %.0f s; load average before the run %s, after %s\n", r.elapsed.Seconds(), e.loadBefore, r.loadAfter)
	if o.quick {
		fmt.Fprintf(&b, "- **Quick (smoke) run: the figures are not meaningful.**\n")
	}

	fmt.Fprintf(&b, "\n## Paths\n\n| path | what it is |\n|---|---|\n")
	for _, in := range instances {
		fmt.Fprintf(&b, "| `%s` | %s |\n", in.name, in.desc)
	}

	h := r.headline()
	fmt.Fprintf(&b, "\n## Targets (%s, 1 client)\n\n", r.work[h])
	fmt.Fprintf(&b, "*Added* = the path's p50 (p99) − the baseline's p50 (p99), taken within each round; the median over rounds, [min, max] over rounds.\n\n")
	fmt.Fprintf(&b, "| target | path | transport | added p50 µs | added p99 µs | verdict |\n|---|---|---|---|---|---|\n")
	for _, inst := range []string{"secure-apikey", "secure-jwt", "secure-jwt-nocache", "secure-durable", "baseline-2"} {
		for _, tr := range []transport{restJSON, grpcRaw} {
			c, base := r.cell(h, tr, 1, inst), r.cell(h, tr, 1, "baseline")
			if c == nil || base == nil {
				continue
			}
			d50 := diffs(c, base, p50)
			name, verdict := "(no target)", "—"
			if inst == "baseline-2" {
				name = "(A/A control: ideally 0)"
			}
			if lim, ok := targetLimit[inst]; ok {
				name = fmt.Sprintf("≤ %.0f µs added at p50", lim)
				verdict = "met"
				if v := benchutil.Median(d50); v > lim {
					verdict = fmt.Sprintf("missed by %s µs", fmtUS(v-lim))
				}
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %s |\n", name, inst, tr, fmtRange(d50), fmtRange(diffs(c, base, p99)), verdict)
		}
	}

	for _, g := range r.groups {
		if g.clients != 1 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s, %s, 1 client\n\n", r.work[g.work], g.tr)
		fmt.Fprintf(&b, "| path | p50 µs | p99 µs | requests/s | added p50 µs | added p99 µs | step p50 µs | step over | server reads / writes per request |\n")
		fmt.Fprintf(&b, "|---|---:|---:|---:|---|---|---|---|---|\n")
		base := r.cell(g.work, g.tr, 1, "baseline")
		for _, p := range g.paths {
			c := r.cell(g.work, g.tr, 1, p)
			add50, add99, step, over := "", "", "", ""
			if p != "baseline" {
				add50, add99 = fmtRange(diffs(c, base, p50)), fmtRange(diffs(c, base, p99))
			}
			if par, ok := parent[p]; ok {
				if pc := r.cell(g.work, g.tr, 1, par); pc != nil {
					step, over = fmtRange(diffs(c, pc, p50)), "`"+par+"`"
				}
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %.0f | %s | %s | %s | %s | %s |\n", p, fmtUS(us(median(c, p50))), fmtUS(us(median(c, p99))),
				benchutil.Median(throughputs(c)), add50, add99, step, over, syscalls(c))
		}
		if g.others >= 0 {
			fmt.Fprintf(&b, "\nOther load while measuring: %.2f of %d CPUs.\n", g.others, e.cpus)
		}
	}

	if slices.ContainsFunc(r.groups, func(g group) bool { return g.clients > 1 }) || r.cell(h, restJSON, 1, "secure-durable") != nil {
		fmt.Fprintf(&b, "\n## Durable audit and group commit (%s, rest-json)\n\n", r.work[h])
		fmt.Fprintf(&b, "*records per write* is request records per write(2) over the measured requests of every round; in durable mode each write is followed by one fdatasync, so it is records per fsync.\n\n")
		fmt.Fprintf(&b, "| clients | path | p50 µs | p99 µs | requests/s | vs baseline | added p50 µs | records per write |\n")
		fmt.Fprintf(&b, "|---:|---|---:|---:|---:|---:|---|---:|\n")
		for _, clients := range append([]int{1}, o.clients...) {
			if clients == 1 && !o.parts["main"] && !o.parts["commit"] {
				continue
			}
			base := r.cell(h, restJSON, clients, "baseline")
			for _, p := range []string{"baseline", "secure-apikey", "secure-durable"} {
				c := r.cell(h, restJSON, clients, p)
				if c == nil || base == nil {
					continue
				}
				vs, add, per := "", "", ""
				if p != "baseline" {
					ratio := make([]float64, 0, len(c.samples))
					for i := range min(len(c.samples), len(base.samples)) {
						ratio = append(ratio, c.samples[i].throughput()/base.samples[i].throughput())
					}
					vs = fmt.Sprintf("%.0f%%", 100*benchutil.Median(ratio))
					add = fmtRange(diffs(c, base, p50))
					per = fmt.Sprintf("%.2f", perBatch(c))
				}
				fmt.Fprintf(&b, "| %d | `%s` | %s | %s | %.0f | %s | %s | %s |\n", clients, p, fmtUS(us(median(c, p50))), fmtUS(us(median(c, p99))),
					benchutil.Median(throughputs(c)), vs, add, per)
			}
		}
		var loads []string
		for _, g := range r.groups {
			if g.clients > 1 && g.others >= 0 {
				loads = append(loads, fmt.Sprintf("%d clients %.2f", g.clients, g.others))
			}
		}
		if len(loads) > 0 {
			fmt.Fprintf(&b, "\nOther load while measuring (of %d CPUs): %s.\n", e.cpus, strings.Join(loads, "; "))
		}
	}

	if len(r.logs) > 0 {
		fmt.Fprintf(&b, "\n## Audit logs\n\n")
		fmt.Fprintf(&b, "Checked after the server process shut down: `audit.Verify` with the instance's public key (chain, sequence, every checkpoint signature), a clean close, ")
		fmt.Fprintf(&b, "and one request record per request sent (warm-up, checks and profiles included): *served* records are allowed, status 200, authenticated by the instance's method, with input and output hashes; *refused* are the deliberate requests without a credential (401).\n\n")
		fmt.Fprintf(&b, "| instance | log | files | requests sent | request records | served | refused | checkpoints | signatures | verdict |\n")
		fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---|---|\n")
		for _, c := range r.logs {
			verdict := "ok"
			if c.err != nil {
				verdict = "**FAILED**: " + c.err.Error()
			}
			sig := "not checked"
			if c.report.SignaturesChecked {
				sig = "verified (key " + c.report.KeyID + ")"
			}
			fmt.Fprintf(&b, "| `%s` | `%s` | %d | %d | %d | %d | %d | %d | %s | %s |\n", c.inst, rel(c.path), c.files, c.sent,
				c.report.Requests, c.served, c.denied, c.report.Checkpoints, sig, verdict)
		}
	}

	if len(r.profiles) > 0 {
		fmt.Fprintf(&b, "\n## Profiles\n\nServer-process CPU profiles, %s, 1 client, %d requests each:\n\n", r.work[h], o.profileRequests)
		for _, p := range r.profiles {
			fmt.Fprintf(&b, "- `%s`\n", rel(p))
		}
		fmt.Fprintf(&b, "\nRead with `go tool pprof -top <file>`, or `go tool pprof -top -diff_base <baseline profile> <secure profile>`.\n")
	}
	return b.String()
}
