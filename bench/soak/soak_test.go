package main

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestMain lets the test binary serve as the harness's server process,
// which the harness starts by re-executing its own binary.
func TestMain(m *testing.M) {
	if isChild() {
		if err := runChild(); err != nil {
			os.Stderr.WriteString("soak server: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestQuickRun runs every phase of the harness briefly against the real
// server: a capacity search, half capacity, three times capacity, and
// recovery. It checks that the figures are sane (the server sheds at three
// times capacity, nothing fails, the server's counters agree with the
// clients'), never how fast anything is.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and overloads it")
	}
	if runtime.NumCPU() < 2 {
		// With GOMAXPROCS 1 requests queue for the CPU before they reach
		// the gate, which then never sheds (docs/ratelimit.md, "Overload
		// on the real server"): the smoke test's shed > 0 cannot hold.
		t.Skip("needs 2 CPUs")
	}
	opt := options{
		model: "mlp", duration: 3 * time.Second, normal: time.Second, recovery: time.Second,
		overload: 3, light: 0.5, conns: 32,
		warmup: 200 * time.Millisecond, stepWarm: 100 * time.Millisecond, stepLen: 300 * time.Millisecond, maxClients: 4,
		pin: false, seed: 1,
		dir: t.TempDir(), root: servertest.RepoRoot(t), lib: servertest.LibraryPath(t),
		progress: logWriter{t}, command: "go test ./bench/soak",
	}
	if err := opt.validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := run(opt)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if rep.childErr != nil {
		t.Errorf("server process: %v", rep.childErr)
	}
	if rep.capacity <= 0 || len(rep.steps) == 0 {
		t.Fatalf("capacity %v from %d steps", rep.capacity, len(rep.steps))
	}
	over := rep.over.all()
	if over.offered == 0 || over.admitted == 0 {
		t.Errorf("overload: offered %d, admitted %d; want both > 0", over.offered, over.admitted)
	}
	if over.shed == 0 {
		t.Errorf("overload at 3× capacity shed nothing: offered %d, sent %d, admitted %d", over.offered, over.sent(), over.admitted)
	}
	if n, where := rep.errorCount(); n > 0 || where != "" {
		t.Errorf("got %d errors%s, want none", n, where)
	}
	if got, want := over.sent(), over.admitted+over.shed+over.limited+over.errors; got != want {
		t.Errorf("sent %d, but %d answered", got, want)
	}
	// The server counts what the clients saw.
	first, last := rep.over.firstLastStats()
	if got := last.Gate.Shed - first.Gate.Shed; got != over.shed {
		t.Errorf("server shed %d during the overload, clients got %d × 503", got, over.shed)
	}
	if got := last.Gate.Admitted - first.Gate.Admitted; got != over.admitted {
		t.Errorf("server admitted %d during the overload, clients got %d × 200", got, over.admitted)
	}
	if p50, p99 := over.ref.quantile(0.5), over.ref.quantile(0.99); p50 <= 0 || p99 < p50 {
		t.Errorf("refusal latency p50 %v, p99 %v", p50, p99)
	}
	// Where the kernel stamps the answers' arrival, every refusal has a
	// received latency, no longer than the one the client saw.
	if runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") {
		if got := over.refWire.count(); got != uint64(over.shed) {
			t.Errorf("%d refusals with a received latency, want all %d", got, over.shed)
		}
		for _, q := range []float64{0.5, 0.99} {
			if w, l := over.refWire.quantile(q), over.ref.quantile(q); w <= 0 || w > l {
				t.Errorf("refusals' received latency q%v %v, seen by the client %v", q, w, l)
			}
		}
	}
	if cpus, ok := rep.over.cpusBetween(0, rep.over.elapsed); !ok || cpus <= 0 || cpus > float64(runtime.NumCPU()) {
		t.Errorf("server CPUs over the overload from the samples: %v (ok %v)", cpus, ok)
	}
	m := memoryTrend(rep.over)
	if m.samples < 2 || m.min == 0 || m.max < m.min || rep.afterGC.rss == 0 {
		t.Errorf("memory: %d samples, min %d, max %d, after GC %d", m.samples, m.min, m.max, rep.afterGC.rss)
	}
	md := rep.markdown()
	for _, want := range []string{"## Verdicts", "## Capacity (closed loop)", "## Open-loop phases", "## Server memory", "## Overload timeline"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + md)
	}
	if lines := strings.Count(rep.csv(), "\n"); lines < 5 {
		t.Errorf("csv has %d lines", lines)
	}
}

func TestHistQuantile(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(tc.q)
		if diff := float64(got-tc.want) / float64(tc.want); diff < -0.035 || diff > 0.035 {
			t.Errorf("quantile(%v) = %v, want %v ± 3.5%%", tc.q, got, tc.want)
		}
	}
	if got := h.quantile(1); got > time.Millisecond {
		t.Errorf("quantile(1) = %v, above the largest value", got)
	}
	var empty hist
	if got := empty.quantile(0.99); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
}

func TestHistBuckets(t *testing.T) {
	// Every value falls in a bucket whose range holds it.
	for _, v := range []time.Duration{0, 1, 63, 64, 65, 127, 128, 1000, 123456, time.Second, time.Hour} {
		i := histIndex(v)
		if lo, hi := histLower(i), histLower(i+1); v < lo || v >= hi {
			t.Errorf("%d ns in bucket %d [%d, %d)", v, i, lo, hi)
		}
	}
}
