//go:build linux && (amd64 || arm64)

package netstamp

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysConn reads with recvmsg and takes the kernel's receive timestamp of
// the last segment read from the control message.
type sysConn struct {
	rc    syscall.RawConn // nil: timestamps could not be turned on
	recv  func(fd uintptr) bool
	p     []byte
	n     int
	oobn  int
	errno syscall.Errno
	oob   [64]byte
}

func enableListener(tl *net.TCPListener) {
	if rc, err := tl.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		})
	}
}

func newConn(tc *net.TCPConn) *Conn {
	c := &Conn{TCPConn: tc}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return c
	}
	c.sys.rc = rc
	c.sys.recv = c.recvmsg
	return c
}

// recvmsg is the RawConn.Read callback: false asks to wait for data. The
// descriptor's read lock serialises calls, so the fields it uses are only
// touched by one reader at a time.
func (c *Conn) recvmsg(fd uintptr) bool {
	s := &c.sys
	var iov unix.Iovec
	iov.Base = &s.p[0]
	iov.SetLen(len(s.p))
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.SetIovlen(1)
	msg.Control = &s.oob[0]
	msg.SetControllen(len(s.oob))
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
		switch errno {
		case 0:
			s.n, s.oobn, s.errno = int(n), int(msg.Controllen), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			s.n, s.oobn, s.errno = 0, 0, errno
			return true
		}
	}
}

func (c *Conn) read(p []byte) (int, error) {
	s := &c.sys
	if s.rc == nil {
		n, err := c.TCPConn.Read(p)
		if n > 0 {
			c.last.Store(time.Now().UnixNano())
		}
		return n, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.p = p
	err := s.rc.Read(s.recv)
	s.p = nil
	if err != nil {
		return 0, c.opError(err)
	}
	if s.errno != 0 {
		return 0, c.opError(os.NewSyscallError("recvmsg", s.errno))
	}
	if s.n == 0 {
		return 0, io.EOF
	}
	ns, ok := timestamp(s.oob[:s.oobn])
	if !ok {
		ns = time.Now().UnixNano()
	}
	if ok && !c.stamped.Load() {
		c.stamped.Store(true)
	}
	c.last.Store(ns)
	return s.n, nil
}

func (c *Conn) opError(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// timestamp finds SCM_TIMESTAMPNS in control messages (64-bit layout:
// a 16-byte header, then a timespec of two int64s).
func timestamp(oob []byte) (int64, bool) {
	const hdr = 16
	for len(oob) >= hdr {
		l := int(binary.NativeEndian.Uint64(oob))
		if l < hdr || l > len(oob) {
			return 0, false
		}
		level := int32(binary.NativeEndian.Uint32(oob[8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:]))
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && l >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr:]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8:]))
			if sec == 0 && nsec == 0 {
				return 0, false
			}
			return sec*1e9 + nsec, true
		}
		next := (l + 7) &^ 7
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 0, false
}
