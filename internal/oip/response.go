package oip

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// AppendInferResponse appends the JSON of resp to dst, and returns it with
// the binary chunks to send after it, in output order (empty when no output
// is binary).
func AppendInferResponse(dst []byte, resp *pipeline.Response) ([]byte, [][]byte, error) {
	var bins [][]byte
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, resp.Model)
	if resp.Version != "" {
		dst = append(dst, `,"model_version":`...)
		dst = appendString(dst, resp.Version)
	}
	if resp.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, resp.ID)
	}
	dst = append(dst, `,"outputs":[`...)
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendString(dst, o.Name)
		dst = append(dst, `,"datatype":"`...)
		dst = append(dst, o.DType.String()...)
		dst = append(dst, `","shape":[`...)
		for j, d := range o.Shape {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, d, 10)
		}
		dst = append(dst, ']')
		if o.Binary || o.DType.BinaryOnly() {
			b := ToBinary(&o.Tensor)
			bins = append(bins, b)
			dst = append(dst, `,"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(len(b)), 10)
			dst = append(dst, "}}"...)
			continue
		}
		dst = append(dst, `,"data":`...)
		var err error
		if dst, err = appendData(dst, &o.Tensor); err != nil {
			return nil, nil, err
		}
		dst = append(dst, '}')
	}
	dst = append(dst, "]}"...)
	return dst, bins, nil
}

// ToBinary returns t's data in the binary extension's layout. Fixed-size
// data is returned as is; BYTES elements are length-prefixed.
func ToBinary(t *tensor.Tensor) []byte {
	if t.DType != tensor.Bytes {
		return t.Data
	}
	b := make([]byte, 0, t.ByteSize())
	for _, s := range t.Strings {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// appendData appends t's elements as a flat JSON array.
func appendData(dst []byte, t *tensor.Tensor) ([]byte, error) {
	dst = append(dst, '[')
	b := t.Data
	switch t.DType {
	case tensor.Bytes:
		for i, s := range t.Strings {
			if i > 0 {
				dst = append(dst, ',')
			}
			if !utf8.Valid(s) {
				return nil, apierr.Invalid("output %q holds bytes that are not UTF-8; request it as binary data", t.Name)
			}
			dst = appendString(dst, string(s))
		}
	case tensor.Bool:
		for i, c := range b {
			if i > 0 {
				dst = append(dst, ',')
			}
			if c != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		}
	case tensor.FP32:
		for i := 0; i+4 <= len(b); i += 4 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat(dst, float64(math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))), 32)
		}
	case tensor.FP64:
		for i := 0; i+8 <= len(b); i += 8 {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(b[i:])), 64)
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
		size := t.DType.Size()
		for i := 0; i+size <= len(b); i += size {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendUint(dst, tensor.ReadUint(b[i:], size), 10)
		}
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		size := t.DType.Size()
		for i := 0; i+size <= len(b); i += size {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, tensor.ReadInt(b[i:], size), 10)
		}
	default:
		return nil, apierr.New(apierr.Internal, "output %q: %s has no JSON form", t.Name, t.DType)
	}
	return append(dst, ']'), nil
}

// appendFloat writes f as the shortest JSON number that round-trips at the
// given precision; NaN and infinities, which JSON numbers cannot carry, are
// written as the strings "NaN", "Infinity" and "-Infinity".
func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
