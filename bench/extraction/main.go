// Command extraction is the model-extraction benchmark: attacks on two
// victims trained on scikit-learn's digits (a logistic regression and an
// MLP, testdata/models/digits_logreg and digits_mlp), run against the real
// server over its REST API, under each defence policy, over several
// seeds; it prints markdown tables (docs/extraction.md says how to read
// them).
//
// The attacks (package attack; the learning they need is package learn):
// equation-solving on returned probabilities, label-only retraining on
// random and on natural queries, Knockoff Nets with natural held-out
// digits, Jacobian-based augmentation; the same split round-robin over 16
// API keys; an attack interleaved with natural queries to dodge
// distribution-based detectors (PRADA); and 20 benign clients replaying
// the held-out digits. It reports the attacker's agreement with the
// victim against queries spent, queries to 98% agreement, queries until
// the first alarm, benign clients flagged, the benign top-1 cost of the
// defences, watermark p-values, and the per-request overhead of the
// defences.
//
// Servers run in this process, built by internal/app exactly as `aegis
// serve` builds them, on loopback: TLS 1.3 from a CA made for the run, API
// keys (the attackers' and benign clients' made through the admin API),
// an authorization policy and the audit log. Each policy (policies/*.yaml)
// adds a server configuration fragment, per-model configuration and key
// scopes; a policy the server does not accept is reported as such and its
// columns read n/a. Alarms are read as an operator reads them, from the
// admin API (GET /admin/v1/extraction/status) or the audit log; the
// watermark is verified as an operator verifies it, from the stopped
// server's recorded marks (alarms.go, watermark.go; README.md).
//
// Usage:
//
//	go run ./bench/extraction [-seeds 5] [-scenarios eqsolve@logreg,split16:*] [-policies raw,detect] [-quick] -o build/bench/extraction.md
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

func main() {
	opt, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if opt.work == "" {
		dir, err := os.MkdirTemp("", "aegis-bench-extraction-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if !opt.keep {
			defer os.RemoveAll(dir)
		}
		opt.work = dir
	}
	if opt.cpuProfile != "" {
		f, err := os.Create(opt.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer f.Close()
	}
	rep, err := run(opt)
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if !opt.keep {
			os.RemoveAll(opt.work)
		}
		os.Exit(1)
	}
	md := rep.markdown()
	os.Stdout.WriteString(md)
	if opt.out != "" {
		if err := os.MkdirAll(filepath.Dir(opt.out), 0o755); err == nil {
			err = os.WriteFile(opt.out, []byte(md), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("extraction", flag.ContinueOnError)
	seeds := fs.Int("seeds", 5, "seeds per scenario and policy")
	scen := fs.String("scenarios", "all", "comma-separated scenario names or patterns (path.Match), e.g. eqsolve@logreg,split16:*,benign")
	pols := fs.String("policies", "raw,detect,round,harden,hardened,watermark", "comma-separated policies (policies/<name>.yaml)")
	policyDir := fs.String("policy-dir", "", "read policies from this directory instead of the embedded ones")
	quick := fs.Bool("quick", false, "smoke run: 1 seed, few queries and clients (figures not meaningful)")
	epochs := fs.Int("epochs", 0, "epochs the attackers train their surrogates for (default 100: learn.DefaultTrain)")
	out := fs.String("o", "", "also write the markdown report here")
	mix := fs.Float64("mix", 1, "interleave: natural queries sent before each attack query")
	split := fs.Int("split", 16, "principals a split attack is spread over")
	benign := fs.Int("benign", 20, "benign clients")
	benignQ := fs.Int("benign-queries", 450, "held-out digits each benign client replays (to each victim)")
	overhead := fs.Int("overhead", 1000, "measured requests per instance for the per-request overhead")
	poll := fs.Int("poll", 10, "read the alarm status every this many queries")
	blockAfter := fs.Int("block-after", 100, "consecutive refusals after which an attacker gives up")
	patient := fs.Bool("patient", true, "clients wait out rate limits (429, Retry-After) and try again")
	maxWait := fs.Duration("max-wait", 20*time.Second, "the most a run's clients wait out rate limits in all; past it a 429 is a refusal")
	work := fs.String("work", "", "work directory (default: a temporary directory, removed at the end)")
	keep := fs.Bool("keep", false, "keep the work directory and every instance's state (audit logs)")
	lib := fs.String("lib", "", "ONNX Runtime library (default: $AEGIS_ONNXRUNTIME_LIB, else build/onnxruntime/libonnxruntime.so.1)")
	verbose := fs.Bool("v", true, "progress on stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (harness and servers) to this file")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	root, err := benchutil.RepoRoot()
	if err != nil {
		return options{}, err
	}
	opt := options{
		seeds: *seeds, scenarios: splitList(*scen), policies: splitList(*pols), policyDir: *policyDir,
		quick: *quick, epochs: *epochs, mix: *mix, split: *split, benign: *benign, benignQueries: *benignQ,
		overhead: *overhead, poll: *poll, blockAfter: *blockAfter, patient: *patient, maxWait: *maxWait,
		work: *work, keep: *keep, root: root, lib: libraryPath(root, *lib), out: *out,
		command:    "go run ./bench/extraction " + strings.Join(args, " "),
		cpuProfile: *cpuProfile,
	}
	if *verbose {
		opt.progress = os.Stderr
	}
	if opt.quick {
		opt = opt.quicken()
	}
	return opt, opt.validate()
}

// quicken shrinks a run to a smoke test.
func (o options) quicken() options {
	o.quick = true
	o.seeds = 1
	o.benign = min(o.benign, 4)
	o.benignQueries = min(o.benignQueries, 10)
	o.overhead = min(o.overhead, 30)
	o.maxWait = min(o.maxWait, 2*time.Second)
	return o
}

func (o options) validate() error {
	switch {
	case o.seeds < 1:
		return fmt.Errorf("-seeds: %d, want at least 1", o.seeds)
	case o.epochs < 0:
		return fmt.Errorf("-epochs: %d, want at least 1 (0 for the default)", o.epochs)
	case o.split < 2:
		return fmt.Errorf("-split: %d, want at least 2", o.split)
	case o.mix < 0:
		return fmt.Errorf("-mix: %g, want at least 0", o.mix)
	case o.benign < 1 || o.benignQueries < 1:
		return fmt.Errorf("-benign %d, -benign-queries %d: want at least 1 each", o.benign, o.benignQueries)
	case o.overhead < 1:
		return fmt.Errorf("-overhead: %d, want at least 1", o.overhead)
	case o.blockAfter < 1:
		return fmt.Errorf("-block-after: %d, want at least 1", o.blockAfter)
	case len(o.policies) == 0:
		return fmt.Errorf("-policies: none given")
	}
	if _, err := os.Stat(o.lib); err != nil {
		return fmt.Errorf("ONNX Runtime library: %w (run `make setup`)", err)
	}
	return nil
}

func libraryPath(root, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("AEGIS_ONNXRUNTIME_LIB"); p != "" {
		return p
	}
	return filepath.Join(root, "build", "onnxruntime", "libonnxruntime.so.1")
}
