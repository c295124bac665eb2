package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/aegis-inference/aegis/internal/tensor"
)

func testHasher(t testing.TB, key byte) *Hasher {
	t.Helper()
	h, err := NewHasher(bytes.Repeat([]byte{key}, HMACKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fp32(name string, shape []int64, data ...byte) tensor.Tensor {
	return tensor.Tensor{Name: name, DType: tensor.FP32, Shape: shape, Data: data}
}

// TestHasherEncoding pins the documented encoding against an independent
// computation.
func TestHasherEncoding(t *testing.T) {
	h := testHasher(t, 7)
	ts := []tensor.Tensor{
		fp32("x", []int64{1, 2}, 1, 2, 3, 4, 5, 6, 7, 8),
		{Name: "s", DType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("ab"), []byte("")}},
	}
	var enc []byte
	u := func(v uint64) { enc = binary.BigEndian.AppendUint64(enc, v) }
	s := func(v string) { u(uint64(len(v))); enc = append(enc, v...) }
	s("aegis audit tensors v1")
	u(2)
	s("x")
	s("FP32")
	u(2)
	u(1)
	u(2)
	u(8)
	enc = append(enc, 1, 2, 3, 4, 5, 6, 7, 8)
	s("s")
	s("BYTES")
	u(1)
	u(2)
	u(2)
	s("ab")
	s("")
	m := hmac.New(sha256.New, bytes.Repeat([]byte{7}, HMACKeySize))
	m.Write(enc)
	want := hex.EncodeToString(m.Sum(nil))

	got, size := h.Sum(ts)
	if got != want {
		t.Errorf("Sum = %s, want %s", got, want)
	}
	if size != 8+(4+2)+(4+0) {
		t.Errorf("size = %d, want %d", size, 8+6+4)
	}
	if again, _ := h.Sum(ts); again != got {
		t.Errorf("Sum not deterministic: %s then %s", got, again)
	}
	if other, _ := testHasher(t, 8).Sum(ts); other == got {
		t.Error("two keys give the same hash")
	}
}

// TestHasherUnambiguous: lists that differ anywhere, including where one
// field ends and the next begins, hash differently.
func TestHasherUnambiguous(t *testing.T) {
	h := testHasher(t, 1)
	bytesT := func(ss ...string) tensor.Tensor {
		t := tensor.Tensor{Name: "s", DType: tensor.Bytes, Shape: []int64{int64(len(ss))}}
		for _, s := range ss {
			t.Strings = append(t.Strings, []byte(s))
		}
		return t
	}
	lists := map[string][]tensor.Tensor{
		"empty list":             nil,
		"one empty tensor":       {fp32("", nil)},
		"name ab, data c":        {fp32("ab", []int64{1}, 'c', 0, 0, 0)},
		"name a, data bc":        {fp32("a", []int64{1}, 'b', 'c', 0, 0)},
		"shape 2x3":              {fp32("x", []int64{2, 3}, make([]byte, 24)...)},
		"shape 3x2":              {fp32("x", []int64{3, 2}, make([]byte, 24)...)},
		"shape 6":                {fp32("x", []int64{6}, make([]byte, 24)...)},
		"INT32 same bytes":       {{Name: "x", DType: tensor.Int32, Shape: []int64{6}, Data: make([]byte, 24)}},
		"bytes ab,c":             {bytesT("ab", "c")},
		"bytes a,bc":             {bytesT("a", "bc")},
		"two tensors":            {fp32("a", []int64{1}, 1, 2, 3, 4), fp32("b", []int64{1}, 5, 6, 7, 8)},
		"two tensors, reordered": {fp32("b", []int64{1}, 5, 6, 7, 8), fp32("a", []int64{1}, 1, 2, 3, 4)},
		"one tensor, both datas": {fp32("a", []int64{2}, 1, 2, 3, 4, 5, 6, 7, 8)},
	}
	seen := map[string]string{}
	for name, ts := range lists {
		sum, _ := h.Sum(ts)
		if len(sum) != 64 {
			t.Errorf("%s: hash %q is not 64 hex digits", name, sum)
		}
		if other, dup := seen[sum]; dup {
			t.Errorf("%q and %q hash the same", name, other)
		}
		seen[sum] = name
	}
}

func TestNewHasherRefusesShortKey(t *testing.T) {
	if _, err := NewHasher(make([]byte, HMACKeySize-1)); err == nil {
		t.Error("NewHasher accepted a 31-byte key")
	}
}

func BenchmarkHasherSum(b *testing.B) {
	h := testHasher(b, 1)
	ts := []tensor.Tensor{fp32("input", []int64{1, 3, 224, 224}, make([]byte, 4*3*224*224)...)}
	b.SetBytes(int64(len(ts[0].Data)))
	for b.Loop() {
		h.Sum(ts)
	}
}
