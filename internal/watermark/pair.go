package watermark

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// Pair is one marked answer: the input a principal sent and the watermark
// label it was answered with.
type Pair struct {
	// Time is when the answer was given.
	Time time.Time
	// Model and Version name the model version that answered.
	Model, Version string
	// Classes is the model's number of classes.
	Classes int
	// Label is the watermark label answered; TrueLabel the model's own.
	Label, TrueLabel int
	// Inputs are the row's inputs as the caller sent them (RowInputs).
	Inputs []tensor.Tensor
	// MAC is the HMAC of the canonical input: it identifies the input
	// (a repeated input is stored once) and reveals nothing without the
	// key.
	MAC []byte
}

// ErrCorrupt reports a stored pair that does not decode.
var ErrCorrupt = errors.New("corrupt watermark pair")

const pairFormat = 1

// maxRank bounds a stored input's rank.
const maxRank = 64

// encodePair appends p's binary encoding to b:
//
//	byte 1 (format), varint unix nanoseconds, string model, string version,
//	uvarint classes, label, true label, bytes mac, uvarint input count,
//	per input: string name, string datatype, uvarint rank, varint dims,
//	then bytes data, or for BYTES uvarint count and bytes per element.
//
// string and bytes are a uvarint length and the bytes.
func encodePair(b []byte, p *Pair) []byte {
	str := func(s []byte) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	b = append(b, pairFormat)
	b = binary.AppendVarint(b, p.Time.UnixNano())
	str([]byte(p.Model))
	str([]byte(p.Version))
	b = binary.AppendUvarint(b, uint64(p.Classes))
	b = binary.AppendUvarint(b, uint64(p.Label))
	b = binary.AppendUvarint(b, uint64(p.TrueLabel))
	str(p.MAC)
	b = binary.AppendUvarint(b, uint64(len(p.Inputs)))
	for i := range p.Inputs {
		t := &p.Inputs[i]
		str([]byte(t.Name))
		str([]byte(t.DType.String()))
		b = binary.AppendUvarint(b, uint64(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.AppendVarint(b, d)
		}
		if t.DType == tensor.Bytes {
			b = binary.AppendUvarint(b, uint64(len(t.Strings)))
			for _, s := range t.Strings {
				str(s)
			}
			continue
		}
		str(t.Data)
	}
	return b
}

// pairReader decodes an encoded pair, failing at the first field that
// does not fit in what is left.
type pairReader struct {
	b   []byte
	err error
}

func (r *pairReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
}

func (r *pairReader) uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *pairReader) varint(what string) int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// small reads a uvarint that must fit in an int no larger than limit.
func (r *pairReader) small(what string, limit int) int {
	v := r.uvarint(what)
	if v > uint64(limit) {
		r.fail(what)
		return 0
	}
	return int(v)
}

func (r *pairReader) bytes(what string) []byte {
	n := r.small(what, math.MaxInt32)
	if r.err == nil && n > len(r.b) {
		r.fail(what)
	}
	if r.err != nil {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// decodePair decodes b. The pair's byte slices alias b.
func decodePair(b []byte) (Pair, error) {
	if len(b) == 0 || b[0] != pairFormat {
		return Pair{}, fmt.Errorf("%w: unknown format", ErrCorrupt)
	}
	r := &pairReader{b: b[1:]}
	var p Pair
	p.Time = time.Unix(0, r.varint("time")).UTC()
	p.Model = string(r.bytes("model"))
	p.Version = string(r.bytes("version"))
	p.Classes = r.small("classes", 1<<31-1)
	p.Label = r.small("label", 1<<31-1)
	p.TrueLabel = r.small("true label", 1<<31-1)
	p.MAC = r.bytes("mac")
	n := r.small("input count", len(r.b))
	for i := 0; i < n && r.err == nil; i++ {
		var t tensor.Tensor
		t.Name = string(r.bytes("input name"))
		dt, ok := tensor.ParseDType(string(r.bytes("input datatype")))
		if !ok {
			r.fail("input datatype")
		}
		t.DType = dt
		rank := r.small("input rank", maxRank)
		t.Shape = make([]int64, rank)
		for j := range t.Shape {
			t.Shape[j] = r.varint("input shape")
		}
		elems, err := tensor.NumElements(t.Shape)
		if err != nil {
			r.fail("input shape")
		}
		if dt == tensor.Bytes {
			count := r.small("input element count", len(r.b))
			if r.err == nil && int64(count) != elems {
				r.fail("input element count")
			}
			for j := 0; j < count && r.err == nil; j++ {
				t.Strings = append(t.Strings, r.bytes("input element"))
			}
		} else {
			t.Data = r.bytes("input data")
			if r.err == nil && int64(len(t.Data)) != elems*int64(dt.Size()) {
				r.fail("input data size")
			}
		}
		p.Inputs = append(p.Inputs, t)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return Pair{}, r.err
	}
	return p, nil
}
