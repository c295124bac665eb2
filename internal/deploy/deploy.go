// Package deploy decides whether a model version may serve: its signature
// (OpenSSF model signing) from a trusted key, CA or identity, its pinned
// digest, and no rollback below the highest version ever deployed.
//
// It fails closed: a signature that is present but does not verify is
// refused even where none is required, and any failed check keeps the
// version from serving with an error naming the check and the file.
package deploy

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/state"
)

// Policy is a loaded deployment policy.
type Policy struct {
	requireSignature bool
	trust            modelsig.Trust
	identities       []string
	ignorePaths      []string
	allowUnsigned    bool
	antiRollback     bool
	pinned           map[int64]string
}

// Load builds a policy from configuration, reading its key and CA files.
func Load(c config.Deploy) (*Policy, error) {
	p := &Policy{
		requireSignature: c.RequireSignature,
		identities:       c.TrustedIdentities,
		ignorePaths:      c.IgnorePaths,
		allowUnsigned:    c.AllowUnsignedFiles,
		antiRollback:     c.AntiRollback,
		pinned:           map[int64]string{},
	}
	for _, f := range c.TrustedKeys {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("deploy.trusted_keys: %w", err)
		}
		k, err := modelsig.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("deploy.trusted_keys: %s: %w", f, err)
		}
		p.trust.Keys = append(p.trust.Keys, k)
	}
	if len(c.TrustedCAs) > 0 {
		p.trust.Roots = x509.NewCertPool()
		for _, f := range c.TrustedCAs {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("deploy.trusted_cas: %w", err)
			}
			if !p.trust.Roots.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("deploy.trusted_cas: %s holds no PEM certificate", f)
			}
		}
	}
	if c.SigstoreTrustedRoot != "" {
		sr, err := modelsig.LoadSigstoreRoot(c.SigstoreTrustedRoot)
		if err != nil {
			return nil, fmt.Errorf("deploy.sigstore_trusted_root: %w", err)
		}
		p.trust.Sigstore = sr
	}
	for i, k := range c.KeylessIdentities {
		id := modelsig.KeylessIdentity{SAN: k.SAN, SANRegexp: k.SANRegexp, Issuer: k.Issuer}
		if err := id.Validate(); err != nil {
			return nil, fmt.Errorf("deploy.keyless_identities[%d]: %w", i, err)
		}
		p.trust.KeylessIdentities = append(p.trust.KeylessIdentities, id)
	}
	for v, d := range c.PinnedDigests {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("deploy.pinned_digests: %q is not a version", v)
		}
		p.pinned[n] = d
	}
	return p, nil
}

// Keys returns the trusted public keys (for `aegis doctor` and tests).
func (p *Policy) Keys() []crypto.PublicKey { return p.trust.Keys }

// Decision records what was checked for a deployed version.
type Decision struct {
	Signed     bool
	Method     modelsig.Method
	Signer     string
	RootDigest string
	VerifiedAt time.Time
}

// ErrRollback reports a version below one already deployed.
var ErrRollback = errors.New("rollback refused")

// Check decides whether version of model, in directory dir, may serve.
// digest is the SHA-256 (hex) of the plaintext model file; src gives the
// signature verifier the plaintexts of encrypted files. versions is the
// anti-rollback store (nil unless the policy asks for it).
func (p *Policy) Check(model string, version int64, dir, digest string, src modelsig.Source, versions state.Versions) (Decision, error) {
	var d Decision
	if want, ok := p.pinned[version]; ok && want != digest {
		return d, fmt.Errorf("deploy policy: pinned digest: %s has sha256 %s, pinned %s", filepath.Join(dir, "model.onnx"), digest, want)
	}
	sigPath := filepath.Join(dir, modelsig.SignatureFile)
	_, err := os.Lstat(sigPath)
	hasSig := err == nil
	canVerify := len(p.trust.Keys) > 0 || p.trust.Roots != nil || len(p.trust.KeylessIdentities) > 0
	switch {
	case !hasSig && p.requireSignature:
		return d, fmt.Errorf("deploy policy: signature required: no %s", sigPath)
	case hasSig && canVerify:
		res, err := modelsig.Verify(dir, p.trust, modelsig.Options{IgnorePaths: p.ignorePaths, AllowUnsigned: p.allowUnsigned, Source: src})
		if err != nil {
			return d, fmt.Errorf("deploy policy: %w (in %s)", err, dir)
		}
		if res.Method == modelsig.MethodCertificate && len(p.identities) > 0 && !slices.ContainsFunc(res.Identities, func(id string) bool {
			return slices.Contains(p.identities, id)
		}) {
			return d, fmt.Errorf("deploy policy: signer identity: %s is not trusted (in %s)", res.Signer, sigPath)
		}
		d = Decision{Signed: true, Method: res.Method, Signer: res.Signer, RootDigest: res.RootDigest, VerifiedAt: res.VerifiedAt}
	}
	if p.antiRollback {
		if versions == nil {
			return d, errors.New("deploy policy: anti-rollback needs a state store")
		}
		hi, err := versions.Highest(model)
		if err != nil {
			return d, fmt.Errorf("deploy policy: anti-rollback: %w", err)
		}
		if version < hi {
			return d, fmt.Errorf("deploy policy: %w: version %d is below version %d, already deployed", ErrRollback, version, hi)
		}
	}
	return d, nil
}

// Deployed records that version of model now serves, once it has loaded,
// so that anti-rollback refuses anything below it from now on.
func (p *Policy) Deployed(model string, version int64, versions state.Versions) error {
	if !p.antiRollback {
		return nil
	}
	if err := versions.Record(model, version); err != nil {
		return fmt.Errorf("deploy policy: anti-rollback: %w", err)
	}
	return nil
}
