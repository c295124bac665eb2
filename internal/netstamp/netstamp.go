// Package netstamp tells when a request reached the machine, so that the
// admission gate can see how long it waited before the server got to it.
//
// A request on a saturated server waits before any handler code runs: in
// the socket's receive buffer until the runtime polls the network, then in
// the run queue until its goroutine gets a CPU, then through TLS and HTTP
// parsing. A gate that only counts the requests it has admitted sees none
// of that queue. On Linux, Listener asks the kernel to timestamp every
// received segment (SO_TIMESTAMPNS) and reads with recvmsg, so a
// connection knows when the bytes it last read arrived; elsewhere, and
// when the kernel gives no timestamp, it knows when the read returned.
//
// Listener wraps a TCP listener (below TLS); http.Server's ConnContext set
// to ConnContext makes the connection reachable from a request's context
// (Arrived), and Listener.Arrived finds it by the peer's address (for gRPC,
// which has no such hook).
package netstamp

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener accepts connections that record when their data arrived.
type Listener struct {
	net.Listener
	conns sync.Map // remote address → *Conn, while open
}

// Listen wraps ln; connections that are not TCP are passed through
// unstamped. On Linux it also asks for timestamps on the listening socket
// itself: the kernel turns receive timestamping on for the whole host
// lazily (in a work queue) when the first socket asks, and data that
// arrives before that carries no timestamp (Arrived is then when the read
// returned), so asking at listen time has it on before the first request.
func Listen(ln net.Listener) *Listener {
	if tl, ok := ln.(*net.TCPListener); ok {
		enableListener(tl)
	}
	return &Listener{Listener: ln}
}

// Accept waits for the next connection and turns timestamping on for it.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	sc := newConn(tc)
	sc.owner = l
	sc.key = tc.RemoteAddr().String()
	l.conns.Store(sc.key, sc)
	return sc, nil
}

// Wrap returns tc recording when the data it reads arrived, for a
// connection the caller dialled (a client that measures when answers
// reach it, not when its own goroutine got to them).
func Wrap(tc *net.TCPConn) *Conn { return newConn(tc) }

// Arrived returns when the data last read from the open connection whose
// peer is remote arrived, or the zero time if there is none.
func (l *Listener) Arrived(remote string) time.Time {
	if v, ok := l.conns.Load(remote); ok {
		return v.(*Conn).Arrived()
	}
	return time.Time{}
}

// Conn is a TCP connection that records when the data it reads arrived.
type Conn struct {
	*net.TCPConn
	last    atomic.Int64 // Unix nanoseconds: the arrival of the data last read
	stamped atomic.Bool  // the kernel has timestamped data read
	owner   *Listener
	key     string
	once    sync.Once
	sys     sysConn // the platform's reader
}

// Arrived returns when the data last read arrived (the kernel's receive
// timestamp of its last segment where there is one), or the zero time
// before anything was read.
func (c *Conn) Arrived() time.Time {
	ns := c.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Close closes the connection and forgets it.
func (c *Conn) Close() error {
	c.once.Do(func() {
		if c.owner != nil {
			c.owner.conns.CompareAndDelete(c.key, c)
		}
	})
	return c.TCPConn.Close()
}

// Read reads like net.TCPConn.Read and records the data's arrival.
func (c *Conn) Read(p []byte) (int, error) { return c.read(p) }

// WriteTo copies what c reads to w through Read, so that it is stamped too
// (net.TCPConn's own WriteTo would read around it).
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// Stamped reports whether the kernel has timestamped data read on c (on
// Linux once timestamps are on; elsewhere never: Arrived is then when a
// read returned).
func (c *Conn) Stamped() bool { return c.stamped.Load() }

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it makes a stamped
// connection (under TLS or not) reachable by Arrived.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if sc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, sc)
	}
	return ctx
}

// Arrived returns when the data last read on the connection of ctx (see
// ConnContext) arrived; for an HTTP/1.1 request, when its header did. The
// zero time when ctx has no stamped connection.
func Arrived(ctx context.Context) time.Time {
	if sc, ok := ctx.Value(connKey{}).(*Conn); ok {
		return sc.Arrived()
	}
	return time.Time{}
}
