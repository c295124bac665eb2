// Package modelsig verifies and makes OpenSSF model signatures (OMS v1.0):
// a Sigstore bundle holding a DSSE envelope whose in-toto statement lists
// the digest of every file of a model directory.
//
// Verification fails closed and says what failed: the bundle's form, the
// signature, the statement, the root digest, or which file is changed,
// missing or unsigned. It accepts the reference tool's known departures
// from the spec (a "." resource for single-file models, "sha256-sharded-N"
// shard algorithms, resources not in code-point order, a float
// shard_size, rawBytes/keyDetails instead of hint); Aegis's own signatures
// follow the spec exactly.
package modelsig

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
)

// Media and payload types a bundle must carry.
const (
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	PayloadType     = "application/vnd.in-toto+json"
	StatementType   = "https://in-toto.io/Statement/v1"
	PredicateType   = "https://model_signing/signature/v1.0"
	// SignatureFile is the conventional bundle name in a model directory.
	SignatureFile = "model.sig"
)

// Bundle is the subset of a Sigstore bundle OMS uses.
type Bundle struct {
	MediaType            string               `json:"mediaType"`
	VerificationMaterial VerificationMaterial `json:"verificationMaterial"`
	DSSEEnvelope         *Envelope            `json:"dsseEnvelope"`

	// raw is the bundle as read, for verifiers (sigstore-go) that need
	// every field, timestamps included.
	raw []byte
}

// VerificationMaterial holds exactly one of its key fields, by method.
type VerificationMaterial struct {
	PublicKey            *PublicKey        `json:"publicKey,omitempty"`
	X509CertificateChain *CertChain        `json:"x509CertificateChain,omitempty"`
	Certificate          *RawBytes         `json:"certificate,omitempty"`
	TlogEntries          []json.RawMessage `json:"tlogEntries"`
}

// PublicKey identifies the key of the key method.
type PublicKey struct {
	Hint       string `json:"hint,omitempty"`
	RawBytes   string `json:"rawBytes,omitempty"`   // pre-v1.1 bundles: base64 PEM
	KeyDetails string `json:"keyDetails,omitempty"` // pre-v1.1 bundles
}

// CertChain is a leaf-first certificate chain.
type CertChain struct {
	Certificates []RawBytes `json:"certificates"`
}

// RawBytes is base64 DER.
type RawBytes struct {
	RawBytes string `json:"rawBytes"`
}

// Envelope is a DSSE envelope.
type Envelope struct {
	Payload     string      `json:"payload"`
	PayloadType string      `json:"payloadType"`
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature; keyid may be absent, empty or null.
type Signature struct {
	Sig   string  `json:"sig"`
	KeyID *string `json:"keyid,omitempty"`
}

// Method names how a bundle was signed.
type Method string

// Signing methods.
const (
	MethodKey         Method = "key"
	MethodCertificate Method = "certificate"
	MethodSigstore    Method = "sigstore"
)

// Error is a verification failure: which check failed and, where it
// applies, which file.
type Error struct {
	Check string // "bundle", "signature", "statement", "root digest", "file"
	File  string
	Msg   string
}

func (e *Error) Error() string {
	if e.File != "" {
		return fmt.Sprintf("model signature: %s %s: %s", e.Check, e.File, e.Msg)
	}
	return fmt.Sprintf("model signature: %s: %s", e.Check, e.Msg)
}

func fail(check, format string, args ...any) error {
	return &Error{Check: check, Msg: fmt.Sprintf(format, args...)}
}

// ParseBundle parses and checks the form of a bundle.
func ParseBundle(b []byte) (*Bundle, error) {
	var bu Bundle
	if err := json.Unmarshal(b, &bu); err != nil {
		return nil, fail("bundle", "not a JSON Sigstore bundle: %v", err)
	}
	if bu.MediaType != BundleMediaType {
		return nil, fail("bundle", "mediaType %q, want %q", clip(bu.MediaType), BundleMediaType)
	}
	if bu.DSSEEnvelope == nil {
		return nil, fail("bundle", "no dsseEnvelope")
	}
	if bu.DSSEEnvelope.PayloadType != PayloadType {
		return nil, fail("bundle", "payloadType %q, want %q", clip(bu.DSSEEnvelope.PayloadType), PayloadType)
	}
	if len(bu.DSSEEnvelope.Signatures) != 1 {
		return nil, fail("bundle", "%d DSSE signatures, want exactly 1", len(bu.DSSEEnvelope.Signatures))
	}
	if _, err := bu.Method(); err != nil {
		return nil, err
	}
	bu.raw = b
	return &bu, nil
}

// Method reports the signing method from the verification material.
func (b *Bundle) Method() (Method, error) {
	vm := b.VerificationMaterial
	n := 0
	var m Method
	if vm.PublicKey != nil {
		n, m = n+1, MethodKey
	}
	if vm.X509CertificateChain != nil {
		n, m = n+1, MethodCertificate
	}
	if vm.Certificate != nil {
		n, m = n+1, MethodSigstore
	}
	if n != 1 {
		return "", fail("bundle", "verificationMaterial must hold exactly one of publicKey, x509CertificateChain, certificate")
	}
	return m, nil
}

// PAE is DSSE's pre-authentication encoding.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// payloadAndSig decodes the envelope's payload and signature.
func (b *Bundle) payloadAndSig() (payload, sig []byte, err error) {
	env := b.DSSEEnvelope
	if payload, err = base64.StdEncoding.DecodeString(env.Payload); err != nil {
		return nil, nil, fail("bundle", "payload is not base64")
	}
	if sig, err = base64.StdEncoding.DecodeString(env.Signatures[0].Sig); err != nil {
		return nil, nil, fail("bundle", "signature is not base64")
	}
	return payload, sig, nil
}

// verifyECDSA checks sig over the PAE of payload with pub, hashing with
// the digest that matches the curve (SHA-256, -384, -512).
func verifyECDSA(pub crypto.PublicKey, payload, sig []byte) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fail("signature", "key type %T is not ECDSA", pub)
	}
	msg := PAE(PayloadType, payload)
	var digest []byte
	switch k.Curve {
	case elliptic.P256():
		h := sha256.Sum256(msg)
		digest = h[:]
	case elliptic.P384():
		h := sha512.Sum384(msg)
		digest = h[:]
	case elliptic.P521():
		h := sha512.Sum512(msg)
		digest = h[:]
	default:
		return fail("signature", "curve %s is not P-256, P-384 or P-521", k.Curve.Params().Name)
	}
	if !ecdsa.VerifyASN1(k, digest, sig) {
		return fail("signature", "does not verify")
	}
	return nil
}

// KeyHint returns the OMS hint of a public key: the hex SHA-256 of its
// PEM-encoded SubjectPublicKeyInfo.
func KeyHint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	return hex.EncodeToString(sum[:]), nil
}

// ParsePublicKeyPEM parses a PEM SubjectPublicKeyInfo.
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM public key")
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// UnverifiedStatement decodes the statement without checking the
// signature, for display only. Never base a decision on it.
func (b *Bundle) UnverifiedStatement() (*Statement, error) {
	payload, _, err := b.payloadAndSig()
	if err != nil {
		return nil, err
	}
	return parseStatement(payload)
}
