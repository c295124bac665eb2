// Package authn establishes who is calling: it turns the credential a
// transport extracted from a request (an Authorization header or gRPC
// "authorization" metadata, a verified client certificate) into a
// pipeline.Principal, or refuses it.
//
// Three authenticators implement Authenticator:
//
//   - KeyStore: API keys "aegis_<id>_<secret>", stored only as
//     HMAC-SHA256(pepper, secret) in bbolt and verified from memory.
//   - JWT: bearer tokens from an OIDC provider, verified against the
//     provider's published JWKS with go-jose.
//   - MTLS: the leaf of a client certificate chain the TLS layer already
//     verified.
//
// A Chain tries them in configured order; the first that recognises a
// credential decides.
//
// Guarantees and defaults:
//
//   - Authenticate returns a principal, ErrNoCredential, or an error wrapping
//     ErrInvalid (an *InvalidError). Nothing else: a failure to reach the
//     identity provider is a refusal, never an acceptance.
//   - Error reasons are short fixed strings for the audit log. They never
//     contain a secret, a token or a key, nor text an attacker chose.
//   - A bad credential is refused by the authenticator that recognises it;
//     it is never passed on to the next one in a Chain.
//   - API key secrets carry 256 bits from crypto/rand and are compared in
//     constant time; an unknown key id costs the same HMAC as a known one.
//   - JWTs: only asymmetric algorithms (default RS256 and ES256; never
//     "none", never HS*); iss, aud, exp (required), nbf and iat are checked
//     with 60 s of skew by default; the key is chosen by kid from the
//     configured JWKS only (jku, x5u, x5c and embedded jwk headers are
//     ignored); RSA keys below 2048 bits are not loaded.
//   - The zero values deny: an empty Chain recognises nothing, and a closed
//     KeyStore or JWT refuses every credential.
package authn

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// Credentials is what a transport extracts from a request.
type Credentials struct {
	// Authorization is the raw HTTP Authorization header, or the gRPC
	// "authorization" metadata value; "" if absent.
	Authorization string
	// PeerCertificates is the verified client certificate chain, leaf first
	// (tls.ConnectionState.VerifiedChains[0]); nil if the client presented
	// none. Only pass a chain the TLS layer verified against the configured
	// client CA: MTLS does not verify it again.
	PeerCertificates []*x509.Certificate
}

// Authenticator turns one kind of credential into a principal.
type Authenticator interface {
	// Method is the authentication method: pipeline.MethodAPIKey,
	// pipeline.MethodJWT or pipeline.MethodMTLS.
	Method() string
	// Authenticate returns the principal c establishes. It returns
	// ErrNoCredential when c carries no credential of this kind, and an
	// error wrapping ErrInvalid (an *InvalidError, whose Reason is safe to
	// log) when c carries one that is refused. It never returns a nil
	// principal with a nil error.
	Authenticate(ctx context.Context, c Credentials) (*pipeline.Principal, error)
}

// Errors returned by Authenticate.
var (
	// ErrNoCredential means the request carries no credential the
	// authenticator recognises.
	ErrNoCredential = errors.New("no credential")
	// ErrInvalid means a credential was presented and refused. Errors that
	// wrap it are *InvalidError.
	ErrInvalid = errors.New("invalid credential")
)

// InvalidError is a refused credential. Reason is a short fixed string for
// the audit log ("api key: revoked", "jwt: expired", "jwt: unknown kid");
// it never contains the credential. Clients must only ever be told that
// authentication failed.
type InvalidError struct {
	Method string // the Method of the authenticator that refused
	Reason string
}

func (e *InvalidError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(method, reason string) error {
	return &InvalidError{Method: method, Reason: reason}
}

// Chain tries authenticators in order. The first that recognises a
// credential (returns anything but ErrNoCredential) decides: a credential
// it refuses is not passed on to the next. The zero Chain recognises
// nothing.
type Chain []Authenticator

// Authenticate returns the principal established by the first
// authenticator that recognises a credential in c, its refusal, or
// ErrNoCredential if none recognises one.
func (ch Chain) Authenticate(ctx context.Context, c Credentials) (*pipeline.Principal, error) {
	for _, a := range ch {
		p, err := a.Authenticate(ctx, c)
		if err == ErrNoCredential || errors.Is(err, ErrNoCredential) {
			continue
		}
		if err != nil {
			var ie *InvalidError
			if errors.As(err, &ie) {
				return nil, err
			}
			// Fail closed on an error outside the contract.
			return nil, &InvalidError{Method: a.Method(), Reason: "authenticator error"}
		}
		if p == nil {
			return nil, &InvalidError{Method: a.Method(), Reason: "authenticator returned no principal"}
		}
		return p, nil
	}
	return nil, ErrNoCredential
}

// Authorization schemes.
const (
	schemeBearer = "bearer"
	schemeAPIKey = "apikey"
)

// splitAuthorization splits an Authorization value into its scheme (to be
// compared with strings.EqualFold: schemes are case-insensitive) and its
// credential. It accepts "<scheme> <credential>" with one or more spaces
// between, and no other white space or control character; ok is false
// otherwise.
func splitAuthorization(h string) (scheme, cred string, ok bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || scheme == "" || hasSpaceOrControl(scheme) {
		return "", "", false
	}
	cred = strings.TrimLeft(cred, " ")
	if cred == "" || hasSpaceOrControl(cred) {
		return "", "", false
	}
	return scheme, cred, true
}

// hasSpaceOrControl reports whether s has an ASCII space or control byte.
func hasSpaceOrControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
