package modelsig

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// Keyless (sigstore) verification, offline, with sigstore-go.
//
// A keyless bundle is accepted only when all of these hold:
//   - the operator configured a Sigstore trusted root (SigstoreRoot) and at
//     least one KeylessIdentity: with either missing, keyless bundles are
//     refused;
//   - a Rekor entry in the bundle verifies against a log of the trusted root
//     (its signed entry timestamp and/or inclusion proof with a signed
//     checkpoint) and matches the bundle's certificate, signature and payload;
//   - a trusted observer timestamp exists (the Rekor integrated time under a
//     verified signed entry timestamp, or an RFC 3161 timestamp from a
//     timestamp authority of the trusted root), and the Fulcio certificate
//     chains to a certificate authority of the trusted root at every such
//     time;
//   - the certificate carries a verified SCT when the trusted root lists CT
//     logs (a private deployment without CT lists none);
//   - the DSSE signature verifies with the certificate's key;
//   - the certificate's SAN and OIDC issuer match one allowed identity.
//
// The in-toto statement is then checked like any other method's: the
// resources against the subject digest, and the files against the
// resources. Nothing is fetched: no TUF, no Rekor lookups.
//
// Limitation: Verify hands sigstore-go the bundle as ParseBundle kept it,
// which drops timestampVerificationData, so RFC 3161 timestamps are not
// used there; bundles dated only by a TSA (Rekor v2) are refused (fail
// closed) until the raw bundle bytes reach this step.

// SigstoreRoot is a Sigstore trusted root: the Fulcio certificate
// authorities, Rekor logs, certificate transparency logs and timestamp
// authorities that keyless signatures are checked against. The zero value
// trusts nothing; build one with LoadSigstoreRoot or ParseSigstoreRoot.
type SigstoreRoot struct {
	material root.TrustedMaterial
}

// LoadSigstoreRoot reads a trusted_root.json file
// (application/vnd.dev.sigstore.trustedroot+json;version=0.1), such as the
// public-good instance's trusted root distributed over Sigstore's TUF
// repository, or a private deployment's.
func LoadSigstoreRoot(path string) (*SigstoreRoot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sigstore trusted root: %w", err)
	}
	r, err := ParseSigstoreRoot(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseSigstoreRoot parses a trusted root's JSON. It must list at least one
// Fulcio certificate authority and one Rekor log: without them no keyless
// signature could verify.
func ParseSigstoreRoot(b []byte) (*SigstoreRoot, error) {
	tr, err := root.NewTrustedRootFromJSON(b)
	if err != nil {
		return nil, fmt.Errorf("sigstore trusted root: %s", clipLong(err.Error()))
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 {
		return nil, errors.New("sigstore trusted root: no Fulcio certificate authorities")
	}
	if len(tr.RekorLogs()) == 0 {
		return nil, errors.New("sigstore trusted root: no Rekor transparency logs")
	}
	return &SigstoreRoot{material: tr}, nil
}

// KeylessIdentity is a signer allowed to sign keylessly: a Fulcio
// certificate's subject alternative name and OIDC issuer.
type KeylessIdentity struct {
	// SAN is the certificate's subject alternative name, exactly: an email
	// address for a person, a URI for a workload (such as
	// "https://github.com/ORG/REPO/.github/workflows/release.yml@refs/heads/main").
	SAN string
	// SANRegexp, instead of SAN, is a Go regular expression the whole SAN
	// must match: it is anchored at both ends, so "(.+)@example\.com" does
	// not match "x@example.com.evil".
	SANRegexp string
	// Issuer is the OIDC issuer recorded in the certificate (Fulcio's
	// issuer extension), exactly, such as
	// "https://token.actions.githubusercontent.com".
	Issuer string
}

// Validate checks that exactly one of SAN and SANRegexp is set, that the
// regexp compiles, and that Issuer is set.
func (id KeylessIdentity) Validate() error {
	switch {
	case id.SAN == "" && id.SANRegexp == "":
		return errors.New("keyless identity: san or san_regexp is required")
	case id.SAN != "" && id.SANRegexp != "":
		return fmt.Errorf("keyless identity %q: set san or san_regexp, not both", clip(id.SAN))
	case id.Issuer == "":
		return fmt.Errorf("keyless identity %q: issuer is required", clip(id.SAN+id.SANRegexp))
	}
	if id.SANRegexp != "" {
		if _, err := regexp.Compile(anchored(id.SANRegexp)); err != nil {
			return fmt.Errorf("keyless identity: san_regexp %q: %v", clip(id.SANRegexp), err)
		}
	}
	return nil
}

func (id KeylessIdentity) String() string {
	san := id.SAN
	if id.SANRegexp != "" {
		san = "/" + id.SANRegexp + "/"
	}
	return fmt.Sprintf("%s (issuer %s)", san, id.Issuer)
}

func anchored(re string) string { return "^(?:" + re + ")$" }

// certificateIdentity turns an allowed identity into sigstore-go's policy.
func (id KeylessIdentity) certificateIdentity() (verify.CertificateIdentity, error) {
	if err := id.Validate(); err != nil {
		return verify.CertificateIdentity{}, err
	}
	re := ""
	if id.SANRegexp != "" {
		re = anchored(id.SANRegexp)
	}
	return verify.NewShortCertificateIdentity(id.Issuer, "", id.SAN, re)
}

// sigstoreJSON is the bundle as sigstore-go should see it: the bytes read
// (with timestamp verification data and every other field), or, for a
// bundle built in memory, its JSON.
func (b *Bundle) sigstoreJSON() ([]byte, error) {
	if b.raw != nil {
		return b.raw, nil
	}
	return json.Marshal(b)
}

// verifySigstore verifies a keyless bundle against the trusted root and the
// allowed identities. It returns the signer's description, its identities
// ("email:..." or "uri:...", and "issuer:...") and the DSSE payload that
// was verified.
func (b *Bundle) verifySigstore(sr *SigstoreRoot, allowed []KeylessIdentity) (signer string, ids []string, payload []byte, err error) {
	raw, err := b.sigstoreJSON()
	if err != nil {
		return "", nil, nil, fail("signature", "keyless bundle: %v", err)
	}
	return verifyKeyless(raw, sr, allowed)
}

// verifyKeyless verifies the Sigstore bundle raw (JSON).
func verifyKeyless(raw []byte, sr *SigstoreRoot, allowed []KeylessIdentity) (signer string, ids []string, payload []byte, err error) {
	if sr == nil || sr.material == nil {
		return "", nil, nil, fail("signature", "keyless (sigstore) signature, and no Sigstore trusted root is configured")
	}
	if len(allowed) == 0 {
		return "", nil, nil, fail("signature", "keyless (sigstore) signature, and no keyless identities are allowed")
	}
	policies := make([]verify.PolicyOption, 0, len(allowed))
	for _, id := range allowed {
		ci, err := id.certificateIdentity()
		if err != nil {
			return "", nil, nil, fail("signature", "%v", err)
		}
		policies = append(policies, verify.WithCertificateIdentity(ci))
	}
	var sb sgbundle.Bundle
	if err := sb.UnmarshalJSON(raw); err != nil {
		return "", nil, nil, fail("signature", "keyless bundle does not load: %s", clipLong(err.Error()))
	}
	if vc, err := sb.VerificationContent(); err != nil || vc.Certificate() == nil {
		return "", nil, nil, fail("signature", "keyless bundle has no Fulcio certificate")
	}
	v, err := sr.verifier()
	if err != nil {
		return "", nil, nil, fail("signature", "sigstore verifier: %v", err)
	}
	res, err := v.Verify(&sb, verify.NewPolicy(verify.WithoutArtifactUnsafe(), policies...))
	if err != nil {
		return "", nil, nil, diagnose(v, sr, &sb, err)
	}
	if res.Signature == nil || res.Signature.Certificate == nil || res.VerifiedIdentity == nil {
		return "", nil, nil, fail("signature", "keyless bundle verified without a certificate identity")
	}
	env, err := sb.Envelope()
	if err != nil {
		return "", nil, nil, fail("signature", "keyless bundle has no DSSE envelope")
	}
	payload, err = base64.StdEncoding.DecodeString(env.RawEnvelope().Payload)
	if err != nil {
		return "", nil, nil, fail("bundle", "payload is not base64")
	}
	vc, _ := sb.VerificationContent()
	sum := res.Signature.Certificate
	return fmt.Sprintf("sigstore %s (issuer %s)", sum.SubjectAlternativeName, sum.Extensions.Issuer),
		keylessIdentities(vc.Certificate(), *sum), payload, nil
}

// verifier builds sigstore-go's verifier for offline bundles: one verified
// Rekor entry, one observer timestamp (integrated time or RFC 3161), and an
// SCT when the root lists CT logs.
func (sr *SigstoreRoot) verifier() (*verify.Verifier, error) {
	opts := []verify.VerifierOption{
		verify.WithTransparencyLog(1),
		verify.WithObserverTimestamps(1),
		verify.WithoutStatementPredicate(), // parsed by parseStatement
	}
	if len(sr.material.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	return verify.NewVerifier(sr.material, opts...)
}

// diagnose names the step a failed verification failed at. Verify's
// verdict stands; these checks only choose the message.
func diagnose(v *verify.Verifier, sr *SigstoreRoot, sb *sgbundle.Bundle, verr error) error {
	sc, err1 := sb.SignatureContent()
	vc, err2 := sb.VerificationContent()
	if err1 == nil && err2 == nil {
		if err := verify.VerifySignature(sc, vc, sr.material); err != nil {
			return fail("signature", "DSSE signature does not verify with the certificate's key")
		}
	}
	logTimes, err := v.VerifyTransparencyLogInclusion(sb)
	if err != nil {
		return fail("signature", "transparency log entry does not verify against the trusted root: %s", clipLong(err.Error()))
	}
	if _, err := v.VerifyObserverTimestamps(sb, logTimes); err != nil {
		return fail("signature", "no trusted timestamp for the signature: neither a verified Rekor signed entry timestamp nor an RFC 3161 timestamp from a trusted authority")
	}
	anyone := verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithoutIdentitiesUnsafe())
	if res, err := v.Verify(sb, anyone); err == nil && res.Signature != nil && res.Signature.Certificate != nil {
		sum := res.Signature.Certificate
		return fail("signature", "certificate identity %s (issuer %s) is not an allowed keyless identity",
			clip(sum.SubjectAlternativeName), clip(sum.Extensions.Issuer))
	}
	return fail("signature", "keyless certificate does not verify against the trusted root: %s", clipLong(verr.Error()))
}

// keylessIdentities lists a Fulcio certificate's names for policy matching.
func keylessIdentities(c *x509.Certificate, sum certificate.Summary) []string {
	var ids []string
	for _, e := range c.EmailAddresses {
		ids = append(ids, "email:"+e)
	}
	for _, u := range c.URIs {
		ids = append(ids, "uri:"+u.String())
	}
	if len(ids) == 0 && sum.SubjectAlternativeName != "" {
		ids = append(ids, "san:"+sum.SubjectAlternativeName) // such as an otherName username
	}
	return append(ids, "issuer:"+sum.Extensions.Issuer)
}

// clipLong shortens a library's error for a message: enough to say what
// failed, never a blob.
func clipLong(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 240 {
		return s[:240] + "..."
	}
	return s
}
