package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func openLog(t testing.TB, cfg Config) *Log {
	t.Helper()
	l, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// sample is a request record whose fields depend on i, including
// characters that need escaping.
func sample(i int) *Record {
	return &Record{
		RequestID:     fmt.Sprintf("req-%d", i),
		Principal:     "key:abc",
		Auth:          "api_key",
		Client:        "127.0.0.1:5555",
		Transport:     []string{"http", "grpc"}[i%2],
		Model:         "resnet",
		Version:       "3",
		Action:        "infer",
		Decision:      []string{"allow", "deny"}[i%3/2],
		Rule:          "role:reader",
		InputHMAC:     strings.Repeat("ab", 32),
		OutputHMAC:    strings.Repeat("cd", 32),
		InputBytes:    int64(i * 16),
		OutputBytes:   40,
		Status:        200,
		Error:         []string{"", "bad \"input\"\n\ttab", "über\x01"}[i%3],
		LatencyMicros: int64(100 + i),
	}
}

func writeN(t testing.TB, l *Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.Write(sample(i)); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
	}
}

// line is one line of a log file and where it is.
type line struct {
	file string
	n    int // 1-based
	text []byte
	e    *entry
}

// readLog reads every complete line of files.
func readLog(t testing.TB, files []string) []line {
	t.Helper()
	var out []line
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, text := range bytes.SplitAfter(b, []byte("\n")) {
			if len(text) == 0 || text[len(text)-1] != '\n' {
				continue
			}
			text = text[:len(text)-1]
			e, err := parseEntry(text)
			if err != nil {
				t.Fatalf("%s:%d: %v", f, i+1, err)
			}
			out = append(out, line{file: f, n: i + 1, text: text, e: e})
		}
	}
	return out
}

func findSeq(t testing.TB, lines []line, seq uint64) line {
	t.Helper()
	for _, l := range lines {
		if l.e.Seq == seq {
			return l
		}
	}
	t.Fatalf("no line with seq %d", seq)
	return line{}
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// encode is the canonical line of e.
func encode(e *entry) []byte {
	switch e.Type {
	case TypeRequest:
		if e.v1 {
			return appendRequestV1(nil, e.record())
		}
		return appendRequest(nil, e.record())
	case TypeCheckpoint:
		c := e.cp
		c.Prev = e.Prev
		return appendCheckpoint(nil, &c, true)
	case TypeOutage:
		return appendOutage(nil, &outage{Seq: e.Seq, Time: e.time, Since: e.since, Lost: e.Lost, Error: e.Error, Prev: e.Prev})
	case TypeRecovery:
		return appendRecovery(nil, &recovery{Seq: e.Seq, Time: e.time, DiscardedBytes: e.DiscardedBytes, DiscardedSHA256: e.DiscardedSHA256, Prev: e.Prev})
	}
	panic("unknown type " + e.Type)
}

// rewrite writes lines back to their files, after edit (which may change
// entries, drop lines by returning nil, and renumber), recomputing every
// seq and prev as a forger with write access but no key would.
func rewrite(t testing.TB, files []string, edit func(l line) *entry) {
	t.Helper()
	lines := readLog(t, files)
	out := map[string]*bytes.Buffer{}
	for _, f := range files {
		out[f] = new(bytes.Buffer)
	}
	var seq uint64
	prev := Genesis
	for _, l := range lines {
		e := edit(l)
		if e == nil {
			continue
		}
		seq++
		e.Seq, e.Prev = seq, prev
		e.cp.Seq = seq
		text := encode(e)
		prev = lineHash(text)
		out[l.file].Write(text)
		out[l.file].WriteByte('\n')
	}
	for f, b := range out {
		if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// crash stops l as a kill would: no closing checkpoint, no sync.
func crash(l *Log) {
	l.mu.Lock()
	l.closed = true
	for l.flushing {
		l.cond.Wait()
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.f.Close()
	l.lockf.Close()
}

// fixedClock returns a clock that advances by step on every call.
func fixedClock(start time.Time, step time.Duration) func() time.Time {
	var mu = make(chan struct{}, 1)
	t := start
	return func() time.Time {
		mu <- struct{}{}
		defer func() { <-mu }()
		t = t.Add(step)
		return t
	}
}
