package app

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"

	"google.golang.org/grpc/credentials"

	"github.com/aegis-inference/aegis/internal/access"
)

// httpErrorLog takes net/http's error log: TLS handshake failures it
// reports (plain HTTP to the TLS port, a client certificate that does not
// verify) are audited as refused connections; every line is logged.
type httpErrorLog struct {
	gate *access.Gate
	log  *slog.Logger
}

const handshakePrefix = "http: TLS handshake error from "

func (h httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if rest, ok := strings.CutPrefix(msg, handshakePrefix); ok {
		addr, reason, _ := strings.Cut(rest, ": ")
		// A connection closed before any TLS byte (a TCP probe) is no
		// attempt to authenticate.
		if reason != "EOF" {
			h.gate.ConnRefused("rest", addr, reason)
		}
		h.log.Debug("tls handshake failed", "transport", "rest", "client", addr, "err", reason)
		return len(p), nil
	}
	h.log.Warn(msg)
	return len(p), nil
}

// auditedCreds audits failed gRPC TLS handshakes as refused connections.
type auditedCreds struct {
	credentials.TransportCredentials
	gate *access.Gate
	log  *slog.Logger
}

func (c auditedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		addr := conn.RemoteAddr().String()
		c.gate.ConnRefused("grpc", addr, err.Error())
		c.log.Debug("tls handshake failed", "transport", "grpc", "client", addr, "err", err)
	}
	return out, info, err
}

func (c auditedCreds) Clone() credentials.TransportCredentials {
	return auditedCreds{c.TransportCredentials.Clone(), c.gate, c.log}
}
