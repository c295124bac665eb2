package modelsig

// Internal tests: the spec's keyless vector has no model files, so its
// signature is checked through (*Bundle).verifySignature, the step Verify
// runs before hashing files.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	vectorBundle = "../../testdata/model-signing/oms-spec/test-vectors/v1.0/valid/sigstore.bundle.json"
	publicGood   = "../../testdata/model-signing/sigstore/trusted_root.json"
	vectorSAN    = "stefanb@us.ibm.com"
	vectorIssuer = "https://sigstore.verify.ibm.com/oauth2"
	vectorRoot   = "61d4849d9d90076d6215f4d525f13d6574af8e3f67aef3e6f36fc40a14fdd226"
)

func publicGoodRoot(t testing.TB) *SigstoreRoot {
	t.Helper()
	sr, err := LoadSigstoreRoot(publicGood)
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

func vectorJSON(t testing.TB) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(vectorBundle)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// verifyKeylessJSON parses a bundle and runs the signature step.
func verifyKeylessJSON(t *testing.T, m map[string]any, trust Trust) (*Result, *Statement, error) {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(raw)
	if err != nil {
		t.Fatalf("ParseBundle: %v", err)
	}
	if m, _ := b.Method(); m != MethodSigstore {
		t.Fatalf("method %q, want sigstore", m)
	}
	return b.verifySignature(trust)
}

func vectorTrust(t testing.TB) Trust {
	return Trust{Sigstore: publicGoodRoot(t), KeylessIdentities: []KeylessIdentity{{SAN: vectorSAN, Issuer: vectorIssuer}}}
}

func wantSignatureError(t *testing.T, err error, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want a *modelsig.Error", err)
	}
	if e.Check != "signature" || !strings.Contains(e.Msg, msg) {
		t.Errorf("got %q, want check signature mentioning %q", err, msg)
	}
	if len(e.Error()) > 400 {
		t.Errorf("error is %d bytes long: %q", len(e.Error()), e.Error())
	}
}

func TestKeylessVectorVerifies(t *testing.T) {
	for name, ids := range map[string][]KeylessIdentity{
		"exact":           {{SAN: vectorSAN, Issuer: vectorIssuer}},
		"regexp":          {{SANRegexp: `[a-z]+@us\.ibm\.com`, Issuer: vectorIssuer}},
		"second of three": {{SAN: "a@example.com", Issuer: vectorIssuer}, {SAN: vectorSAN, Issuer: vectorIssuer}, {SAN: vectorSAN, Issuer: "https://accounts.google.com"}},
	} {
		t.Run(name, func(t *testing.T) {
			res, st, err := verifyKeylessJSON(t, vectorJSON(t), Trust{Sigstore: publicGoodRoot(t), KeylessIdentities: ids})
			if err != nil {
				t.Fatal(err)
			}
			if res.Method != MethodSigstore {
				t.Errorf("method %q, want sigstore", res.Method)
			}
			if want := "sigstore " + vectorSAN + " (issuer " + vectorIssuer + ")"; res.Signer != want {
				t.Errorf("signer %q, want %q", res.Signer, want)
			}
			if want := []string{"email:" + vectorSAN, "issuer:" + vectorIssuer}; !slices.Equal(res.Identities, want) {
				t.Errorf("identities %q, want %q", res.Identities, want)
			}
			if got := st.Subject[0].Digest["sha256"]; got != vectorRoot {
				t.Errorf("subject digest %s, want %s", got, vectorRoot)
			}
			if len(st.Predicate.Resources) == 0 {
				t.Error("no resources")
			}
		})
	}
}

// TestKeylessVectorRefused changes the trust or the bundle every way that
// must fail, and checks each says what failed.
func TestKeylessVectorRefused(t *testing.T) {
	good := vectorTrust(t)
	foreignFulcio := mixedRoot(t, func(pg *root.TrustedRoot, vs *ca.VirtualSigstore) (cas []root.CertificateAuthority, ct map[string]*root.TransparencyLog, rekor map[string]*root.TransparencyLog) {
		return vs.FulcioCertificateAuthorities(), pg.CTLogs(), pg.RekorLogs()
	})
	foreignRekor := mixedRoot(t, func(pg *root.TrustedRoot, vs *ca.VirtualSigstore) (cas []root.CertificateAuthority, ct map[string]*root.TransparencyLog, rekor map[string]*root.TransparencyLog) {
		return pg.FulcioCertificateAuthorities(), pg.CTLogs(), vs.RekorLogs()
	})
	foreignCT := mixedRoot(t, func(pg *root.TrustedRoot, vs *ca.VirtualSigstore) (cas []root.CertificateAuthority, ct map[string]*root.TransparencyLog, rekor map[string]*root.TransparencyLog) {
		return pg.FulcioCertificateAuthorities(), vs.CTLogs(), pg.RekorLogs()
	})
	tlogEntry := func(m map[string]any) map[string]any {
		return m["verificationMaterial"].(map[string]any)["tlogEntries"].([]any)[0].(map[string]any)
	}
	for _, tc := range []struct {
		name   string
		trust  func(Trust) Trust
		change func(m map[string]any)
		msg    string
	}{
		{name: "wrong SAN", trust: func(tr Trust) Trust {
			tr.KeylessIdentities = []KeylessIdentity{{SAN: "someone@us.ibm.com", Issuer: vectorIssuer}}
			return tr
		}, msg: "certificate identity stefanb@us.ibm.com (issuer https://sigstore.verify.ibm.com/oauth2) is not an allowed keyless identity"},
		{name: "wrong issuer", trust: func(tr Trust) Trust {
			tr.KeylessIdentities = []KeylessIdentity{{SAN: vectorSAN, Issuer: "https://accounts.google.com"}}
			return tr
		}, msg: "is not an allowed keyless identity"},
		{name: "SAN regexp matches only a part", trust: func(tr Trust) Trust {
			tr.KeylessIdentities = []KeylessIdentity{{SANRegexp: `stefanb@us\.ibm`, Issuer: vectorIssuer}}
			return tr
		}, msg: "is not an allowed keyless identity"},
		{name: "no identities", trust: func(tr Trust) Trust {
			tr.KeylessIdentities = nil
			return tr
		}, msg: "no keyless identities are allowed"},
		{name: "no trusted root", trust: func(tr Trust) Trust {
			tr.Sigstore = nil
			return tr
		}, msg: "no Sigstore trusted root"},
		{name: "invalid identity", trust: func(tr Trust) Trust {
			tr.KeylessIdentities = []KeylessIdentity{{SAN: vectorSAN}}
			return tr
		}, msg: "issuer is required"},
		{name: "another Fulcio", trust: func(tr Trust) Trust {
			tr.Sigstore = foreignFulcio
			return tr
		}, msg: "keyless certificate does not verify against the trusted root"},
		{name: "another Rekor", trust: func(tr Trust) Trust {
			tr.Sigstore = foreignRekor
			return tr
		}, msg: "transparency log entry does not verify"},
		{name: "another CT log", trust: func(tr Trust) Trust {
			tr.Sigstore = foreignCT
			return tr
		}, msg: "certificate timestamp"},
		{name: "changed payload byte", change: func(m map[string]any) {
			env := m["dsseEnvelope"].(map[string]any)
			p, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
			p = bytes.Replace(p, []byte("signme-1"), []byte("signme-3"), 1)
			env["payload"] = base64.StdEncoding.EncodeToString(p)
		}, msg: "DSSE signature does not verify"},
		{name: "changed signature", change: func(m map[string]any) {
			sig := m["dsseEnvelope"].(map[string]any)["signatures"].([]any)[0].(map[string]any)
			s, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
			s[len(s)-1] ^= 1
			sig["sig"] = base64.StdEncoding.EncodeToString(s)
		}, msg: "DSSE signature does not verify"},
		{name: "another certificate", change: func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["certificate"] = map[string]any{"rawBytes": base64.StdEncoding.EncodeToString(otherLeaf(t))}
		}, msg: "DSSE signature does not verify"},
		{name: "tlog integrated time", change: func(m map[string]any) {
			tlogEntry(m)["integratedTime"] = "1760062341"
		}, msg: "transparency log entry does not verify"},
		{name: "tlog log index", change: func(m map[string]any) {
			tlogEntry(m)["logIndex"] = "598151087"
		}, msg: "transparency log entry does not verify"},
		{name: "tlog inclusion proof hash", change: func(m map[string]any) {
			hs := tlogEntry(m)["inclusionProof"].(map[string]any)["hashes"].([]any)
			h, _ := base64.StdEncoding.DecodeString(hs[3].(string))
			h[0] ^= 1
			hs[3] = base64.StdEncoding.EncodeToString(h)
		}, msg: "transparency log entry does not verify"},
		{name: "tlog checkpoint", change: func(m map[string]any) {
			cp := tlogEntry(m)["inclusionProof"].(map[string]any)["checkpoint"].(map[string]any)
			cp["envelope"] = strings.Replace(cp["envelope"].(string), "476246825\n", "476246826\n", 1)
		}, msg: "transparency log entry does not verify"},
		{name: "tlog signed entry timestamp", change: func(m map[string]any) {
			ip := tlogEntry(m)["inclusionPromise"].(map[string]any)
			s, _ := base64.StdEncoding.DecodeString(ip["signedEntryTimestamp"].(string))
			s[len(s)-1] ^= 1
			ip["signedEntryTimestamp"] = base64.StdEncoding.EncodeToString(s)
		}, msg: "transparency log entry does not verify"},
		{name: "tlog body", change: func(m map[string]any) {
			e := tlogEntry(m)
			body, _ := base64.StdEncoding.DecodeString(e["canonicalizedBody"].(string))
			body = bytes.Replace(body, []byte(`"value":"1dc6`), []byte(`"value":"0dc6`), 1)
			e["canonicalizedBody"] = base64.StdEncoding.EncodeToString(body)
		}, msg: "transparency log entry does not verify"},
		{name: "tlog without signed entry timestamp", change: func(m map[string]any) {
			// The inclusion proof alone proves logging but not when: with no
			// trusted RFC 3161 timestamp, nothing dates the certificate.
			delete(tlogEntry(m), "inclusionPromise")
		}, msg: "no trusted timestamp"},
		{name: "no tlog entries", change: func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["tlogEntries"] = []any{}
		}, msg: "transparency log entry does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trust, m := good, vectorJSON(t)
			if tc.trust != nil {
				trust = tc.trust(trust)
			}
			if tc.change != nil {
				tc.change(m)
			}
			res, _, err := verifyKeylessJSON(t, m, trust)
			if err == nil {
				t.Fatalf("verified as %q, want refused", res.Signer)
			}
			t.Log(err)
			wantSignatureError(t, err, tc.msg)
		})
	}
}

// mixedRoot builds a trusted root from parts of the public-good root and of
// a fresh virtual Sigstore, through its JSON form.
func mixedRoot(t *testing.T, pick func(*root.TrustedRoot, *ca.VirtualSigstore) ([]root.CertificateAuthority, map[string]*root.TransparencyLog, map[string]*root.TransparencyLog)) *SigstoreRoot {
	t.Helper()
	pg, err := root.NewTrustedRootFromPath(publicGood)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	cas, ct, rekor := pick(pg, vs)
	return rootFrom(t, cas, ct, rekor)
}

func rootFrom(t *testing.T, cas []root.CertificateAuthority, ct, rekor map[string]*root.TransparencyLog) *SigstoreRoot {
	t.Helper()
	for _, l := range rekor {
		// The virtual Sigstore's logs are valid only around now; the vector
		// is from 2025.
		l.ValidityPeriodStart, l.ValidityPeriodEnd = time.Unix(1600000000, 0), time.Time{}
	}
	sr, err := ParseSigstoreRoot(rootJSON(t, cas, ct, nil, rekor))
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

// rootJSON writes a trusted root as an operator would supply it.
func rootJSON(t *testing.T, cas []root.CertificateAuthority, ct map[string]*root.TransparencyLog, tsas []root.TimestampingAuthority, rekor map[string]*root.TransparencyLog) []byte {
	t.Helper()
	for _, logs := range []map[string]*root.TransparencyLog{ct, rekor} {
		for _, l := range logs {
			// The virtual Sigstore names its logs by the hex of the key
			// digest; a trusted root holds the digest itself.
			if id, err := hex.DecodeString(string(l.ID)); err == nil && len(id) == 32 {
				l.ID = id
			}
		}
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, ct, tsas, rekor)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func otherLeaf(t *testing.T) []byte {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := vs.GenerateLeafCert(vectorSAN, vectorIssuer)
	if err != nil {
		t.Fatal(err)
	}
	return c.Raw
}

func TestLoadSigstoreRoot(t *testing.T) {
	if _, err := LoadSigstoreRoot(publicGood); err != nil {
		t.Fatalf("public-good root: %v", err)
	}
	pg := map[string]any{}
	raw, _ := os.ReadFile(publicGood)
	json.Unmarshal(raw, &pg)
	without := func(key string) []byte {
		m := map[string]any{}
		for k, v := range pg {
			if k != key {
				m[k] = v
			}
		}
		b, _ := json.Marshal(m)
		return b
	}
	for name, tc := range map[string]struct {
		data []byte
		msg  string
	}{
		"not JSON":      {[]byte("{"), "sigstore trusted root"},
		"empty":         {[]byte("{}"), "sigstore trusted root"},
		"no Fulcio CAs": {without("certificateAuthorities"), "no Fulcio"},
		"no Rekor logs": {without("tlogs"), "no Rekor"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseSigstoreRoot(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.msg)
			}
		})
	}
	if _, err := LoadSigstoreRoot(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}

func TestKeylessIdentityValidate(t *testing.T) {
	for _, tc := range []struct {
		id  KeylessIdentity
		err string
	}{
		{KeylessIdentity{SAN: "a@b.c", Issuer: "https://i"}, ""},
		{KeylessIdentity{SANRegexp: `.+@b\.c`, Issuer: "https://i"}, ""},
		{KeylessIdentity{Issuer: "https://i"}, "san or san_regexp is required"},
		{KeylessIdentity{SAN: "a@b.c", SANRegexp: "a", Issuer: "https://i"}, "not both"},
		{KeylessIdentity{SAN: "a@b.c"}, "issuer is required"},
		{KeylessIdentity{SANRegexp: "(", Issuer: "https://i"}, "san_regexp"},
	} {
		err := tc.id.Validate()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: got %v, want %q", tc.id, err, tc.err)
		}
	}
}

// TestKeylessEndToEnd signs a model directory keylessly with a virtual
// Sigstore (its own Fulcio CA, Rekor key and TSA, real signatures), writes
// its trusted root as JSON, and verifies signature and files with Verify.
func TestKeylessEndToEnd(t *testing.T) {
	const san, issuer = "builder@example.com", "https://issuer.example.com"
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("weights weights weights"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "vocab.txt"), []byte("a\nb\n"), 0o644)
	payload := statementFor(t, dir)
	os.WriteFile(filepath.Join(dir, SignatureFile), keylessBundle(t, vs, san, issuer, payload, true), 0o644)

	// The operator's trusted_root.json: this deployment has no CT log, so
	// no SCT is required.
	rootPath := filepath.Join(t.TempDir(), "trusted_root.json")
	os.WriteFile(rootPath, rootJSON(t, vs.FulcioCertificateAuthorities(), nil, vs.TimestampingAuthorities(), vs.RekorLogs()), 0o644)
	sr, err := LoadSigstoreRoot(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	trust := Trust{Sigstore: sr, KeylessIdentities: []KeylessIdentity{{SAN: san, Issuer: issuer}}}

	res, err := Verify(dir, trust, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != MethodSigstore || res.Signer != "sigstore builder@example.com (issuer https://issuer.example.com)" || len(res.Resources) != 2 {
		t.Errorf("got %+v", res)
	}
	if want := []string{"email:" + san, "issuer:" + issuer}; !slices.Equal(res.Identities, want) {
		t.Errorf("identities %q, want %q", res.Identities, want)
	}

	// Files are checked after the signature, as for the other methods.
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("weights weights weighTs"), 0o644)
	_, err = Verify(dir, trust, Options{})
	wantFile(t, err, "model.onnx", "has changed")
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("weights weights weights"), 0o644)
	os.WriteFile(filepath.Join(dir, "extra.bin"), []byte("x"), 0o644)
	_, err = Verify(dir, trust, Options{})
	wantFile(t, err, "extra.bin", "not covered")
	os.Remove(filepath.Join(dir, "extra.bin"))

	// Another signer of the same deployment is refused.
	other := trust
	other.KeylessIdentities = []KeylessIdentity{{SAN: "someone@example.com", Issuer: issuer}}
	_, err = Verify(dir, other, Options{})
	wantSignatureError(t, err, "builder@example.com (issuer https://issuer.example.com) is not an allowed keyless identity")
	// So is the public-good root, and keys alone.
	other = trust
	other.Sigstore = publicGoodRoot(t)
	_, err = Verify(dir, other, Options{})
	wantSignatureError(t, err, "transparency log entry does not verify")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = Verify(dir, Trust{Keys: []crypto.PublicKey{key.Public()}}, Options{})
	wantSignatureError(t, err, "no Sigstore trusted root")

	if _, err := Verify(dir, trust, Options{}); err != nil {
		t.Fatalf("restored model: %v", err)
	}

	// A bundle dated only by its RFC 3161 timestamp (no signed entry
	// timestamp) verifies: the parsed bundle keeps its raw bytes, so its
	// timestampVerificationData reaches sigstore-go.
	tsaOnly := keylessBundle(t, vs, san, issuer, payload, false)
	if _, _, _, err := verifyKeyless(tsaOnly, sr, trust.KeylessIdentities); err != nil {
		t.Errorf("TSA-dated bundle, raw: %v", err)
	}
	os.WriteFile(filepath.Join(dir, SignatureFile), tsaOnly, 0o644)
	if _, err := Verify(dir, trust, Options{}); err != nil {
		t.Errorf("TSA-dated bundle through Verify: %v", err)
	}
}

func wantFile(t *testing.T, err error, file, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Check != "file" || e.File != file || !strings.Contains(e.Msg, msg) {
		t.Errorf("got %v, want file %s: %s", err, file, msg)
	}
}

// statementFor is the OMS statement of dir, as Sign writes it.
func statementFor(t *testing.T, dir string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, err := Sign(dir, key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	payload, _, err := b.payloadAndSig()
	if err != nil {
		t.Fatal(err)
	}
	return payload
}

// keylessBundle signs payload as the reference tool's sigstore method does:
// a DSSE envelope signed with a Fulcio certificate's key, logged in Rekor
// (dsse entry, signed entry timestamp and inclusion proof), and an RFC 3161
// timestamp.
func keylessBundle(t *testing.T, vs *ca.VirtualSigstore, san, issuer string, payload []byte, promise bool) []byte {
	t.Helper()
	ent, err := vs.AttestAtTime(san, issuer, payload, time.Now().Add(time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	entries, _ := ent.TlogEntries()
	tle := proto.Clone(entries[0].TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := vs.RekorSignPayload(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime,
		LogIndex:       tle.LogIndex,
		LogID:          hex.EncodeToString(tle.LogId.KeyId),
	})
	if err != nil {
		t.Fatal(err)
	}
	if promise {
		tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	}
	tsrs, _ := ent.Timestamps()
	var stamps []*protocommon.RFC3161SignedTimestamp
	for _, ts := range tsrs {
		stamps = append(stamps, &protocommon.RFC3161SignedTimestamp{SignedTimestamp: ts})
	}
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries:               []*protorekor.TransparencyLogEntry{tle},
			TimestampVerificationData: &protobundle.TimestampVerificationData{Rfc3161Timestamps: stamps},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: PayloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	out, err := protojson.Marshal(pb)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzVerifyKeyless: whatever is changed in the vector, verification never
// panics, and anything it accepts carries the signed statement.
func FuzzVerifyKeyless(f *testing.F) {
	raw, err := os.ReadFile(vectorBundle)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(bytes.Replace(raw, []byte("1760062340"), []byte("1760062341"), 1))
	trust := vectorTrust(f)
	b, err := ParseBundle(raw)
	if err != nil {
		f.Fatal(err)
	}
	_, want, err := b.verifySignature(trust)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(data)
		if err != nil {
			return
		}
		_, got, err := b.verifySignature(trust)
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("accepted a different statement: %+v", got)
		}
		var e *Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("error %v is not a *modelsig.Error", err)
		}
	})
}
