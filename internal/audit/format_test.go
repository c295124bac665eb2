package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyFirstFormatLog verifies a log written by a build from before
// request records had "flags" (the demo server of 2026-11-21, its public
// key beside it): a log outlives the upgrade that changed the format.
func TestVerifyFirstFormatLog(t *testing.T) {
	pub, err := LoadPublicKey(filepath.Join("testdata", "v1", "audit-signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "v1", "audit.log")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"flags"`)) {
		t.Fatal("the test log has flags: not the first format")
	}
	rep, err := Verify([]string{path}, pub, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 4 || rep.Checkpoints != 2 {
		t.Errorf("got %+v, want 4 requests and 2 checkpoints", rep)
	}

	// The two forms are not interchangeable: giving a first-format line
	// its "flags" field changes its bytes, which the next line's prev and
	// the closing checkpoint's signature cover.
	edited := bytes.Replace(b, []byte(`"error":"","latency_us":354`), []byte(`"error":"","flags":"","latency_us":354`), 1)
	if bytes.Equal(edited, b) {
		t.Fatal("the edit did not apply")
	}
	bad := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(bad, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{bad}, pub, VerifyOptions{}); err == nil {
		t.Error("a first-format line rewritten in the current form verified")
	}
}

// TestOpenContinuesFirstFormatLog: a server upgraded over a log of the
// first format opens it, continues its chain in the current format, and
// the whole log verifies.
func TestOpenContinuesFirstFormatLog(t *testing.T) {
	pub, priv := newKey(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg := Config{Path: path, SigningKey: priv, CheckpointEvery: 5}
	l := openLog(t, cfg)
	writeN(t, l, 0, 12)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := Files(path)
	if len(files) != 1 {
		t.Fatalf("%d files, want 1", len(files))
	}
	// Rewrite it as the build before flags wrote it: the same records
	// without "flags", chained and signed with the same key.
	var old bytes.Buffer
	prev := Genesis
	for _, ln := range readLog(t, files) {
		var text []byte
		switch e := ln.e; e.Type {
		case TypeRequest:
			r := e.record()
			r.Prev = prev
			text = appendRequestV1(nil, r)
		case TypeCheckpoint:
			c := e.cp
			c.Prev = prev
			c.Sig = hex.EncodeToString(ed25519.Sign(priv, checkpointMessage(&c)))
			text = appendCheckpoint(nil, &c, true)
		default:
			t.Fatalf("line %d: %s", ln.n, e.Type)
		}
		prev = lineHash(text)
		old.Write(text)
		old.WriteByte('\n')
	}
	if bytes.Contains(old.Bytes(), []byte(`"flags"`)) {
		t.Fatal("the rewritten log has flags")
	}
	if err := os.WriteFile(files[0], old.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(files, pub, VerifyOptions{}); err != nil || rep.Requests != 12 {
		t.Fatalf("first-format log: %+v, %v", rep, err)
	}

	l = openLog(t, cfg)
	writeN(t, l, 12, 7)
	flagged := sample(19)
	flagged.Flags = "validation:range:input"
	if err := l.Write(flagged); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ = Files(path)
	rep, err := Verify(files, pub, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 20 {
		t.Errorf("got %d requests, want 20", rep.Requests)
	}
	v1, current := 0, 0
	for _, ln := range readLog(t, files) {
		if ln.e.Type != TypeRequest {
			continue
		}
		switch {
		case ln.e.v1 && !strings.Contains(string(ln.text), `"flags"`):
			v1++
		case !ln.e.v1 && strings.Contains(string(ln.text), `"flags":`):
			current++
		default:
			t.Errorf("line %d: v1 %v: %s", ln.n, ln.e.v1, ln.text)
		}
	}
	if v1 != 12 || current != 8 {
		t.Errorf("%d first-format and %d current requests, want 12 and 8", v1, current)
	}
}
