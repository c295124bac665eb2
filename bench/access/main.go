// Command access measures what TLS, authentication, authorization and the
// audit log add to each request Aegis serves, and prints the results as
// markdown (docs/benchmarks.md, "Access controls", says how to read them).
//
// One server process (this binary, re-executed, bound to CPU 1 by default)
// runs several Aegis instances, each built by internal/app exactly as
// `aegis serve` wires it from config.Default, all serving the same models
// (digits and the MLP) on loopback, each with its own state directory:
//
//   - baseline: plaintext, authentication and audit disabled, as
//     bench/serving measures Aegis;
//   - tls: TLS 1.3 only;
//   - tls+apikey: TLS, an API key and the authorization policy, no audit;
//   - secure-apikey: the same with the audit log (each record handed to
//     the operating system before its response);
//   - secure-jwt and secure-jwt-nocache: an RS256 JWT from a local
//     identity provider instead of the API key, with the verified-token
//     cache (the default) and without it;
//   - secure-durable: secure-apikey with audit.durable (each record
//     fdatasynced before its response, concurrent records group-committed).
//
// The clients run in this process (CPU 0): each has its own keep-alive
// connection (REST JSON over HTTP/1.1, or gRPC with raw contents), sends
// prebuilt requests one at a time, reads every response in full and checks
// its status and size; the first response of every instance must be
// byte-identical to the baseline's. Every cell runs a fixed number of
// requests after a warm-up, in several rounds, the paths in alternating
// order; the added p50 and p99 over baseline are taken within each round
// and the report gives their median. A second part runs the MLP with 2, 4
// and 8 concurrent clients, to show how much throughput durable mode keeps
// and how many records share an fsync (group commit). At the end the server process shuts down, closing its audit logs,
// and every audit log is verified (audit.Verify, signatures included) and
// must hold exactly one request record per request sent.
//
// The run is bounded: fixed request counts, a timeout on every request,
// and a server process that exits when this one closes its stdin (or
// after 30 minutes at most).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

func main() {
	if isChild() {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
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
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	os.Stdout.WriteString(md)
	if opt.out != "" {
		if err := os.WriteFile(opt.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if rep.auditErr != nil {
		fmt.Fprintln(os.Stderr, "bench: audit logs:", rep.auditErr)
		os.Exit(1)
	}
}

// options configure one run.
type options struct {
	quick bool
	pin   bool // harness on CPU 0, server process on CPU 1
	// serverProcs, if positive, is the server process's GOMAXPROCS (after
	// pinning, which sets 1)
	serverProcs int
	rounds      int
	requests1   int   // measured requests per cell and round at batch 1
	requestsN   int   // ... at batch 64
	warmup1     int   // warm-up requests per client at batch 1
	warmupN     int   // ... at batch 64
	batched     bool  // also the MLP at batch 64
	clients     []int // client counts of the group-commit part (beyond 1)
	// parts of the run: "main" (every path at 1 client), "commit" (group
	// commit with more clients), "profiles"
	parts map[string]bool

	profileRequests int // requests per profiled path; 0 for no profiles

	dir      string    // work directory: models, certificates, state, profiles
	out      string    // also write the markdown here
	root     string    // repository root (testdata)
	lib      string    // ONNX Runtime library
	progress io.Writer // progress lines; nil for none
	command  string    // the command line, for the report
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("access", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke run: 1 round, few requests (numbers are not meaningful)")
	rounds := fs.Int("rounds", 9, "rounds per cell; the report gives medians")
	req1 := fs.Int("requests", 3000, "measured requests per cell and round at batch 1")
	reqN := fs.Int("requests-batched", 200, "measured requests per cell and round at batch 64")
	batched := fs.Bool("batched", true, "also measure the MLP at batch 64")
	clients := fs.String("clients", "2,4,8", "concurrent clients in the group-commit part (MLP, batch 1)")
	pin := fs.Bool("pin", true, "bind the harness to CPU 0 and the server process to CPU 1, each with GOMAXPROCS 1 (needs 2 CPUs)")
	parts := fs.String("parts", "main,commit,profiles", "parts to run: main (every path, 1 client), commit (group commit, -clients), profiles")
	procs := fs.Int("server-procs", 0, "the server process's GOMAXPROCS, if not the default (1 when pinned, else the CPU count)")
	profReq := fs.Int("profile-requests", 30000, "requests per profiled path (MLP, batch 1, 1 client); 0 for no profiles")
	dir := fs.String("dir", "build/bench/access", "work directory: models, certificates, state (audit logs) and CPU profiles; its work/ is replaced")
	out := fs.String("o", "", "also write the markdown report to this file")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	root, err := benchutil.RepoRoot()
	if err != nil {
		return options{}, err
	}
	opt := options{
		quick: *quick, rounds: *rounds, pin: *pin && runtime.NumCPU() >= 2, serverProcs: *procs,
		requests1: *req1, requestsN: *reqN, warmup1: 200, warmupN: 5, batched: *batched,
		profileRequests: *profReq,
		dir:             *dir, out: *out, root: root, lib: libraryPath(root),
		progress: os.Stderr,
		command:  strings.TrimSpace("go run ./bench/access " + strings.Join(args, " ")),
	}
	if !filepath.IsAbs(opt.dir) {
		opt.dir = filepath.Join(root, opt.dir)
	}
	opt.parts = map[string]bool{}
	for _, f := range strings.Split(*parts, ",") {
		switch f = strings.TrimSpace(f); f {
		case "main", "commit", "profiles":
			opt.parts[f] = true
		case "":
		default:
			return options{}, fmt.Errorf("-parts: unknown part %q (want main, commit, profiles)", f)
		}
	}
	for _, f := range strings.Split(*clients, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return options{}, fmt.Errorf("-clients: %w", err)
		}
		opt.clients = append(opt.clients, n)
	}
	if opt.quick {
		opt = opt.quicken()
	}
	return opt, opt.validate()
}

// quicken shrinks a run to a smoke test: every cell still runs and is
// checked, and the audit logs are verified, but the figures mean nothing.
func (o options) quicken() options {
	o.quick = true
	o.rounds = 1
	o.requests1, o.requestsN = 40, 4
	o.warmup1, o.warmupN = 5, 1
	if o.profileRequests > 0 {
		o.profileRequests = 100
	}
	return o
}

func (o options) validate() error {
	if o.rounds < 1 || o.requests1 < 1 || o.requestsN < 1 || o.profileRequests < 0 {
		return fmt.Errorf("rounds and request counts must be positive")
	}
	if o.serverProcs < 0 || o.serverProcs > 256 {
		return fmt.Errorf("-server-procs: %d out of range 0..256", o.serverProcs)
	}
	for _, c := range o.clients {
		if c < 2 || c > 64 {
			return fmt.Errorf("-clients: %d out of range 2..64", c)
		}
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
