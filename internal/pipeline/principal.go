package pipeline

import (
	"context"
	"time"
)

// Authentication methods, as recorded in Principal.Method and in audit
// records.
const (
	MethodAPIKey = "api_key"
	MethodJWT    = "jwt"
	MethodMTLS   = "mtls"
	// MethodNone marks a request whose caller was not authenticated
	// (authentication disabled, or the request was refused before a
	// credential was accepted).
	MethodNone = "none"
)

// Principal is who is asking, as established by authentication. It is
// immutable once built: stages read it, none changes it.
type Principal struct {
	// ID is the stable name that policy bindings, quotas and audit records
	// use:
	//   "key:<key id>"             an API key
	//   "jwt:<sub>"                a JWT subject
	//   "spiffe://trust.domain/..." a client certificate's SPIFFE URI SAN
	//   "cert:<subject DN>"        a client certificate without one
	ID string
	// Method is how the principal was authenticated (Method* constants).
	Method string
	// Groups are group names the identity provider asserted (JWT), bound in
	// policy as "group:<name>".
	Groups []string
	// Roles are roles granted by the credential itself (an API key created
	// with roles, JWT claims mapped to roles). A role must also exist in the
	// authorization policy to grant anything.
	Roles []string
	// Scopes narrow what the credential may do, whatever its roles allow.
	Scopes Scopes
	// Expires is when the credential stops being valid; zero if never.
	Expires time.Time
}

// OutputDetail is how much of a model's output a credential may see.
type OutputDetail string

// Output details, from most to least revealing.
const (
	OutputFull  OutputDetail = "full"  // every output tensor as computed
	OutputTopK  OutputDetail = "top_k" // the k highest scores and their indices
	OutputLabel OutputDetail = "label" // the predicted label only
)

// Scopes narrow a credential. The zero value narrows nothing.
type Scopes struct {
	// Models are model name patterns (path.Match syntax) the credential may
	// touch; empty means no narrowing.
	Models []string `json:"models,omitempty" yaml:"models"`
	// MaxBatch is the largest batch (first dimension) per request; 0 means
	// no limit.
	MaxBatch int64 `json:"max_batch,omitempty" yaml:"max_batch"`
	// MaxRate is the most requests per second; 0 means no limit.
	MaxRate float64 `json:"max_rate,omitempty" yaml:"max_rate"`
	// OutputDetail caps what outputs reveal; "" means full.
	OutputDetail OutputDetail `json:"output_detail,omitempty" yaml:"output_detail"`
	// TopK is k for OutputTopK.
	TopK int `json:"top_k,omitempty" yaml:"top_k"`
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
