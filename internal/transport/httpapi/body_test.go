package httpapi

import (
	"bytes"
	"net/http/httptest"
	"strconv"
	"testing"
	"unsafe"
)

// TestReadBodyAlignsBinaryData: the binary section of a body lands on a
// 64-byte boundary whatever the JSON header's length, so ONNX Runtime gets
// it without a copy.
func TestReadBodyAlignsBinaryData(t *testing.T) {
	for hdr := 0; hdr < 130; hdr += 7 {
		body := bytes.Repeat([]byte{'x'}, hdr+256)
		r := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		r.Header.Set(HeaderLength, strconv.Itoa(hdr))
		_, got, err := readBody(r, 1<<20, make([]byte, 0, 100), binaryStart(r))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("header %d: body changed", hdr)
		}
		if addr := uintptr(unsafe.Pointer(&got[hdr])); addr%tensorAlignment != 0 {
			t.Errorf("header %d: binary data at %#x, not %d-byte aligned", hdr, addr, tensorAlignment)
		}
	}
}

func TestReadBodyLimit(t *testing.T) {
	r := httptest.NewRequest("POST", "/", bytes.NewReader(make([]byte, 2000)))
	r.ContentLength = -1 // unknown length: the limit applies while reading
	if _, _, err := readBody(r, 1024, nil, -1); err == nil {
		t.Error("2000-byte body accepted under a 1024-byte limit")
	}
}
