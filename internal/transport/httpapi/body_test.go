package httpapi

import (
	"bytes"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/aegis-inference/aegis/internal/apierr"
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

func TestRetryAfter(t *testing.T) {
	w := httptest.NewRecorder()
	writeError(w, "id-1", &apierr.Error{Kind: apierr.ResourceExhausted, Msg: "rate limit exceeded", RetryAfter: 1500 * time.Millisecond})
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" || w.Header().Get("X-Request-Id") != "id-1" {
		t.Errorf("got %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	w = httptest.NewRecorder()
	writeError(w, "id-2", apierr.New(apierr.InvalidArgument, "bad"))
	if w.Header().Get("Retry-After") != "" {
		t.Error("Retry-After on an error without one")
	}
}
