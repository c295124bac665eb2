package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Targets of the acceptance criterion.
const (
	targetTimeRatio = 1.2 // decrypt+verify / max(age -d, sha256sum)
	targetMemRatio  = 2.5 // peak RSS / model size
)

// report is one run's results.
type report struct {
	opt        options
	env        envInfo
	fx         *fixture
	base       sample
	warm, cold map[string][]sample
	profiles   []string
	busyBefore []string
	busyAfter  []string
	trace      sample // one full load with its RSS sampled every 2 ms
}

func secs(d time.Duration) string { return fmt.Sprintf("%.3f s", d.Seconds()) }

func gibps(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f GiB/s", float64(bytes)/(1<<30)/d.Seconds())
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// figures are the headline numbers of one cache mode.
type figures struct {
	ageCLI, sha256sum, limit, verify, session stats
	limitName                                 string
	ratio                                     float64
}

func (r *report) figures(ss map[string][]sample) figures {
	wall := func(s sample) time.Duration { return s.wall }
	f := figures{
		ageCLI:    summarize(pick(ss[cmdAge], wall)),
		sha256sum: summarize(pick(ss[cmdSHA256sum], wall)),
		verify:    summarize(pick(ss[cmdVerify], func(s sample) time.Duration { return s.res.DecryptVerify })),
		session:   summarize(pick(ss[cmdLoad], func(s sample) time.Duration { return s.res.Session })),
	}
	f.limit, f.limitName = f.ageCLI, "age -d"
	if f.sha256sum.median > f.ageCLI.median {
		f.limit, f.limitName = f.sha256sum, "sha256sum"
	}
	if f.limit.median > 0 {
		f.ratio = float64(f.verify.median) / float64(f.limit.median)
	}
	return f
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	fx, e := r.fx, r.env
	size := human(r.opt.size)

	p("## Load performance: a %s encrypted, signed model\n\n", size)
	p("Machine: %d CPUs (%s; %s), %s RAM, Linux %s, %s; %s; %s; ONNX Runtime %s. Revision %s. %s.\n\n",
		e.cpus, e.cpuModel, e.cpuFlags, e.memTotal, e.kernel, e.goVersion, e.ageVersion, e.coreutils,
		r.base.res.ORTVersion, e.revision, e.date)
	p("Command: `%s` (load average before %s, after %s", r.opt.command, e.loadBefore, e.loadAfter)
	if len(r.busyBefore)+len(r.busyAfter) > 0 {
		p("; **the serving benchmark was running** (%s), so the machine may have been busy",
			strings.Join(append(r.busyBefore, r.busyAfter...), "; "))
	} else {
		p("; no serving benchmark running before or after")
	}
	p(").\n\n")
	graph := fmt.Sprintf("`y = MatMul(x, W)`, W a %d × %d FP32 initializer", fx.shape.Rows, modelCols)
	if fx.shape.Layers > 1 {
		graph = fmt.Sprintf("`y = Concat(MatMul(x, W1), …, MatMul(x, W%d))`, %d FP32 initializers of %d × %d (%s each)",
			fx.shape.Layers, fx.shape.Layers, fx.shape.Rows, modelCols, human(fx.shape.tensorBytes()))
	}
	p("Model: %s in raw_data, x of shape [1, %d], opset %d, IR version %d; "+
		"model.onnx is %d bytes, model.onnx.age %d bytes, signed with a fresh ECDSA P-256 key "+
		"and encrypted to a fresh X25519 identity. Every Aegis figure was checked: the plaintext's SHA-256 "+
		"equals the signed digest, and each full load ran the model once and compared its output exactly.\n\n",
		graph, fx.shape.Rows, opsetONNX, irVersion, fx.modelSize, fx.sealedSize)

	warm := r.figures(r.warm)
	memVerify, memLoad := peak(r.warm[cmdVerify]), peak(r.warm[cmdLoad])
	mratio := func(n int64) float64 { return float64(n) / float64(fx.modelSize) }
	p("### Verdicts (warm page cache, medians of %d)\n\n", r.opt.reps)
	p("| criterion | measured | target | verdict |\n|---|---|---|---|\n")
	p("| Aegis decrypt+verify / slower limit (%s) | %s / %s = **%.2f×** | ≤ %.1f× | %s |\n",
		warm.limitName, secs(warm.verify.median), secs(warm.limit.median), warm.ratio, targetTimeRatio, verdict(warm.ratio <= targetTimeRatio))
	p("| peak RSS, decrypt+verify / model size | %s / %s = **%.2f×** | < %.1f× | %s |\n",
		human(memVerify), human(fx.modelSize), mratio(memVerify), targetMemRatio, verdict(mratio(memVerify) < targetMemRatio))
	p("| peak RSS, full load (decrypt+verify+ONNX Runtime session) / model size | %s / %s = **%.2f×** | < %.1f× | %s |\n\n",
		human(memLoad), human(fx.modelSize), mratio(memLoad), targetMemRatio, verdict(mratio(memLoad) < targetMemRatio))

	p("### Warm page cache\n\n")
	p("Both files were read once before the first round, so every figure below is warm-cache. Each row is a separate "+
		"process per repetition; %d rounds, one of each per round in rotating order, after one unreported warm-up round. "+
		"Peak RSS is the process's `ru_maxrss` (the largest over the rounds); an Aegis process with ONNX Runtime "+
		"loaded and nothing else peaks at %s.\n\n", r.opt.reps, human(r.base.res.HWMBase))
	r.table(&b, r.warm, fx)

	r.variants(&b, r.warm, fx)
	r.timeline(&b, fx)

	if parts := r.warm[cmdParts]; len(parts) > 0 {
		p("### Where the time goes\n\n")
		p("The parts of `seal.DecryptFile`, each timed alone in one process (warm cache, medians of %d):\n\n", len(parts))
		p("| part | median | rate |\n|---|---|---|\n")
		for _, part := range []struct{ key, what string }{
			{partMap, "mmap + MADV_DONTDUMP + mlock of the whole buffer (mlock faults in and zeroes every page)"},
			{partRead, "read(2) of the encrypted file in 64 KiB reads (page cache → user memory)"},
			{partDecrypt, "age.Decrypt stream into the mapped buffer (read + ChaCha20-Poly1305 + age's copies), no hashing"},
			{partSHA256, "crypto/sha256 over the plaintext in memory"},
			{partWipe, "Wipe: clear + munlock + munmap"},
		} {
			st := summarize(pick(parts, func(s sample) time.Duration { return s.res.Parts[part.key] }))
			p("| %s | %s | %s |\n", part.what, secs(st.median), gibps(fx.modelSize, st.median))
		}
		p("\n")
	}

	if len(r.cold) > 0 {
		cold := r.figures(r.cold)
		p("### Cold page cache\n\n")
		p("Before every command: `sync; echo 3 > /proc/sys/vm/drop_caches`, then the programs and libraries "+
			"(age, sha256sum, this binary, ONNX Runtime) are run once so that only the model files come from disk. "+
			"%d rounds. Aegis decrypt+verify / slower limit (%s): %s / %s = **%.2f×**.\n\n",
			r.opt.coldReps, cold.limitName, secs(cold.verify.median), secs(cold.limit.median), cold.ratio)
		r.table(&b, r.cold, fx)
	}
	if len(r.profiles) > 0 {
		p("CPU profiles of one decrypt+verify and one full load (timed part only): `%s`.\n\n", strings.Join(r.profiles, "`, `"))
	}
	return b.String()
}

// table writes the per-command table of one cache mode.
func (r *report) table(b *strings.Builder, ss map[string][]sample, fx *fixture) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("| measurement | median | min | max | rate | peak RSS | peak / model |\n|---|---|---|---|---|---|---|\n")
	row := func(name, cmd string, f func(sample) time.Duration, withMem bool) {
		samples := ss[cmd]
		if len(samples) == 0 {
			return
		}
		st := summarize(pick(samples, f))
		mem, ratio := "", ""
		if withMem {
			pk := peak(samples)
			mem, ratio = human(pk), fmt.Sprintf("%.2f×", float64(pk)/float64(fx.modelSize))
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", name, secs(st.median), secs(st.min), secs(st.max),
			gibps(fx.modelSize, st.median), mem, ratio)
	}
	wall := func(s sample) time.Duration { return s.wall }
	dv := func(s sample) time.Duration { return s.res.DecryptVerify }
	row("limit A: `age -d -i identity.txt model.onnx.age > /dev/null`", cmdAge, wall, true)
	row("limit B: `sha256sum model.onnx` (the plaintext)", cmdSHA256sum, wall, true)
	row("**Aegis decrypt+verify**: `seal.DecryptFile` + `deploy.Policy.Check` (open → verified plaintext)", cmdVerify, dv, true)
	row("  of which `seal.DecryptFile` (decrypt + SHA-256, one pass)", cmdVerify, func(s sample) time.Duration { return s.res.Decrypt }, false)
	row("  then `Plaintext.Wipe` (not in the figure above)", cmdVerify, func(s sample) time.Duration { return s.res.Wipe }, false)
	row("full load: decrypt+verify (as above, in the full-load process)", cmdLoad, dv, false)
	row("full load: **ONNX Runtime session creation** (`onnx.NewSession`), separately", cmdLoad, func(s sample) time.Duration { return s.res.Session }, false)
	row("full load: decrypt+verify + session + Wipe (peak RSS: the whole load)", cmdLoad, func(s sample) time.Duration {
		return s.res.DecryptVerify + s.res.Session + s.res.Wipe
	}, true)
	if s := ss[cmdNoLock]; len(s) > 0 {
		locked := "mlock refused"
		if s[0].res.Locked {
			locked = "mlock still succeeded"
		}
		row(fmt.Sprintf("Aegis decrypt+verify without CAP_IPC_LOCK (RLIMIT_MEMLOCK default: %s)", locked), cmdNoLock, dv, true)
	}
	row("experiment: seal with SHA-256 on a second goroutine (decrypt+verify)", cmdPipelined, dv, true)
	row("experiment: age.DecryptReaderAt + SHA-256 on a second goroutine (decrypt+verify)", cmdReaderAt, dv, true)
	p("\n")
}

// variants writes the full-load table: today's session settings against
// the candidate ONNX Runtime settings.
func (r *report) variants(b *strings.Builder, ss map[string][]sample, fx *fixture) {
	if len(ss[cmdLoad]) == 0 {
		return
	}
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("### Full load: where the memory goes, and ONNX Runtime settings\n\n")
	p("Each row is a full load (decrypt+verify, session creation, Wipe, one checked run) in its own process. "+
		"*RSS after* is the resident set once the plaintext is wiped: what the loaded session keeps (including "+
		"memory freed but not returned to the system). For the ORT-format rows the plaintext is not wiped: "+
		"the session runs from it, so *RSS after* is taken with both alive. Ratios are to the ONNX model's size. "+
		"The process's floor is %s.\n\n", human(r.base.res.HWMBase))
	p("| session settings | session creation (median) | peak RSS | peak / model | (peak − floor) / model | RSS after |\n|---|---|---|---|---|---|\n")
	row := func(name, cmd string) {
		s := ss[cmd]
		if len(s) == 0 {
			return
		}
		st := summarize(pick(s, func(s sample) time.Duration { return s.res.Session }))
		pk := peak(s)
		var after int64
		for _, x := range s {
			after = max(after, x.res.RSSEnd)
		}
		p("| %s | %s | %s | %.2f× | %.2f× | %s |\n", name, secs(st.median), human(pk),
			float64(pk)/float64(fx.modelSize), float64(pk-r.base.res.HWMBase)/float64(fx.modelSize), human(after))
	}
	row("**today**: `onnx.NewSession(model, onnx.Options{})`", cmdLoad)
	for _, k := range slices.Sorted(maps.Keys(ortVariants)) {
		row("experiment: "+ortVariants[k].what, k)
	}
	p("\n")
}

// timeline writes the traced full load's resident set over time.
func (r *report) timeline(b *strings.Builder, fx *fixture) {
	t := r.trace.res
	if len(t.RSSTrace) == 0 {
		return
	}
	step := fx.modelSize / 16
	var pts []string
	last := int64(-1 << 62)
	for i, pt := range t.RSSTrace {
		if i == len(t.RSSTrace)-1 || pt.RSS-last >= step || last-pt.RSS >= step {
			pts = append(pts, fmt.Sprintf("%.2f s %s", pt.At.Seconds(), human(pt.RSS)))
			last = pt.RSS
		}
	}
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("Resident set of one traced full load (today's settings), sampled every 2 ms from the open; decrypt+verify "+
		"ended at %.2f s and session creation at %.2f s, then Wipe:\n\n", t.DecryptVerify.Seconds(), (t.DecryptVerify + t.Session).Seconds())
	p("```\n%s\n```\n\n", wrap(pts, 8))
}

// wrap joins items, n to a line.
func wrap(items []string, n int) string {
	var lines []string
	for i := 0; i < len(items); i += n {
		lines = append(lines, strings.Join(items[i:min(i+n, len(items))], " → "))
	}
	return strings.Join(lines, "\n")
}
