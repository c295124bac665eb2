package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aegis-inference/aegis/internal/keys"
)

// Key files GenerateKey writes in its directory.
const (
	SigningKeyFile = "audit-signing.key" // PKCS#8 PEM "PRIVATE KEY", mode 0600
	PublicKeyFile  = "audit-signing.pub" // PKIX PEM "PUBLIC KEY", mode 0644
	HMACKeyFile    = "audit-hmac.key"    // 32 raw random bytes, mode 0600
)

// KeyID names an audit public key in checkpoints: the hex of the first 8
// bytes of the SHA-256 of the raw 32-byte key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey creates a new Ed25519 audit signing key in dir:
// SigningKeyFile (0600) and PublicKeyFile (0644), and an HMAC key for
// tensor hashes, HMACKeyFile (0600). It never overwrites a file. The
// public key is what `aegis audit verify --key` takes; the private keys
// stay with the server.
func GenerateKey(dir string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	defer clear(priv)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	defer clear(der)
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, SigningKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, PublicKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return err
	}
	return GenerateHMACKey(filepath.Join(dir, HMACKeyFile))
}

// GenerateHMACKey writes HMACKeySize random bytes to a new file at path
// (mode 0600).
func GenerateHMACKey(path string) error {
	k := make([]byte, HMACKeySize)
	defer clear(k)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	return writeNew(path, k, 0o600)
}

// LoadHMACKey reads a tensor-hashing key: a regular file of exactly
// HMACKeySize bytes that group and others cannot access.
func LoadHMACKey(path string) ([]byte, error) {
	if err := keys.CheckKeyFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) != HMACKeySize {
		clear(b)
		return nil, fmt.Errorf("hmac key file %s: %d bytes, want %d", path, len(b), HMACKeySize)
	}
	return b, nil
}

// LoadSigningKey reads an Ed25519 audit signing key (PKCS#8 PEM) from a
// regular file that group and others cannot access.
func LoadSigningKey(path string) (ed25519.PrivateKey, error) {
	if err := keys.CheckKeyFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key file %s: not a PEM PRIVATE KEY", path)
	}
	defer clear(blk.Bytes)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key file %s: not a valid private key", path)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T is not an Ed25519 key", path, k)
	}
	return ek, nil
}

// LoadPublicKey reads an Ed25519 audit public key (PKIX PEM "PUBLIC KEY").
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("key file %s: not a PEM PUBLIC KEY", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %v", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T is not an Ed25519 key", path, k)
	}
	return pub, nil
}

// writeNew writes b to a new file at path, never replacing one.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
