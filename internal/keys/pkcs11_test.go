package keys

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/ssh"

	"github.com/aegis-inference/aegis/internal/seal"
)

// These tests run against a real SoftHSM2 token that each test creates in
// its own directory with scripts/softhsm-init.sh: nothing outside it, and no
// global SoftHSM configuration, is read or written.

const (
	testPINEnv  = "AEGIS_TEST_PKCS11_PIN"
	testUserPIN = "user-pin-5829"
	testSOPIN   = "so-pin-7741"
)

// softHSMModules are where Debian's libsofthsm2 installs the module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// newSoftHSM creates a token labelled label in a new directory, points
// SOFTHSM2_CONF at it for this test, sets the PIN variable, and returns a
// config for key "model-key" on it. It fails, never skips, when SoftHSM2
// is not installed.
func newSoftHSM(t *testing.T, label string) PKCS11Config {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatal("softhsm2-util not found: install the Debian package softhsm2 (scripts/install-deps.sh)")
	}
	module := ""
	for _, m := range softHSMModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	if module == "" {
		t.Fatalf("SoftHSM2 PKCS#11 module not found at %v: install the Debian package softhsm2 (scripts/install-deps.sh)", softHSMModules)
	}
	dir := filepath.Join(t.TempDir(), "softhsm")
	cmd := exec.Command("../../scripts/softhsm-init.sh", dir)
	cmd.Env = append(os.Environ(),
		"SOFTHSM_TOKEN_LABEL="+label, "SOFTHSM_SO_PIN="+testSOPIN, "SOFTHSM_USER_PIN="+testUserPIN)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("softhsm-init.sh: %v\n%s", err, stderrOf(err))
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if !strings.Contains(string(out), "SOFTHSM2_CONF=") {
		t.Fatalf("softhsm-init.sh printed %q, want an export of SOFTHSM2_CONF", out)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv(testPINEnv, testUserPIN)
	return PKCS11Config{
		Module:     module,
		TokenLabel: label,
		KeyLabel:   "model-key",
		PINEnv:     testPINEnv,
		Mechanism:  MechanismRSAX509,
	}
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// openTestCustody creates a token, generates the key on it and opens it.
func openTestCustody(t *testing.T) (*PKCS11Custody, PKCS11Config) {
	t.Helper()
	cfg := newSoftHSM(t, "aegis-test")
	g, err := GeneratePKCS11Key(cfg, 2048)
	if err != nil {
		t.Fatalf("GeneratePKCS11Key: %v", err)
	}
	c, err := OpenPKCS11(cfg)
	if err != nil {
		t.Fatalf("OpenPKCS11: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if got := c.Recipient(); got != g.Recipient {
		t.Fatalf("Recipient() = %q, want the generated %q", got, g.Recipient)
	}
	return c, cfg
}

func TestPKCS11DecryptsAgeFiles(t *testing.T) {
	c, cfg := openTestCustody(t)
	plain := bytes.Repeat([]byte("aegis model bytes "), 5000)
	dir := t.TempDir()
	in := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(in, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	rcpt := c.Recipient()
	if !strings.HasPrefix(rcpt, "ssh-rsa AAAA") {
		t.Fatalf("Recipient() = %q, want an ssh-rsa public key", rcpt)
	}

	t.Run("age CLI, -r ssh-rsa", func(t *testing.T) {
		if _, err := exec.LookPath("age"); err != nil {
			t.Fatal("age not found: install the Debian package age (scripts/install-deps.sh)")
		}
		out := filepath.Join(dir, "cli.onnx.age")
		if b, err := exec.Command("age", "-r", rcpt, "-o", out, in).CombinedOutput(); err != nil {
			t.Fatalf("age -r: %v\n%s", err, b)
		}
		p, err := seal.DecryptFile(out, c.Identity(), 0)
		if err != nil {
			t.Fatalf("DecryptFile: %v", err)
		}
		defer p.Wipe()
		if !bytes.Equal(p.Bytes(), plain) {
			t.Fatalf("got %d bytes of plaintext, want the %d encrypted", len(p.Bytes()), len(plain))
		}
		if p.SHA256() != sha256.Sum256(plain) {
			t.Error("SHA256() does not match the plaintext")
		}
	})

	t.Run("age CLI, -R recipients file", func(t *testing.T) {
		rf := filepath.Join(dir, "recipients.txt")
		if err := os.WriteFile(rf, []byte("# aegis model key\n"+rcpt+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "cli-R.onnx.age")
		if b, err := exec.Command("age", "-R", rf, "-o", out, in).CombinedOutput(); err != nil {
			t.Fatalf("age -R: %v\n%s", err, b)
		}
		p, err := seal.DecryptFile(out, c.Identity(), 0)
		if err != nil {
			t.Fatalf("DecryptFile: %v", err)
		}
		defer p.Wipe()
		if !bytes.Equal(p.Bytes(), plain) {
			t.Fatal("plaintext differs")
		}
	})

	t.Run("Go agessh recipient", func(t *testing.T) {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rcpt))
		if err != nil {
			t.Fatal(err)
		}
		r, err := agessh.NewRSARecipient(pk)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := seal.Encrypt(&buf, bytes.NewReader(plain), r); err != nil {
			t.Fatal(err)
		}
		p, err := seal.Decrypt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c.Identity())
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		defer p.Wipe()
		if !bytes.Equal(p.Bytes(), plain) {
			t.Fatal("plaintext differs")
		}
	})

	t.Run("among other recipients", func(t *testing.T) {
		x, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		other := otherRSARecipient(t)
		var buf bytes.Buffer
		if err := seal.Encrypt(&buf, bytes.NewReader(plain), x.Recipient(), other, c.AgeRecipient()); err != nil {
			t.Fatal(err)
		}
		p, err := seal.Decrypt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c.Identity())
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		p.Wipe()
	})

	t.Run("concurrent unwraps", func(t *testing.T) {
		var buf bytes.Buffer
		if err := seal.Encrypt(&buf, bytes.NewReader(plain), c.AgeRecipient()); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 8 {
			wg.Go(func() {
				for range 3 {
					p, err := seal.Decrypt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c.Identity())
					if err != nil {
						errs <- err
						return
					}
					p.Wipe()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent Decrypt: %v", err)
		}
	})

	t.Run("Describe", func(t *testing.T) {
		d := c.Describe()
		for _, want := range []string{cfg.Module, cfg.TokenLabel, cfg.KeyLabel} {
			if !strings.Contains(d, want) {
				t.Errorf("Describe() = %q, want it to name %q", d, want)
			}
		}
		if strings.Contains(d, testUserPIN) || strings.Contains(d, testPINEnv) {
			t.Errorf("Describe() = %q reveals the PIN or its variable", d)
		}
	})
}

// otherRSARecipient is an ssh-rsa recipient whose key is not on the token.
func otherRSARecipient(t *testing.T) age.Recipient {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id, err := agessh.NewRSAIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient()
}

func TestPKCS11PrivateKeyStaysOnToken(t *testing.T) {
	c, _ := openTestCustody(t)
	ctx, s, key := c.tok.mod.ctx, c.tok.login, c.key

	for _, tc := range []struct {
		name string
		typ  uint
		want bool
	}{
		{"CKA_SENSITIVE", pkcs11.CKA_SENSITIVE, true},
		{"CKA_ALWAYS_SENSITIVE", pkcs11.CKA_ALWAYS_SENSITIVE, true},
		{"CKA_EXTRACTABLE", pkcs11.CKA_EXTRACTABLE, false},
		{"CKA_NEVER_EXTRACTABLE", pkcs11.CKA_NEVER_EXTRACTABLE, true},
		{"CKA_PRIVATE", pkcs11.CKA_PRIVATE, true},
		{"CKA_TOKEN", pkcs11.CKA_TOKEN, true},
		{"CKA_DECRYPT", pkcs11.CKA_DECRYPT, true},
		{"CKA_SIGN", pkcs11.CKA_SIGN, false},
		{"CKA_UNWRAP", pkcs11.CKA_UNWRAP, false},
	} {
		got, err := boolAttr(ctx, s, key, tc.typ)
		if err != nil {
			t.Errorf("read %s: %v", tc.name, err)
		} else if got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		typ  uint
	}{
		{"CKA_VALUE", pkcs11.CKA_VALUE},
		{"CKA_PRIVATE_EXPONENT", pkcs11.CKA_PRIVATE_EXPONENT},
		{"CKA_PRIME_1", pkcs11.CKA_PRIME_1},
		{"CKA_PRIME_2", pkcs11.CKA_PRIME_2},
		{"CKA_EXPONENT_1", pkcs11.CKA_EXPONENT_1},
		{"CKA_COEFFICIENT", pkcs11.CKA_COEFFICIENT},
	} {
		if v, err := attr(ctx, s, key, tc.typ); err == nil {
			t.Errorf("read %s: got %d bytes, want an error", tc.name, len(v))
		}
	}

	allowed, err := attr(ctx, s, key, pkcs11.CKA_ALLOWED_MECHANISMS)
	if want := mechanismList(pkcs11.CKM_RSA_X_509); err != nil || !bytes.Equal(allowed, want) {
		t.Errorf("CKA_ALLOWED_MECHANISMS = %x, %v; want %x (CKM_RSA_X_509 only)", allowed, err, want)
	}

	t.Run("cannot be made extractable", func(t *testing.T) {
		err := ctx.SetAttributeValue(s, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true)})
		if err == nil {
			t.Fatal("set CKA_EXTRACTABLE true: accepted")
		}
	})

	t.Run("cannot be wrapped out", func(t *testing.T) {
		wrapKey, err := ctx.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
				pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			})
		if err != nil {
			t.Fatalf("generate AES wrapping key: %v", err)
		}
		defer ctx.DestroyObject(s, wrapKey)
		_, err = ctx.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapKey, key)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_UNEXTRACTABLE)) {
			t.Fatalf("C_WrapKey of the private key: %v, want CKR_KEY_UNEXTRACTABLE", err)
		}
	})

	t.Run("cannot sign", func(t *testing.T) {
		err := ctx.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS, nil)}, key)
		if err == nil {
			ctx.Sign(s, []byte("x"))
			t.Fatal("C_SignInit with the private key: accepted")
		}
		t.Logf("C_SignInit: %v", err)
	})

	t.Run("decrypts only with its mechanism", func(t *testing.T) {
		mech := pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
			pkcs11.NewOAEPParams(pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, pkcs11.CKZ_DATA_SPECIFIED, nil))
		err := ctx.DecryptInit(s, []*pkcs11.Mechanism{mech}, key)
		if err == nil {
			ctx.Decrypt(s, make([]byte, 256))
			t.Fatal("C_DecryptInit with RSA-OAEP-SHA1 on an rsa-x509 key: accepted")
		}
		err = ctx.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, key)
		if err == nil {
			ctx.Decrypt(s, make([]byte, 256))
			t.Fatal("C_DecryptInit with RSA-PKCS1 v1.5 on an rsa-x509 key: accepted")
		}
	})
}

func TestPKCS11UnwrapRefusals(t *testing.T) {
	c, _ := openTestCustody(t)
	fileKey := bytes.Repeat([]byte{0x42}, 16)
	good, err := c.AgeRecipient().Wrap(fileKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := otherRSARecipient(t).Wrap(fileKey)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := age.GenerateX25519Identity()
	x25519, err := x.Recipient().Wrap(fileKey)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(s *age.Stanza)) []*age.Stanza {
		s := *good[0]
		s.Args = append([]string(nil), s.Args...)
		s.Body = append([]byte(nil), s.Body...)
		f(&s)
		return []*age.Stanza{&s}
	}

	got, err := c.Identity().Unwrap(good)
	if err != nil || !bytes.Equal(got, fileKey) {
		t.Fatalf("Unwrap(good stanza) = %x, %v; want %x", got, err, fileKey)
	}

	for _, tc := range []struct {
		name    string
		stanzas []*age.Stanza
		// incorrect: the error must be age.ErrIncorrectIdentity; else it
		// must be some other error.
		incorrect bool
	}{
		{"no stanzas", nil, true},
		{"X25519 stanza", x25519, true},
		{"another RSA key", other, true},
		{"another key's body under our tag", mutate(func(s *age.Stanza) { s.Body = other[0].Body }), true},
		{"body bit flipped", mutate(func(s *age.Stanza) { s.Body[len(s.Body)/2] ^= 1 }), true},
		{"body first byte flipped", mutate(func(s *age.Stanza) { s.Body[0] ^= 0x80 }), true},
		{"body truncated", mutate(func(s *age.Stanza) { s.Body = s.Body[:len(s.Body)-1] }), true},
		{"body extended", mutate(func(s *age.Stanza) { s.Body = append(s.Body, 0) }), true},
		{"body above the modulus", mutate(func(s *age.Stanza) { s.Body = bytes.Repeat([]byte{0xff}, len(s.Body)) }), true},
		{"body zero", mutate(func(s *age.Stanza) { clear(s.Body) }), true},
		{"tag changed", mutate(func(s *age.Stanza) { s.Args[0] = "AAAAAA" }), true},
		{"extra argument", mutate(func(s *age.Stanza) { s.Args = append(s.Args, "x") }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Identity().Unwrap(tc.stanzas)
			if err == nil {
				t.Fatalf("Unwrap = %x, want an error", got)
			}
			if errors.Is(err, age.ErrIncorrectIdentity) != tc.incorrect {
				t.Fatalf("Unwrap error %v: errors.Is ErrIncorrectIdentity = %v, want %v", err, !tc.incorrect, tc.incorrect)
			}
		})
	}

	t.Run("file for another key", func(t *testing.T) {
		var buf bytes.Buffer
		if err := seal.Encrypt(&buf, strings.NewReader("secret"), otherRSARecipient(t)); err != nil {
			t.Fatal(err)
		}
		_, err := seal.Decrypt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c.Identity())
		if !errors.Is(err, age.ErrIncorrectIdentity) {
			t.Fatalf("Decrypt: %v, want age.ErrIncorrectIdentity", err)
		}
	})

	t.Run("file with a tampered stanza", func(t *testing.T) {
		var buf bytes.Buffer
		if err := seal.Encrypt(&buf, strings.NewReader("secret"), c.AgeRecipient()); err != nil {
			t.Fatal(err)
		}
		// The header is text: "-> ssh-rsa TAG\n" then the wrapped key in
		// base64 lines. Change one character of the body.
		b := buf.Bytes()
		i := bytes.Index(b, []byte("-> ssh-rsa "))
		if i < 0 {
			t.Fatalf("no ssh-rsa stanza in header:\n%s", b[:200])
		}
		j := i + bytes.IndexByte(b[i:], '\n') + 10
		if b[j] == 'A' {
			b[j] = 'B'
		} else {
			b[j] = 'A'
		}
		_, err := seal.Decrypt(bytes.NewReader(b), int64(len(b)), c.Identity())
		if err == nil {
			t.Fatal("Decrypt of a tampered stanza: succeeded")
		}
	})
}

func TestPKCS11Open(t *testing.T) {
	cfg := newSoftHSM(t, "aegis-open")
	if _, err := GeneratePKCS11Key(cfg, 2048); err != nil {
		t.Fatalf("GeneratePKCS11Key: %v", err)
	}

	t.Run("wrong PIN", func(t *testing.T) {
		t.Setenv(testPINEnv, "wrong-pin-3141")
		_, err := OpenPKCS11(cfg)
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) {
			t.Fatalf("OpenPKCS11 with a wrong PIN: %v, want CKR_PIN_INCORRECT", err)
		}
		if strings.Contains(err.Error(), "wrong-pin-3141") || strings.Contains(err.Error(), testUserPIN) {
			t.Errorf("error reveals a PIN: %v", err)
		}
		t.Logf("wrong PIN: %v", err)
	})

	t.Run("empty PIN variable", func(t *testing.T) {
		t.Setenv(testPINEnv, "")
		if _, err := OpenPKCS11(cfg); err == nil || !strings.Contains(err.Error(), "pin_env") {
			t.Fatalf("OpenPKCS11 with $%s empty: %v, want a keys.pkcs11.pin_env error", testPINEnv, err)
		}
	})

	t.Run("unknown token", func(t *testing.T) {
		bad := cfg
		bad.TokenLabel = "no-such-token"
		if _, err := OpenPKCS11(bad); !errors.Is(err, ErrTokenNotFound) {
			t.Fatalf("OpenPKCS11: %v, want ErrTokenNotFound", err)
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		bad := cfg
		bad.KeyLabel = "no-such-key"
		if _, err := OpenPKCS11(bad); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("OpenPKCS11: %v, want ErrKeyNotFound", err)
		}
	})

	t.Run("generate twice", func(t *testing.T) {
		if _, err := GeneratePKCS11Key(cfg, 2048); !errors.Is(err, ErrKeyExists) {
			t.Fatalf("second GeneratePKCS11Key: %v, want ErrKeyExists", err)
		}
	})

	t.Run("open twice in one process", func(t *testing.T) {
		c, err := OpenPKCS11(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := OpenPKCS11(cfg); err == nil {
			t.Fatal("second OpenPKCS11 of an open token: succeeded")
		}
	})

	t.Run("by key id", func(t *testing.T) {
		c, err := OpenPKCS11(cfg)
		if err != nil {
			t.Fatal(err)
		}
		id, err := attr(c.tok.mod.ctx, c.tok.login, c.key, pkcs11.CKA_ID)
		rcpt := c.Recipient()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		byID := cfg
		byID.KeyLabel = ""
		byID.KeyID = strings.ToUpper(hex.EncodeToString(id))
		c, err = OpenPKCS11(byID)
		if err != nil {
			t.Fatalf("OpenPKCS11 by id: %v", err)
		}
		defer c.Close()
		if c.Recipient() != rcpt {
			t.Error("key found by id differs from the one found by label")
		}
	})

	t.Run("closed custody", func(t *testing.T) {
		c, err := OpenPKCS11(cfg)
		if err != nil {
			t.Fatal(err)
		}
		stanzas, err := c.AgeRecipient().Wrap(make([]byte, 16))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		c.Close()
		_, err = c.Identity().Unwrap(stanzas)
		if err == nil || errors.Is(err, age.ErrIncorrectIdentity) {
			t.Fatalf("Unwrap after Close: %v, want a closed error", err)
		}
	})

	t.Run("close during unwraps", func(t *testing.T) {
		c, err := OpenPKCS11(cfg)
		if err != nil {
			t.Fatal(err)
		}
		fileKey := make([]byte, 16)
		stanzas, err := c.AgeRecipient().Wrap(fileKey)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					got, err := c.Identity().Unwrap(stanzas)
					if err != nil {
						if !errors.Is(err, errCustodyClosed) {
							t.Errorf("Unwrap while closing: %v, want success or the closed error", err)
						}
						return
					}
					if !bytes.Equal(got, fileKey) {
						t.Errorf("Unwrap while closing = %x, want %x", got, fileKey)
					}
				}
			})
		}
		c.Close()
		wg.Wait()
	})

	t.Run("extractable key refused", func(t *testing.T) {
		weak := cfg
		weak.KeyLabel = "weak-key"
		tok, err := openToken(weak, true)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tok.mod.ctx.GenerateKeyPair(tok.login,
			[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, weak.KeyLabel),
				pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048),
				pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, weak.KeyLabel),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			})
		tok.close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenPKCS11(weak); !errors.Is(err, ErrKeyExtractable) {
			t.Fatalf("OpenPKCS11 of an extractable key: %v, want ErrKeyExtractable", err)
		}
	})

	t.Run("insecure module", func(t *testing.T) {
		dir := t.TempDir()
		lib := filepath.Join(dir, "libfake.so")
		if err := os.WriteFile(lib, []byte("not a library"), 0o664); err != nil {
			t.Fatal(err)
		}
		os.Chmod(lib, 0o664)
		bad := cfg
		bad.Module = lib
		if _, err := OpenPKCS11(bad); err == nil || !strings.Contains(err.Error(), "writable") {
			t.Fatalf("OpenPKCS11 of a group-writable module: %v, want a refusal", err)
		}
		os.Chmod(lib, 0o644)
		if _, err := OpenPKCS11(bad); err == nil || !strings.Contains(err.Error(), "PKCS#11 module") {
			t.Fatalf("OpenPKCS11 of a non-library: %v, want a load error", err)
		}
	})
}

// TestPKCS11OAEPOnToken covers the default mechanism, where the token does
// the whole OAEP unwrap. SoftHSM2 2.6 refuses OAEP with SHA-256 and a label,
// so there the custody must refuse to open, naming the way out; a token
// that supports it must decrypt.
func TestPKCS11OAEPOnToken(t *testing.T) {
	cfg := newSoftHSM(t, "aegis-oaep")
	cfg.Mechanism = ""
	g, err := GeneratePKCS11Key(cfg, 2048)
	if errors.Is(err, ErrOAEPUnsupported) {
		if !strings.Contains(err.Error(), MechanismRSAX509) {
			t.Errorf("error %q does not name the %s mechanism", err, MechanismRSAX509)
		}
		if _, err := OpenPKCS11(cfg); !errors.Is(err, ErrOAEPUnsupported) {
			t.Fatalf("OpenPKCS11: %v, want ErrOAEPUnsupported", err)
		}
		t.Logf("token refuses on-token OAEP-SHA256, as SoftHSM2 2.6 does: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("GeneratePKCS11Key: %v", err)
	}
	c, err := OpenPKCS11(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(g.Recipient))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := agessh.NewRSARecipient(pk)
	var buf bytes.Buffer
	if err := seal.Encrypt(&buf, strings.NewReader("secret"), r); err != nil {
		t.Fatal(err)
	}
	p, err := seal.Decrypt(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c.Identity())
	if err != nil {
		t.Fatalf("Decrypt with on-token OAEP: %v", err)
	}
	defer p.Wipe()
	if string(p.Bytes()) != "secret" {
		t.Fatalf("got %q, want %q", p.Bytes(), "secret")
	}
}

func TestPKCS11ConfigValidate(t *testing.T) {
	good := PKCS11Config{
		Module:     "/usr/lib/softhsm/libsofthsm2.so",
		TokenLabel: "aegis",
		KeyLabel:   "model-key",
		PINEnv:     "AEGIS_PKCS11_PIN",
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(c *PKCS11Config)
		field string
	}{
		{"relative module", func(c *PKCS11Config) { c.Module = "libsofthsm2.so" }, "keys.pkcs11.module"},
		{"no token", func(c *PKCS11Config) { c.TokenLabel = "" }, "keys.pkcs11.token_label"},
		{"long token", func(c *PKCS11Config) { c.TokenLabel = strings.Repeat("t", 33) }, "keys.pkcs11.token_label"},
		{"no key", func(c *PKCS11Config) { c.KeyLabel = "" }, "keys.pkcs11.key_label"},
		{"bad key id", func(c *PKCS11Config) { c.KeyID = "xyz" }, "keys.pkcs11.key_id"},
		{"no pin env", func(c *PKCS11Config) { c.PINEnv = "" }, "keys.pkcs11.pin_env"},
		{"pin as pin env", func(c *PKCS11Config) { c.PINEnv = "1234 5678" }, "keys.pkcs11.pin_env"},
		{"unknown mechanism", func(c *PKCS11Config) { c.Mechanism = "rsa-pkcs" }, "keys.pkcs11.mechanism"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

// rawDecrypt is the RSA private-key operation, as CKM_RSA_X_509 does it.
func rawDecrypt(k *rsa.PrivateKey, c []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(c), k.D, k.N)
	return m.FillBytes(make([]byte, k.Size()))
}

func TestOAEPDecode(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range [][]byte{{}, []byte("sixteen byte key"), bytes.Repeat([]byte{1}, 190)} {
		c, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, msg, []byte(oaepLabel))
		if err != nil {
			t.Fatal(err)
		}
		got, err := oaepDecode(sha256.New(), rawDecrypt(k, c), []byte(oaepLabel))
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("oaepDecode(%d-byte message) = %x, %v; want %x", len(msg), got, err, msg)
		}
		if _, err := oaepDecode(sha256.New(), rawDecrypt(k, c), []byte("other label")); err == nil {
			t.Errorf("oaepDecode with the wrong label: succeeded")
		}
		c[len(c)-1] ^= 1
		if _, err := oaepDecode(sha256.New(), rawDecrypt(k, c), []byte(oaepLabel)); err == nil {
			t.Errorf("oaepDecode of a changed ciphertext: succeeded")
		}
	}
	if _, err := oaepDecode(sha256.New(), make([]byte, 65), nil); err == nil {
		t.Error("oaepDecode of a too-short block: succeeded")
	}
}

func FuzzOAEPDecode(f *testing.F) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	c, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, []byte("sixteen byte key"), []byte(oaepLabel))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rawDecrypt(k, c))
	f.Add(make([]byte, 256))
	f.Fuzz(func(t *testing.T, em []byte) {
		out, err := oaepDecode(sha256.New(), append([]byte(nil), em...), []byte(oaepLabel))
		if err == nil && len(out) > len(em)-2*sha256.Size-2 {
			t.Fatalf("decoded %d bytes from a %d-byte block", len(out), len(em))
		}
	})
}
