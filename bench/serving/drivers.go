package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// requestTimeout bounds one request, so a stuck server fails the run
// instead of hanging it.
const requestTimeout = 60 * time.Second

// driver sends one request at a time over its own connection and reads the
// whole response. A driver is used by one goroutine.
type driver interface {
	do() error
	close()
}

// bareDriver calls ONNX Runtime in-process through internal/runtime/onnx,
// the way the server's engine does.
type bareDriver struct {
	s  *onnx.Session
	in []*tensor.Tensor
}

func (d *bareDriver) do() error {
	res, err := d.s.Run(context.Background(), d.in)
	if err != nil {
		return err
	}
	res.Release()
	return nil
}

func (d *bareDriver) close() {}

// restDriver posts a prebuilt body on one keep-alive connection.
type restDriver struct {
	hc      *http.Client
	tr      *http.Transport
	url     *url.URL
	header  http.Header
	body    []byte
	wantLen int // expected response body length
	rd      bytes.Reader
	buf     []byte
}

func newRESTDriver(base, path string, body []byte, hdrLen, wantLen int) (*restDriver, error) {
	u, err := url.Parse("http://" + base + path)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if hdrLen >= 0 {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(headerLength, strconv.Itoa(hdrLen))
	} else {
		h.Set("Content-Type", "application/json")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	return &restDriver{
		hc:      &http.Client{Transport: tr, Timeout: requestTimeout},
		tr:      tr,
		url:     u,
		header:  h,
		body:    body,
		wantLen: wantLen,
		buf:     make([]byte, 0, 16<<10),
	}, nil
}

func (d *restDriver) getBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(d.body)), nil
}

func (d *restDriver) do() error {
	d.rd.Reset(d.body)
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           d.url,
		Host:          d.url.Host,
		Header:        d.header,
		Body:          io.NopCloser(&d.rd),
		GetBody:       d.getBody,
		ContentLength: int64(len(d.body)),
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	d.buf, err = readAllInto(resp.Body, d.buf[:0])
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d: %.200s", d.url.Path, resp.StatusCode, d.buf)
	}
	if d.wantLen >= 0 && len(d.buf) != d.wantLen {
		return fmt.Errorf("%s: response of %d bytes, want %d", d.url.Path, len(d.buf), d.wantLen)
	}
	return nil
}

func (d *restDriver) close() { d.tr.CloseIdleConnections() }

// grpcDriver calls ModelInfer with a prebuilt raw-contents request on its
// own connection.
type grpcDriver struct {
	conn    *grpc.ClientConn
	c       pb.GRPCInferenceServiceClient
	req     *pb.ModelInferRequest
	wantLen int // expected raw output bytes
}

func newGRPCDriver(addr string, req *pb.ModelInferRequest, wantLen int) (*grpcDriver, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return nil, err
	}
	return &grpcDriver{conn: conn, c: pb.NewGRPCInferenceServiceClient(conn), req: req, wantLen: wantLen}, nil
}

func (d *grpcDriver) do() error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	resp, err := d.c.ModelInfer(ctx, d.req)
	cancel()
	if err != nil {
		return err
	}
	if got := grpcRawBytes(resp); d.wantLen >= 0 && got != d.wantLen {
		return fmt.Errorf("grpc: %d raw output bytes, want %d", got, d.wantLen)
	}
	return nil
}

func (d *grpcDriver) close() { d.conn.Close() }

// sample is one measurement of one cell: every request's latency, sorted,
// and the wall time of the whole measured phase.
type sample struct {
	lat      []time.Duration
	elapsed  time.Duration
	requests int
}

func (s sample) p50() time.Duration { return percentile(s.lat, 0.50) }
func (s sample) p99() time.Duration { return percentile(s.lat, 0.99) }

// throughput is in requests per second; multiply by the batch for
// inferences per second.
func (s sample) throughput() float64 { return float64(s.requests) / s.elapsed.Seconds() }

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.9999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// measure runs one cell: clients drivers, each on its own goroutine and
// connection, first send warmup requests each; then before runs (if set);
// then the drivers together send requests in all (split evenly), each timed
// from send to fully read response.
func measure(newDriver func() (driver, error), clients, warmup, requests int, before func() error) (sample, error) {
	ds := make([]driver, 0, clients)
	defer func() {
		for _, d := range ds {
			d.close()
		}
	}()
	for i := 0; i < clients; i++ {
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
			for j := 0; j < warmup; j++ {
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
			for j := 0; j < per; j++ {
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
	if before != nil {
		if err := before(); err != nil {
			aborted = true
			close(start)
			done.Wait()
			return sample{}, err
		}
	}
	t0 := time.Now()
	close(start)
	done.Wait()
	elapsed := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return sample{}, err
		}
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	return sample{lat: all, elapsed: elapsed, requests: len(all)}, nil
}
