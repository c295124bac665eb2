package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aegis-inference/aegis/internal/servertest"
)

// TestAuditFailsClosed makes the audit log unwritable while the server
// runs (a file size limit, as a full disk would): every request is then
// refused with 503 and the server reports itself not ready; once the log
// can be written again the server recovers by itself, and the log of the
// whole run, outage included, verifies.
func TestAuditFailsClosed(t *testing.T) {
	a := startAccessServer(t, "none", nil)
	hc := a.httpClient(t, nil)
	gc := a.grpcClient(t, nil)
	auth := "Bearer " + a.keys["scorer"]
	infer := servertest.Path("digits", "")
	call := func() (rest, grpc int) {
		o := a.rest(t, hc, "POST", infer, auth, digitsBody(1))
		og, _ := grpcInfer(withAuth(auth), gc, "digits", 1)
		return o.status, og.status
	}
	if r, g := call(); r != 200 || g != 200 {
		t.Fatalf("before: REST %d, gRPC %d", r, g)
	}
	fi, err := os.Stat(a.cfg.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	// No byte more may be written to the log (nor any file of this
	// process) from here.
	lim := syscall.Rlimit{Cur: uint64(fi.Size()), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	// The first request finds the log failing when it writes its record:
	// it must not be served.
	o := a.rest(t, hc, "POST", infer, auth, digitsBody(1))
	if o.status != 503 || !strings.Contains(o.msg, "audit") {
		t.Errorf("REST with the audit log unwritable: %d %q, want 503 naming the audit log", o.status, o.msg)
	}
	for i := 0; i < 5; i++ {
		if r, g := call(); r != 503 || g != 503 {
			t.Errorf("while failing: REST %d, gRPC %d, want 503 and Unavailable", r, g)
		}
	}
	if o := a.rest(t, hc, "GET", "/v2/health/ready", "", nil); o.status != 503 {
		t.Errorf("readiness while the audit log fails: %d, want 503", o.status)
	}
	if o := a.rest(t, hc, "GET", "/v2/health/live", "", nil); o.status != 200 {
		t.Errorf("liveness while the audit log fails: %d, want 200", o.status)
	}
	if st := a.srv.AuditStatus(); st.Healthy || !st.Log.Failing || st.Log.WriteFailures == 0 {
		t.Errorf("audit status while failing: %+v", st)
	}
	size := func() int64 {
		fi, err := os.Stat(a.cfg.AuditPath())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if got := size(); got != fi.Size() {
		t.Errorf("the log grew from %d to %d bytes past the limit", fi.Size(), got)
	}

	restore()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, g := call()
		if r == 200 && g == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 15s after the log became writable: REST %d, gRPC %d", r, g)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if o := a.rest(t, hc, "GET", "/v2/health/ready", "", nil); o.status != 200 {
		t.Errorf("readiness after recovery: %d", o.status)
	}
	_, all := a.auditRecords(t) // verifies the whole log
	outages := 0
	for _, r := range all {
		if r["type"] == "outage" {
			outages++
		}
	}
	if outages == 0 {
		t.Error("the log does not record its outage")
	}
}
