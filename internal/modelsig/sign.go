package modelsig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
)

// SignOptions adjust signing.
type SignOptions struct {
	// IgnorePaths are excluded from the signature and recorded in it.
	IgnorePaths []string
	// Source gives access to plaintexts of encrypted files.
	Source Source
}

// Sign signs the model directory dir with an ECDSA P-256 or P-384 signer
// (the key method; the private key stays with the signer, see package
// keys), and returns the bundle: files serialization, SHA-256,
// resources in code-point order of their names, the hint of the public
// key, exactly as OMS v1.0 specifies.
func Sign(dir string, signer crypto.Signer, opts SignOptions) ([]byte, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || (pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384()) {
		return nil, errors.New("sign: the key must be ECDSA P-256 or P-384")
	}
	ser := Serialization{Method: "files", HashType: "sha256", AllowSymlinks: false, IgnorePaths: canonicalPaths(opts.IgnorePaths)}
	hs, _ := newHashSpec(ser)
	files, err := enumerate(dir, false, ser.IgnorePaths)
	if err != nil {
		return nil, err
	}
	resources, err := digestFiles(files, hs, opts.Source)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(resources, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	root, err := RootDigest(resources)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st := Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: filepath.Base(abs), Digest: map[string]string{"sha256": root}}},
		PredicateType: PredicateType,
		Predicate:     Predicate{Serialization: ser, Resources: resources},
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	sig, err := signECDSA(signer, pub, PAE(PayloadType, payload))
	if err != nil {
		return nil, err
	}
	hint, err := KeyHint(pub)
	if err != nil {
		return nil, err
	}
	b := Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: VerificationMaterial{
			PublicKey:   &PublicKey{Hint: hint},
			TlogEntries: []json.RawMessage{},
		},
		DSSEEnvelope: &Envelope{
			Payload:     base64.StdEncoding.EncodeToString(payload),
			PayloadType: PayloadType,
			Signatures:  []Signature{{Sig: base64.StdEncoding.EncodeToString(sig)}},
		},
	}
	return json.MarshalIndent(b, "", "  ")
}

// signECDSA signs msg with the hash that matches the curve; ECDSA signers
// return ASN.1 DER signatures.
func signECDSA(signer crypto.Signer, pub *ecdsa.PublicKey, msg []byte) ([]byte, error) {
	if pub.Curve == elliptic.P256() {
		h := sha256.Sum256(msg)
		return signer.Sign(rand.Reader, h[:], crypto.SHA256)
	}
	h := sha512.Sum384(msg)
	return signer.Sign(rand.Reader, h[:], crypto.SHA384)
}

func canonicalPaths(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		p = filepath.ToSlash(filepath.Clean(p))
		if p != "." && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}
