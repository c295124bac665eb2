package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/audit"
)

// tamperRun checks the audit log of a whole test run against single
// changes: each altered, removed or reordered record, and a cut in the
// middle of a record, must make Verify fail and name the record.
func tamperRun(t *testing.T, files []string, pub ed25519.PublicKey) {
	t.Helper()
	if _, err := audit.Verify(files, pub, audit.VerifyOptions{}); err != nil {
		t.Fatalf("untouched log: %v", err)
	}
	last := files[len(files)-1]
	orig, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if len(lines) < 6 {
		t.Fatalf("only %d lines in %s", len(lines), last)
	}
	// Line numbers to touch: early, middle and the one before the final
	// checkpoint.
	targets := []int{2, len(lines) / 2, len(lines) - 2}
	check := func(name string, content []byte, wantLine int) {
		t.Helper()
		dir := t.TempDir()
		copies := make([]string, len(files))
		for i, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if f == last {
				b = content
			}
			copies[i] = filepath.Join(dir, filepath.Base(f))
			if err := os.WriteFile(copies[i], b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := audit.Verify(copies, pub, audit.VerifyOptions{})
		var ve *audit.VerifyError
		if !errors.As(err, &ve) {
			t.Errorf("%s: Verify returned %v, want the broken record named", name, err)
			return
		}
		if ve.File != copies[len(copies)-1] || ve.Line != wantLine {
			t.Errorf("%s: Verify names %s:%d (%v), want line %d", name, ve.File, ve.Line, err, wantLine)
		}
	}
	join := func(ls [][]byte) []byte { return bytes.Join(ls, nil) }
	for _, n := range targets {
		i := n - 1
		altered := append([][]byte(nil), lines...)
		l := bytes.Clone(lines[i])
		if j := bytes.Index(l, []byte(`"status":`)); j >= 0 {
			l[j+len(`"status":`)] ^= 1 // 200 -> 300, 401 -> 501...
		} else {
			l[len(l)/2] ^= 1
		}
		altered[i] = l
		check("record altered", join(altered), n)

		removed := append(append([][]byte(nil), lines[:i]...), lines[i+1:]...)
		check("record removed", join(removed), n)

		swapped := append([][]byte(nil), lines...)
		swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
		check("records reordered", join(swapped), n)
	}
	cut := join(lines[:len(lines)/2])
	cut = append(cut, lines[len(lines)/2][:len(lines[len(lines)/2])/2]...)
	check("file truncated mid-record", cut, len(lines)/2+1)
}
