package watermark_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/tensor"
	"github.com/aegis-inference/aegis/internal/watermark"
)

var _ outguard.Marker = (*watermark.Service)(nil)

var testKey = bytes.Repeat([]byte{7}, watermark.KeySize)

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name    string
		key     []byte
		rate    float64
		classes int
		want    string
	}{
		{"short key", make([]byte, 15), 0.1, 10, "key"},
		{"zero rate", testKey, 0, 10, "rate"},
		{"rate 1", testKey, 1, 10, "rate"},
		{"NaN rate", testKey, math.NaN(), 10, "rate"},
		{"two classes", testKey, 0.1, 2, "classes"},
	}
	for _, tc := range tests {
		if _, err := watermark.New(tc.key, tc.rate, tc.classes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %s", tc.name, err, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	digits := []tensor.Spec{{Name: "label", DType: tensor.Int64, Shape: []int64{-1}}, {Name: "probabilities", DType: tensor.FP32, Shape: []int64{-1, 10}}}
	w, err := watermark.DefaultConfig().Watermarker(testKey, digits)
	if err != nil {
		t.Fatal(err)
	}
	if w.Classes() != 10 || w.Rate() != watermark.DefaultRate {
		t.Errorf("got %d classes at rate %v, want 10 at %v", w.Classes(), w.Rate(), watermark.DefaultRate)
	}
	bad := []struct {
		name string
		c    watermark.Config
		outs []tensor.Spec
		want string
	}{
		{"rate above 0.5", watermark.Config{Rate: 0.6}, digits, "rate: 0.6"},
		{"negative rate", watermark.Config{Rate: -0.1}, digits, "rate: -0.1"},
		{"two classes", watermark.Config{Rate: 0.1, Classes: 2}, digits, "classes: 2"},
		{"no scores output", watermark.Config{Rate: 0.1}, digits[:1], "classes: the model declares no scores"},
		{"variable class count", watermark.Config{Rate: 0.1}, []tensor.Spec{{Name: "y", DType: tensor.FP32, Shape: []int64{-1, -1}}}, "classes"},
		{"two scores outputs", watermark.Config{Rate: 0.1}, append(digits, tensor.Spec{Name: "logits", DType: tensor.FP32, Shape: []int64{-1, 10}}), "several"},
	}
	for _, tc := range bad {
		if _, err := tc.c.Watermarker(testKey, tc.outs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func input(i int) []byte {
	return binary.BigEndian.AppendUint64([]byte("input "), uint64(i))
}

func TestMarkRateStabilityAndLabels(t *testing.T) {
	const n, rate, classes = 40000, 0.05, 10
	w, err := watermark.New(testKey, rate, classes)
	if err != nil {
		t.Fatal(err)
	}
	marked := 0
	offsets := make([]int, classes)
	for i := range n {
		y := i % classes
		c, ok := w.Mark(input(i), y)
		if c2, ok2 := w.Mark(input(i), y); c2 != c || ok2 != ok {
			t.Fatalf("input %d: answered %d then %d", i, c, c2)
		}
		if !ok {
			if c != y {
				t.Fatalf("input %d: unmarked answer %d, want the true label %d", i, c, y)
			}
			continue
		}
		marked++
		if c == y || c < 0 || c >= classes {
			t.Fatalf("input %d: marked label %d for true label %d", i, c, y)
		}
		offsets[(c-y+classes)%classes]++
	}
	// Binomial(40000, 0.05): mean 2000, sd 43.6; allow 5 sd.
	if math.Abs(float64(marked)-n*rate) > 5*math.Sqrt(n*rate*(1-rate)) {
		t.Errorf("marked %d of %d, want about %v", marked, n, n*rate)
	}
	// The watermark label is uniform over the 9 other classes: a chi-square
	// test with 8 degrees of freedom (the 0.001 critical value is 26.1).
	chi := 0.0
	exp := float64(marked) / (classes - 1)
	for off := 1; off < classes; off++ {
		d := float64(offsets[off]) - exp
		chi += d * d / exp
	}
	if chi > 26.1 {
		t.Errorf("watermark labels not uniform: offsets %v (chi-square %.1f)", offsets[1:], chi)
	}
	// Another key marks other inputs.
	w2, _ := watermark.New(bytes.Repeat([]byte{8}, 32), rate, classes)
	same := 0
	for i := range 2000 {
		_, a := w.Mark(input(i), 0)
		_, b := w2.Mark(input(i), 0)
		if a && b {
			same++
		}
	}
	if same > 20 {
		t.Errorf("two keys marked %d inputs in common out of 2000, expected about 5", same)
	}
	// Out-of-range labels are never marked.
	for i := range 1000 {
		if c, ok := w.Mark(input(i), -1); ok || c != -1 {
			t.Fatalf("label -1 marked as %d", c)
		}
		if c, ok := w.Mark(input(i), classes); ok || c != classes {
			t.Fatalf("label %d marked as %d", classes, c)
		}
	}
}

func fp32Row(name string, shape []int64, vals ...float32) tensor.Tensor {
	t := tensor.Tensor{Name: name, DType: tensor.FP32, Shape: shape}
	for _, v := range vals {
		t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
	}
	return t
}

func TestCanonicalEncoding(t *testing.T) {
	row := []tensor.Tensor{
		{Name: "text", DType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("hi")}},
		fp32Row("a", []int64{1, 2}, 1, -2),
	}
	want := "" +
		hex.EncodeToString([]byte("aegis-watermark-input-v1\n")) +
		"00000002" + // two inputs
		"00000001" + "61" + "00000004" + hex.EncodeToString([]byte("FP32")) + // "a" first: by name
		"00000002" + "0000000000000001" + "0000000000000002" +
		"0000000000000008" + "0000803f" + "000000c0" +
		"00000004" + hex.EncodeToString([]byte("text")) + "00000005" + hex.EncodeToString([]byte("BYTES")) +
		"00000001" + "0000000000000001" +
		"0000000000000001" + "0000000000000002" + "6869"
	if got := hex.EncodeToString(watermark.Canonical(row)); got != want {
		t.Errorf("canonical bytes:\n got %s\nwant %s", got, want)
	}
	// The order the caller sent the inputs in does not matter.
	if !bytes.Equal(watermark.Canonical(row), watermark.Canonical([]tensor.Tensor{row[1], row[0]})) {
		t.Error("input order changed the canonical bytes")
	}
}

func TestRowInputsIndependentOfBatch(t *testing.T) {
	// A batch of three rows of "x" [3,2] with an unbatched "scale" [2].
	batch := []tensor.Tensor{
		fp32Row("x", []int64{3, 2}, 1, 2, 3, 4, 5, 6),
		fp32Row("scale", []int64{2}, 10, 20),
	}
	alone := []tensor.Tensor{fp32Row("x", []int64{1, 2}, 3, 4), fp32Row("scale", []int64{2}, 10, 20)}
	row := watermark.RowInputs(batch, 1, 3)
	if !bytes.Equal(watermark.Canonical(row), watermark.Canonical(alone)) {
		t.Errorf("row 1 of the batch %+v differs from the same input alone %+v", row, alone)
	}
	w, _ := watermark.New(testKey, 0.5, 10)
	for i := range 3 {
		a, _ := w.Mark(watermark.Canonical(watermark.RowInputs(batch, i, 3)), 4)
		single := []tensor.Tensor{fp32Row("x", []int64{1, 2}, float32(2*i+1), float32(2*i+2)), batch[1]}
		b, _ := w.Mark(watermark.Canonical(watermark.RowInputs(single, 0, 1)), 4)
		if a != b {
			t.Errorf("row %d: %d in a batch, %d alone", i, a, b)
		}
	}
}
