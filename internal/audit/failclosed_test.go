package audit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the log's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setFileSizeLimit sets this process's RLIMIT_FSIZE soft limit, restoring
// the original at cleanup. Past the limit write(2) fails with EFBIG; the
// kernel also sends SIGXFSZ, which the Go runtime ignores (os/signal: it
// "otherwise causes no action") — the test surviving its own writes checks
// that.
func setFileSizeLimit(t *testing.T, n uint64) {
	t.Helper()
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &orig); err != nil {
			t.Errorf("restore RLIMIT_FSIZE: %v", err)
		}
	})
	lim := orig
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
}

func restoreFileSizeLimit(t *testing.T) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
}

// TestFailClosedFileSizeLimit makes the file unwritable for real with
// RLIMIT_FSIZE, in both modes: Write fails, Healthy fails, nothing partial
// stays in the file; when the limit is raised the next Write recovers, an
// outage record counts what was lost, and the whole log verifies.
func TestFailClosedFileSizeLimit(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			pub, priv := newKey(t)
			path := filepath.Join(t.TempDir(), "audit.log")
			var logs syncBuffer
			l := openLog(t, Config{Path: path, SigningKey: priv, Durable: durable, CheckpointEvery: 7,
				RetryInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			writeN(t, l, 0, 20)
			if err := l.Healthy(); err != nil {
				t.Fatalf("Healthy before = %v", err)
			}
			fi, _ := os.Stat(path)
			good := fi.Size()

			// Room for part of the next record: write(2) writes a prefix,
			// then fails with EFBIG.
			setFileSizeLimit(t, uint64(good)+100)
			const failed = 5
			for i := range failed {
				err := l.Write(sample(100 + i))
				if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.EFBIG) {
					t.Fatalf("Write %d over the limit = %v, want ErrUnavailable wrapping EFBIG", i, err)
				}
			}
			if err := l.Healthy(); !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.EFBIG) {
				t.Errorf("Healthy while failing = %v, want ErrUnavailable wrapping EFBIG", err)
			}
			st := l.Stats()
			if !st.Failing || st.WriteFailures != failed || st.Lost != failed {
				t.Errorf("stats while failing %+v: want failing, %d failures, %d lost", st, failed, failed)
			}
			if fi, _ := os.Stat(path); fi.Size() != good {
				t.Errorf("file is %d bytes while failing, want %d: a partial record was left", fi.Size(), good)
			}

			restoreFileSizeLimit(t)
			r := sample(200)
			if err := l.Write(r); err != nil {
				t.Fatalf("Write after the limit was raised = %v", err)
			}
			if err := l.Healthy(); err != nil {
				t.Errorf("Healthy after recovery = %v", err)
			}
			if st := l.Stats(); st.Failing || st.Lost != failed {
				t.Errorf("stats after recovery %+v: want not failing, %d lost", st, failed)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify([]string{path}, pub, VerifyOptions{})
			if err != nil {
				t.Fatalf("Verify after recovery: %v", err)
			}
			if rep.Outages != 1 || rep.Lost != failed || rep.Requests != 21 {
				t.Errorf("report %+v: want 1 outage, %d lost, 21 requests", rep, failed)
			}
			var o line
			for _, ln := range readLog(t, []string{path}) {
				if ln.e.Type == TypeOutage {
					o = ln
				}
			}
			if o.e == nil || o.e.Seq >= r.Seq || o.e.Seq < r.Seq-2 || o.e.Error != syscall.EFBIG.Error() || o.e.Lost != failed {
				t.Errorf("outage record %s: want it just before seq %d, error %q, lost %d", o.text, r.Seq, syscall.EFBIG.Error(), failed)
			}

			out := logs.String()
			if !strings.Contains(out, "cannot write") || !strings.Contains(out, "writable again") {
				t.Errorf("log lacks the failed and recovered transitions:\n%s", out)
			}
			if strings.Count(out, "cannot write") != 1 {
				t.Errorf("the failure was logged more than once:\n%s", out)
			}
			for _, secret := range []string{"req-", "key:abc", "resnet", "127.0.0.1"} {
				if strings.Contains(out, secret) {
					t.Errorf("log output holds record content %q:\n%s", secret, out)
				}
			}
		})
	}
}

// TestFailClosedRecoversByItself: no Write comes while the log is down (the
// server refuses requests on Healthy); the background retry recovers it.
func TestFailClosedRecoversByItself(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, RetryInterval: 10 * time.Millisecond})
	writeN(t, l, 0, 3)
	fi, _ := os.Stat(path)
	setFileSizeLimit(t, uint64(fi.Size()))
	if err := l.Write(sample(9)); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Write at the limit = %v, want EFBIG", err)
	}
	time.Sleep(50 * time.Millisecond) // retries fail meanwhile
	if l.Healthy() == nil || l.Stats().WriteFailures < 2 {
		t.Fatalf("healthy with the limit still in place: %+v", l.Stats())
	}
	restoreFileSizeLimit(t)
	deadline := time.Now().Add(5 * time.Second)
	for l.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not healthy 5s after the limit was raised: %v", l.Healthy())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil || rep.Outages != 1 || rep.Lost != 1 {
		t.Fatalf("Verify = %+v, %v; want ok, 1 outage, 1 lost", rep, err)
	}
}

// TestFailClosedDiskFull puts /dev/full under the log's file descriptor:
// writes fail with ENOSPC and the repair (ftruncate) fails too, so the log
// must keep the repair for later. Putting the file back recovers.
func TestFailClosedDiskFull(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, RetryInterval: time.Hour})
	writeN(t, l, 0, 5)

	l.mu.Lock()
	fd := int(l.f.Fd())
	l.mu.Unlock()
	saved, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(saved)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if err := syscall.Dup3(int(full.Fd()), fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(sample(10)); !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write to a full disk = %v, want ErrUnavailable wrapping ENOSPC", err)
	}
	// ftruncate fails on /dev/full: the log cannot cut back what the failed
	// write may have left, so it refuses to append until it can.
	for i := range 2 {
		if err := l.Write(sample(11 + i)); !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("Write with the repair pending = %v, want ErrUnavailable wrapping ftruncate's EINVAL", err)
		}
	}
	if !errors.Is(l.Healthy(), ErrUnavailable) {
		t.Errorf("Healthy = %v, want ErrUnavailable", l.Healthy())
	}
	if err := syscall.Dup3(saved, fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 20, 2)
	if err := l.Healthy(); err != nil {
		t.Errorf("Healthy after the file came back = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil || rep.Outages != 1 || rep.Lost != 3 || rep.Requests != 7 {
		t.Fatalf("Verify = %+v, %v; want ok, 1 outage, 3 lost, 7 requests", rep, err)
	}
	for _, ln := range readLog(t, []string{path}) {
		if ln.e.Type == TypeOutage && ln.e.Error != syscall.ENOSPC.Error() {
			t.Errorf("outage record %s: want the first failure, %q", ln.text, syscall.ENOSPC.Error())
		}
	}
}

// TestFailClosedPartialWriteRepairedLater: the write fails part way and the
// immediate repair fails too; the garbage is cut before the next write.
func TestFailClosedPartialWriteRepairedLater(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, RetryInterval: time.Hour})
	writeN(t, l, 0, 5)
	// Leave garbage at the end of the file and mark it for repair, as a
	// failed write whose ftruncate also failed would.
	appendText(t, path, `{"type":"request","seq":7,"ti`)
	l.mu.Lock()
	l.repair = true
	l.mu.Unlock()
	writeN(t, l, 5, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{path}, pub, VerifyOptions{}); err != nil {
		t.Fatalf("Verify = %v: the partial line was not cut", err)
	}
}
