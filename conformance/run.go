package conformance

import (
	"context"
	"errors"
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
	// SameAsInProcess reports, for a client, that every output it returned
	// equals the in-process output exactly (NaN payloads aside).
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
	inproc := make([][][]tensor.Tensor, len(names))
	parallel(len(names), workers, func(i int) {
		results[i].Case = names[i]
		c, err := LoadCase(dir, names[i])
		if err != nil {
			results[i].Category = BadTestData
			results[i].InProcess = Verdict{Status: Unsupported, Reason: clipReason(err.Error())}
			return
		}
		cases[i] = c
		results[i].Category, results[i].InProcess, inproc[i] = InProcess(ctx, c)
	})

	repo := tb.TempDir()
	for _, c := range cases {
		if c == nil || c.Unsupported != "" {
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
	clients := srv.Clients(tb)
	if rep.Clients == nil {
		for _, cl := range clients {
			rep.Clients = append(rep.Clients, cl.Name())
		}
	}
	parallel(len(names), workers, func(i int) {
		r := &results[i]
		for _, cl := range clients {
			r.Clients = append(r.Clients, OverClient(ctx, cl, cases[i], r.Category, inproc[i]))
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

// InProcess runs c on ONNX Runtime in this process, as the baseline the
// transports are held to. It returns the case's category, the verdict, and
// each data set's outputs copied out of ONNX Runtime's memory (nil for a
// data set that did not run).
func InProcess(ctx context.Context, c *Case) (Category, Verdict, [][]tensor.Tensor) {
	if c.Unsupported != "" {
		return ProtocolUnsupported, Verdict{Status: Unsupported, Reason: clipReason("protocol: " + c.Unsupported)}, nil
	}
	s, err := onnx.NewSession(c.Model, onnx.Options{})
	if err != nil {
		return ORTUnsupported, Verdict{Status: Unsupported, Reason: clipReason("ONNX Runtime cannot load it: " + err.Error())}, nil
	}
	defer s.Close()
	outs := make([][]tensor.Tensor, len(c.DataSets))
	var fails []string
	for i := range c.DataSets {
		ds := &c.DataSets[i]
		inputs, err := orderInputs(s.Inputs(), ds.Inputs)
		if err != nil {
			return BadTestData, Verdict{Status: Unsupported, Reason: clipReason(ds.Name + ": " + err.Error())}, nil
		}
		res, err := s.Run(ctx, inputs)
		if err != nil {
			return ORTUnsupported, Verdict{Status: Unsupported, Reason: clipReason("ONNX Runtime cannot run it: " + ds.Name + ": " + err.Error())}, nil
		}
		outs[i] = cloneTensors(res.Outputs)
		res.Release()
		if err := CompareOutputs(outs[i], ds.Outputs, BackendTolerance); err != nil {
			fails = append(fails, ds.Name+": "+err.Error())
		}
	}
	if fails != nil {
		return InProcessFail, Verdict{Status: Fail, Reason: clipReason(fmt.Sprint(fails))}, outs
	}
	return InProcessPass, Verdict{Status: Pass}, outs
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
			switch cat {
			case ORTUnsupported:
				return Verdict{Status: Unsupported, Reason: clipReason("ONNX Runtime cannot serve it; the server answered " + errText(err))}
			case BadTestData:
				return Verdict{Status: Unsupported, Reason: clipReason("unreadable test data; the server answered " + errText(err))}
			}
			return Verdict{Status: Fail, Reason: clipReason(ds.Name + ": request failed: " + errText(err))}
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

func errText(err error) string {
	var e *servertest.Error
	if errors.As(err, &e) {
		return e.Error()
	}
	return err.Error()
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
