package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id.txt")
	g, err := GenerateIdentityFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.Recipient, "age1") {
		t.Errorf("recipient %q", g.Recipient)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("generated with mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := LoadIdentityFile(path); err != nil {
		t.Fatalf("0600: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		os.Chmod(path, mode)
		if _, err := LoadIdentityFile(path); !errors.Is(err, ErrInsecurePermissions) {
			t.Errorf("mode %04o: %v, want ErrInsecurePermissions", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadIdentityFile(path); err != nil {
		t.Errorf("0400: %v", err)
	}
	if _, err := GenerateIdentityFile(path); err == nil {
		t.Error("generate overwrote an existing identity file")
	}
}

func TestIdentityFileErrorsHideContents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id.txt")
	secret := "AGE-SECRET-KEY-1NOTAREALKEYBUTLOOKSLIKEONEQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadIdentityFile(path)
	if err == nil {
		t.Fatal("malformed identity accepted")
	}
	if strings.Contains(err.Error(), "NOTAREALKEY") {
		t.Errorf("error reveals the file's contents: %v", err)
	}
}

func TestSymlinkKeyFileRefused(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "id.txt")
	if _, err := GenerateIdentityFile(real); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.txt")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentityFile(link); err == nil {
		t.Error("symlinked key file accepted")
	}
}
