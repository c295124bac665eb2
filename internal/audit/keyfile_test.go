package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/aegis-inference/aegis/internal/keys"
)

func TestGenerateAndLoadKeys(t *testing.T) {
	dir := t.TempDir()
	if err := GenerateKey(dir); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{SigningKeyFile: 0o600, PublicKeyFile: 0o644, HMACKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	priv, err := LoadSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) {
		t.Error("the public key file does not hold the signing key's public key")
	}
	if id := KeyID(pub); len(id) != 16 {
		t.Errorf("KeyID = %q, want 16 hex digits", id)
	}
	hk, err := LoadHMACKey(filepath.Join(dir, HMACKeyFile))
	if err != nil || len(hk) != HMACKeySize || bytes.Equal(hk, make([]byte, HMACKeySize)) {
		t.Errorf("LoadHMACKey = %x, %v; want 32 random bytes", hk, err)
	}
	if err := GenerateKey(dir); !errors.Is(err, os.ErrExist) {
		t.Errorf("GenerateKey over existing keys = %v, want ErrExist", err)
	}
	if _, err := LoadPublicKey(filepath.Join(dir, SigningKeyFile)); err == nil {
		t.Error("LoadPublicKey accepted a private key file")
	}
	if _, err := LoadSigningKey(filepath.Join(dir, PublicKeyFile)); err == nil {
		t.Error("LoadSigningKey accepted a public key file")
	}
}

func TestLoadKeysRefuseLooseModes(t *testing.T) {
	dir := t.TempDir()
	if err := GenerateKey(dir); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		for _, name := range []string{SigningKeyFile, HMACKeyFile} {
			p := filepath.Join(dir, name)
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			var err error
			if name == SigningKeyFile {
				_, err = LoadSigningKey(p)
			} else {
				_, err = LoadHMACKey(p)
			}
			if !errors.Is(err, keys.ErrInsecurePermissions) {
				t.Errorf("%s with mode %04o: err = %v, want ErrInsecurePermissions", name, mode, err)
			}
		}
	}
}

func TestLoadHMACKeyRefusesWrongSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, make([]byte, 16), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHMACKey(p); err == nil {
		t.Error("LoadHMACKey accepted 16 bytes")
	}
	_ = ed25519.PublicKeySize
}
