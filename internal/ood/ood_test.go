package ood

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/extraction/digits-ood.json")

type digits struct {
	Inputs [][]float64 `json:"inputs"`
	Labels []int       `json:"labels"`
}

func loadJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// reference is the digits training split: the deployment reference sample.
func reference(t testing.TB) [][]float64 {
	var d digits
	loadJSON(t, "extraction/digits-reference.json", &d)
	return d.Inputs
}

func heldout(t testing.TB) [][]float64 {
	var d digits
	loadJSON(t, "digits/heldout.json", &d)
	return d.Inputs
}

func to32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

func fitDigits(t testing.TB) *Model {
	t.Helper()
	m, err := Fit(reference(t), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFitMatchesScikitLearn(t *testing.T) {
	var ref struct {
		Shrinkage float64   `json:"shrinkage"`
		Maha      []float64 `json:"mahalanobis_heldout"`
	}
	loadJSON(t, "extraction/ledoit-wolf.json", &ref)
	m := fitDigits(t)
	if d := math.Abs(m.Info().Shrinkage - ref.Shrinkage); d > 1e-9 {
		t.Errorf("Ledoit–Wolf shrinkage = %.12f, scikit-learn %.12f", m.Info().Shrinkage, ref.Shrinkage)
	}
	for i, x := range heldout(t) {
		got := m.Score(to32(x))
		if math.Abs(got-ref.Maha[i]) > 1e-6*ref.Maha[i] {
			t.Errorf("held-out %d: score %.9f, numpy %.9f", i, got, ref.Maha[i])
		}
	}
}

// TestCalibration: the threshold's false-positive rate on digits the fit
// never saw is near its target, and synthetic queries are out of
// distribution.
func TestCalibration(t *testing.T) {
	m := fitDigits(t)
	held := heldout(t)
	fp := 0
	for _, x := range held {
		if m.OOD(to32(x)) {
			fp++
		}
	}
	rate := float64(fp) / float64(len(held))
	t.Logf("threshold %.3f (shrinkage %.4f): held-out false positives %d/%d = %.2f%% (target %.0f%%)",
		m.Threshold(), m.Info().Shrinkage, fp, len(held), 100*rate, 100*DefaultOptions().FPR)
	// 450 draws at 1%: 4.5 expected, P(X ≥ 14) < 1e-3.
	if fp > 13 {
		t.Errorf("held-out false-positive rate %.3f, want near %.2f", rate, DefaultOptions().FPR)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() []float32
		want float64 // smallest acceptable fraction flagged
	}{
		{"uniform integers 0..16", func() []float32 {
			x := make([]float32, 64)
			for i := range x {
				x[i] = float32(rng.IntN(17))
			}
			return x
		}, 1},
		{"uniform reals 0..16", func() []float32 {
			x := make([]float32, 64)
			for i := range x {
				x[i] = 16 * rng.Float32()
			}
			return x
		}, 1},
		{"digit ± 1.6 per pixel (random-sign augmentation)", func() []float32 {
			seed := held[rng.IntN(len(held))]
			x := make([]float32, 64)
			for i := range x {
				v := seed[i] + 1.6*float64(2*rng.IntN(2)-1)
				x[i] = float32(min(max(v, 0), 16))
			}
			return x
		}, 0.95},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 1000
			hits := 0
			for range n {
				if m.OOD(tt.gen()) {
					hits++
				}
			}
			got := float64(hits) / n
			t.Logf("flagged %d/%d", hits, n)
			if got < tt.want {
				t.Errorf("flagged %.3f, want at least %.2f", got, tt.want)
			}
		})
	}
}

func TestScoreFailsClosed(t *testing.T) {
	m := fitDigits(t)
	nan := make([]float32, 64)
	nan[3] = float32(math.NaN())
	inf := make([]float32, 64)
	inf[0] = float32(math.Inf(-1))
	tests := []struct {
		name string
		x    []float32
	}{
		{"nil", nil},
		{"short", make([]float32, 63)},
		{"long", make([]float32, 65)},
		{"NaN", nan},
		{"-Inf", inf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s := m.Score(tt.x); !math.IsInf(s, 1) {
				t.Errorf("Score = %v, want +Inf", s)
			}
			if s := m.ScoreLE(le(tt.x)); !math.IsInf(s, 1) {
				t.Errorf("ScoreLE = %v, want +Inf", s)
			}
			if !m.OOD(tt.x) {
				t.Error("OOD = false, want true")
			}
		})
	}
}

// le encodes x as a tensor holds it: little-endian FP32.
func le(x []float32) []byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// normalFit fits a model to 2×dim standard normal rows and returns it with
// one more such row.
func normalFit(t testing.TB, dim int, seed uint64) (*Model, []float32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, uint64(dim)))
	ref := make([][]float64, 2*dim)
	for i := range ref {
		ref[i] = make([]float64, dim)
		for j := range ref[i] {
			ref[i][j] = rng.NormFloat64()
		}
	}
	m, err := Fit(ref, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, dim)
	for j := range x {
		x[j] = float32(rng.NormFloat64())
	}
	return m, x
}

// ScoreLE scores a tensor's row bytes exactly as Score scores the values,
// for models small enough to score on the stack and larger ones.
func TestScoreLEMatchesScore(t *testing.T) {
	m := fitDigits(t)
	for i, x := range heldout(t)[:100] {
		x32 := to32(x)
		if a, b := m.Score(x32), m.ScoreLE(le(x32)); a != b || math.IsInf(a, 0) {
			t.Fatalf("held-out row %d: Score %v, ScoreLE %v", i, a, b)
		}
	}
	const dim = 300 // above Score's stack buffer
	big, x := normalFit(t, dim, 3)
	if a, b := big.Score(x), big.ScoreLE(le(x)); a != b || math.IsInf(a, 0) {
		t.Fatalf("%d features: Score %v, ScoreLE %v", dim, a, b)
	}
	if s := big.ScoreLE(le(x)[:4*dim-1]); !math.IsInf(s, 1) {
		t.Errorf("ScoreLE of a partial row = %v, want +Inf", s)
	}
}

// TestRoundTrip: a written model reads back and scores identically; the
// digits fit shipped in testdata is what Fit produces today.
func TestRoundTrip(t *testing.T) {
	m := fitDigits(t)
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("..", "..", "testdata", "extraction", "digits-ood.json")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	back, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := Load(golden)
	if err != nil {
		t.Fatal(err)
	}
	if back.Info() != m.Info() || shipped.Info() != m.Info() {
		t.Errorf("info: got %+v and shipped %+v, want %+v", back.Info(), shipped.Info(), m.Info())
	}
	for i, x := range heldout(t) {
		x32 := to32(x)
		if a, b, c := m.Score(x32), back.Score(x32), shipped.Score(x32); a != b || a != c {
			t.Fatalf("held-out %d: scores %v, read back %v, shipped %v", i, a, b, c)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	m := fitDigits(t)
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	edit := func(f func(map[string]any)) string {
		var v map[string]any
		if err := json.Unmarshal([]byte(good), &v); err != nil {
			t.Fatal(err)
		}
		f(v)
		b, _ := json.Marshal(v)
		return string(b)
	}
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"not json", "ood"},
		{"unknown field", edit(func(v map[string]any) { v["extra"] = 1 })},
		{"wrong format", edit(func(v map[string]any) { v["format"] = "other" })},
		{"wrong version", edit(func(v map[string]any) { v["version"] = 2 })},
		{"dim zero", edit(func(v map[string]any) { v["dim"] = 0 })},
		{"dim mismatch", edit(func(v map[string]any) { v["dim"] = 63 })},
		{"short mean", edit(func(v map[string]any) { v["mean"] = v["mean"].([]any)[:10] })},
		{"short whiten", edit(func(v map[string]any) { v["whiten"] = v["whiten"].([]any)[:10] })},
		{"zero diagonal", edit(func(v map[string]any) { v["whiten"].([]any)[2] = 0 })},
		{"zero threshold", edit(func(v map[string]any) { v["threshold"] = 0 })},
		{"negative threshold", edit(func(v map[string]any) { v["threshold"] = -1 })},
		{"fpr above 0.5", edit(func(v map[string]any) { v["fpr"] = 0.9 })},
		{"few samples", edit(func(v map[string]any) { v["samples"] = 3 })},
		{"trailing data", good + "{}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("got error %v, want ErrInvalid", err)
			}
		})
	}
}

func TestFitRejects(t *testing.T) {
	ref := reference(t)
	constant := make([][]float64, 100)
	for i := range constant {
		constant[i] = []float64{1, 2, 3}
	}
	ragged := append([][]float64{{1, 2}}, ref[:99]...)
	nan := make([][]float64, 100)
	for i := range nan {
		nan[i] = []float64{float64(i), math.NaN()}
	}
	badFPR := DefaultOptions()
	badFPR.FPR = 0
	tests := []struct {
		name    string
		samples [][]float64
		opts    Options
		want    string
	}{
		{"too few", ref[:MinSamples-1], DefaultOptions(), "samples"},
		{"constant features", constant, DefaultOptions(), "constant"},
		{"ragged", ragged, DefaultOptions(), "features"},
		{"NaN", nan, DefaultOptions(), "NaN"},
		{"zero fpr", ref, badFPR, "fpr"},
		{"zero options", ref, Options{}, "fpr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Fit(tt.samples, tt.opts)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want ErrInvalid naming %q", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "extraction", "digits-ood.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"format":"aegis-ood-mahalanobis","version":1,"dim":1,"samples":50,"fpr":0.01,"shrinkage":0,"threshold":3,"mean":[0],"whiten":[1]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Decode(in)
		if err != nil {
			return
		}
		x := make([]float32, m.Dim())
		if s := m.Score(x); math.IsNaN(s) || s < 0 {
			t.Fatalf("score of zeros %v", s)
		}
	})
}

func BenchmarkScore(b *testing.B) {
	m := fitDigits(b)
	held := heldout(b)
	xs := make([][]float32, len(held))
	for i, x := range held {
		xs[i] = to32(x)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var s float64
	for i := 0; b.Loop(); i++ {
		s += m.Score(xs[i%len(xs)])
	}
	_ = s
}

func TestReadSample(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"inputs": [[1, 2], [3, 4], [5, 6], [7, 8.5]]}`)
	rows, err := ReadSample(good, 2)
	if err != nil || len(rows) != 4 || rows[3][1] != 8.5 {
		t.Fatalf("ReadSample = %v, %v", rows, err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "nope.json"), "no such file"},
		{"not JSON", write("bad.json", `{"inputs": [[1, 2]`), "unexpected end"},
		{"too few rows", write("few.json", `{"inputs": [[1, 2], [3, 4], [5, 6]]}`), "3 rows, want at least 4"},
		{"short row", write("short.json", `{"inputs": [[1, 2], [3], [5, 6], [7, 8]]}`), "row 1 has 1 values, want 2"},
	} {
		if _, err := ReadSample(tc.path, 2); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	big := filepath.Join(dir, "big.json")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxSampleBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := ReadSample(big, 2); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("oversized file: %v", err)
	}
}

// BenchmarkScoreLE scores a tensor row of 64 (digits) and 784 (an MNIST
// image) features, fitted to a standard normal sample.
func BenchmarkScoreLE(b *testing.B) {
	for _, dim := range []int{64, 784} {
		b.Run(strconv.Itoa(dim), func(b *testing.B) {
			m, x := normalFit(b, dim, 1)
			row := le(x)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				m.ScoreLE(row)
			}
		})
	}
}

// distance agrees with the plain triangular product for every parity of
// the number of features (its rows are taken in pairs).
func TestDistanceMatchesPlainProduct(t *testing.T) {
	for _, dim := range []int{1, 2, 3, 4, 7, 64, 65} {
		rng := rand.New(rand.NewPCG(9, uint64(dim)))
		m := &Model{dim: dim, whiten: make([]float64, dim*(dim+1)/2)}
		for i := range m.whiten {
			m.whiten[i] = rng.NormFloat64()
		}
		d := make([]float64, dim)
		for i := range d {
			d[i] = rng.NormFloat64()
		}
		var want float64
		k := 0
		for i := range dim {
			var u float64
			for j := 0; j <= i; j++ {
				u += m.whiten[k] * d[j]
				k++
			}
			want += u * u
		}
		want = math.Sqrt(want)
		if got := m.distance(d); math.Abs(got-want) > 1e-12*want {
			t.Errorf("%d features: distance %v, plain product %v", dim, got, want)
		}
	}
}
