package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/ratelimit"
	"github.com/aegis-inference/aegis/internal/servertest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestRateLimits: a principal over its request rate gets 429 with
// Retry-After over REST and ResourceExhausted with retry-after over gRPC,
// audited; another principal is unaffected; the credential's max_rate
// scope narrows the configured rate; a batch over the element burst is
// refused.
func TestRateLimits(t *testing.T) {
	a := startAccessServer(t, "none", func(c *config.Config) {
		c.RateLimit.Requests = ratelimit.Rate{PerSecond: 5, Burst: 5}
		c.RateLimit.Elements = ratelimit.Rate{PerSecond: 1000, Burst: 8}
	})
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)
	infer := servertest.Path("digits", "")
	key, other := "Bearer "+a.keys["scorer"], "Bearer "+a.keys["small-batch"]

	var limited outcome
	for i := 0; i < 8; i++ {
		o := a.rest(t, hc, "POST", infer, key, digitsBody(1))
		if i < 5 && o.status != 200 {
			t.Fatalf("request %d within the burst: %+v", i, o)
		}
		if i >= 5 && o.status == 429 {
			limited = o
		}
	}
	if limited.status != 429 {
		t.Fatal("no 429 past the burst")
	}
	req, _ := newRequest(a, infer, key)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Errorf("still limited: %d", resp.StatusCode)
	} else if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 || s > 2 {
		t.Errorf("Retry-After %q, want 1 or 2 seconds at 5 per second", resp.Header.Get("Retry-After"))
	}
	if og, err := grpcInfer(withAuth(key), gc, "digits", 1); err == nil || og.status != 429 {
		t.Errorf("gRPC past the limit: %+v %v, want ResourceExhausted", og, err)
	}
	if o := a.rest(t, hc, "POST", infer, other, digitsBody(1)); o.status != 200 {
		t.Errorf("another principal: %d, want 200", o.status)
	}
	// A batch over the element burst (8) is refused whatever the rate.
	if o := a.rest(t, hc, "POST", infer, "Bearer "+a.keys["to-revoke"], digitsBody(9)); o.status != 429 {
		t.Errorf("batch 9 over an element burst of 8: %d %s, want 429", o.status, o.msg)
	}
	time.Sleep(1100 * time.Millisecond)
	if o := a.rest(t, hc, "POST", infer, key, digitsBody(1)); o.status != 200 {
		t.Errorf("after refill: %d", o.status)
	}
	byID, _ := a.auditRecords(t)
	if r := byID[limited.id]; r == nil || r["status"].(float64) != 429 {
		t.Errorf("audit record of the limited request: %v", r)
	}
}

// TestShedding: with one request admitted at a time and no queue, a burst
// of concurrent requests is shed with 503 and Retry-After, quickly, and
// the admitted ones are served.
func TestShedding(t *testing.T) {
	a := startAccessServer(t, "none", func(c *config.Config) {
		c.RateLimit.Requests = ratelimit.Rate{}
		c.RateLimit.Shed = ratelimit.Shed{MaxInFlight: 1, MaxQueue: 0, QueueTimeout: time.Millisecond, RetryAfter: time.Second}
	})
	infer := servertest.Path("digits", "")
	var mu sync.Mutex
	counts := map[int]int{}
	var slowest time.Duration
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := a.httpClient(t, nil)
			for i := 0; i < 25; i++ {
				t0 := time.Now()
				req, _ := newRequest(a, infer, "Bearer "+a.keys["scorer"])
				resp, err := hc.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				d := time.Since(t0)
				mu.Lock()
				counts[resp.StatusCode]++
				if resp.StatusCode == 503 {
					if resp.Header.Get("Retry-After") == "" {
						t.Error("503 without Retry-After")
					}
					slowest = max(slowest, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if counts[200] == 0 || counts[503] == 0 || counts[200]+counts[503] != 200 {
		t.Errorf("statuses %v: want some served and some shed, nothing else", counts)
	}
	t.Logf("statuses %v; slowest shed response %v", counts, slowest)
	if st := a.srv.AuditStatus(); st.Healthy != true {
		t.Errorf("audit status %+v", st)
	}
}

func newRequest(a *accessServer, path, auth string) (*http.Request, error) {
	req, err := http.NewRequest("POST", a.srv.HTTPURL+path, bytes.NewReader(digitsBody(1)))
	if err == nil {
		req.Header.Set("Authorization", auth)
	}
	return req, err
}

// Requests that waited longer than the target before reaching the gate are
// shed on both transports: the listeners stamp when each request arrived
// and the gate sees it. A target of 1ns makes every request late; once a
// whole interval (100ms) of them has passed, a standing queue, every
// request is refused (503, Unavailable, Retry-After) while they keep
// coming, each with its audit record.
func TestSheddingLateArrivals(t *testing.T) {
	a := startAccessServer(t, "none", func(c *config.Config) {
		c.RateLimit.Requests = ratelimit.Rate{}
		c.RateLimit.Shed = ratelimit.Shed{MaxInFlight: 64, RetryAfter: 2 * time.Second,
			TargetDelay: time.Nanosecond, Interval: 100 * time.Millisecond}
	})
	auth := "Bearer " + a.keys["scorer"]
	infer := servertest.Path("digits", "")
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)
	inferGRPC := func() (metadata.MD, error) {
		var hdr metadata.MD
		in := &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP32", Shape: []int64{1, 64},
			Contents: &pb.InferTensorContents{Fp32Contents: make([]float32, 64)}}
		_, err := gc.ModelInfer(withAuth(auth), &pb.ModelInferRequest{ModelName: "digits",
			Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}, grpc.Header(&hdr))
		return hdr, err
	}
	// The first interval is served, late or not: the gate judges whole
	// intervals. (This also connects the gRPC client.)
	if _, err := inferGRPC(); err != nil {
		t.Fatalf("gRPC request in the first interval: %v, want served", err)
	}
	served := 0
	for deadline := time.Now().Add(5 * time.Second); ; served++ {
		o := a.rest(t, hc, "POST", infer, auth, digitsBody(1))
		if o.status == 503 {
			break
		}
		if o.status != 200 || time.Now().After(deadline) {
			t.Fatalf("REST request %d: %d %s; want 200 until the first interval is up, then 503", served, o.status, o.msg)
		}
	}
	var shedIDs []string
	statuses := map[string]int{}
	for i := range 6 {
		o := a.rest(t, hc, "POST", infer, auth, digitsBody(1))
		statuses[fmt.Sprintf("rest %d", o.status)]++
		if o.status != 503 {
			t.Errorf("REST request %d: %d %s, want 503 (late)", i, o.status, o.msg)
		}
		shedIDs = append(shedIDs, o.id)
		hdr, err := inferGRPC()
		st, _ := status.FromError(err)
		statuses["grpc "+st.Code().String()]++
		if st.Code() != codes.Unavailable {
			t.Errorf("gRPC request %d: %v, want Unavailable (late)", i, err)
			continue
		}
		if ra := hdr.Get("retry-after"); len(ra) != 1 || ra[0] != "2" {
			t.Errorf("gRPC request %d: retry-after %q, want 2", i, ra)
		}
		if v := hdr.Get("x-request-id"); len(v) == 1 {
			shedIDs = append(shedIDs, v[0])
		}
	}
	t.Logf("%d served in the first interval; then statuses %v", served, statuses)
	if statuses["rest 503"] != 6 || statuses["grpc Unavailable"] != 6 {
		t.Fatalf("statuses %v: want every request shed once the standing queue is found", statuses)
	}
	// After an idle interval the gate admits again, and the metrics count
	// the refusals as late.
	time.Sleep(250 * time.Millisecond)
	m := scrape(t, a, hc, "Bearer "+a.keys["operator"])
	if late, shed := m[`aegis_shed_refused_total{reason="late"}`], m[`aegis_requests_refused_total{reason="shed"}`]; late < 12 || shed != late+m[`aegis_shed_refused_total{reason="early"}`]+m[`aegis_shed_refused_total{reason="full"}`] {
		t.Errorf("metrics: %v shed late, %v refused by the gate; want at least the 12 shed here, every one counted once", late, shed)
	}
	byID, _ := a.auditRecords(t)
	for _, id := range shedIDs {
		r := byID[id]
		if r == nil || r["decision"] != "deny" || r["rule"] != "shed" || r["principal"] == "" {
			t.Errorf("shed request %s: audit record %v, want deny by rule shed with its principal", id, r)
		}
	}
}

// At the default target (2ms, over 50ms) an idle server sheds nothing:
// its requests reach the gate in microseconds.
func TestSheddingLateArrivalsIdle(t *testing.T) {
	a := startAccessServer(t, "none", func(c *config.Config) {
		c.RateLimit.Requests = ratelimit.Rate{}
		c.RateLimit.Shed = ratelimit.Default().Shed
	})
	auth := "Bearer " + a.keys["scorer"]
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)
	for i := range 50 {
		if o := a.rest(t, hc, "POST", servertest.Path("digits", ""), auth, digitsBody(1)); o.status != 200 {
			t.Fatalf("REST request %d: %d %s", i, o.status, o.msg)
		}
		if o, err := grpcInfer(withAuth(auth), gc, "digits", 1); err != nil {
			t.Fatalf("gRPC request %d: %v (%+v)", i, err, o)
		}
	}
}
