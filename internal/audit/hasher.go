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
	pool sync.Pool // of *hashState, each with an HMAC under the key
}

// hashState is an HMAC and a buffer that gathers the small fields of the
// encoding, so they reach the hash in a few writes rather than one each.
type hashState struct {
	m   hash.Hash
	buf []byte
}

// NewHasher returns a Hasher keyed with key, which must be at least
// HMACKeySize bytes (LoadHMACKey reads one). The key is copied.
func NewHasher(key []byte) (*Hasher, error) {
	if len(key) < HMACKeySize {
		return nil, errors.New("audit: hmac key shorter than 32 bytes")
	}
	k := append([]byte(nil), key...)
	h := &Hasher{}
	h.pool.New = func() any { return &hashState{m: hmac.New(sha256.New, k), buf: make([]byte, 0, 512)} }
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
	st := h.pool.Get().(*hashState)
	m, b := st.m, st.buf[:0]
	m.Reset()
	flush := func() {
		m.Write(b)
		b = b[:0]
	}
	b = binary.BigEndian.AppendUint64(b, uint64(len(hashContext)))
	b = append(b, hashContext...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(ts)))
	for i := range ts {
		t := &ts[i]
		name, dt := t.Name, t.DType.String()
		b = binary.BigEndian.AppendUint64(b, uint64(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint64(b, uint64(len(dt)))
		b = append(b, dt...)
		b = binary.BigEndian.AppendUint64(b, uint64(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.BigEndian.AppendUint64(b, uint64(d))
		}
		if t.DType == tensor.Bytes {
			b = binary.BigEndian.AppendUint64(b, uint64(len(t.Strings)))
			for _, s := range t.Strings {
				b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
				if len(s) > 256 {
					flush()
					m.Write(s)
				} else {
					b = append(b, s...)
				}
			}
		} else {
			b = binary.BigEndian.AppendUint64(b, uint64(len(t.Data)))
			if len(t.Data) > 256 {
				flush()
				m.Write(t.Data)
			} else {
				b = append(b, t.Data...)
			}
		}
		size += int64(t.ByteSize())
	}
	flush()
	var out [sha256.Size]byte
	var hx [2 * sha256.Size]byte
	hex.Encode(hx[:], m.Sum(out[:0]))
	if cap(b) <= 64<<10 {
		st.buf = b[:0]
	}
	h.pool.Put(st)
	return string(hx[:]), size
}
