package modelsig_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/seal"
	"github.com/aegis-inference/aegis/internal/servertest"
)

func vectors(t *testing.T) string {
	return filepath.Join(servertest.RepoRoot(t), "testdata", "model-signing")
}

func readPub(t *testing.T, name string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectors(t), "keys", "certificate", name))
	if err != nil {
		t.Fatal(err)
	}
	k, err := modelsig.ParsePublicKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func caRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectors(t), "keys", "certificate", "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("no CA certificate")
	}
	return p
}

// copyDir copies a vector directory so tests can change it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return dst
}

func TestReferenceSignaturesVerify(t *testing.T) {
	trust := modelsig.Trust{Keys: []crypto.PublicKey{readPub(t, "signing-key-pub.pem")}, Roots: caRoots(t)}
	for _, tc := range []struct {
		dir    string
		method modelsig.Method
		signer string
	}{
		{"v1.0.1-elliptic-key", modelsig.MethodKey, "key sha256:"},
		{"v1.0.1-certificate", modelsig.MethodCertificate, "certificate "},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			res, err := modelsig.Verify(filepath.Join(vectors(t), tc.dir), trust, modelsig.Options{IgnorePaths: []string{"ignore-me"}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Method != tc.method || !strings.HasPrefix(res.Signer, tc.signer) || len(res.Resources) != 2 {
				t.Errorf("got %+v", res)
			}
			// Without ignoring ignore-me, it is an unsigned file.
			_, err = modelsig.Verify(filepath.Join(vectors(t), tc.dir), trust, modelsig.Options{})
			wantFileError(t, err, "ignore-me", "not covered")
		})
	}
}

func wantFileError(t *testing.T, err error, file, msg string) {
	t.Helper()
	var e *modelsig.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want a *modelsig.Error about %s", err, file)
	}
	if e.File != file || !strings.Contains(e.Msg, msg) {
		t.Errorf("got %q, want file %q and %q", err, file, msg)
	}
}

func wantCheck(t *testing.T, err error, check, msg string) {
	t.Helper()
	var e *modelsig.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want a *modelsig.Error (%s)", err, check)
	}
	if e.Check != check || !strings.Contains(e.Error(), msg) {
		t.Errorf("got %q, want check %q mentioning %q", err, check, msg)
	}
}

// TestTamperedModelsRefused changes the reference models every way the
// issue lists and checks each is refused with a precise error.
func TestTamperedModelsRefused(t *testing.T) {
	trust := modelsig.Trust{Keys: []crypto.PublicKey{readPub(t, "signing-key-pub.pem")}, Roots: caRoots(t)}
	opts := modelsig.Options{IgnorePaths: []string{"ignore-me"}}
	for _, vec := range []string{"v1.0.1-elliptic-key", "v1.0.1-certificate"} {
		src := filepath.Join(vectors(t), vec)
		for _, f := range []string{"signme-1", "signme-2"} {
			for _, pos := range []int{0, 3, -1} {
				dir := copyDir(t, src)
				b, _ := os.ReadFile(filepath.Join(dir, f))
				if pos < 0 {
					pos = len(b) - 1
				}
				b[pos] ^= 0x01
				os.WriteFile(filepath.Join(dir, f), b, 0o644)
				_, err := modelsig.Verify(dir, trust, opts)
				wantFileError(t, err, f, "has changed")
			}
		}
		dir := copyDir(t, src)
		os.WriteFile(filepath.Join(dir, "extra.bin"), []byte("x"), 0o644)
		_, err := modelsig.Verify(dir, trust, opts)
		wantFileError(t, err, "extra.bin", "not covered")
		// ...unless unsigned files are allowed.
		if _, err := modelsig.Verify(dir, trust, modelsig.Options{IgnorePaths: []string{"ignore-me"}, AllowUnsigned: true}); err != nil {
			t.Errorf("%s with an allowed unsigned file: %v", vec, err)
		}

		dir = copyDir(t, src)
		os.Remove(filepath.Join(dir, "signme-2"))
		_, err = modelsig.Verify(dir, trust, opts)
		wantFileError(t, err, "signme-2", "missing")
	}
	// A signature by another key.
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, err := modelsig.Verify(filepath.Join(vectors(t), "v1.0.1-elliptic-key"), modelsig.Trust{Keys: []crypto.PublicKey{&other.PublicKey}}, opts)
	wantCheck(t, err, "signature", "not made by any trusted key")
	// A certificate from another CA.
	otherCA := x509.NewCertPool()
	otherCA.AddCert(selfSigned(t))
	_, err = modelsig.Verify(filepath.Join(vectors(t), "v1.0.1-certificate"), modelsig.Trust{Roots: otherCA}, opts)
	wantCheck(t, err, "signature", "trusted root")
	// A key bundle when only certificates are trusted, and vice versa.
	_, err = modelsig.Verify(filepath.Join(vectors(t), "v1.0.1-elliptic-key"), modelsig.Trust{Roots: caRoots(t)}, opts)
	wantCheck(t, err, "signature", "no trusted public keys")
}

func selfSigned(t *testing.T) *x509.Certificate {
	t.Helper()
	dir := t.TempDir()
	if err := keys.GenerateSigningKey(filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	signer, _ := keys.LoadSigningKey(filepath.Join(dir, "k.pem"))
	tmpl := &x509.Certificate{SerialNumber: bigOne(), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// signedDir makes a model directory and signs it with a new key.
func signedDir(t *testing.T) (dir string, signer crypto.Signer) {
	t.Helper()
	kd := t.TempDir()
	if err := keys.GenerateSigningKey(filepath.Join(kd, "sign.pem"), filepath.Join(kd, "sign.pub")); err != nil {
		t.Fatal(err)
	}
	signer, err := keys.LoadSigningKey(filepath.Join(kd, "sign.pem"))
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "7")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("weights weights weights"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "vocab.txt"), []byte("a\nb\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "a-b"), []byte("order"), 0o644)
	os.MkdirAll(filepath.Join(dir, ".git"), 0o755)
	os.WriteFile(filepath.Join(dir, ".git", "HEAD"), []byte("ref"), 0o644)
	return dir, signer
}

// TestSignVerifyAndSchemas signs with Aegis, verifies, and validates the
// bundle, envelope, statement and predicate against the OMS JSON schemas.
func TestSignVerifyAndSchemas(t *testing.T) {
	dir, signer := signedDir(t)
	b, err := modelsig.Sign(dir, signer, modelsig.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, modelsig.SignatureFile), b, 0o644)
	res, err := modelsig.Verify(dir, modelsig.Trust{Keys: []crypto.PublicKey{signer.Public()}}, modelsig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range res.Resources {
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "a-b,model.onnx,sub/vocab.txt" {
		t.Errorf("resources %v, want code-point order without .git", names)
	}

	var bundle map[string]any
	json.Unmarshal(b, &bundle)
	env := bundle["dsseEnvelope"].(map[string]any)
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	var statement map[string]any
	json.Unmarshal(payload, &statement)
	schemas := filepath.Join(vectors(t), "oms-spec", "schemas", "v1.0")
	c := jsonschema.NewCompiler()
	// The schemas refer to each other by their $id URLs: register each
	// under its own, so nothing is fetched.
	ids := map[string]string{}
	for _, name := range []string{"bundle.schema.json", "envelope.schema.json", "statement.schema.json", "predicate.schema.json"} {
		f, err := os.Open(filepath.Join(schemas, name))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			id = "file://" + filepath.Join(schemas, name)
		}
		ids[name] = id
		if err := c.AddResource(id, doc); err != nil {
			t.Fatal(err)
		}
	}
	for name, doc := range map[string]any{
		"bundle.schema.json":    bundle,
		"envelope.schema.json":  env,
		"statement.schema.json": statement,
		"predicate.schema.json": statement["predicate"],
	} {
		sch, err := c.Compile(ids[name])
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		if err := sch.Validate(roundTrip(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The spec's own valid and invalid examples, as a check on the schemas.
	sch, _ := c.Compile(ids["bundle.schema.json"])
	for _, f := range []string{"valid/key.bundle.json", "invalid/missing-envelope.bundle.json"} {
		raw, _ := os.ReadFile(filepath.Join(vectors(t), "oms-spec", "test-vectors", "v1.0", f))
		var doc any
		json.Unmarshal(raw, &doc)
		err := sch.Validate(doc)
		if strings.HasPrefix(f, "valid") != (err == nil) {
			t.Errorf("%s: schema says %v", f, err)
		}
	}
}

func roundTrip(v any) any {
	b, _ := json.Marshal(v)
	var out any
	json.Unmarshal(b, &out)
	return out
}

// TestRootDigestMismatchRefused: a correctly signed statement whose
// resources do not hash to its subject is refused.
func TestRootDigestMismatchRefused(t *testing.T) {
	dir, signer := signedDir(t)
	b, err := modelsig.Sign(dir, signer, modelsig.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var bundle modelsig.Bundle
	json.Unmarshal(b, &bundle)
	payload, _ := base64.StdEncoding.DecodeString(bundle.DSSEEnvelope.Payload)
	var st modelsig.Statement
	json.Unmarshal(payload, &st)
	st.Subject[0].Digest["sha256"] = strings.Repeat("0", 64)
	payload, _ = json.Marshal(st)
	bundle.DSSEEnvelope.Payload = base64.StdEncoding.EncodeToString(payload)
	bundle.DSSEEnvelope.Signatures[0].Sig = base64.StdEncoding.EncodeToString(resign(t, signer, payload))
	b, _ = json.Marshal(bundle)
	os.WriteFile(filepath.Join(dir, modelsig.SignatureFile), b, 0o644)
	_, err = modelsig.Verify(dir, modelsig.Trust{Keys: []crypto.PublicKey{signer.Public()}}, modelsig.Options{})
	wantCheck(t, err, "root digest", "do not")
	// And a payload changed after signing fails the signature.
	bundle.DSSEEnvelope.Payload = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte("model.onnx"), []byte("model.onnz"), 1))
	b, _ = json.Marshal(bundle)
	os.WriteFile(filepath.Join(dir, modelsig.SignatureFile), b, 0o644)
	_, err = modelsig.Verify(dir, modelsig.Trust{Keys: []crypto.PublicKey{signer.Public()}}, modelsig.Options{})
	wantCheck(t, err, "signature", "does not verify")
}

func resign(t *testing.T, signer crypto.Signer, payload []byte) []byte {
	t.Helper()
	h := sha256Sum(modelsig.PAE(modelsig.PayloadType, payload))
	sig, err := signer.Sign(rand.Reader, h, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestEncryptedFileStandsForPlaintext: a model signed in plaintext and then
// encrypted still verifies, its .age file standing for the plaintext.
func TestEncryptedFileStandsForPlaintext(t *testing.T) {
	dir, signer := signedDir(t)
	b, err := modelsig.Sign(dir, signer, modelsig.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, modelsig.SignatureFile), b, 0o644)
	idPath := filepath.Join(t.TempDir(), "id.txt")
	g, _ := keys.GenerateIdentityFile(idPath)
	custody, _ := keys.LoadIdentityFile(idPath)
	r, _ := keys.ParseRecipient(g.Recipient)
	plain := filepath.Join(dir, "model.onnx")
	if err := seal.EncryptFile(plain, plain+".age", r); err != nil {
		t.Fatal(err)
	}
	os.Remove(plain)
	trust := modelsig.Trust{Keys: []crypto.PublicKey{signer.Public()}}
	_, err = modelsig.Verify(dir, trust, modelsig.Options{})
	wantFileError(t, err, "model.onnx", "no key")
	decrypt := func(path string) (io.ReadCloser, error) {
		p, err := seal.DecryptFile(path, custody.Identity(), 0)
		if err != nil {
			return nil, err
		}
		return wiping{bytes.NewReader(p.Bytes()), p}, nil
	}
	if _, err := modelsig.Verify(dir, trust, modelsig.Options{Source: modelsig.Source{Decrypt: decrypt}}); err != nil {
		t.Fatalf("encrypted model: %v", err)
	}
	// Both the plaintext and its encrypted form present is ambiguous.
	os.WriteFile(plain, []byte("weights weights weights"), 0o644)
	_, err = modelsig.Verify(dir, trust, modelsig.Options{Source: modelsig.Source{Decrypt: decrypt}})
	wantFileError(t, err, "model.onnx", "both")
}

type wiping struct {
	*bytes.Reader
	p *seal.Plaintext
}

func (w wiping) Close() error { w.p.Wipe(); return nil }

func TestMalformedBundles(t *testing.T) {
	for name, raw := range map[string]string{
		"not JSON":         "{",
		"wrong media type": `{"mediaType":"application/json","dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","signatures":[{"sig":""}]},"verificationMaterial":{"publicKey":{"hint":"x"}}}`,
		"no envelope":      `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"x"}}}`,
		"two materials":    `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","signatures":[{"sig":""}]},"verificationMaterial":{"publicKey":{"hint":"x"},"certificate":{"rawBytes":""}}}`,
		"two signatures":   `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","signatures":[{"sig":""},{"sig":""}]},"verificationMaterial":{"publicKey":{"hint":"x"}}}`,
	} {
		if _, err := modelsig.ParseBundle([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, f := range []string{"empty", "missing-envelope", "missing-verification-material"} {
		raw, _ := os.ReadFile(filepath.Join(vectors(t), "oms-spec", "test-vectors", "v1.0", "invalid", f+".bundle.json"))
		if _, err := modelsig.ParseBundle(raw); err == nil {
			t.Errorf("spec invalid vector %s: accepted", f)
		}
	}
}

func FuzzParseBundle(f *testing.F) {
	raw, _ := os.ReadFile("../../testdata/model-signing/v1.0.1-elliptic-key/model.sig")
	f.Add(raw)
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := modelsig.ParseBundle(b)
		if err != nil {
			return
		}
		if _, err := bu.Method(); err != nil {
			t.Fatalf("parsed bundle without a method: %v", err)
		}
	})
}
