package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aegis-inference/aegis/internal/audit"
)

// auditFixture writes a closed audit log of a few rotated files with its
// keys in dir, and returns the log's files and the public key file.
func auditFixture(t *testing.T) (files []string, pubFile string) {
	t.Helper()
	dir := t.TempDir()
	if err := audit.GenerateKey(dir); err != nil {
		t.Fatal(err)
	}
	priv, err := audit.LoadSigningKey(filepath.Join(dir, audit.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "log", "audit.log")
	l, err := audit.Open(audit.Config{Path: path, SigningKey: priv, MaxFileBytes: 8 << 10, CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := l.Write(&audit.Record{RequestID: "r", Principal: "key:abc", Auth: "api_key", Model: "m", Decision: "allow", Status: 200, LatencyMicros: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if files, err = audit.Files(path); err != nil || len(files) < 2 {
		t.Fatalf("Files = %v, %v; want rotated files", files, err)
	}
	return files, filepath.Join(dir, audit.PublicKeyFile)
}

func TestAuditVerify(t *testing.T) {
	files, pub := auditFixture(t)
	t.Run("ok with key", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(append([]string{"audit", "verify", "--key", pub}, files...), &out, &out); err != nil {
			t.Fatalf("verify: %v\n%s", err, out.String())
		}
		for _, want := range []string{"audit log OK", "50 requests", "checkpoints verified with key", "clean shutdown"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("no key warns", func(t *testing.T) {
		var out bytes.Buffer
		if err := run(append([]string{"audit", "verify"}, files...), &out, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "NOT checked") {
			t.Errorf("output does not say signatures were not checked:\n%s", out.String())
		}
	})
	t.Run("a dropped file fails", func(t *testing.T) {
		var out bytes.Buffer
		err := run(append([]string{"audit", "verify", "--key", pub}, files[1:]...), &out, &out)
		if !errors.Is(err, audit.ErrGenesis) || !strings.Contains(out.String(), "BROKEN") {
			t.Errorf("verify without the first file = %v\n%s; want ErrGenesis and BROKEN", err, out.String())
		}
		out.Reset()
		if err := run(append([]string{"audit", "verify", "--key", pub, "--start-mid-chain"}, files[1:]...), &out, &out); err != nil {
			t.Errorf("--start-mid-chain: %v", err)
		}
	})
	t.Run("an altered record fails", func(t *testing.T) {
		last := files[len(files)-1]
		b, err := os.ReadFile(last)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(last, b, 0o600)
		altered := bytes.Replace(b, []byte(`"status":200`), []byte(`"status":201`), 1)
		if err := os.WriteFile(last, altered, 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = run(append([]string{"audit", "verify", "--key", pub}, files...), &out, &out)
		var ve *audit.VerifyError
		if !errors.As(err, &ve) || ve.File != last || !errors.Is(err, audit.ErrChain) {
			t.Errorf("verify of an altered record = %v, want ErrChain in %s", err, last)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"audit"}, {"audit", "frob"}, {"audit", "verify"}} {
			if err := run(args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "usage") {
				t.Errorf("run(%q) = %v, want usage", args, err)
			}
		}
		if err := run([]string{"audit", "verify", "--key", "/nonexistent", files[0]}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Error("a missing key file was accepted")
		}
	})
}
