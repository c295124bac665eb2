package modelsig

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Trust is what a verifier accepts signatures from.
type Trust struct {
	// Keys are public keys for the key method.
	Keys []crypto.PublicKey
	// Roots are CA certificates for the certificate method.
	Roots *x509.CertPool
	// Sigstore is the trusted root for the sigstore (keyless) method: Fulcio
	// CAs, Rekor logs, CT logs and timestamp authorities (LoadSigstoreRoot).
	// Nil refuses keyless signatures.
	Sigstore *SigstoreRoot
	// KeylessIdentities are the signers allowed to sign keylessly; any one
	// may match. Empty refuses keyless signatures.
	KeylessIdentities []KeylessIdentity
}

// Options adjust verification.
type Options struct {
	// IgnorePaths are excluded in addition to the signature's own.
	IgnorePaths []string
	// AllowUnsigned accepts files the signature does not list.
	AllowUnsigned bool
	// Source gives access to encrypted or in-memory plaintexts.
	Source Source
	// BundlePath overrides DIR/model.sig.
	BundlePath string
}

// Result describes a verified model.
type Result struct {
	Method Method
	// Signer identifies who signed: "key sha256:<hint>" or the leaf
	// certificate's subject and SANs.
	Signer string
	// Identities are the signer's names a policy can match: "key:sha256:<hint>"
	// for a key, and "subject:<DN>", "email:...", "uri:...", "dns:..." for
	// a certificate.
	Identities []string
	RootDigest string
	Resources  []Resource
	VerifiedAt time.Time
}

// Verify checks the signature of the model directory dir.
func Verify(dir string, trust Trust, opts Options) (*Result, error) {
	bp := opts.BundlePath
	if bp == "" {
		bp = filepath.Join(dir, SignatureFile)
	}
	raw, err := os.ReadFile(bp)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &Error{Check: "bundle", File: bp, Msg: "no signature file"}
		}
		return nil, &Error{Check: "bundle", File: bp, Msg: err.Error()}
	}
	b, err := ParseBundle(raw)
	if err != nil {
		return nil, err
	}
	res, st, err := b.verifySignature(trust)
	if err != nil {
		return nil, err
	}
	hs, err := newHashSpec(st.Predicate.Serialization)
	if err != nil {
		return nil, err
	}
	ignore := append(slices.Clone(st.Predicate.Serialization.IgnorePaths), opts.IgnorePaths...)
	if rel, err := filepath.Rel(dir, bp); err == nil {
		ignore = append(ignore, filepath.ToSlash(rel))
	}
	files, err := enumerate(dir, st.Predicate.Serialization.AllowSymlinks, ignore)
	if err != nil {
		return nil, err
	}
	local, err := digestFiles(files, hs, opts.Source)
	if err != nil {
		return nil, err
	}
	if err := compare(st.Predicate.Resources, local, hs, opts.AllowUnsigned); err != nil {
		return nil, err
	}
	res.RootDigest = st.Subject[0].Digest["sha256"]
	res.Resources = st.Predicate.Resources
	res.VerifiedAt = time.Now()
	return res, nil
}

// verifySignature checks the DSSE signature with the method's material
// and returns the parsed statement.
func (b *Bundle) verifySignature(trust Trust) (*Result, *Statement, error) {
	payload, sig, err := b.payloadAndSig()
	if err != nil {
		return nil, nil, err
	}
	m, _ := b.Method()
	res := &Result{Method: m}
	switch m {
	case MethodKey:
		signer, err := b.verifyKey(trust.Keys, payload, sig)
		if err != nil {
			return nil, nil, err
		}
		res.Signer = signer
		res.Identities = []string{"key:" + signer[len("key "):]}
	case MethodCertificate:
		leaf, err := b.verifyChain(trust.Roots, payload, sig)
		if err != nil {
			return nil, nil, err
		}
		res.Signer = certIdentity(leaf)
		res.Identities = certIdentities(leaf)
	case MethodSigstore:
		signer, ids, verified, err := b.verifySigstore(trust.Sigstore, trust.KeylessIdentities)
		if err != nil {
			return nil, nil, err
		}
		res.Signer, res.Identities = signer, ids
		payload = verified // the statement is what sigstore-go verified
	}
	st, err := parseStatement(payload)
	if err != nil {
		return nil, nil, err
	}
	return res, st, nil
}

func (b *Bundle) verifyKey(keys []crypto.PublicKey, payload, sig []byte) (string, error) {
	if len(keys) == 0 {
		return "", fail("signature", "no trusted public keys configured")
	}
	pk := b.VerificationMaterial.PublicKey
	var lastErr error = fail("signature", "not made by any trusted key")
	for _, k := range keys {
		hint, err := KeyHint(k)
		if err != nil {
			continue
		}
		if pk.Hint != "" && pk.Hint != hint {
			continue
		}
		if pk.Hint == "" && pk.RawBytes != "" {
			// Pre-v1.1 bundles carry the key itself; it must be one we trust.
			if pem, err := base64.StdEncoding.DecodeString(pk.RawBytes); err == nil {
				if bk, err := ParsePublicKeyPEM(pem); err == nil {
					if h, _ := KeyHint(bk); h != hint {
						continue
					}
				}
			}
		}
		if err := verifyECDSA(k, payload, sig); err != nil {
			lastErr = err
			continue
		}
		return "key sha256:" + hint, nil
	}
	return "", lastErr
}

func (b *Bundle) verifyChain(roots *x509.CertPool, payload, sig []byte) (*x509.Certificate, error) {
	if roots == nil {
		return nil, fail("signature", "no trusted CA roots configured")
	}
	chain := b.VerificationMaterial.X509CertificateChain.Certificates
	if len(chain) == 0 {
		return nil, fail("bundle", "empty certificate chain")
	}
	var certs []*x509.Certificate
	for i, c := range chain {
		der, err := base64.StdEncoding.DecodeString(c.RawBytes)
		if err != nil {
			return nil, fail("bundle", "certificate %d is not base64", i)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fail("bundle", "certificate %d does not parse: %v", i, err)
		}
		certs = append(certs, cert)
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	// As the reference verifier does, check the chain at the time the leaf
	// became valid: signing certificates outlive their use.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: leaf.NotBefore,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fail("signature", "certificate chain does not verify to a trusted root: %v", err)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageCodeSigning) {
		return nil, fail("signature", "leaf certificate is not for digital signatures or code signing")
	}
	if err := verifyECDSA(leaf.PublicKey, payload, sig); err != nil {
		return nil, err
	}
	return leaf, nil
}

// certIdentities lists a certificate's names for policy matching.
func certIdentities(c *x509.Certificate) []string {
	ids := []string{"subject:" + c.Subject.String()}
	for _, u := range c.URIs {
		ids = append(ids, "uri:"+u.String())
	}
	for _, e := range c.EmailAddresses {
		ids = append(ids, "email:"+e)
	}
	for _, d := range c.DNSNames {
		ids = append(ids, "dns:"+d)
	}
	return ids
}

// certIdentity names a certificate's holder: its subject and SANs.
func certIdentity(c *x509.Certificate) string {
	id := "certificate " + c.Subject.String()
	for _, u := range c.URIs {
		id += " uri:" + u.String()
	}
	for _, e := range c.EmailAddresses {
		id += " email:" + e
	}
	for _, d := range c.DNSNames {
		id += " dns:" + d
	}
	return id
}

// asError is errors.As for *Error.
func asError(err error, target **Error) bool { return errors.As(err, target) }
