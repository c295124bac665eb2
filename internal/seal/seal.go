// Package seal keeps model plaintext out of reach: it decrypts age-encrypted
// models into memory that is never written to disk, and hardens the process
// that holds them.
//
// Guarantees:
//   - Decryption streams from the file into one anonymous memory mapping,
//     outside the Go heap; no temporary file is ever written.
//   - That mapping is excluded from core dumps (MADV_DONTDUMP) and locked in
//     RAM (mlock) where the process is permitted to; Wipe zeroes it and
//     unmaps it, and a failed decryption wipes what it had written.
//   - The SHA-256 of the plaintext is computed in the same pass as the
//     decryption, so verifying it costs no second read.
//   - Any authentication failure (a changed byte anywhere, truncation, a
//     wrong key) refuses the whole file: no partial plaintext is returned.
package seal

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"filippo.io/age"
	"golang.org/x/sys/unix"
)

// Suffix marks an encrypted file: model.onnx.age holds model.onnx.
const Suffix = ".age"

// Plaintext is decrypted data in protected memory.
type Plaintext struct {
	mem    []byte // the whole mapping
	n      int    // bytes of plaintext
	sum    [sha256.Size]byte
	Locked bool // whether mlock succeeded
}

// Bytes returns the plaintext. It is valid until Wipe.
func (p *Plaintext) Bytes() []byte { return p.mem[:p.n:p.n] }

// SHA256 returns the digest of the plaintext, computed while decrypting.
func (p *Plaintext) SHA256() [sha256.Size]byte { return p.sum }

// Wipe zeroes and unmaps the plaintext. It is safe to call more than once.
func (p *Plaintext) Wipe() {
	if p == nil || p.mem == nil {
		return
	}
	clear(p.mem)
	if p.Locked {
		unix.Munlock(p.mem)
	}
	unix.Munmap(p.mem)
	p.mem, p.n = nil, 0
}

// ErrTooLarge reports an encrypted file larger than the caller allows.
var ErrTooLarge = errors.New("encrypted file too large")

// protectedAlloc maps size bytes of anonymous memory, excluded from core
// dumps and locked where permitted.
func protectedAlloc(size int) (*Plaintext, error) {
	if size <= 0 {
		size = 1
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map plaintext buffer: %w", err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("exclude plaintext from core dumps: %w", err)
	}
	p := &Plaintext{mem: mem}
	// Locking needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK; without
	// it the pages may be swapped, which `aegis doctor` reports.
	p.Locked = unix.Mlock(mem) == nil
	return p, nil
}

// Decrypt decrypts an age file into protected memory with identity,
// hashing the plaintext on the way. size is the encrypted size (an upper
// bound of the plaintext size).
func Decrypt(src io.Reader, size int64, identity age.Identity) (*Plaintext, error) {
	r, err := age.Decrypt(src, identity)
	if err != nil {
		return nil, fmt.Errorf("decrypt header: %w", err)
	}
	p, err := protectedAlloc(int(size))
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if err := fill(p, r, h); err != nil {
		p.Wipe()
		return nil, err
	}
	copy(p.sum[:], h.Sum(nil))
	return p, nil
}

// fill reads r to its end into p's mapping, hashing as it goes. Only a
// clean io.EOF ends the stream: age reports truncation as an error (such as
// io.ErrUnexpectedEOF), which must never read as the end of the data.
func fill(p *Plaintext, r io.Reader, h hash.Hash) error {
	const step = 1 << 20
	var one [1]byte
	for {
		buf := one[:]
		if p.n < len(p.mem) {
			buf = p.mem[p.n:min(p.n+step, len(p.mem))]
		}
		n, err := r.Read(buf)
		if n > 0 {
			if p.n == len(p.mem) {
				// The plaintext cannot outgrow the ciphertext.
				return errors.New("plaintext larger than the encrypted file")
			}
			h.Write(buf[:n])
			p.n += n
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decrypt payload: %w", err)
		}
	}
}

// DecryptFile decrypts the age file at path, refusing files larger than
// limit bytes (0: no limit).
func DecryptFile(path string, identity age.Identity, limit int64) (*Plaintext, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if limit > 0 && fi.Size() > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, path, fi.Size(), limit)
	}
	p, err := Decrypt(f, fi.Size(), identity)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Encrypt encrypts src to dst for recipients.
func Encrypt(dst io.Writer, src io.Reader, recipients ...age.Recipient) error {
	w, err := age.Encrypt(dst, recipients...)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		return err
	}
	return w.Close()
}

// EncryptFile encrypts the file at in to a new file at out (mode 0640,
// written to a temporary name beside it and renamed into place, so a
// partial file never carries the final name).
func EncryptFile(in, out string, recipients ...age.Recipient) error {
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".aegis-encrypt-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := Encrypt(tmp, src, recipients...); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
