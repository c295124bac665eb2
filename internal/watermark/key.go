package watermark

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is the watermark key's file name in the state directory.
const KeyFile = "watermark-key"

// LoadOrCreateKey returns the watermark key in the file at path, creating
// the file (mode 0600, KeySize bytes from crypto/rand) if it does not
// exist. It refuses a file that is not a regular file, that group or
// others may read or write, or that does not hold exactly KeySize bytes.
//
// Whoever holds the key can tell which answers are marked and strip them
// from a training set. Losing it does not weaken verification (Verify
// needs only the recorded pairs), but a new key marks inputs afresh.
func LoadOrCreateKey(path string) ([]byte, error) {
	switch err := createKey(path); {
	case err == nil, errors.Is(err, fs.ErrExist):
	default:
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open watermark key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("watermark key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("watermark key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("watermark key %s: mode %04o lets group or others in; want 0600", path, perm)
	}
	key := make([]byte, KeySize+1)
	n, err := io.ReadFull(f, key)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("read watermark key %s: %w", path, err)
	}
	if n != KeySize {
		return nil, fmt.Errorf("watermark key %s: want %d bytes", path, KeySize)
	}
	return key[:KeySize], nil
}

// createKey writes a new key to path unless a file is there (fs.ErrExist).
// The file appears complete or not at all: it is written and synced under
// a temporary name, then linked into place.
func createKey(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fs.ErrExist
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".watermark-key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create watermark key: %w", err)
	}
	defer os.Remove(tmp.Name())
	key := make([]byte, KeySize)
	rand.Read(key)
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create watermark key: %w", err)
	}
	return nil
}
