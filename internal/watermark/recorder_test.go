package watermark

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/tensor"
)

func testPair(i int) Pair {
	x := tensor.Tensor{Name: "input", DType: tensor.FP32, Shape: []int64{1, 3}}
	for j := range 3 {
		x.Data = binary.LittleEndian.AppendUint32(x.Data, math.Float32bits(float32(i*3+j)))
	}
	mac := sha256.Sum256(x.Data)
	return Pair{
		Time:  time.Unix(1700000000, int64(i)).UTC(),
		Model: "digits", Version: "1", Classes: 10,
		Label: (i + 1) % 10, TrueLabel: i % 10,
		Inputs: []tensor.Tensor{x, {Name: "note", DType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("a"), {}}}},
		MAC:    mac[:],
	}
}

func TestPairRoundTrip(t *testing.T) {
	for i := range 3 {
		p := testPair(i)
		got, err := decodePair(encodePair(nil, &p))
		if err != nil {
			t.Fatal(err)
		}
		// An empty element decodes as an empty slice of the buffer.
		got.Inputs[1].Strings[1] = []byte{}
		p.Inputs[1].Strings[1] = []byte{}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
		}
	}
	good := encodePair(nil, &[]Pair{testPair(1)}[0])
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown format", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
	} {
		if _, err := decodePair(tc.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", tc.name, err)
		}
	}
}

// FuzzDecodePair: any bytes decode to a pair or ErrCorrupt, never a panic,
// and a decoded pair encodes back to the same bytes.
func FuzzDecodePair(f *testing.F) {
	for i := range 3 {
		p := testPair(i)
		f.Add(encodePair(nil, &p))
	}
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePair(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if again := encodePair(nil, &p); !bytes.Equal(again, b) {
			// Varints have one shortest form; a longer one decodes too.
			if _, err := decodePair(again); err != nil {
				t.Fatalf("re-encoded pair does not decode: %v", err)
			}
		}
	})
}

func openStore(t *testing.T, dir string) *state.Bolt {
	t.Helper()
	s, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRecorderStoresDedupesAndBounds(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	r, err := NewRecorder(s.DB(), RecorderOptions{MaxPairs: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if !r.Record("key:a", testPair(i)) {
			t.Fatalf("pair %d dropped", i)
		}
		r.Record("key:a", testPair(i)) // a repeated input is stored once
	}
	r.Record("key:b", testPair(100))
	r.Flush()
	got, err := Pairs(s.DB(), "key:a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("key:a has %d pairs, want the latest 5", len(got))
	}
	for i, p := range got {
		if want := testPair(i + 3); p.Label != want.Label || !bytes.Equal(p.MAC, want.MAC) {
			t.Errorf("pair %d: got label %d, want pair %d's", i, p.Label, i+3)
		}
	}
	// An evicted input recorded again comes back as the newest.
	r.Record("key:a", testPair(0))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.Record("key:a", testPair(50)) {
		t.Error("Record after Close queued a pair")
	}
	r.Flush() // returns at once after Close
	s.Close()

	s = openStore(t, dir)
	defer s.Close()
	got, _ = Pairs(s.DB(), "key:a")
	if len(got) != 5 || got[4].TrueLabel != 0 || got[0].TrueLabel != 4 {
		t.Errorf("after reopening: %d pairs, first true label %d, last %d; want 5, 4, 0", len(got), got[0].TrueLabel, got[len(got)-1].TrueLabel)
	}
	ps, err := Principals(s.DB())
	if err != nil {
		t.Fatal(err)
	}
	if want := []Principal{{"key:a", 5}, {"key:b", 1}}; !reflect.DeepEqual(ps, want) {
		t.Errorf("principals: got %+v, want %+v", ps, want)
	}
	if got, err := Pairs(s.DB(), "key:nobody"); err != nil || len(got) != 0 {
		t.Errorf("unknown principal: %d pairs, %v", len(got), err)
	}
}

func TestRecordNeverBlocks(t *testing.T) {
	// A Recorder whose writer is stuck: Record must drop, not wait.
	r := &Recorder{queue: make(chan item, 2), done: make(chan struct{})}
	queued := 0
	for i := range 10 {
		if r.Record("key:a", testPair(i)) {
			queued++
		}
	}
	if queued != 2 || r.Dropped() != 8 {
		t.Errorf("queued %d and dropped %d of 10 with a queue of 2, want 2 and 8", queued, r.Dropped())
	}
}

func TestRecorderFailureCounted(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	r, err := NewRecorder(s.DB(), RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := testPair(1)
	p.MAC = nil // refused by the writer
	r.Record("key:a", p)
	r.Record(strings.Repeat("x", 40000), testPair(3)) // too long for a bucket name
	r.Record("key:a", testPair(2))                    // in the same batch, stored all the same
	r.Flush()
	if r.Failed() != 2 {
		t.Errorf("%d pairs counted as failed, want 2", r.Failed())
	}
	r.Close()
	if got, _ := Pairs(s.DB(), "key:a"); len(got) != 1 || got[0].TrueLabel != 2 {
		t.Errorf("got %d pairs, want pair 2 alone", len(got))
	}
}

// TestRecorderGathersPairs: pairs are committed together after the
// Delay, not one transaction (and disk sync) each; Flush and Close do not
// wait for the Delay.
func TestRecorderGathersPairs(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	r, err := NewRecorder(s.DB(), RecorderOptions{Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		r.Record("key:a", testPair(i+1))
	}
	time.Sleep(100 * time.Millisecond)
	if got, _ := Pairs(s.DB(), "key:a"); len(got) != 0 {
		t.Fatalf("%d pairs written within the hour's delay, want none yet", len(got))
	}
	start := time.Now()
	r.Flush()
	if got, _ := Pairs(s.DB(), "key:a"); len(got) != 10 {
		t.Fatalf("%d pairs after Flush, want 10", len(got))
	}
	r.Record("key:a", testPair(11))
	r.Close()
	if got, _ := Pairs(s.DB(), "key:a"); len(got) != 11 {
		t.Fatalf("%d pairs after Close, want 11", len(got))
	}
	if d := time.Since(start); d > time.Minute {
		t.Errorf("Flush and Close took %v: they waited for the delay", d)
	}

	// The default delay writes on its own.
	r, err = NewRecorder(s.DB(), RecorderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Record("key:b", testPair(1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, _ := Pairs(s.DB(), "key:b"); len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a pair was not written within 10s at the default delay")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
