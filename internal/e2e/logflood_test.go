package e2e

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Refused requests (no credential, a bad key, a failed TLS handshake) are
// audited, not logged at the default level: a flood of bad requests must
// not become a flood of log lines. At debug level they are logged.
func TestRefusalsDoNotFloodTheLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out lockedBuffer
		cfg, sec := servertest.SecureConfig(t, accessRepo(t), accessPolicy)
		srv := servertest.StartLogged(t, cfg, slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level})))
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: sec.ClientTLS(t, nil)}}
		post := func(auth string) int {
			req, err := http.NewRequest("POST", srv.HTTPURL+servertest.Path("digits", ""), bytes.NewReader(digitsBody(1)))
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		const n = 30
		for i := range n {
			if st := post(""); st != 401 {
				t.Fatalf("request %d without a credential: %d, want 401", i, st)
			}
			if st := post("Bearer aegis_nope_nope"); st != 401 {
				t.Fatalf("request %d with a bad key: %d, want 401", i, st)
			}
		}
		// TLS handshakes that fail: a client that trusts no one.
		for range 5 {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", strings.TrimPrefix(srv.HTTPURL, "https://"),
				&tls.Config{MinVersion: tls.VersionTLS13, ServerName: "localhost", RootCAs: nil})
			if err == nil {
				c.Close()
				t.Fatal("handshake with an untrusted certificate succeeded")
			}
		}
		time.Sleep(100 * time.Millisecond) // the server logs a failed handshake after the client gives up
		logged := strings.Count(out.String(), "request failed") + strings.Count(out.String(), "tls handshake failed")
		switch level {
		case slog.LevelInfo:
			if logged != 0 {
				t.Errorf("at info level, %d log lines for %d refused requests and handshakes, want none:\n%s", logged, 2*n+5, out.String())
			}
		case slog.LevelDebug:
			if logged < 2*n {
				t.Errorf("at debug level, %d log lines for %d refused requests, want each logged", logged, 2*n)
			}
		}
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}
