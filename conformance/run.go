package conformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/servertest"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// Status is the outcome of one case on one path.
type Status string

// The outcomes.
const (
	Pass        Status = "pass"
	Fail        Status = "fail"
	Unsupported Status = "unsupported"
)

// Verdict is an outcome and, unless it passed, why.
type Verdict struct {
	Status Status
	Reason string
	// Code is the status a client got for a failed request, as
	// servertest.Code writes it ("http 404", "grpc NotFound").
	Code string
	// SameAsInProcess reports, for a client, that every output it returned
	// equals the in-process output exactly (see Exact).
	SameAsInProcess bool
}

// Category classifies a case by what ONNX Runtime makes of it in-process.
type Category int

// The categories, in report order.
const (
	InProcessPass Category = iota
	InProcessFail
	ORTUnsupported
	ProtocolUnsupported
	BadTestData
	numCategories
)

var categoryNames = [...]string{
	InProcessPass:       "passes in-process",
	InProcessFail:       "fails in-process (wrong outputs)",
	ORTUnsupported:      "unsupported by ONNX Runtime",
	ProtocolUnsupported: "unsupported by the protocol",
	BadTestData:         "unreadable test data",
}

func (c Category) String() string { return categoryNames[c] }

// Result is one case's outcome in-process and over every client.
type Result struct {
	Case      string
	Category  Category
	InProcess Verdict
	// LoadedInProcess reports that ONNX Runtime loaded the model
	// in-process; Served, that the server loaded it. They should agree.
	LoadedInProcess, Served bool
	// Clients holds one verdict per client, in Report.Clients order.
	Clients []Verdict
}

// Report is the outcome of a conformance run.
type Report struct {
	DataDir  string
	Runtime  string // ONNX Runtime version
	Clients  []string
	Results  []Result
	Duration time.Duration
}

// Options tune Run.
type Options struct {
	// BatchSize is how many models one server loads at a time. Default 250.
	BatchSize int
	// Workers is how many cases run at once. Default 2*GOMAXPROCS.
	Workers int
	// Logf, if set, reports progress.
	Logf func(format string, args ...any)
}

// RequestTimeout bounds one inference request of the run.
const RequestTimeout = 2 * time.Minute

// Run runs the named cases of dir in-process on ONNX Runtime and then, in
// batches, through a real server on loopback over every protocol client.
func Run(tb testing.TB, dir string, names []string, opts Options) *Report {
	tb.Helper()
	start := time.Now()
	if opts.BatchSize <= 0 {
		opts.BatchSize = 250
	}
	if opts.Workers <= 0 {
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	lib := servertest.InitRuntime(tb)
	rep := &Report{DataDir: dir, Runtime: lib.Version, Results: make([]Result, len(names))}

	for lo := 0; lo < len(names); lo += opts.BatchSize {
		hi := min(lo+opts.BatchSize, len(names))
		runBatch(tb, dir, names[lo:hi], rep.Results[lo:hi], rep, opts.Workers)
		logf("conformance: %d/%d cases done (%s)", hi, len(names), time.Since(start).Round(time.Second))
	}
	rep.Duration = time.Since(start)
	return rep
}

// runBatch runs one batch of cases in-process, then serves the batch's
// models from one server and runs them over every client.
func runBatch(tb testing.TB, dir string, names []string, results []Result, rep *Report, workers int) {
	tb.Helper()
	ctx := context.Background()
	cases := make([]*Case, len(names))
	inproc := make([]InProcessResult, len(names))
	parallel(len(names), workers, func(i int) {
		results[i].Case = names[i]
		c, err := LoadCase(dir, names[i])
		if err != nil {
			results[i].Category = BadTestData
			results[i].InProcess = Verdict{Status: Unsupported, Reason: clipReason(err.Error())}
			return
		}
		cases[i] = c
		inproc[i] = InProcess(ctx, c)
		results[i].Category, results[i].InProcess, results[i].LoadedInProcess = inproc[i].Category, inproc[i].Verdict, inproc[i].Loaded
	})

	// Every readable case's model goes in the repository, the ones the
	// protocol cannot carry too: the server must refuse to load those.
	repo := tb.TempDir()
	for _, c := range cases {
		if c == nil {
			continue
		}
		vdir := filepath.Join(repo, c.ModelName, "1")
		if err := os.MkdirAll(vdir, 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vdir, "model.onnx"), c.Model, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	// The server starts even when nothing in the batch can be served, so
	// every case gets a verdict from every client.
	srv := servertest.Start(tb, servertest.Config(tb, repo))
	defer func() {
		if err := srv.Stop(); err != nil {
			tb.Errorf("server stopped with error: %v", err)
		}
	}()
	served := map[string]bool{}
	for _, m := range srv.Registry.Models() {
		served[m.Name] = true
	}
	clients := srv.Clients(tb)
	if rep.Clients == nil {
		for _, cl := range clients {
			rep.Clients = append(rep.Clients, cl.Name())
		}
	}
	parallel(len(names), workers, func(i int) {
		r := &results[i]
		if cases[i] != nil {
			r.Served = served[cases[i].ModelName]
		}
		for _, cl := range clients {
			r.Clients = append(r.Clients, OverClient(ctx, cl, cases[i], r.Category, inproc[i].Outputs))
		}
	})
}

// parallel calls f(0..n-1) on up to workers goroutines.
func parallel(n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// InProcessResult is what ONNX Runtime made of a case in this process.
type InProcessResult struct {
	Category Category
	Verdict  Verdict
	// Loaded reports that ONNX Runtime created a session for the model.
	Loaded bool
	// Outputs holds each data set's outputs, copied out of ONNX Runtime's
	// memory (nil for a data set that did not run).
	Outputs [][]tensor.Tensor
}

// InProcess runs c on ONNX Runtime in this process, as the baseline the
// transports are held to.
func InProcess(ctx context.Context, c *Case) InProcessResult {
	if c.Unsupported != "" {
		return InProcessResult{Category: ProtocolUnsupported, Verdict: Verdict{Status: Unsupported, Reason: clipReason("protocol: " + c.Unsupported)}}
	}
	s, err := onnx.NewSession(c.Model, onnx.Options{})
	if err != nil {
		return InProcessResult{Category: ORTUnsupported, Verdict: Verdict{Status: Unsupported, Reason: clipReason("ONNX Runtime cannot load it: " + err.Error())}}
	}
	defer s.Close()
	r := InProcessResult{Loaded: true, Outputs: make([][]tensor.Tensor, len(c.DataSets))}
	var fails []string
	for i := range c.DataSets {
		ds := &c.DataSets[i]
		inputs, err := orderInputs(s.Inputs(), ds.Inputs)
		if err != nil {
			r.Category, r.Verdict = BadTestData, Verdict{Status: Unsupported, Reason: clipReason(ds.Name + ": " + err.Error())}
			return r
		}
		res, err := s.Run(ctx, inputs)
		if err != nil {
			r.Category, r.Verdict = ORTUnsupported, Verdict{Status: Unsupported, Reason: clipReason("ONNX Runtime cannot run it: " + ds.Name + ": " + err.Error())}
			return r
		}
		r.Outputs[i] = cloneTensors(res.Outputs)
		res.Release()
		if err := CompareOutputs(r.Outputs[i], ds.Outputs, BackendTolerance); err != nil {
			fails = append(fails, ds.Name+": "+err.Error())
		}
	}
	if fails != nil {
		r.Category, r.Verdict = InProcessFail, Verdict{Status: Fail, Reason: clipReason(fmt.Sprint(fails))}
		return r
	}
	r.Category, r.Verdict = InProcessPass, Verdict{Status: Pass}
	return r
}

// orderInputs returns the data set's inputs in the order ONNX Runtime
// declares them, matched by name.
func orderInputs(specs []tensor.Spec, have []tensor.Tensor) ([]*tensor.Tensor, error) {
	if len(specs) != len(have) {
		return nil, fmt.Errorf("ONNX Runtime declares %d inputs, the test data has %d", len(specs), len(have))
	}
	out := make([]*tensor.Tensor, len(specs))
	for i, sp := range specs {
		j := slices.IndexFunc(have, func(t tensor.Tensor) bool { return t.Name == sp.Name })
		if j < 0 {
			return nil, fmt.Errorf("ONNX Runtime declares input %q, which the model's graph does not list", sp.Name)
		}
		out[i] = &have[j]
	}
	return out, nil
}

func cloneTensors(ts []tensor.Tensor) []tensor.Tensor {
	out := make([]tensor.Tensor, len(ts))
	for i, t := range ts {
		out[i] = tensor.Tensor{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)}
		if t.DType == tensor.Bytes {
			out[i].Strings = make([][]byte, len(t.Strings))
			for j, s := range t.Strings {
				out[i].Strings[j] = slices.Clone(s)
			}
		} else {
			out[i].Data = append([]byte{}, t.Data...)
		}
	}
	return out
}

// OverClient runs c's data sets through cl and judges the outputs against
// the expected ones, and against the in-process outputs for exactness.
func OverClient(ctx context.Context, cl servertest.Client, c *Case, cat Category, inproc [][]tensor.Tensor) Verdict {
	switch {
	case c == nil:
		return Verdict{Status: Unsupported, Reason: "not sent: unreadable test data"}
	case c.Unsupported != "":
		return Verdict{Status: Unsupported, Reason: clipReason("not sent: protocol: " + c.Unsupported)}
	}
	if cl.Name() == "rest-json" {
		if err := jsonCarries(c); err != nil {
			return Verdict{Status: Unsupported, Reason: clipReason("JSON cannot carry it: " + err.Error())}
		}
	}
	same := inproc != nil
	var fails []string
	for i := range c.DataSets {
		ds := &c.DataSets[i]
		rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
		resp, err := cl.Infer(rctx, &servertest.Request{Model: c.ModelName, ID: c.Name, Inputs: ds.Inputs})
		cancel()
		if err != nil {
			code := servertest.Code(err)
			switch cat {
			case ORTUnsupported:
				return Verdict{Status: Unsupported, Code: code, Reason: clipReason("ONNX Runtime cannot serve it; the server answered " + err.Error())}
			case BadTestData:
				return Verdict{Status: Unsupported, Code: code, Reason: clipReason("unreadable test data; the server answered " + err.Error())}
			}
			return Verdict{Status: Fail, Code: code, Reason: clipReason(ds.Name + ": request failed: " + err.Error())}
		}
		if err := CompareOutputs(resp.Outputs, ds.Outputs, BackendTolerance); err != nil {
			fails = append(fails, ds.Name+": "+err.Error())
		}
		if same && (inproc[i] == nil || CompareOutputs(resp.Outputs, inproc[i], Exact) != nil) {
			same = false
		}
	}
	if fails != nil {
		return Verdict{Status: Fail, Reason: clipReason(fmt.Sprint(fails)), SameAsInProcess: same}
	}
	return Verdict{Status: Pass, SameAsInProcess: same}
}

// jsonCarries reports whether every BYTES element of c is UTF-8 text, which
// JSON strings can carry; the REST JSON encoding has no form for other bytes.
func jsonCarries(c *Case) error {
	for _, ds := range c.DataSets {
		for _, t := range slices.Concat(ds.Inputs, ds.Outputs) {
			for _, s := range t.Strings {
				if !utf8.Valid(s) {
					return fmt.Errorf("%q holds BYTES that are not UTF-8", t.Name)
				}
			}
		}
	}
	return nil
}

func clipReason(s string) string {
	const n = 400
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
