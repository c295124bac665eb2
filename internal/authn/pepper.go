package authn

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// PepperSize is the size of the server key that API key hashes are keyed
// with.
const PepperSize = 32

// LoadOrCreatePepper returns the pepper in the file at path, creating the
// file (mode 0600, PepperSize bytes from crypto/rand) if it does not exist.
// It refuses a file that is not a regular file, that group or others may
// read or write, or that does not hold exactly PepperSize bytes.
//
// Keep the pepper apart from the key store: a copy of the store without it
// cannot test a guessed secret offline. Losing it invalidates every API key.
func LoadOrCreatePepper(path string) ([]byte, error) {
	switch err := createPepper(path); {
	case err == nil, errors.Is(err, fs.ErrExist):
	default:
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open pepper: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pepper %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pepper %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("pepper %s: mode %04o lets group or others in; want 0600", path, perm)
	}
	pepper := make([]byte, PepperSize+1)
	n, err := io.ReadFull(f, pepper)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("read pepper %s: %w", path, err)
	}
	if n != PepperSize {
		return nil, fmt.Errorf("pepper %s: want %d bytes", path, PepperSize)
	}
	return pepper[:PepperSize], nil
}

// createPepper writes a new pepper to path unless a file is there
// (fs.ErrExist). The file appears complete or not at all: it is written
// and synced under a temporary name, then linked into place.
func createPepper(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return fs.ErrExist
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pepper-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create pepper: %w", err)
	}
	defer os.Remove(tmp.Name())
	pepper := make([]byte, PepperSize)
	rand.Read(pepper)
	_, err = tmp.Write(pepper)
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
		return fmt.Errorf("create pepper: %w", err)
	}
	return err
}
