package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"sync"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// HMACKeySize is the size of a tensor-hashing key.
const HMACKeySize = 32

// Hasher computes keyed hashes (HMAC-SHA256) of tensors for audit records.
// Keyed, so that whoever reads the log cannot confirm a guess of a
// low-entropy input (a yes/no answer, one of a few labels) by hashing it;
// whoever holds the key can check that a given tensor is the one recorded.
// It is safe for concurrent use.
type Hasher struct {
	pool sync.Pool // of hash.Hash, each an HMAC under the key
}

// NewHasher returns a Hasher keyed with key, which must be at least
// HMACKeySize bytes (LoadHMACKey reads one). The key is copied.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < HMACKeySize {
		return nil, errors.New("audit: hmac key shorter than 32 bytes")
	}
	k := append([]byte(nil), key...)
	h := &Hasher{}
	h.pool.New = func() any { return hmac.New(sha256.New, k) }
	return h, nil
}

// hashContext starts every tensor-list encoding, so these hashes cannot be
// confused with any other use of the key.
const hashContext = "aegis audit tensors v1"

// Sum returns the hex HMAC-SHA256 of ts and their payload size in bytes
// (tensor.ByteSize summed). The encoding hashed is unambiguous: the
// context string, the count of tensors, then for each its name, datatype
// name, rank, dimensions and data, every variable-length part preceded by
// its length as a big-endian uint64; a BYTES tensor's data is its element
// count then each element length-prefixed. An empty list still has a hash
// (of a zero count).
func (h *Hasher) Sum(ts []tensor.Tensor) (sum string, size int64) {
	m := h.pool.Get().(hash.Hash)
	m.Reset()
	var scratch [8]byte
	num := func(v uint64) {
		binary.BigEndian.PutUint64(scratch[:], v)
		m.Write(scratch[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		m.Write([]byte(s))
	}
	str(hashContext)
	num(uint64(len(ts)))
	for i := range ts {
		t := &ts[i]
		str(t.Name)
		str(t.DType.String())
		num(uint64(len(t.Shape)))
		for _, d := range t.Shape {
			num(uint64(d))
		}
		if t.DType == tensor.Bytes {
			num(uint64(len(t.Strings)))
			for _, s := range t.Strings {
				num(uint64(len(s)))
				m.Write(s)
			}
		} else {
			num(uint64(len(t.Data)))
			m.Write(t.Data)
		}
		size += int64(t.ByteSize())
	}
	var out [sha256.Size]byte
	var hx [2 * sha256.Size]byte
	hex.Encode(hx[:], m.Sum(out[:0]))
	h.pool.Put(m)
	return string(hx[:]), size
}
