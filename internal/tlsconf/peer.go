package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
)

// PeerChain returns the client's verified certificate chain, leaf first, or
// nil when the client presented no certificate or the connection is not
// TLS (state nil). It never returns a certificate that was not verified:
// with client_auth optional or require, an unverifiable certificate fails
// the handshake, and with none, Go does not even request one.
//
// For net/http pass r.TLS; for grpc-go, the State of the
// credentials.TLSInfo in the peer's AuthInfo.
func PeerChain(state *tls.ConnectionState) []*x509.Certificate {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil
	}
	return state.VerifiedChains[0]
}

// SPIFFEID returns the SPIFFE ID of a certificate: its only URI SAN, if that
// URI is a valid SPIFFE ID (spiffe://trust-domain/path, no query, fragment,
// user or port). A certificate with more than one URI SAN has none, as the
// X.509-SVID specification requires.
func SPIFFEID(c *x509.Certificate) (string, bool) {
	if c == nil || len(c.URIs) != 1 {
		return "", false
	}
	u := c.URIs[0]
	if validSPIFFEID(u) != nil {
		return "", false
	}
	return u.String(), true
}

// validSPIFFEID checks the shape the SPIFFE ID standard gives an ID.
func validSPIFFEID(u *url.URL) error {
	switch {
	case u.Scheme != "spiffe":
		return errSPIFFE("scheme must be spiffe")
	case u.Host == "" || u.Hostname() != u.Host:
		return errSPIFFE("trust domain must be set, without a port")
	case u.User != nil:
		return errSPIFFE("no user info allowed")
	case u.RawQuery != "" || u.ForceQuery:
		return errSPIFFE("no query allowed")
	case u.Fragment != "" || u.RawFragment != "":
		return errSPIFFE("no fragment allowed")
	case u.Opaque != "":
		return errSPIFFE("must be spiffe://trust-domain/path")
	}
	for _, r := range u.Host {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return errSPIFFE("trust domain must be lowercase letters, digits, '.', '-' or '_'")
		}
	}
	return nil
}

type errSPIFFE string

func (e errSPIFFE) Error() string { return "invalid SPIFFE ID: " + string(e) }
