package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/apierr"
)

// writeError's body is what encoding/json would write, whatever the
// message holds, and a real server sends Date on every answer but a 503.
func TestWriteError(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{&apierr.Error{Kind: apierr.Unavailable, Msg: "server overloaded, retry later", RetryAfter: time.Second}, 503},
		{&apierr.Error{Kind: apierr.ResourceExhausted, Msg: "rate limit exceeded", RetryAfter: time.Second}, 429},
		{apierr.New(apierr.Unauthenticated, "authentication failed"), 401},
		{apierr.New(apierr.NotFound, "unknown model %q", "a\"b\\c<d>&e\x01\u00e9\xff"), 404},
		{apierr.New(apierr.InvalidArgument, "tab\there, del\x7f"), 400},
	}
	var current error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, "id-1", current)
	}))
	defer srv.Close()
	for _, tc := range tests {
		current = tc.err
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, msg := apierr.Public(tc.err)
		want, _ := json.Marshal(errorBody{Error: msg})
		if resp.StatusCode != tc.code || string(body) != string(want) {
			t.Errorf("%v: %d %s, want %d %s", tc.err, resp.StatusCode, body, tc.code, want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%v: Content-Type %q", tc.err, ct)
		}
		if resp.Header.Get("X-Request-Id") != "id-1" {
			t.Errorf("%v: X-Request-Id %q", tc.err, resp.Header.Get("X-Request-Id"))
		}
		if _, hasDate := resp.Header["Date"]; hasDate != (tc.code != 503) {
			t.Errorf("%d: Date header present %v, want it on every status but 503", tc.code, hasDate)
		}
	}
}
