// Command serving benchmarks Aegis against bare ONNX Runtime and against a
// transport floor, and prints the results as markdown (docs/benchmarks.md
// says how to read them).
//
// For each model (digits, mlp, cnn), batch size and number of concurrent
// clients it measures ten paths:
//
//   - bare: internal/runtime/onnx called in-process, as the server's engine
//     calls it (same default session options);
//   - aegis-rest-json, aegis-rest-binary, aegis-grpc-raw: the real server
//     (internal/app, default configuration) over loopback;
//   - floor-rest-json, floor-rest-binary, floor-grpc: do-nothing servers on
//     the same stacks (net/http, grpc-go) that read the same request and
//     return a fixed response of exactly the size Aegis returns;
//   - the same three floors with "+ort": they also run the model on a
//     prebuilt input before answering, which separates what running ONNX
//     Runtime inside a server costs from what Aegis's own code costs.
//
// Aegis and the floors run together in one server process (this binary,
// re-executed); the clients and the bare baseline run in this process. By
// default the two processes are bound to different CPUs (see pinToCPU). Each
// client goroutine has its own keep-alive connection and sends prebuilt
// requests one at a time, reading every response in full; every served
// output is first checked against bare ONNX Runtime's. Every cell runs a
// fixed number of requests after a warm-up, in several interleaved rounds;
// the report gives the median over rounds. Aegis's own overhead is its p50
// minus the floor's p50 minus bare ONNX Runtime's p50.
//
// The run is bounded: fixed request counts, a timeout on every request, and
// a server process that exits when this one closes its stdin (or after 30
// minutes at most).
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
}

// options configure one run.
type options struct {
	quick     bool
	pin       bool // harness on CPU 0, server process on CPU 1
	rounds    int
	models    []string
	batches   []int
	clients   []int
	requests1 int // measured requests per cell and round at batch 1
	requestsN int // ... at larger batches
	warmup1   int // warm-up requests per client at batch 1
	warmupN   int // ... at larger batches

	profileDir      string // where CPU profiles go; "" for none
	profileRequests int    // requests per profiled path

	out      string    // also write the markdown here
	root     string    // repository root (testdata, build)
	lib      string    // ONNX Runtime library
	progress io.Writer // progress lines; nil for none
	command  string    // the command line, for the report
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("serving", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke run: 1 round, few requests (numbers are not meaningful)")
	rounds := fs.Int("rounds", 9, "rounds per cell; the report gives medians")
	models := fs.String("models", "digits,mlp,cnn", "models to run")
	batches := fs.String("batches", "1,64", "batch sizes")
	clients := fs.String("clients", "1,2", "concurrent client counts")
	req1 := fs.Int("requests", 3000, "measured requests per cell and round at batch 1")
	reqN := fs.Int("requests-batched", 200, "measured requests per cell and round at batch > 1")
	pin := fs.Bool("pin", true, "bind the harness to CPU 0 and the server process to CPU 1, each with GOMAXPROCS 1 (needs 2 CPUs)")
	profDir := fs.String("profile-dir", "build/bench", "directory for the server's CPU profiles (\"\" for none)")
	profReq := fs.Int("profile-requests", 50000, "requests per profiled path (mlp, batch 1, 1 client)")
	out := fs.String("o", "", "also write the markdown report to this file")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	root, err := benchutil.RepoRoot()
	if err != nil {
		return options{}, err
	}
	opt := options{
		quick: *quick, rounds: *rounds, pin: *pin && runtime.NumCPU() >= 2,
		models:    strings.Split(*models, ","),
		requests1: *req1, requestsN: *reqN, warmup1: 200, warmupN: 5,
		profileDir: *profDir, profileRequests: *profReq,
		out: *out, root: root, lib: libraryPath(root),
		progress: os.Stderr,
		command:  "go run ./bench/serving " + strings.Join(args, " "),
	}
	if opt.batches, err = ints(*batches); err != nil {
		return options{}, fmt.Errorf("-batches: %w", err)
	}
	if opt.clients, err = ints(*clients); err != nil {
		return options{}, fmt.Errorf("-clients: %w", err)
	}
	if opt.quick {
		opt = opt.quicken()
	}
	return opt, opt.validate()
}

// quicken shrinks a run to a smoke test: every cell still runs and is
// checked, but the figures mean nothing.
func (o options) quicken() options {
	o.quick = true
	o.rounds = 1
	o.requests1, o.requestsN = 40, 4
	o.warmup1, o.warmupN = 5, 1
	o.profileRequests = 200
	return o
}

func (o options) validate() error {
	if o.rounds < 1 || o.requests1 < 1 || o.requestsN < 1 {
		return fmt.Errorf("rounds and request counts must be positive")
	}
	for _, m := range o.models {
		if _, err := lookupModel(m); err != nil {
			return err
		}
	}
	for _, b := range o.batches {
		if b < 1 || b > 450 {
			return fmt.Errorf("batch %d out of range 1..450", b)
		}
	}
	for _, c := range o.clients {
		if c < 1 || c > 64 {
			return fmt.Errorf("clients %d out of range 1..64", c)
		}
	}
	return nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// libraryPath is AEGIS_ONNXRUNTIME_LIB if set, else the library `make
// setup` installs.
func libraryPath(root string) string {
	if p := os.Getenv(envLib); p != "" {
		return p
	}
	return filepath.Join(root, "build", "onnxruntime", "libonnxruntime.so.1")
}
