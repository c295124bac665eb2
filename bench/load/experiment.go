package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"filippo.io/age"
	"golang.org/x/sys/unix"

	"github.com/aegis-inference/aegis/internal/deploy"
)

// This file holds candidate changes to internal/seal, measured here so that
// they can be judged before anyone adopts them. They keep seal's
// guarantees: one anonymous mapping outside the Go heap, MADV_DONTDUMP,
// mlock where permitted, every chunk authenticated before the file is
// accepted, the digest computed from the plaintext as it is written, and the
// mapping wiped on any failure.

// protectedMap is seal.protectedAlloc: size bytes of anonymous memory,
// excluded from core dumps and locked where permitted.
func protectedMap(size int) (mem []byte, locked bool, err error) {
	mem, err = unix.Mmap(-1, 0, max(size, 1), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		unix.Munmap(mem)
		return nil, false, err
	}
	return mem, unix.Mlock(mem) == nil, nil
}

// wipeMap is seal.Plaintext.Wipe.
func wipeMap(mem []byte, locked bool) {
	clear(mem)
	if locked {
		unix.Munlock(mem)
	}
	unix.Munmap(mem)
}

// hashBatch is how much plaintext the decrypting goroutine hands the
// hashing goroutine at a time.
const hashBatch = 256 << 10

// pipeHasher hashes ranges of a mapping on its own goroutine, in the order
// they are sent. The mapping is written once, front to back, so a range is
// never touched again after it is sent and the hasher may lag behind.
type pipeHasher struct {
	ranges chan [2]int
	sum    chan [sha256.Size]byte
}

func startHasher(mem []byte) *pipeHasher {
	h := &pipeHasher{ranges: make(chan [2]int, 1<<14), sum: make(chan [sha256.Size]byte, 1)}
	go func() {
		d := sha256.New()
		for r := range h.ranges {
			d.Write(mem[r[0]:r[1]])
		}
		var s [sha256.Size]byte
		d.Sum(s[:0])
		h.sum <- s
	}()
	return h
}

// finish waits for the hasher and returns the digest of everything sent.
func (h *pipeHasher) finish() [sha256.Size]byte {
	close(h.ranges)
	return <-h.sum
}

// decryptStreamPipelined is seal.DecryptFile with the hashing moved to a
// second goroutine: the same age.Decrypt stream and fill loop, but each
// 256 KiB written is handed to the hasher instead of hashed inline.
func decryptStreamPipelined(path string, id age.Identity) (mem []byte, n int, sum [sha256.Size]byte, locked bool, err error) {
	f, size, err := openRegular(path)
	if err != nil {
		return nil, 0, sum, false, err
	}
	defer f.Close()
	r, err := age.Decrypt(f, id)
	if err != nil {
		return nil, 0, sum, false, fmt.Errorf("decrypt header: %w", err)
	}
	mem, locked, err = protectedMap(int(size))
	if err != nil {
		return nil, 0, sum, false, err
	}
	h := startHasher(mem)
	sent := 0
	var one [1]byte
	for {
		buf := one[:]
		if n < len(mem) {
			buf = mem[n:min(n+1<<20, len(mem))]
		}
		k, rerr := r.Read(buf)
		if k > 0 {
			if n == len(mem) {
				err = errors.New("plaintext larger than the encrypted file")
				break
			}
			n += k
			if n-sent >= hashBatch {
				h.ranges <- [2]int{sent, n}
				sent = n
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = fmt.Errorf("decrypt payload: %w", rerr)
			break
		}
	}
	if err == nil && n > sent {
		h.ranges <- [2]int{sent, n}
	}
	sum = h.finish()
	if err != nil {
		wipeMap(mem, locked)
		return nil, 0, sum, false, err
	}
	return mem, n, sum, locked, nil
}

// decryptReaderAtPipelined decrypts with age.DecryptReaderAt, which checks
// the size by authenticating the final chunk first and then decrypts each
// chunk in place in one buffer per call, copying it once into the
// mapping (age.Decrypt's stream reader allocates a fresh 64 KiB buffer per
// chunk and copies each chunk twice); hashing runs on a second goroutine.
func decryptReaderAtPipelined(path string, id age.Identity) (mem []byte, n int, sum [sha256.Size]byte, locked bool, err error) {
	f, size, err := openRegular(path)
	if err != nil {
		return nil, 0, sum, false, err
	}
	defer f.Close()
	r, plainSize, err := age.DecryptReaderAt(f, size, id)
	if err != nil {
		return nil, 0, sum, false, fmt.Errorf("decrypt: %w", err)
	}
	if plainSize > size {
		return nil, 0, sum, false, errors.New("plaintext larger than the encrypted file")
	}
	mem, locked, err = protectedMap(int(size))
	if err != nil {
		return nil, 0, sum, false, err
	}
	h := startHasher(mem)
	const step = 1 << 20
	for off := 0; off < int(plainSize); {
		end := min(off+step, int(plainSize))
		k, rerr := r.ReadAt(mem[off:end], int64(off))
		if k != end-off && rerr == nil {
			rerr = io.ErrUnexpectedEOF
		}
		if rerr != nil && !(rerr == io.EOF && k == end-off) {
			err = fmt.Errorf("decrypt payload: %w", rerr)
			break
		}
		h.ranges <- [2]int{off, end}
		off = end
	}
	sum = h.finish()
	if err != nil {
		wipeMap(mem, locked)
		return nil, 0, sum, false, err
	}
	return mem, int(plainSize), sum, locked, nil
}

func openRegular(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	return f, fi.Size(), nil
}

// verifyPipelined is opVerify with one of the experimental decryptions.
func verifyPipelined(spec childSpec, sealed string, id age.Identity, policy *deploy.Policy, res childResult) (childResult, error) {
	decrypt := decryptStreamPipelined
	if spec.Op == opReaderAt {
		decrypt = decryptReaderAtPipelined
	}
	start := time.Now()
	mem, n, sum, locked, err := decrypt(sealed, id)
	if err != nil {
		return res, err
	}
	res.Decrypt = time.Since(start)
	if err := checkPolicy(spec.VersionDir, spec.ModelFile, sum, id, policy); err != nil {
		wipeMap(mem, locked)
		return res, err
	}
	res.DecryptVerify = time.Since(start)
	res.HWMVerified = procStatus("VmHWM")
	res.Locked, res.Digest, res.Plaintext = locked, hex.EncodeToString(sum[:]), int64(n)
	t := time.Now()
	wipeMap(mem, locked)
	res.Wipe = time.Since(t)
	res.HWMEnd = procStatus("VmHWM")
	return res, nil
}

// Parts of seal.DecryptFile, each timed alone in one process (warm cache).
const (
	partMap     = "map"     // mmap + MADV_DONTDUMP + mlock (which faults in every page)
	partRead    = "read"    // reading the encrypted file in 64 KiB reads, as age does
	partDecrypt = "decrypt" // age.Decrypt stream into the (already faulted-in) mapping, no hashing
	partSHA256  = "sha256"  // crypto/sha256 over the plaintext in memory
	partWipe    = "wipe"    // clear + munlock + munmap
)

// timeParts times the parts of seal.DecryptFile separately.
func timeParts(sealed string, id age.Identity, res childResult) (childResult, error) {
	res.Parts = map[string]time.Duration{}
	f, size, err := openRegular(sealed)
	if err != nil {
		return res, err
	}
	defer f.Close()

	t := time.Now()
	mem, locked, err := protectedMap(int(size))
	if err != nil {
		return res, err
	}
	res.Parts[partMap] = time.Since(t)
	res.Locked = locked

	t = time.Now()
	buf := make([]byte, 64<<10)
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			wipeMap(mem, locked)
			return res, err
		}
	}
	res.Parts[partRead] = time.Since(t)

	if _, err := f.Seek(0, io.SeekStart); err != nil {
		wipeMap(mem, locked)
		return res, err
	}
	t = time.Now()
	r, err := age.Decrypt(f, id)
	n := 0
	for err == nil {
		var k int
		k, err = r.Read(mem[n:min(n+1<<20, len(mem))])
		n += k
	}
	if err != io.EOF {
		wipeMap(mem, locked)
		return res, err
	}
	res.Parts[partDecrypt] = time.Since(t)

	t = time.Now()
	sum := sha256.Sum256(mem[:n])
	res.Parts[partSHA256] = time.Since(t)
	res.Digest, res.Plaintext = hex.EncodeToString(sum[:]), int64(n)

	t = time.Now()
	wipeMap(mem, locked)
	res.Parts[partWipe] = time.Since(t)
	return res, nil
}
