package audit

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Append queues a record in the chain at once and returns before it is
// written; it is written with the next Write's batch, or by itself within
// AppendDelay, and a flood of them takes few writes. Close writes what is
// still queued, and the log verifies.
func TestAppend(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, CheckpointEvery: 1000})
	written := func() map[string]uint64 {
		files, err := Files(path)
		if err != nil {
			t.Fatal(err)
		}
		seqs := map[string]uint64{}
		for _, ln := range readLog(t, files) {
			if ln.e.RequestID != "" {
				seqs[ln.e.RequestID] = ln.e.Seq
			}
		}
		return seqs
	}

	// Alone: written by the timer.
	r := sample(1)
	before := l.Stats().Batches
	if err := l.Append(r); err != nil {
		t.Fatal(err)
	}
	if r.Seq == 0 || !isHash(r.Prev) {
		t.Fatalf("appended record not chained: seq %d prev %q", r.Seq, r.Prev)
	}
	deadline := time.Now().Add(5 * time.Second)
	for written()["req-1"] != r.Seq {
		if time.Now().After(deadline) {
			t.Fatal("appended record not written within 5s")
		}
		time.Sleep(AppendDelay / 2)
	}
	if n := l.Stats().Batches - before; n != 1 {
		t.Errorf("%d batches for one appended record, want 1", n)
	}

	// Before a Write: written with it, in chain order.
	a, w := sample(2), sample(3)
	if err := l.Append(a); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(w); err != nil {
		t.Fatal(err)
	}
	if got := written(); got["req-2"] != a.Seq || got["req-3"] != w.Seq || w.Seq != a.Seq+1 {
		t.Fatalf("after Write: appended seq %d (file %d), written seq %d (file %d); want both in the file, in order", a.Seq, got["req-2"], w.Seq, got["req-3"])
	}

	// A flood: far fewer writes than records.
	before = l.Stats().Batches
	for i := 100; i < 1100; i++ {
		if err := l.Append(sample(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Close writes what is still queued.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := l.Stats().Batches - before; n > 100 {
		t.Errorf("%d batches for 1,000 appended records, want them gathered", n)
	}
	got := written()
	for i := 100; i < 1100; i++ {
		if _, ok := got[sample(i).RequestID]; !ok {
			t.Fatalf("appended record %d missing after Close", i)
		}
	}
	if err := l.Append(sample(5)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	files, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(files, pub, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.Closed() || rep.Requests != 1003 {
		t.Errorf("report %+v: want a closed log with 1,003 requests", rep)
	}
}

// While the log cannot write, Append says so (the gate then answers 503
// naming the audit log), and the records it queued are counted lost with
// the others when the failed batch is.
func TestAppendWhileFailing(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, RetryInterval: time.Hour})
	writeN(t, l, 0, 3)
	fi, _ := os.Stat(path)
	setFileSizeLimit(t, uint64(fi.Size()))
	if err := l.Write(sample(9)); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Write at the limit = %v, want EFBIG", err)
	}
	if err := l.Append(sample(10)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append while failing = %v, want ErrUnavailable", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Lost < 2 { // the timer's write fails too
		if time.Now().After(deadline) {
			t.Fatalf("appended record not counted lost: %+v", l.Stats())
		}
		time.Sleep(AppendDelay)
	}
	restoreFileSizeLimit(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil || rep.Lost != 2 {
		t.Fatalf("Verify = %+v, %v; want ok, 2 lost", rep, err)
	}
}
