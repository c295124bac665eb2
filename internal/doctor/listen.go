package doctor

import (
	"fmt"
	"net"
	"strings"
)

// isLoopbackHost reports whether host (from HOST:PORT) names loopback only.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkListener fails any listener beyond loopback: Aegis has neither TLS
// nor authentication yet, so whoever reaches the address can run every
// model in plaintext.
func checkListener(name, addr string) Check {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return Check{name, Fail, fmt.Sprintf("%q is not HOST:PORT", addr)}
	}
	if isLoopbackHost(host) {
		return Check{name, OK, fmt.Sprintf("%s is loopback only", addr)}
	}
	what := host
	if host == "" {
		what = "every interface"
	}
	return Check{name, Fail, fmt.Sprintf("%s listens on %s, beyond loopback, and Aegis has no TLS or authentication yet: "+
		"anyone who reaches it can call every model in plaintext; bind 127.0.0.1 behind an authenticating TLS proxy "+
		"(in a container, publish the port on the host's loopback only)", addr, what)}
}
