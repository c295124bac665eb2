package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
	"github.com/aegis-inference/aegis/internal/oip/pb"
)

// requestTimeout bounds one request, so a stuck server fails the run
// instead of hanging it.
const requestTimeout = 60 * time.Second

// transport is how a client talks to an instance.
type transport int

const (
	restJSON transport = iota
	grpcRaw
)

func (t transport) String() string { return [...]string{"rest-json", "grpc-raw"}[t] }

// target is what a driver needs to reach an instance: its address for the
// transport, the client TLS configuration (nil for plaintext) and the
// Authorization value ("" for none).
type target struct {
	addr          string
	tls           *tls.Config
	authorization string
}

// driver sends one request at a time over its own keep-alive connection
// and reads the whole response, checking its status and size. A driver is
// used by one goroutine; sent counts the requests it sent.
type driver interface {
	do() error
	sent() int
	close()
}

// restDriver posts a prebuilt JSON body over HTTP/1.1 (over TLS 1.3 when
// the instance has TLS), on one connection.
type restDriver struct {
	hc      *http.Client
	tr      *http.Transport
	url     *url.URL
	header  http.Header
	body    []byte
	wantLen int // expected response body length; -1 to skip the check
	rd      bytes.Reader
	buf     bytes.Buffer
	n       int
	proto   string // of the last response
}

func newRESTDriver(t target, w *workload, wantLen int) (*restDriver, error) {
	scheme := "http://"
	if t.tls != nil {
		scheme = "https://"
	}
	u, err := url.Parse(scheme + t.addr + "/v2/models/" + w.model + "/infer")
	if err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if t.authorization != "" {
		h.Set("Authorization", t.authorization)
	}
	// One connection per driver, HTTP/1.1 on both plaintext and TLS (a
	// Transport with its own TLSClientConfig does not attempt HTTP/2), so
	// the paths differ in the access controls only.
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true, TLSClientConfig: t.tls}
	return &restDriver{
		hc: &http.Client{Transport: tr, Timeout: requestTimeout}, tr: tr,
		url: u, header: h, body: w.jsonBody, wantLen: wantLen,
	}, nil
}

func (d *restDriver) getBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(d.body)), nil
}

func (d *restDriver) do() error {
	_, err := d.doStatus()
	return err
}

// doStatus sends the request and returns the body (valid until the next
// call); any status but 200 is an error.
func (d *restDriver) doStatus() ([]byte, error) {
	d.rd.Reset(d.body)
	req := &http.Request{
		Method: http.MethodPost, URL: d.url, Host: d.url.Host, Header: d.header,
		Body: io.NopCloser(&d.rd), GetBody: d.getBody, ContentLength: int64(len(d.body)),
	}
	d.n++
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, err
	}
	d.proto = resp.Proto
	d.buf.Reset()
	_, err = d.buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, body: d.buf.String()}
	}
	if d.wantLen >= 0 && d.buf.Len() != d.wantLen {
		return nil, fmt.Errorf("%s: response of %d bytes, want %d", d.url.Path, d.buf.Len(), d.wantLen)
	}
	return d.buf.Bytes(), nil
}

func (d *restDriver) sent() int { return d.n }
func (d *restDriver) close()    { d.tr.CloseIdleConnections() }

// statusError is a REST response other than 200.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %.200s", e.code, e.body) }

// grpcDriver calls ModelInfer with a prebuilt raw-contents request on its
// own connection.
type grpcDriver struct {
	conn    *grpc.ClientConn
	c       pb.GRPCInferenceServiceClient
	req     *pb.ModelInferRequest
	wantLen int // expected raw output bytes; -1 to skip the check
	last    *pb.ModelInferResponse
	n       int
}

// bearer sends the Authorization metadata with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

func newGRPCDriver(t target, w *workload, wantLen int) (*grpcDriver, error) {
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20))}
	if t.tls != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(t.tls)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if t.authorization != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(t.authorization)))
	}
	conn, err := grpc.NewClient(t.addr, opts...)
	if err != nil {
		return nil, err
	}
	return &grpcDriver{conn: conn, c: pb.NewGRPCInferenceServiceClient(conn), req: w.grpcReq, wantLen: wantLen}, nil
}

func (d *grpcDriver) do() error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	d.n++
	resp, err := d.c.ModelInfer(ctx, d.req)
	cancel()
	if err != nil {
		return err
	}
	if got := rawBytes(resp); d.wantLen >= 0 && got != d.wantLen {
		return fmt.Errorf("grpc: %d raw output bytes, want %d", got, d.wantLen)
	}
	d.last = resp
	return nil
}

func (d *grpcDriver) sent() int { return d.n }
func (d *grpcDriver) close()    { d.conn.Close() }

// sample is one measurement of one cell: every request's latency, sorted,
// and the wall time of the measured phase.
type sample struct {
	lat      []time.Duration
	elapsed  time.Duration
	requests int
	// audit log counters over the measured phase (instances that audit)
	records, batches uint64
	// read and write system calls the server process made over the
	// measured phase (all of its threads and instances); 0 if unknown
	syscr, syscw uint64
}

func (s sample) p50() time.Duration { return benchutil.Percentile(s.lat, 0.50) }
func (s sample) p99() time.Duration { return benchutil.Percentile(s.lat, 0.99) }

// throughput is in requests per second.
func (s sample) throughput() float64 { return float64(s.requests) / s.elapsed.Seconds() }

// measure runs one cell: clients drivers, each on its own goroutine and
// connection, first send warmup requests each; then before runs; then the
// drivers together send requests in all (split evenly), each timed from
// send to fully read response; then after runs. sent receives the number
// of requests every driver sent, warm-up included, also on error.
func measure(newDriver func() (driver, error), clients, warmup, requests int, before, after func() error, sent func(int)) (sample, error) {
	ds := make([]driver, 0, clients)
	defer func() {
		for _, d := range ds {
			sent(d.sent())
			d.close()
		}
	}()
	for range clients {
		d, err := newDriver()
		if err != nil {
			return sample{}, err
		}
		ds = append(ds, d)
	}
	per := max(1, requests/clients)
	lats := make([][]time.Duration, clients)
	errs := make([]error, clients)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	aborted := false // written before start closes, read after
	for i, d := range ds {
		lats[i] = make([]time.Duration, 0, per)
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			for range warmup {
				if err := d.do(); err != nil {
					errs[i] = fmt.Errorf("warm-up: %w", err)
					break
				}
			}
			ready.Done()
			<-start
			if errs[i] != nil || aborted {
				return
			}
			for range per {
				t0 := time.Now()
				if err := d.do(); err != nil {
					errs[i] = err
					return
				}
				lats[i] = append(lats[i], time.Since(t0))
			}
		}()
	}
	ready.Wait()
	if err := before(); err != nil {
		aborted = true
		close(start)
		done.Wait()
		return sample{}, err
	}
	t0 := time.Now()
	close(start)
	done.Wait()
	elapsed := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return sample{}, err
	}
	if err := after(); err != nil {
		return sample{}, err
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	return sample{lat: all, elapsed: elapsed, requests: len(all)}, nil
}
