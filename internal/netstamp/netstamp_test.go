package netstamp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"
)

func listen(t *testing.T) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln)
	t.Cleanup(func() { l.Close() })
	return l
}

// pair returns the server's and the client's end of one connection.
func pair(t *testing.T, l *Listener) (*Conn, net.Conn) {
	t.Helper()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("Accept returned %T, want *Conn", c)
	}
	t.Cleanup(func() { sc.Close() })
	return sc, cc
}

// stampsInKernel is whether this platform takes the kernel's timestamps.
var stampsInKernel = runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64")

// The data's arrival is when it reached the socket, not when the server
// got round to reading it: a read 50ms after the write still reports the
// write's time.
func TestArrivedIsWhenDataCameNotWhenRead(t *testing.T) {
	l := listen(t)
	sc, cc := pair(t, l)
	if !sc.Arrived().IsZero() {
		t.Fatal("Arrived before any read is not zero")
	}
	if stampsInKernel {
		// The kernel turns timestamping on for the host in a work queue
		// when the first socket asks; wait until reads are stamped.
		deadline := time.Now().Add(5 * time.Second)
		for !sc.Stamped() {
			if time.Now().After(deadline) {
				t.Fatal("no kernel timestamp on TCP reads after 5s")
			}
			cc.Write([]byte("w"))
			if _, err := sc.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for round := range 3 {
		sent := time.Now()
		if _, err := cc.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		buf := make([]byte, 16)
		n, err := sc.Read(buf)
		read := time.Now()
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("round %d: read %q, %v", round, buf[:n], err)
		}
		got := sc.Arrived()
		if !stampsInKernel {
			if got.Before(read.Add(-time.Millisecond)) || got.After(time.Now()) {
				t.Fatalf("round %d: Arrived %v, want about when the read returned (%v)", round, got, read)
			}
			continue
		}
		if !sc.Stamped() {
			t.Fatal("no kernel timestamp on a TCP read")
		}
		if waited := read.Sub(got); waited < 45*time.Millisecond {
			t.Fatalf("round %d: Arrived %v is %v before the read; the data waited 50ms", round, got, waited)
		}
		if early := sent.Sub(got); early > 5*time.Millisecond {
			t.Fatalf("round %d: Arrived %v is %v before the write", round, got, early)
		}
	}
}

func TestListenerFindsConnByPeerUntilClosed(t *testing.T) {
	l := listen(t)
	sc, cc := pair(t, l)
	remote := cc.LocalAddr().String()
	if got := l.Arrived(remote); !got.IsZero() {
		t.Fatalf("Arrived(%s) before a read = %v", remote, got)
	}
	cc.Write([]byte("x"))
	if _, err := sc.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if l.Arrived(remote).IsZero() {
		t.Fatalf("Arrived(%s) after a read is zero", remote)
	}
	if !l.Arrived("127.0.0.1:1").IsZero() {
		t.Fatal("Arrived of an unknown peer is not zero")
	}
	sc.Close()
	if !l.Arrived(remote).IsZero() {
		t.Fatal("a closed connection is still found")
	}
}

func TestReadEOFDeadlineAndClose(t *testing.T) {
	l := listen(t)
	sc, cc := pair(t, l)

	sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := sc.Read(make([]byte, 4))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	sc.SetReadDeadline(time.Time{})

	if n, err := sc.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	cc.Write([]byte("abc"))
	cc.Close()
	got, err := io.ReadAll(sc)
	if err != nil || string(got) != "abc" {
		t.Fatalf("ReadAll = %q, %v; want abc, nil (EOF after the data)", got, err)
	}
	sc.Close()
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
}

// A large transfer arrives intact through Read and WriteTo.
func TestLargeTransfer(t *testing.T) {
	l := listen(t)
	sc, cc := pair(t, l)
	want := make([]byte, 4<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		cc.Write(want)
		cc.Close()
	}()
	var got writerBuf
	if _, err := sc.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || string(got) != string(want) {
		t.Fatalf("got %d bytes, want %d, intact", len(got), len(want))
	}
	if stampsInKernel && !sc.Stamped() {
		t.Fatal("no kernel timestamps")
	}
}

type writerBuf []byte

func (w *writerBuf) Write(p []byte) (int, error) { *w = append(*w, p...); return len(p), nil }

// Under TLS and net/http, a handler finds when its request's header
// arrived; a request that waited shows it.
func TestHTTPOverTLS(t *testing.T) {
	l := listen(t)
	arrived := make(chan time.Duration, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := Arrived(r.Context())
		if a.IsZero() {
			arrived <- -1
		} else {
			arrived <- time.Since(a)
		}
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.ConnContext = ConnContext
	srv.StartTLS()
	defer srv.Close()
	cl := srv.Client()
	resp, err := cl.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := <-arrived; d < 0 || d > time.Second {
		t.Fatalf("handler saw the request arrive %v ago", d)
	}
	if !Arrived(context.Background()).IsZero() {
		t.Fatal("Arrived of a context without a connection is not zero")
	}
}

// A connection the caller dialled, wrapped, records when answers reached
// it as an accepted one does: a client can tell the server's latency from
// its own wait to read.
func TestWrapStampsADialledConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	listen(t) // asks the kernel to timestamp, as a server would have
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := Wrap(nc.(*net.TCPConn))
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	buf := make([]byte, 16)
	deadline := time.Now().Add(5 * time.Second)
	for stampsInKernel && !c.Stamped() {
		if time.Now().After(deadline) {
			t.Fatal("no kernel timestamp on a wrapped connection's reads after 5s")
		}
		srv.Write([]byte("w"))
		if _, err := c.Read(buf[:1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	sent := time.Now()
	if _, err := srv.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	n, err := c.Read(buf)
	read := time.Now()
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	got := c.Arrived()
	if !stampsInKernel {
		if got.Before(read.Add(-time.Millisecond)) || got.After(time.Now()) {
			t.Fatalf("Arrived %v, want about when the read returned (%v)", got, read)
		}
		return
	}
	if waited := read.Sub(got); waited < 45*time.Millisecond {
		t.Fatalf("Arrived %v is %v before the read; the answer waited 50ms", got, waited)
	}
	if early := sent.Sub(got); early > 5*time.Millisecond {
		t.Fatalf("Arrived %v is %v before the write", got, early)
	}
}
