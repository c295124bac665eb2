// Package keys holds key custody: it is the only package in Aegis that
// reads or handles private key material.
//
// A Custody yields an age identity that unwraps model file keys. Where the
// private key lives is the custody's business: in a file here (refused when
// group- or world-readable), or in an HSM, where the unwrap happens on the
// token and the key never leaves it.
//
// Defaults that hold for every custody:
//   - an identity file must be a regular file with no group or other
//     permission bits (0600 or stricter), else it is refused;
//   - passphrase (scrypt) identities are for development only, and cap the
//     work factor an encrypted file may demand (MaxScryptWorkFactor).
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
)

// Custody gives access to a private key without handing it out.
type Custody interface {
	// Identity returns the age identity that unwraps file keys.
	Identity() age.Identity
	// Describe names the custody for logs and `aegis doctor`, without
	// revealing key material.
	Describe() string
}

// MaxScryptWorkFactor caps the scrypt work factor (log2 N) a passphrase-
// encrypted model may demand, so a hostile file cannot make loading take
// minutes. age's own encryption default is 18.
const MaxScryptWorkFactor = 20

// ErrInsecurePermissions reports a key file readable by group or others.
var ErrInsecurePermissions = errors.New("key file is accessible by group or others")

// FileCustody is an age identity file (X25519 or post-quantum hybrid
// identities, one per line, comments allowed).
type FileCustody struct {
	path string
	ids  []age.Identity
}

var _ Custody = (*FileCustody)(nil)

// CheckKeyFile refuses a key file that is not a regular file or that group
// or others may access.
func CheckKeyFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, want 0600 or stricter", ErrInsecurePermissions, path, perm)
	}
	return nil
}

// LoadIdentityFile reads an age identity file after checking its
// permissions.
func LoadIdentityFile(path string) (*FileCustody, error) {
	if err := CheckKeyFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		// age's parse errors may quote the offending line: never pass
		// them on, as that line may hold key material.
		return nil, fmt.Errorf("key file %s: not an age identity file", path)
	}
	return &FileCustody{path: path, ids: ids}, nil
}

// Identity implements Custody.
func (c *FileCustody) Identity() age.Identity { return multiIdentity(c.ids) }

// Describe implements Custody.
func (c *FileCustody) Describe() string {
	return fmt.Sprintf("identity file %s (%d identities)", c.path, len(c.ids))
}

// multiIdentity tries each identity in turn.
type multiIdentity []age.Identity

func (m multiIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	var errs []error
	for _, id := range m {
		k, err := id.Unwrap(stanzas)
		if err == nil {
			return k, nil
		}
		if !errors.Is(err, age.ErrIncorrectIdentity) {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: %w", age.ErrIncorrectIdentity, errors.Join(errs...))
}

// PassphraseCustody derives file keys from a passphrase with scrypt. It is
// for development: a passphrase is only as strong as its entropy.
type PassphraseCustody struct {
	id *age.ScryptIdentity
}

var _ Custody = (*PassphraseCustody)(nil)

// NewPassphrase returns a passphrase custody with the work factor capped.
func NewPassphrase(passphrase string) (*PassphraseCustody, error) {
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, err
	}
	id.SetMaxWorkFactor(MaxScryptWorkFactor)
	return &PassphraseCustody{id: id}, nil
}

// Identity implements Custody.
func (c *PassphraseCustody) Identity() age.Identity { return c.id }

// Describe implements Custody.
func (c *PassphraseCustody) Describe() string { return "passphrase (scrypt, development only)" }

// Generated is a new X25519 identity and its public recipient.
type Generated struct {
	Recipient string // age1...
}

// GenerateIdentityFile creates a new X25519 identity in a new file at path
// (mode 0600, refusing to overwrite) and returns its public recipient.
func GenerateIdentityFile(path string) (Generated, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return Generated{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Generated{}, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Generated{}, err
	}
	rcpt := id.Recipient().String()
	_, err = fmt.Fprintf(f, "# created by aegis keys generate\n# public key: %s\n%s\n", rcpt, id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return Generated{}, err
	}
	return Generated{Recipient: rcpt}, nil
}

// ParseRecipients parses recipients one per line, with blank lines and
// # comments allowed, as `age -R` reads them: age1... keys, and ssh-rsa
// keys (as an HSM-held key presents itself, see PKCS11Custody.Recipient).
func ParseRecipients(r io.Reader) ([]age.Recipient, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, err
	}
	var out []age.Recipient
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rc, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		out = append(out, rc)
	}
	if len(out) == 0 {
		return nil, errors.New("no recipients")
	}
	return out, nil
}

// ParseRecipient parses one recipient: age1... or ssh-rsa.
func ParseRecipient(s string) (age.Recipient, error) {
	if strings.HasPrefix(s, "ssh-rsa ") {
		return agessh.ParseRecipient(s)
	}
	rs, err := age.ParseRecipients(strings.NewReader(s))
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("want one recipient, got %d", len(rs))
	}
	return rs[0], nil
}

// LoadSigningKey reads an ECDSA private key (PKCS#8 or SEC 1 PEM) for
// signing models, after checking the file's permissions. The key is
// returned as a crypto.Signer so callers never handle its bytes.
func LoadSigningKey(path string) (crypto.Signer, error) {
	if err := CheckKeyFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("key file %s: not PEM", path)
	}
	var k crypto.PrivateKey
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("key file %s: PEM block %q is not a private key", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key file %s: not a valid private key", path)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key file %s: %T is not an ECDSA key", path, k)
	}
	return ek, nil
}

// GenerateSigningKey creates a new ECDSA P-256 signing key in a new PKCS#8
// PEM file at path (mode 0600) and writes its public key (PEM) to pubPath.
func GenerateSigningKey(path, pubPath string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	defer clear(der)
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
