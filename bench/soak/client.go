package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aegis-inference/aegis/internal/netstamp"
)

// requestTimeout bounds one request, so a stuck server shows as errors
// instead of hanging the run.
const requestTimeout = 10 * time.Second

// modelFeatures are the features of one input row of the fixture models
// the harness drives (one FP32 input named "input" of shape [1, features]).
var modelFeatures = map[string]int{"digits": 64, "mlp": 784}

// requestBody is a batch-1 inference request for model as REST JSON:
// standard normal values from a fixed seed for mlp, pixel values 0..16 for
// digits.
func requestBody(model string) ([]byte, error) {
	n, ok := modelFeatures[model]
	if !ok {
		return nil, fmt.Errorf("unknown model %q (want digits or mlp)", model)
	}
	rng := rand.New(rand.NewPCG(1, 0x5eed))
	js := []byte(`{"inputs":[{"name":"input","shape":[1,` + strconv.Itoa(n) + `],"datatype":"FP32","data":[`)
	for i := range n {
		if i > 0 {
			js = append(js, ',')
		}
		v := rng.NormFloat64()
		if model == "digits" {
			v = float64(rng.IntN(17))
		}
		js = strconv.AppendFloat(js, float64(float32(v)), 'g', -1, 32)
	}
	return append(js, "]}]}"...), nil
}

// clientTLS trusts the server process's CA, TLS 1.3 only.
func clientTLS(ca string) (*tls.Config, error) {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// outcome is how a request ended.
type outcome int

const (
	admitted outcome = iota // 200 with a body of the expected size
	shed                    // 503 with Retry-After: the replica's gate
	limited                 // 429 with Retry-After: a per-principal limit
	denied                  // 401: expected only of requests with a wrong key
	failed                  // anything else: an error
)

// result is one request's outcome.
type result struct {
	outcome outcome
	latency time.Duration // from sending the request to the end of its response body
	reason  string        // for failed: what went wrong, as a category
	detail  string        // for failed: the error itself
	// wire is from sending the request to when the kernel received the
	// end of its response (SO_TIMESTAMPNS): latency without the wait for
	// this process to get to the answer. 0 when unknown.
	wire time.Duration
}

// client sends one request at a time over its own keep-alive connection
// (HTTP/1.1 over TLS 1.3), as one of many clients of a real deployment
// would. It writes a prebuilt request and parses only what it checks (the
// status, Content-Length or chunked framing, Retry-After, Connection), so
// that one CPU of clients can offer several times what one CPU of server
// serves: net/http's client costs several times as much per request.
// A client is used by one goroutine at a time.
type client struct {
	addr    string
	tls     *tls.Config
	req     []byte // the inference request, headers and body
	badReq  []byte // the same with a wrong secret in its API key
	health  []byte // a readiness probe
	wantLen int64  // length of a 200's body; -1 until known

	conn  *tls.Conn
	sc    *netstamp.Conn // under conn
	br    *bufio.Reader
	dials atomic.Int64 // connections opened
}

// target is what a client needs to reach the server.
type target struct {
	addr   string
	tls    *tls.Config
	apiKey string
	model  string
	body   []byte
}

func newClient(t target) *client {
	build := func(key string) []byte {
		req := fmt.Appendf(nil, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", t.model, t.addr, key, len(t.body))
		return append(req, t.body...)
	}
	return &client{
		addr: t.addr, tls: t.tls, wantLen: -1,
		req:    build(t.apiKey),
		badReq: build(wrongSecret(t.apiKey)),
		health: fmt.Appendf(nil, "GET /v2/health/ready HTTP/1.1\r\nHost: %s\r\n\r\n", t.addr),
	}
}

// wrongSecret is key ("aegis_<16-character id>_<secret>") with the first
// character of its secret changed: a known key id with the wrong secret,
// which the server hashes and compares exactly as it does the right one.
func wrongSecret(key string) string {
	const i = len("aegis_") + 16 + 1
	if len(key) <= i {
		return key + "x"
	}
	c := byte('a')
	if key[i] == 'a' {
		c = 'b'
	}
	return key[:i] + string(c) + key[i+1:]
}

// response is what the client reads of an answer.
type response struct {
	status     int
	retryAfter bool
	bodyLen    int64
	body       []byte // only when asked for
}

// roundTrip sends req and reads the answer, (re)connecting first if
// needed. On any failure the connection is closed.
func (c *client) roundTrip(req []byte, keepBody bool) (response, error) {
	if c.conn == nil {
		c.dials.Add(1)
		conn, sc, err := dialStamped(c.addr, c.tls)
		if err != nil {
			return response{}, err
		}
		c.conn, c.sc = conn, sc
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 4096)
		} else {
			c.br.Reset(conn)
		}
	}
	c.conn.SetDeadline(time.Now().Add(requestTimeout))
	resp, keep, err := c.exchange(req, keepBody)
	if err != nil || !keep {
		c.conn.Close()
		c.conn, c.sc = nil, nil
	}
	return resp, err
}

// dialStamped opens a TLS connection over a TCP connection that records
// when the kernel received what it reads.
func dialStamped(addr string, cfg *tls.Config) (*tls.Conn, *netstamp.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	sc := netstamp.Wrap(nc.(*net.TCPConn))
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	conn := tls.Client(sc, cfg)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, sc, nil
}

func (c *client) exchange(req []byte, keepBody bool) (resp response, keepAlive bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return resp, false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return resp, false, err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return resp, false, fmt.Errorf("bad status line %q", line)
	}
	if resp.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return resp, false, fmt.Errorf("bad status line %q", line)
	}
	keepAlive = true
	length, chunked := int64(-1), false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return resp, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return resp, false, fmt.Errorf("bad header line %q", line)
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(v), 10, 64); err != nil || length < 0 {
				return resp, false, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Retry-After")):
			resp.retryAfter = len(v) > 0
		case bytes.EqualFold(k, []byte("Connection")):
			keepAlive = !bytes.EqualFold(v, []byte("close"))
		}
	}
	var w io.Writer = io.Discard
	var buf bytes.Buffer
	if keepBody {
		w = &buf
	}
	switch {
	case chunked:
		resp.bodyLen, err = copyChunked(w, c.br)
	case length >= 0 && !keepBody:
		var n int
		n, err = c.br.Discard(int(length))
		resp.bodyLen = int64(n)
	case length >= 0:
		resp.bodyLen, err = io.CopyN(w, c.br, length)
	default:
		resp.bodyLen, err = io.Copy(w, c.br) // to the end of the connection
		keepAlive = false
	}
	resp.body = buf.Bytes()
	return resp, keepAlive && err == nil, err
}

// copyChunked copies a chunked body to w.
func copyChunked(w io.Writer, br *bufio.Reader) (int64, error) {
	var n int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return n, err
		}
		hex, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(hex)), 16, 64)
		if err != nil || size < 0 {
			return n, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			// Trailers, then the empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return n, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return n, nil
				}
			}
		}
		m, err := io.CopyN(w, br, size)
		n += m
		if err != nil {
			return n, err
		}
		if _, err := br.Discard(2); err != nil {
			return n, err
		}
	}
}

// infer sends the inference request and reads the whole response.
func (c *client) infer() result { return c.send(c.req) }

// inferDenied sends the inference request with a wrong key.
func (c *client) inferDenied() result { return c.send(c.badReq) }

func (c *client) send(req []byte) result {
	t0 := time.Now()
	sc := c.sc
	resp, err := c.roundTrip(req, false)
	r := result{latency: time.Since(t0)}
	if sc == nil {
		sc = c.sc // dialled for this request: its answer was read on the new one
	}
	if err == nil && sc != nil && sc.Stamped() {
		if at := sc.Arrived(); at.After(t0) {
			r.wire = at.Sub(t0)
		}
	}
	switch {
	case err != nil:
		r.outcome, r.reason, r.detail = failed, transportReason(err), err.Error()
	case resp.status == http.StatusOK && (c.wantLen < 0 || resp.bodyLen == c.wantLen):
		r.outcome = admitted
	case resp.status == http.StatusOK:
		r.outcome, r.reason = failed, "200 with a body of the wrong size"
		r.detail = fmt.Sprintf("%d bytes, want %d", resp.bodyLen, c.wantLen)
	case resp.status == http.StatusServiceUnavailable || resp.status == http.StatusTooManyRequests:
		r.outcome = shed
		if resp.status == http.StatusTooManyRequests {
			r.outcome = limited
		}
		if !resp.retryAfter {
			r.outcome, r.reason = failed, strconv.Itoa(resp.status)+" without Retry-After"
		}
	case resp.status == http.StatusUnauthorized:
		r.outcome, r.reason = denied, "status 401"
	default:
		r.outcome, r.reason = failed, "status "+strconv.Itoa(resp.status)
	}
	return r
}

// check sends one request, which must be admitted with an inference
// answer, and learns the size of the answers.
func (c *client) check() error {
	resp, err := c.roundTrip(c.req, true)
	if err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	if resp.status != http.StatusOK || !bytes.Contains(resp.body, []byte(`"outputs"`)) {
		return fmt.Errorf("first request: status %d: %.200s", resp.status, resp.body)
	}
	c.wantLen = resp.bodyLen
	return nil
}

// connect opens the client's connection with a readiness probe (which the
// server neither authenticates nor sheds), so that the load phases do not
// pay for TLS handshakes.
func (c *client) connect() error {
	resp, err := c.roundTrip(c.health, false)
	if err != nil {
		return err
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("readiness probe: status %d", resp.status)
	}
	return nil
}

// transportReason names the kind of a transport error.
func transportReason(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	}
	return "transport error"
}
