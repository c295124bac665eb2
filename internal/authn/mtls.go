package authn

import (
	"context"
	"net/url"
	"strings"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// MTLS authenticates the client certificate the TLS layer verified
// (Credentials.PeerCertificates, leaf first). It does not verify the chain
// again: configure the listener with tls.RequireAndVerifyClientCert (or
// VerifyClientCertIfGiven) and the client CA, and pass VerifiedChains[0].
//
// The principal is the leaf's SPIFFE ID if it has exactly one "spiffe://"
// URI SAN, and "cert:" + its subject DN (RFC 2253 form) if it has none. A
// leaf with more than one SPIFFE URI, a malformed SPIFFE URI, or neither a
// SPIFFE URI nor a printable subject is refused. Principal.Expires is the leaf's NotAfter.
//
// The zero value is ready to use.
type MTLS struct{}

var _ Authenticator = MTLS{}

const (
	reasonMTLSManySPIFFE  = "mtls: more than one spiffe id"
	reasonMTLSBadSPIFFE   = "mtls: malformed spiffe id"
	reasonMTLSNoIdentity  = "mtls: certificate names no identity"
	reasonMTLSBadSubject  = "mtls: subject too long or unprintable"
	maxSubjectDNLen       = 1024
	maxSPIFFEIDLen        = 2048
	spiffeScheme          = "spiffe"
	spiffePrefixLowercase = "spiffe://"
)

// Method implements Authenticator.
func (MTLS) Method() string { return pipeline.MethodMTLS }

// Authenticate implements Authenticator.
func (MTLS) Authenticate(_ context.Context, c Credentials) (*pipeline.Principal, error) {
	if len(c.PeerCertificates) == 0 || c.PeerCertificates[0] == nil {
		return nil, ErrNoCredential
	}
	leaf := c.PeerCertificates[0]
	var spiffe *url.URL
	for _, u := range leaf.URIs {
		if !strings.EqualFold(u.Scheme, spiffeScheme) {
			continue
		}
		if spiffe != nil {
			return nil, invalid(pipeline.MethodMTLS, reasonMTLSManySPIFFE)
		}
		spiffe = u
	}
	p := &pipeline.Principal{Method: pipeline.MethodMTLS, Expires: leaf.NotAfter}
	switch {
	case spiffe != nil:
		id, ok := spiffeID(spiffe)
		if !ok {
			return nil, invalid(pipeline.MethodMTLS, reasonMTLSBadSPIFFE)
		}
		p.ID = id
	default:
		dn := leaf.Subject.String()
		switch {
		case dn == "":
			return nil, invalid(pipeline.MethodMTLS, reasonMTLSNoIdentity)
		case len(dn) > maxSubjectDNLen || !printable(dn):
			return nil, invalid(pipeline.MethodMTLS, reasonMTLSBadSubject)
		}
		p.ID = "cert:" + dn
	}
	return p, nil
}

// spiffeID checks u against the SPIFFE ID rules (a lower-case trust
// domain, no port, user info, query or fragment, no empty, "." or ".."
// path segments) and returns its string form.
func spiffeID(u *url.URL) (string, bool) {
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || u.Port() != "" {
		return "", false
	}
	td := u.Host
	if td == "" {
		return "", false
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", false
		}
	}
	if u.Path != "" {
		if u.RawPath != "" {
			return "", false // percent-encoded characters are not allowed
		}
		for _, seg := range strings.Split(u.Path[1:], "/") {
			if seg == "" || seg == "." || seg == ".." {
				return "", false
			}
			for i := 0; i < len(seg); i++ {
				c := seg[i]
				if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
					return "", false
				}
			}
		}
	}
	id := spiffePrefixLowercase + td + u.Path
	if len(id) > maxSPIFFEIDLen {
		return "", false
	}
	return id, true
}
