package authn

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		return createPepper(f)
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("create pepper %s: %w", path, err)
	}
	f, err = os.Open(path)
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

func createPepper(f *os.File) ([]byte, error) {
	pepper := make([]byte, PepperSize)
	rand.Read(pepper)
	_, err := f.Write(pepper)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("write pepper: %w", err)
	}
	return pepper, nil
}
