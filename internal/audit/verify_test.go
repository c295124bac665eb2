package audit

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture writes a closed log of 300 requests, checkpoints every 40
// records, rotated into several files, and returns its directory.
func fixture(t *testing.T, priv ed25519.PrivateKey) string {
	t.Helper()
	dir := t.TempDir()
	l := openLog(t, Config{Path: filepath.Join(dir, "audit.log"), SigningKey: priv, MaxFileBytes: 48 << 10, CheckpointEvery: 40})
	writeN(t, l, 0, 300)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func logFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := Files(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("fixture has %d files, want at least 3", len(files))
	}
	return files
}

// requestIn returns a request line of file i (counting from 0) that a
// later checkpoint covers and that is not the first or last line.
func requestIn(t *testing.T, files []string, i int) line {
	t.Helper()
	ls := readLog(t, files[i:i+1])
	for _, l := range ls[len(ls)/2:] {
		if l.e.Type == TypeRequest {
			return l
		}
	}
	t.Fatalf("no request line in %s", files[i])
	return line{}
}

func rewriteFile(t *testing.T, path string, edit func(lines [][]byte) [][]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	var bl [][]byte
	for _, l := range lines {
		if l != "" {
			bl = append(bl, []byte(l))
		}
	}
	var out []byte
	for _, l := range edit(bl) {
		out = append(out, l...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyTamper alters a fresh copy of a good log in one way per case
// and checks that Verify fails naming the right file, line and record.
func TestVerifyTamper(t *testing.T) {
	pub, priv := newKey(t)
	good := fixture(t, priv)
	if _, err := Verify(logFiles(t, good), pub, VerifyOptions{}); err != nil {
		t.Fatalf("the untouched log does not verify: %v", err)
	}

	type want struct {
		kind error
		file int // index in the original file list
		line int
		seq  uint64
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, files []string) (want, []string)
		opts   VerifyOptions
	}{
		{"alter one byte of a record", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 1)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				i := strings.Index(string(ls[r.n-1]), `"model":"resnet"`) + len(`"model":"res`)
				ls[r.n-1][i] = 'N'
				return ls
			})
			return want{ErrChain, 1, r.n, r.e.Seq}, files
		}, VerifyOptions{}},
		{"alter one byte so the record is not canonical", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 0)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				i := strings.Index(string(ls[r.n-1]), `"status":`) + len(`"status"`)
				ls[r.n-1][i] = ' '
				return ls
			})
			return want{ErrSyntax, 0, r.n, r.e.Seq}, files
		}, VerifyOptions{}},
		{"remove one record", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 1)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				return append(ls[:r.n-1:r.n-1], ls[r.n:]...)
			})
			return want{ErrSequence, 1, r.n, r.e.Seq}, files
		}, VerifyOptions{}},
		{"swap two records", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 2)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				ls[r.n-1], ls[r.n+2] = ls[r.n+2], ls[r.n-1]
				return ls
			})
			return want{ErrSequence, 2, r.n, r.e.Seq}, files
		}, VerifyOptions{}},
		{"truncate the last file mid-record", func(t *testing.T, files []string) (want, []string) {
			last := len(files) - 1
			r := requestIn(t, files, last)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				ls[r.n-1] = ls[r.n-1][:len(ls[r.n-1])/2]
				return ls[:r.n]
			})
			return want{ErrTorn, last, r.n, r.e.Seq}, files
		}, VerifyOptions{}},
		{"truncate a rotated file mid-record, even with AllowTornTail", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 0)
			rewriteFile(t, r.file, func(ls [][]byte) [][]byte {
				ls[r.n-1] = ls[r.n-1][:10]
				return ls[:r.n]
			})
			return want{ErrTorn, 0, r.n, r.e.Seq}, files
		}, VerifyOptions{AllowTornTail: true}},
		{"cut the end of a rotated file at a line boundary", func(t *testing.T, files []string) (want, []string) {
			ls := readLog(t, files[1:2])
			rewriteFile(t, files[1], func(b [][]byte) [][]byte { return b[:len(b)-3] })
			return want{ErrFileEnd, 1, len(ls) - 3, ls[len(ls)-4].e.Seq}, files
		}, VerifyOptions{}},
		{"drop a whole rotated file", func(t *testing.T, files []string) (want, []string) {
			first := readLog(t, files[1:2])[0]
			return want{ErrSequence, 2, 1, first.e.Seq}, append(files[:1:1], files[2:]...)
		}, VerifyOptions{}},
		{"drop the first file", func(t *testing.T, files []string) (want, []string) {
			first := readLog(t, files[1:2])[0]
			return want{ErrGenesis, 1, 1, first.e.Seq}, files[1:]
		}, VerifyOptions{}},
		{"alter a checkpoint signature", func(t *testing.T, files []string) (want, []string) {
			var cp line
			for _, l := range readLog(t, files[1:2]) {
				if l.e.Reason == ReasonCount {
					cp = l
					break
				}
			}
			if cp.e == nil {
				t.Fatal("no count checkpoint in the second file")
			}
			rewriteFile(t, cp.file, func(ls [][]byte) [][]byte {
				i := strings.Index(string(ls[cp.n-1]), `"sig":"`) + len(`"sig":"`) + 5
				if ls[cp.n-1][i] == '0' {
					ls[cp.n-1][i] = '1'
				} else {
					ls[cp.n-1][i] = '0'
				}
				if string(ls[cp.n-1]) == string(cp.text)+"\n" {
					t.Fatal("signature unchanged")
				}
				return ls
			})
			return want{ErrSignature, 1, cp.n, cp.e.Seq}, files
		}, VerifyOptions{}},
		{"forge a record and re-chain everything after it", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 1)
			rewrite(t, files, func(l line) *entry {
				if l.e.Seq == r.e.Seq {
					l.e.Decision = "allow"
					l.e.Principal = "key:someone-else"
				}
				return l.e
			})
			// The first checkpoint after the edit no longer verifies.
			for _, l := range readLog(t, files) {
				if l.e.Type == TypeCheckpoint && l.e.Seq > r.e.Seq {
					return want{ErrSignature, index(files, l.file), l.n, l.e.Seq}, files
				}
			}
			t.Fatal("no checkpoint after the forged record")
			return want{}, nil
		}, VerifyOptions{}},
		{"forge a record, drop the checkpoints after it and re-chain", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 0)
			rewrite(t, files, func(l line) *entry {
				if l.e.Seq == r.e.Seq {
					l.e.Status = 403
				}
				if l.e.Type == TypeCheckpoint && l.e.Seq > r.e.Seq {
					return nil
				}
				return l.e
			})
			// Without checkpoints a rotated file cannot end with its
			// rotation checkpoint either; that is found first.
			return want{ErrFileEnd, 0, len(readLog(t, files[:1])), 0}, files
		}, VerifyOptions{}},
		{"forge, drop checkpoints and merge files into one", func(t *testing.T, files []string) (want, []string) {
			r := requestIn(t, files, 0)
			var all []byte
			for _, f := range files {
				b, _ := os.ReadFile(f)
				all = append(all, b...)
			}
			one := files[:1]
			if err := os.WriteFile(one[0], all, 0o600); err != nil {
				t.Fatal(err)
			}
			rewrite(t, one, func(l line) *entry {
				if l.e.Seq == r.e.Seq {
					l.e.Status = 403
				}
				if l.e.Type == TypeCheckpoint && l.e.Seq > r.e.Seq {
					return nil
				}
				return l.e
			})
			var lastCP *entry
			unsigned := 0
			for _, l := range readLog(t, one) {
				if l.e.Type == TypeCheckpoint {
					lastCP, unsigned = l.e, 0
					continue
				}
				if unsigned++; unsigned == lastCP.Every+1 {
					return want{ErrUnsigned, 0, l.n, l.e.Seq}, one
				}
			}
			t.Fatal("tail not longer than the last checkpoint allows")
			return want{}, nil
		}, VerifyOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, good)
			files := logFiles(t, dir)
			orig := append([]string(nil), files...)
			w, files := tc.tamper(t, files)
			_, err := Verify(files, pub, tc.opts)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want a *VerifyError", err)
			}
			if !errors.Is(err, w.kind) || ve.File != orig[w.file] || ve.Line != w.line || (w.seq != 0 && ve.Seq != w.seq) {
				t.Fatalf("Verify = %v\nwant %v at %s:%d seq %d", err, w.kind, filepath.Base(orig[w.file]), w.line, w.seq)
			}
			t.Logf("%v", err)
		})
	}
}

func index(files []string, f string) int {
	for i, g := range files {
		if g == f {
			return i
		}
	}
	return -1
}

// TestVerifyLimits pins what the log does not protect, as documented: a
// forger with write access and no key can rewrite records after the last
// checkpoint; without the public key, Verify cannot tell a rewritten log.
func TestVerifyLimits(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l := openLog(t, Config{Path: path, SigningKey: priv, CheckpointEvery: 40})
	writeN(t, l, 0, 50)
	crash(l) // no closing checkpoint: 9 unsigned records at the end

	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil || rep.Unsigned != 10 || rep.Closed() {
		t.Fatalf("Verify = %+v, %v; want ok with 10 unsigned records, not closed", rep, err)
	}
	lines := readLog(t, []string{path})
	tail := lines[len(lines)-3].e.Seq
	rewrite(t, []string{path}, func(l line) *entry {
		if l.e.Seq == tail {
			l.e.Decision = "deny"
		}
		return l.e
	})
	if _, err := Verify([]string{path}, pub, VerifyOptions{}); err != nil {
		t.Errorf("a forged record after the last checkpoint was caught (%v); the docs say it is not", err)
	}

	// Without a key, a forged record before a checkpoint passes too.
	covered := lines[5].e.Seq
	rewrite(t, []string{path}, func(l line) *entry {
		if l.e.Seq == covered {
			l.e.Decision = "deny"
		}
		return l.e
	})
	rep, err = Verify([]string{path}, nil, VerifyOptions{})
	if err != nil || rep.SignaturesChecked {
		t.Errorf("Verify without key = %+v, %v; want ok and SignaturesChecked false", rep, err)
	}
	if _, err := Verify([]string{path}, pub, VerifyOptions{}); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify with key = %v, want ErrSignature", err)
	}
}

func TestVerifyOtherKey(t *testing.T) {
	_, priv := newKey(t)
	other, _ := newKey(t)
	dir := fixture(t, priv)
	_, err := Verify(logFiles(t, dir), other, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrKey) || ve.Line != 1 || ve.Seq != 1 {
		t.Fatalf("Verify with another key = %v, want ErrKey at line 1", err)
	}
}

func TestVerifyMidChainStart(t *testing.T) {
	pub, priv := newKey(t)
	files := logFiles(t, fixture(t, priv))
	rep, err := Verify(files[1:], pub, VerifyOptions{AllowMidChainStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if first := readLog(t, files[1:2])[0].e.Seq; rep.FirstSeq != first || rep.Files != len(files)-1 {
		t.Errorf("report %+v: want first seq %d", rep, first)
	}
}

func TestVerifyEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{path}, nil, VerifyOptions{}); !errors.Is(err, ErrNoRecords) {
		t.Errorf("Verify of an empty file = %v, want ErrNoRecords", err)
	}
}
