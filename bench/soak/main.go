// Command soak drives the real Aegis server past its capacity and reports
// how it sheds load: the acceptance test of load shedding on a whole
// server, where bench/ratelimit measures the gate on a simulated one
// (docs/ratelimit.md, "Overload on the real server", says how to read it).
//
// The server runs in a child process (this binary, re-executed, bound to
// CPU 1 by default, the harness to CPU 0), built by internal/app exactly
// as `aegis serve` wires it from config.Default: TLS 1.3, an API key and
// an authorization policy, the audit log, the default load-shedding gate
// (ratelimit.Shed: max_in_flight GOMAXPROCS, max_queue twice that,
// queue_timeout 10 ms, retry_after 1 s). Only the per-principal limits are
// off, since one key sends all the load. Its clients are many keep-alive
// HTTP/1.1 connections sending batch-1 REST JSON inference requests, each
// connection one request at a time. In order:
//
//  1. capacity: closed-loop clients, 1, 2, 3, 4, 6, … of them, until
//     adding clients stops increasing the rate of admitted (200) requests
//     for two steps; the best rate is the server's capacity;
//  2. normal: open-loop Poisson arrivals at 0.5× capacity (-normal, 20 s),
//     whose admitted p99 is the "normal" p99;
//  3. overload: open-loop Poisson arrivals at 3× capacity for -duration
//     (10 minutes). An arrival that finds every connection busy is not
//     sent and counts as a client-side drop;
//  4. recovery: 0.5× capacity again (-recovery, 10 s), then a forced
//     garbage collection in the server, whose resident size after it is
//     what the run left behind.
//
// Every second of every phase it records what was offered, admitted (200),
// shed (503), limited (429), failed and dropped, the latencies of admitted
// and refused requests (counted by the second they were due; also to the
// kernel's receipt of the answer, which leaves out the harness's own wait
// to read it), and the server's VmRSS and RssAnon (/proc/PID/status),
// threads, goroutines, Go heap and CPU time. The report gives the refusal
// latency, the admitted p99 under overload against the normal p99, the RSS
// at the start, the 1-minute mark, its minimum, maximum and end and its
// trend, the garbage per request, the errors, and a verdict for each
// target; the process exits 1 if a target is missed.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

func main() {
	if isChild() {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "soak server:", err)
			os.Exit(1)
		}
		return
	}
	opt, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rep, err := run(opt)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	os.Stdout.WriteString(md)
	if opt.out != "" {
		if err := os.WriteFile(opt.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
	}
	if opt.csv != "" {
		if err := os.WriteFile(opt.csv, []byte(rep.csv()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
	}
	if missed := rep.missed(); len(missed) > 0 {
		fmt.Fprintln(os.Stderr, "soak: targets missed:", strings.Join(missed, "; "))
		os.Exit(1)
	}
}

// options configure one run.
type options struct {
	model    string
	duration time.Duration // of the overload phase
	normal   time.Duration // of the phase that sets the normal p99
	recovery time.Duration // of the phase after the overload; 0 for none
	overload float64       // offered load of the overload phase, × capacity
	light    float64       // offered load of the normal and recovery phases, × capacity
	conns    int           // client connections (the most requests in flight)
	warmup   time.Duration // one closed-loop client before the capacity steps
	stepWarm time.Duration // per capacity step, before measuring
	stepLen  time.Duration // per capacity step, measured
	// maxClients bounds the capacity search.
	maxClients int
	pin        bool   // harness on CPU 0, server process on CPU 1
	seed       uint64 // of the arrival times

	dir      string    // work directory (its work/ is replaced and, unless keep, removed)
	keep     bool      // keep the work directory (certificates, state, audit log)
	out      string    // also write the markdown here
	csv      string    // write the per-second record here
	root     string    // repository root (testdata)
	lib      string    // ONNX Runtime library
	progress io.Writer // progress lines; nil for none
	command  string    // the command line, for the report
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Minute, "length of the overload phase")
	model := fs.String("model", "mlp", "model to drive: mlp (784-512-512-10) or digits")
	normal := fs.Duration("normal", 20*time.Second, "length of the phase at half capacity that sets the normal p99")
	recovery := fs.Duration("recovery", 10*time.Second, "length of the phase at half capacity after the overload; 0 for none")
	overload := fs.Float64("overload", 3, "offered load of the overload phase, × capacity")
	conns := fs.Int("conns", 256, "client connections: the most requests in flight at once")
	pin := fs.Bool("pin", true, "bind the harness to CPU 0 and the server process to CPU 1 (needs 2 CPUs)")
	seed := fs.Uint64("seed", 1, "seed of the arrival times")
	dir := fs.String("dir", "build/soak", "work directory: models, certificates, state and audit log (its work/ is replaced)")
	keep := fs.Bool("keep", false, "keep the work directory (the audit log grows by about 0.5 KB per request)")
	out := fs.String("o", "", "also write the markdown report to this file")
	csv := fs.String("csv", "", "write the per-second record of every phase to this CSV file")
	prof := fs.String("cpuprofile", "", "have the server process write a CPU profile of its whole life to this file")
	shed := fs.String("shed", "", "YAML decoded over the server's rate_limit.shed defaults, e.g. '{target_delay: 1ms, interval: 20ms}'")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *prof != "" {
		abs, err := filepath.Abs(*prof)
		if err != nil {
			return options{}, err
		}
		os.Setenv(envProf, abs)
	}
	if *shed != "" {
		// The server process reads it (serverConfig); check it here.
		if _, err := shedConfig(*shed); err != nil {
			return options{}, fmt.Errorf("-shed: %w", err)
		}
		os.Setenv(envShed, *shed)
	}
	root, err := benchutil.RepoRoot()
	if err != nil {
		return options{}, err
	}
	opt := options{
		model: *model, duration: *duration, normal: *normal, recovery: *recovery,
		overload: *overload, light: 0.5, conns: *conns,
		warmup: 3 * time.Second, stepWarm: time.Second, stepLen: 3 * time.Second, maxClients: 64,
		pin: *pin && runtime.NumCPU() >= 2, seed: *seed,
		dir: *dir, keep: *keep, out: *out, csv: *csv, root: root, lib: libraryPath(root),
		progress: os.Stderr,
		command:  strings.TrimSpace("go run ./bench/soak " + strings.Join(args, " ")),
	}
	if !filepath.IsAbs(opt.dir) {
		opt.dir = filepath.Join(root, opt.dir)
	}
	return opt, opt.validate()
}

func (o options) validate() error {
	switch {
	case modelFeatures[o.model] == 0:
		return fmt.Errorf("-model: %q is not mlp or digits", o.model)
	case o.duration < time.Second:
		return fmt.Errorf("-duration: %s is below 1s", o.duration)
	case o.normal < time.Second:
		return fmt.Errorf("-normal: %s is below 1s", o.normal)
	case o.recovery < 0:
		return fmt.Errorf("-recovery: %s is negative", o.recovery)
	case !(o.overload > 1) || o.overload > 100:
		return fmt.Errorf("-overload: %g out of range (1, 100]", o.overload)
	case o.conns < 4 || o.conns > 4096:
		return fmt.Errorf("-conns: %d out of range 4..4096", o.conns)
	case o.duration > 24*time.Hour:
		return fmt.Errorf("-duration: %s is above 24h", o.duration)
	}
	return nil
}

// libraryPath is AEGIS_ONNXRUNTIME_LIB if set, else the library `make
// setup` installs.
func libraryPath(root string) string {
	if p := os.Getenv(envLib); p != "" {
		return p
	}
	return filepath.Join(root, "build", "onnxruntime", "libonnxruntime.so.1")
}
