//go:build !(linux && (amd64 || arm64))

package netstamp

import (
	"net"
	"time"
)

type sysConn struct{}

func enableListener(*net.TCPListener) {}

func newConn(tc *net.TCPConn) *Conn { return &Conn{TCPConn: tc} }

func (c *Conn) read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}
