package watermark

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// KeySize is the size of a watermark key (LoadOrCreateKey); New accepts
// keys of at least MinKeySize bytes.
const (
	KeySize    = 32
	MinKeySize = 16
)

// DefaultRate is the fraction of answers marked when the configuration
// does not say: 2.5%, so that 2,000 answers carry about 50 marks while
// 97.5% of answers stay exact. A surrogate that reproduces 21 of them
// (and no other wrong answer) is identified with p < 2^-64.
const DefaultRate = 0.025

// Config is a model's watermark configuration.
type Config struct {
	// Rate is the fraction of answers marked, in (0, 0.5].
	Rate float64 `yaml:"rate" json:"rate"`
	// Classes is the number of classes; 0 takes it from the model's
	// declared scores output (FP32/FP64 [batch, classes], classes fixed).
	Classes int `yaml:"classes" json:"classes"`
}

// DefaultConfig returns the configuration a watermarked model gets unless
// it says otherwise.
func DefaultConfig() Config { return Config{Rate: DefaultRate} }

// Validate reports the first field out of range, naming it.
func (c Config) Validate() error {
	if !(c.Rate > 0 && c.Rate <= 0.5) {
		return fmt.Errorf("rate: %v; want a fraction in (0, 0.5]", c.Rate)
	}
	if c.Classes != 0 && c.Classes < 3 {
		return fmt.Errorf("classes: %d; watermarking needs at least 3 classes", c.Classes)
	}
	return nil
}

// Watermarker builds the model's watermarker from c and the key. outputs
// are the model's declared outputs, used when c.Classes is 0.
func (c Config) Watermarker(key []byte, outputs []tensor.Spec) (*Watermarker, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	classes := c.Classes
	if classes == 0 {
		for _, o := range outputs {
			if (o.DType == tensor.FP32 || o.DType == tensor.FP64) && len(o.Shape) == 2 && o.Shape[1] > 0 {
				if classes != 0 {
					return nil, errors.New("classes: the model has several scores outputs; set it")
				}
				classes = int(o.Shape[1])
			}
		}
		if classes == 0 {
			return nil, errors.New("classes: the model declares no scores output with a fixed class count; set it")
		}
	}
	return New(key, c.Rate, classes)
}

// Watermarker decides which answers are marked and with what label.
type Watermarker struct {
	key       []byte
	threshold uint64 // marked when the HMAC's first 8 bytes are below it
	rate      float64
	classes   int
	states    sync.Pool // of *macState: keyed HMACs and buffers for markRow
}

// macState is a keyed HMAC and the buffers markRow encodes a row with,
// reused across requests.
type macState struct {
	h     hash.Hash
	buf   []byte
	order []int
	sum   [sha256.Size]byte
}

// New returns a Watermarker marking a fraction rate (in (0, 1)) of answers
// of a classes-class model (classes ≥ 3) with key (at least MinKeySize
// bytes, kept secret: whoever holds it can tell marked answers apart).
func New(key []byte, rate float64, classes int) (*Watermarker, error) {
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("watermark key: %d bytes, want at least %d", len(key), MinKeySize)
	}
	if !(rate > 0 && rate < 1) {
		return nil, fmt.Errorf("rate: %v; want a fraction in (0, 1)", rate)
	}
	if classes < 3 {
		return nil, fmt.Errorf("classes: %d; watermarking needs at least 3 classes", classes)
	}
	return &Watermarker{
		key:       slices.Clone(key),
		threshold: uint64(math.Ldexp(rate, 64)), // < 2^64 since rate < 1
		rate:      rate,
		classes:   classes,
	}, nil
}

// Rate returns the fraction of answers marked.
func (w *Watermarker) Rate() float64 { return w.rate }

// Classes returns the number of classes.
func (w *Watermarker) Classes() int { return w.classes }

// Mark returns the label to answer an input with, given its canonical
// bytes (Canonical) and the model's label for it, and whether it was
// changed. The answer depends only on the key, the input and the true
// label: repeated inputs get the same answer.
func (w *Watermarker) Mark(input []byte, trueLabel int) (label int, marked bool) {
	h := hmac.New(sha256.New, w.key)
	h.Write(input)
	var sum [sha256.Size]byte
	return w.decide(h.Sum(sum[:0]), trueLabel)
}

// markRow is Mark for a row's inputs, hashing the canonical bytes without
// building them whole; it also returns the HMAC, which identifies the
// input, when the row is marked (nil otherwise).
func (w *Watermarker) markRow(row []tensor.Tensor, trueLabel int) (label int, marked bool, mac []byte) {
	st, _ := w.states.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, w.key)}
	} else {
		st.h.Reset()
	}
	st.buf, st.order = encodeCanonical(st.buf[:0], st.order[:0], row, st.h)
	st.h.Write(st.buf)
	sum := st.h.Sum(st.sum[:0])
	label, marked = w.decide(sum, trueLabel)
	if marked {
		mac = slices.Clone(sum)
	}
	if cap(st.buf) <= 64<<10 {
		w.states.Put(st)
	}
	return label, marked, mac
}

func (w *Watermarker) decide(mac []byte, trueLabel int) (int, bool) {
	if binary.BigEndian.Uint64(mac[0:8]) >= w.threshold || trueLabel < 0 || trueLabel >= w.classes {
		return trueLabel, false
	}
	// Uniform over the classes-1 other labels, up to a bias of at most
	// classes/2^64.
	off := 1 + int(binary.BigEndian.Uint64(mac[8:16])%uint64(w.classes-1))
	return (trueLabel + off) % w.classes, true
}

// canonicalTag starts the canonical encoding, naming its version.
const canonicalTag = "aegis-watermark-input-v1\n"

// Canonical returns the canonical bytes of one row's inputs (RowInputs):
// the inputs sorted by name, each as its name, datatype name, shape and
// data, every variable-length field preceded by its length:
//
//	"aegis-watermark-input-v1\n"
//	uint32 number of inputs
//	per input, by name:
//	  uint32 len(name)  name
//	  uint32 len(dtype) dtype        ("FP32", as the protocol names it)
//	  uint32 rank       int64 × rank dimensions
//	  fixed-size types: uint64 len(data) data (little-endian elements)
//	  BYTES:            uint64 count, then uint64 len(element) element each
//
// Integers are big-endian. The encoding does not depend on the order the
// caller sent the inputs in, nor on the batch the row came in.
func Canonical(row []tensor.Tensor) []byte {
	b, _ := encodeCanonical(nil, nil, row, nil)
	return b
}

// encodeCanonical appends the canonical encoding of row to b, using order
// as scratch. With w set, data larger than 4 KiB is written to w, after
// what b holds so far, rather than appended; the caller writes the b it
// gets back last. It returns b and order for reuse.
func encodeCanonical(b []byte, order []int, row []tensor.Tensor, w io.Writer) ([]byte, []int) {
	for i := range row {
		order = append(order, i)
	}
	if len(order) > 1 {
		slices.SortStableFunc(order, func(a, c int) int { return strings.Compare(row[a].Name, row[c].Name) })
	}
	be := binary.BigEndian
	b = append(b, canonicalTag...)
	b = be.AppendUint32(b, uint32(len(row)))
	for _, i := range order {
		t := &row[i]
		b = be.AppendUint32(b, uint32(len(t.Name)))
		b = append(b, t.Name...)
		dt := t.DType.String()
		b = be.AppendUint32(b, uint32(len(dt)))
		b = append(b, dt...)
		b = be.AppendUint32(b, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			b = be.AppendUint64(b, uint64(d))
		}
		if t.DType == tensor.Bytes {
			b = be.AppendUint64(b, uint64(len(t.Strings)))
			for _, s := range t.Strings {
				b = be.AppendUint64(b, uint64(len(s)))
				b = append(b, s...)
			}
			continue
		}
		b = be.AppendUint64(b, uint64(len(t.Data)))
		if w != nil && len(t.Data) > 4<<10 {
			w.Write(b)
			w.Write(t.Data)
			b = b[:0]
			continue
		}
		b = append(b, t.Data...)
	}
	return b, order
}

// RowInputs returns row r of a request's inputs for a batch of batch rows:
// each input whose first dimension is batch contributes its row r, with
// shape [1, ...] (sharing the request's memory); any other input (no batch
// dimension) is the same for every row and contributes itself whole. For a
// batch of one that is inputs itself.
func RowInputs(inputs []tensor.Tensor, r, batch int) []tensor.Tensor {
	if batch == 1 && r == 0 {
		return inputs
	}
	row := make([]tensor.Tensor, len(inputs))
	for i, in := range inputs {
		row[i] = in
		if len(in.Shape) == 0 || in.Shape[0] != int64(batch) || batch <= 0 {
			continue
		}
		shape := slices.Clone(in.Shape)
		shape[0] = 1
		row[i].Shape = shape
		if in.DType == tensor.Bytes {
			if per := len(in.Strings) / batch; per*batch == len(in.Strings) {
				row[i].Strings = in.Strings[r*per : (r+1)*per]
			}
			continue
		}
		if per := len(in.Data) / batch; per*batch == len(in.Data) {
			row[i].Data = in.Data[r*per : (r+1)*per]
		}
	}
	return row
}
