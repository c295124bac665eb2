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
	"testing"
	"time"
)

// TestWriteRotateVerify writes a few hundred records through rotations and
// checkpoints, and checks the files, the chain and the report.
func TestWriteRotateVerify(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, MaxFileBytes: 40 << 10, CheckpointEvery: 40})
	var prevSeq uint64
	for i := range 300 {
		r := sample(i)
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
		if r.Seq <= prevSeq || r.Time.IsZero() || !isHash(r.Prev) {
			t.Fatalf("record %d: seq %d after %d, time %v, prev %q", i, r.Seq, prevSeq, r.Time, r.Prev)
		}
		prevSeq = r.Seq
	}
	st := l.Stats()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(sample(0)); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Write after Close = %v, want ErrClosed and ErrUnavailable", err)
	}
	if err := l.Healthy(); !errors.Is(err, ErrClosed) {
		t.Errorf("Healthy after Close = %v, want ErrClosed", err)
	}

	files, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("got %d files, want at least 3 (two rotations): %v", len(files), files)
	}
	for i, f := range files[:len(files)-1] {
		if want := fmt.Sprintf("audit-%020d.log", readLog(t, files[i:i+1])[0].e.Seq); filepath.Base(f) != want {
			t.Errorf("rotated file %d is %s, want %s", i, filepath.Base(f), want)
		}
	}
	rep, err := Verify(files, pub, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Requests != 300 || rep.FirstSeq != 1 || rep.LastSeq != rep.Records || rep.Files != len(files) {
		t.Errorf("report %+v: want 300 requests, seq 1..records, %d files", rep, len(files))
	}
	if !rep.Closed() || !rep.SignaturesChecked || rep.Unsigned != 0 {
		t.Errorf("report %+v: want closed, signatures checked, nothing unsigned", rep)
	}
	if st.Rotations != uint64(len(files)-1) || st.Failing || st.WriteFailures != 0 {
		t.Errorf("stats %+v: want %d rotations, no failures", st, len(files)-1)
	}

	lines := readLog(t, files)
	if lines[0].e.Type != TypeCheckpoint || lines[0].e.Reason != ReasonOpen || lines[0].e.Prev != Genesis {
		t.Errorf("first line %s: want the open checkpoint chained from Genesis", lines[0].text)
	}
	since := 0
	reasons := map[string]int{}
	for i, ln := range lines {
		if ln.e.Type == TypeCheckpoint {
			reasons[ln.e.Reason]++
			since = 0
			continue
		}
		if since++; since > 40 {
			t.Fatalf("line %d: %d records since the last checkpoint, want at most 40", i, since)
		}
	}
	if reasons[ReasonOpen] != 1 || reasons[ReasonClose] != 1 || reasons[ReasonRotate] != len(files)-1 || reasons[ReasonCount] < 3 {
		t.Errorf("checkpoints by reason %v: want 1 open, 1 close, %d rotate, some by count", reasons, len(files)-1)
	}
	if uint64(reasons[ReasonOpen]+reasons[ReasonClose]+reasons[ReasonRotate]+reasons[ReasonCount]) != rep.Checkpoints {
		t.Errorf("report counts %d checkpoints, lines hold %v", rep.Checkpoints, reasons)
	}
	// Each rotated file ends with its rotation checkpoint, and the next
	// file chains from it.
	for i, f := range files[:len(files)-1] {
		ls := readLog(t, []string{f})
		last := ls[len(ls)-1]
		next := readLog(t, files[i+1:i+2])[0]
		if last.e.Reason != ReasonRotate || next.e.Prev != lineHash(last.text) || next.e.Seq != last.e.Seq+1 {
			t.Errorf("%s ends with %s; next file starts %s", f, last.text, next.text)
		}
	}
}

func TestRestartContinuesChain(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := Config{Path: path, SigningKey: priv, CheckpointEvery: 5, MaxFileBytes: 8 << 10}
	for round := range 3 {
		l := openLog(t, cfg)
		writeN(t, l, round*20, 20)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := Files(path)
	rep, err := Verify(files, pub, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 60 {
		t.Errorf("got %d requests, want 60", rep.Requests)
	}
	opens := 0
	for _, ln := range readLog(t, files) {
		if ln.e.Reason == ReasonOpen {
			opens++
		}
	}
	if opens != 3 {
		t.Errorf("got %d open checkpoints, want 3", opens)
	}
}

// TestRestartAfterCrashMidRotation: the process died between renaming the
// full file and creating the new one; Open continues from the last rotated
// file.
func TestRestartAfterCrashMidRotation(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := Config{Path: path, SigningKey: priv, CheckpointEvery: 10, MaxFileBytes: 4 << 10}
	l := openLog(t, cfg)
	for i := 0; l.Stats().Rotations == 0; i++ {
		writeN(t, l, i, 1)
	}
	crash(l)
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("active file after rotation: %v, %v; want it empty", fi, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, cfg)
	writeN(t, l, 100, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(path)
	if len(files) != 2 {
		t.Fatalf("files %v, want one rotated and the active one", files)
	}
	if _, err := Verify(files, pub, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRotationFailureKeepsWriting: a rotation that cannot rename the file
// is logged and retried later; records keep going to the active file.
func TestRotationFailureKeepsWriting(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	var logs syncBuffer
	l := openLog(t, Config{Path: path, SigningKey: priv, MaxFileBytes: 4 << 10, RetryInterval: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	blocker := rotatedName(path, 1)
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 0, 20)
	if st := l.Stats(); st.Rotations != 0 || st.Failing {
		t.Fatalf("stats %+v: want no rotation, not failing", st)
	}
	if !strings.Contains(logs.String(), "rotation failed") {
		t.Errorf("the failed rotation was not logged:\n%s", logs.String())
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	writeN(t, l, 20, 20)
	if st := l.Stats(); st.Rotations == 0 {
		t.Errorf("stats %+v: no rotation once the name was free", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(path)
	if _, err := Verify(files, pub, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRepairsTornTail(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := Config{Path: path, SigningKey: priv, CheckpointEvery: 10}
	l := openLog(t, cfg)
	writeN(t, l, 0, 25)
	crash(l)
	before := readLog(t, []string{path})
	torn := []byte(`{"type":"request","seq":99,"time":"2026-`)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn)
	f.Close()

	_, err = Verify([]string{path}, pub, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrTorn) || ve.Line != len(before)+1 || ve.Seq != uint64(len(before)+1) {
		t.Fatalf("strict Verify = %v, want ErrTorn at line %d seq %d", err, len(before)+1, len(before)+1)
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{AllowTornTail: true})
	if err != nil || rep.TornBytes != int64(len(torn)) {
		t.Fatalf("Verify AllowTornTail = %+v, %v; want ok with %d torn bytes", rep, err, len(torn))
	}

	l = openLog(t, cfg)
	writeN(t, l, 25, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify([]string{path}, pub, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify after Open repaired: %v", err)
	}
	if rep.Recoveries != 1 || rep.Requests != 28 {
		t.Errorf("report %+v: want 1 recovery, 28 requests", rep)
	}
	after := readLog(t, []string{path})
	rec := after[len(before)]
	if rec.e.Type != TypeRecovery || rec.e.DiscardedBytes != int64(len(torn)) || rec.e.DiscardedSHA256 != lineHash(torn) {
		t.Errorf("line after the old tail is %s, want a recovery record for %d bytes", rec.text, len(torn))
	}
	for i := range before {
		if !bytes.Equal(before[i].text, after[i].text) {
			t.Fatalf("line %d changed by the repair", i+1)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	_, priv := newKey(t)
	_, other := newKey(t)
	tests := []struct {
		name    string
		corrupt func(t *testing.T, path string)
		cfg     func(c *Config)
		want    error
	}{
		{"altered record", func(t *testing.T, path string) { flipByteIn(t, path, 5, `"model":"resnet"`) }, nil, ErrChain},
		{"not JSON", func(t *testing.T, path string) { appendText(t, path, "garbage\n") }, nil, ErrSyntax},
		{"other key", nil, func(c *Config) { c.SigningKey = other }, ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			cfg := Config{Path: path, SigningKey: priv}
			l := openLog(t, cfg)
			writeN(t, l, 0, 10)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.corrupt != nil {
				tc.corrupt(t, path)
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			l, err := Open(cfg)
			if err == nil {
				l.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	_, priv := newKey(t)
	cfg := Config{Path: filepath.Join(t.TempDir(), "audit.log"), SigningKey: priv}
	l := openLog(t, cfg)
	defer l.Close()
	if l2, err := Open(cfg); !errors.Is(err, ErrLocked) {
		if err == nil {
			l2.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestConfigValidate(t *testing.T) {
	_, priv := newKey(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no path", Config{SigningKey: priv}, "path"},
		{"no key", Config{Path: "x"}, "signing_key"},
		{"negative size", Config{Path: "x", SigningKey: priv, MaxFileBytes: -1}, "max_file_bytes"},
		{"negative every", Config{Path: "x", SigningKey: priv, CheckpointEvery: -1}, "checkpoint_every"},
		{"negative interval", Config{Path: "x", SigningKey: priv, CheckpointInterval: -1}, "checkpoint_interval"},
		{"negative retry", Config{Path: "x", SigningKey: priv, RetryInterval: -1}, "retry_interval"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: Validate = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durable=%v", durable), func(t *testing.T) {
			pub, priv := newKey(t)
			path := filepath.Join(t.TempDir(), "audit.log")
			l := openLog(t, Config{Path: path, SigningKey: priv, Durable: durable, CheckpointEvery: 50, MaxFileBytes: 64 << 10})
			const workers, each = 8, 100
			var mu sync.Mutex
			seen := map[uint64]string{}
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						r := sample(w*each + i)
						if err := l.Write(r); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if _, dup := seen[r.Seq]; dup {
							t.Errorf("seq %d assigned twice", r.Seq)
						}
						seen[r.Seq] = r.RequestID
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			st := l.Stats()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files, _ := Files(path)
			rep, err := Verify(files, pub, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Requests != workers*each {
				t.Errorf("got %d requests, want %d", rep.Requests, workers*each)
			}
			for _, ln := range readLog(t, files) {
				if id, ok := seen[ln.e.Seq]; ok && ln.e.RequestID != id {
					t.Errorf("seq %d holds %s, Write said %s", ln.e.Seq, ln.e.RequestID, id)
				}
			}
			t.Logf("%d records in %d batches", st.Records, st.Batches)
		})
	}
}

func TestIntervalCheckpoint(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, CheckpointInterval: 20 * time.Millisecond})
	defer l.Close()
	writeN(t, l, 0, 3)
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Checkpoints < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no interval checkpoint after 5s: %+v", l.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastCheckpointReason != ReasonInterval || rep.Unsigned != 0 {
		t.Errorf("report %+v: want the last checkpoint an interval one covering everything", rep)
	}
}

func TestWriteRefusesBadTime(t *testing.T) {
	_, priv := newKey(t)
	l := openLog(t, Config{Path: filepath.Join(t.TempDir(), "audit.log"), SigningKey: priv})
	defer l.Close()
	r := sample(1)
	r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := l.Write(r); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("Write with year 10000 = %v, want ErrInvalidRecord", err)
	}
}

func flipByteIn(t testing.TB, path string, lineNo int, within string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	i := bytes.Index(lines[lineNo-1], []byte(within))
	if i < 0 {
		t.Fatalf("%s:%d has no %q", path, lineNo, within)
	}
	lines[lineNo-1][i+len(within)-2] ^= 0x01
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendText(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestDurableUsesAIO: on Linux, durable syncs go through native AIO, so a
// flush does not hold a processor, and the log stays verifiable.
func TestDurableUsesAIO(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, Durable: true})
	for i := range 20 {
		if err := l.Write(sample(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.Lock()
	usesAIO := l.aio != nil
	l.mu.Unlock()
	if !usesAIO {
		t.Error("durable log fell back to fdatasync: native AIO fdsync unavailable or refused")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(path)
	if rep, err := Verify(files, pub, VerifyOptions{}); err != nil || rep.Requests != 20 || !rep.Closed() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
