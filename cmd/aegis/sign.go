package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"filippo.io/age"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/modelsig"
	"github.com/aegis-inference/aegis/internal/seal"
)

// plaintextSource lets signing and verification read encrypted files with
// the identity in idPath (none: encrypted files cannot be read).
func plaintextSource(idPath string) (modelsig.Source, error) {
	if idPath == "" {
		return modelsig.Source{}, nil
	}
	c, err := keys.LoadIdentityFile(idPath)
	if err != nil {
		return modelsig.Source{}, err
	}
	return modelsig.Source{Decrypt: func(path string) (io.ReadCloser, error) {
		p, err := seal.DecryptFile(path, c.Identity(), 0)
		if err != nil {
			return nil, err
		}
		return &wiping{Reader: bytes.NewReader(p.Bytes()), p: p}, nil
	}}, nil
}

type wiping struct {
	*bytes.Reader
	p *seal.Plaintext
}

func (w *wiping) Close() error { w.p.Wipe(); return nil }

func modelSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("model sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "ECDSA P-256 or P-384 private key `file` (PEM, mode 0600)")
	idPath := fs.String("identity-file", "", "age identity, to sign encrypted files by their plaintext")
	var ignore stringList
	fs.Var(&ignore, "ignore", "path to leave out of the signature (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *key == "" || fs.NArg() != 1 {
		return errors.New("usage: aegis model sign --key KEY.pem [--ignore PATH] DIR")
	}
	dir := fs.Arg(0)
	signer, err := keys.LoadSigningKey(*key)
	if err != nil {
		return fmt.Errorf("model sign: %w", err)
	}
	src, err := plaintextSource(*idPath)
	if err != nil {
		return fmt.Errorf("model sign: %w", err)
	}
	b, err := modelsig.Sign(dir, signer, modelsig.SignOptions{IgnorePaths: ignore, Source: src})
	if err != nil {
		return fmt.Errorf("model sign: %w", err)
	}
	out := filepath.Join(dir, modelsig.SignatureFile)
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(stdout, out)
	return nil
}

func modelVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("model verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keyFiles, caFiles, ignore stringList
	fs.Var(&keyFiles, "key", "trusted public key `file` (PEM; repeatable)")
	fs.Var(&caFiles, "ca", "trusted CA certificate `file` (PEM; repeatable)")
	fs.Var(&ignore, "ignore", "path to leave out (repeatable)")
	idPath := fs.String("identity-file", "", "age identity, to verify encrypted files")
	allowUnsigned := fs.Bool("allow-unsigned-files", false, "accept files the signature does not list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (len(keyFiles) == 0 && len(caFiles) == 0) {
		return errors.New("usage: aegis model verify (--key PUB.pem | --ca CA.pem) [--ignore PATH] DIR")
	}
	var trust modelsig.Trust
	for _, f := range keyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		k, err := modelsig.ParsePublicKeyPEM(b)
		if err != nil {
			return fmt.Errorf("--key %s: %w", f, err)
		}
		trust.Keys = append(trust.Keys, k)
	}
	if len(caFiles) > 0 {
		trust.Roots = x509.NewCertPool()
		for _, f := range caFiles {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if !trust.Roots.AppendCertsFromPEM(b) {
				return fmt.Errorf("--ca %s: no PEM certificate", f)
			}
		}
	}
	src, err := plaintextSource(*idPath)
	if err != nil {
		return err
	}
	res, err := modelsig.Verify(fs.Arg(0), trust, modelsig.Options{IgnorePaths: ignore, AllowUnsigned: *allowUnsigned, Source: src})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "verified: %s signature by %s\nmanifest sha256 %s, %d resources\n", res.Method, res.Signer, res.RootDigest, len(res.Resources))
	return nil
}

// modelInspect shows what a model directory holds without decrypting it:
// file digests (of the stored bytes), the signature's signer material and
// manifest, and each encrypted file's recipient stanzas.
func modelInspect(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: aegis model inspect DIR")
	}
	dir := args[0]
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	fmt.Fprintf(stdout, "files (sha256 of stored bytes):\n")
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  %s  %s (%d bytes)\n", hexSum(b), n, len(b))
		if strings.HasSuffix(n, seal.Suffix) {
			hdr, err := age.ExtractHeader(bytes.NewReader(b))
			if err != nil {
				fmt.Fprintf(stdout, "    not a valid age file: %v\n", err)
				continue
			}
			for _, line := range strings.Split(string(hdr), "\n") {
				if f := strings.Fields(strings.TrimPrefix(line, "-> ")); strings.HasPrefix(line, "-> ") && len(f) > 0 {
					desc := f[0]
					if strings.HasPrefix(f[0], "ssh-") && len(f) > 1 {
						desc += " key tag " + f[1]
					}
					fmt.Fprintf(stdout, "    encrypted for: %s recipient\n", desc)
				}
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, modelsig.SignatureFile))
	if err != nil {
		fmt.Fprintf(stdout, "signature: none\n")
		return nil
	}
	b, err := modelsig.ParseBundle(raw)
	if err != nil {
		fmt.Fprintf(stdout, "signature: %v\n", err)
		return nil
	}
	m, _ := b.Method()
	fmt.Fprintf(stdout, "signature: %s method (not verified; use aegis model verify)\n", m)
	if pk := b.VerificationMaterial.PublicKey; pk != nil && pk.Hint != "" {
		fmt.Fprintf(stdout, "  key hint sha256:%s\n", pk.Hint)
	}
	if st, err := b.UnverifiedStatement(); err == nil {
		fmt.Fprintf(stdout, "  manifest sha256 %s\n", st.Subject[0].Digest["sha256"])
		for _, r := range st.Predicate.Resources {
			fmt.Fprintf(stdout, "  %s  %s (%s)\n", r.Digest, r.Name, r.Algorithm)
		}
	}
	return nil
}

func hexSum(b []byte) string {
	h := crypto.SHA256.New()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
