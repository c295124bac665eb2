package keys

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/ssh"
)

// PKCS#11 custody keeps an RSA private key on a token (an HSM, or SoftHSM2
// for tests) and unwraps age file keys there. Files are encrypted to the
// key's public half as an age ssh-rsa recipient (`age -r "ssh-rsa AAAA..."`),
// whose stanza is the file key under RSA-OAEP (SHA-256, MGF1-SHA-256, label
// "age-encryption.org/v1/ssh-rsa").
//
// Defaults that hold for a PKCS11Custody:
//   - the module is an absolute path to a regular file that neither group
//     nor others may write (it is loaded into the process);
//   - the PIN comes only from the environment variable the config names; it
//     is never kept after login, logged or put in an error;
//   - the key must be CKA_SENSITIVE and not CKA_EXTRACTABLE, else it is
//     refused; GeneratePKCS11Key makes such keys, usable only for decryption
//     with the one mechanism the custody uses (CKA_ALLOWED_MECHANISMS);
//   - exactly one token and one private key must match the config;
//   - a token opens once per process, and a PIN is checked by the token at
//     every open (never taken on trust from an earlier login);
//   - OpenPKCS11 unwraps a test file key before it returns, so a token that
//     cannot do the configured mechanism, or whose private key does not match
//     its public key, fails at startup rather than at the first model.

// Mechanisms a PKCS11Custody can unwrap with.
const (
	// MechanismOAEP decrypts with CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256,
	// the age label) on the token: the token does the whole unwrap. It is
	// the default.
	MechanismOAEP = "rsa-pkcs-oaep"
	// MechanismRSAX509 does the raw RSA private-key operation on the token
	// (CKM_RSA_X_509) and removes the OAEP padding in this process, for
	// tokens that cannot do OAEP with SHA-256 and a label, such as SoftHSM2
	// 2.6 (Debian 12), which accepts only SHA-1 with no label. The private
	// key still never leaves the token.
	MechanismRSAX509 = "rsa-x509"
)

// Errors a PKCS#11 custody reports; token errors are pkcs11.Error values,
// which errors.Is matches (pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)).
var (
	ErrTokenNotFound = errors.New("pkcs11 token not found")
	ErrKeyNotFound   = errors.New("pkcs11 private key not found")
	ErrKeyExists     = errors.New("pkcs11 key already exists")
	// ErrKeyExtractable reports a private key that the token would export.
	ErrKeyExtractable = errors.New("pkcs11 private key is extractable or not sensitive")
	// ErrOAEPUnsupported reports a token that refuses RSA-OAEP with SHA-256
	// and the age label; MechanismRSAX509 is the way to use such a token.
	ErrOAEPUnsupported = errors.New("token does not support RSA-OAEP with SHA-256 and a label")
	errCustodyClosed   = errors.New("pkcs11 custody is closed")
)

// oaepLabel is the RSA-OAEP label of age's ssh-rsa recipient type.
const oaepLabel = "age-encryption.org/v1/ssh-rsa"

// maxIdleSessions bounds the sessions kept open for unwrapping.
const maxIdleSessions = 4

// PKCS11Config names a key on a PKCS#11 token.
type PKCS11Config struct {
	// Module is the absolute path of the PKCS#11 library, such as
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel selects the token.
	TokenLabel string
	// KeyLabel (CKA_LABEL) and KeyID (CKA_ID, hex) select the key; at least
	// one is needed, and both must match when both are set.
	KeyLabel string
	KeyID    string
	// PINEnv names the environment variable that holds the user PIN.
	PINEnv string
	// Mechanism is MechanismOAEP (the default when empty) or
	// MechanismRSAX509.
	Mechanism string
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the config without touching the module or the token.
func (c PKCS11Config) Validate() error {
	switch {
	case !filepath.IsAbs(c.Module):
		return fmt.Errorf("keys.pkcs11.module: %q is not an absolute path", c.Module)
	case c.TokenLabel == "":
		return errors.New("keys.pkcs11.token_label: must be set")
	case len(c.TokenLabel) > 32:
		return fmt.Errorf("keys.pkcs11.token_label: %q is longer than 32 bytes", c.TokenLabel)
	case c.KeyLabel == "" && c.KeyID == "":
		return errors.New("keys.pkcs11.key_label: key_label or key_id must be set")
	case !envName.MatchString(c.PINEnv):
		return fmt.Errorf("keys.pkcs11.pin_env: %q is not an environment variable name", c.PINEnv)
	}
	if _, err := c.keyID(); err != nil {
		return err
	}
	if _, err := c.mechanism(); err != nil {
		return err
	}
	return nil
}

func (c PKCS11Config) keyID() ([]byte, error) {
	if c.KeyID == "" {
		return nil, nil
	}
	id, err := hex.DecodeString(c.KeyID)
	if err != nil || len(id) == 0 {
		return nil, fmt.Errorf("keys.pkcs11.key_id: %q is not hex", c.KeyID)
	}
	return id, nil
}

func (c PKCS11Config) mechanism() (string, error) {
	switch c.Mechanism {
	case "", MechanismOAEP:
		return MechanismOAEP, nil
	case MechanismRSAX509:
		return MechanismRSAX509, nil
	}
	return "", fmt.Errorf("keys.pkcs11.mechanism: %q is not %s or %s", c.Mechanism, MechanismOAEP, MechanismRSAX509)
}

// pkcs11Mechanism returns the token mechanism for a custody mechanism.
func pkcs11Mechanism(m string) *pkcs11.Mechanism {
	if m == MechanismRSAX509 {
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_X_509, nil)
	}
	return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pkcs11.CKZ_DATA_SPECIFIED, []byte(oaepLabel)))
}

// checkModule refuses a module that others could replace.
func checkModule(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("keys.pkcs11.module: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("keys.pkcs11.module: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("keys.pkcs11.module: %s has mode %04o, writable by group or others", path, perm)
	}
	return nil
}

// A module is a loaded, initialised PKCS#11 library, shared by every
// custody in the process that names it: C_Initialize and C_Finalize are
// process-wide, so one custody must not finalise under another.
type module struct {
	path  string
	ctx   *pkcs11.Ctx
	owned bool // whether we initialised it, and so finalise it
	refs  int
	slots map[uint]bool // tokens open in this process
}

// modules holds the loaded modules; mu guards it and every module's refs
// and slots.
var modules = struct {
	mu sync.Mutex
	m  map[string]*module
}{m: map[string]*module{}}

func acquireModule(path string) (*module, error) {
	if err := checkModule(path); err != nil {
		return nil, err
	}
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("keys.pkcs11.module: cannot load %s as a PKCS#11 module", path)
	}
	owned := true
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("initialise pkcs11 module %s: %w", path, err)
		}
		owned = false
	}
	m := &module{path: path, ctx: ctx, owned: owned, refs: 1, slots: map[uint]bool{}}
	modules.m[path] = m
	return m, nil
}

func (m *module) release() {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(modules.m, m.path)
	if m.owned {
		m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// claimSlot marks a token open in this process, refusing a second open.
func (m *module) claimSlot(slot uint) bool {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m.slots[slot] {
		return false
	}
	m.slots[slot] = true
	return true
}

func (m *module) releaseSlot(slot uint) {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	delete(m.slots, slot)
}

// A token is a logged-in token. Its login session stays open until close,
// as a token logs the application out when its last session closes.
type token struct {
	mod   *module
	label string
	slot  uint
	login pkcs11.SessionHandle
}

// openToken loads the module, finds the token and logs in with the PIN
// from the environment.
func openToken(cfg PKCS11Config, rw bool) (_ *token, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pin := os.Getenv(cfg.PINEnv)
	if pin == "" {
		return nil, fmt.Errorf("keys.pkcs11.pin_env: $%s is empty", cfg.PINEnv)
	}
	mod, err := acquireModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mod.release()
		}
	}()
	slot, err := findSlot(mod.ctx, cfg.TokenLabel)
	if err != nil {
		return nil, err
	}
	if !mod.claimSlot(slot) {
		return nil, fmt.Errorf("pkcs11 token %q is already open in this process", cfg.TokenLabel)
	}
	defer func() {
		if err != nil {
			mod.releaseSlot(slot)
		}
	}()
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if rw {
		flags |= pkcs11.CKF_RW_SESSION
	}
	s, err := mod.ctx.OpenSession(slot, flags)
	if err != nil {
		return nil, fmt.Errorf("open session on token %q: %w", cfg.TokenLabel, err)
	}
	if err := mod.ctx.Login(s, pkcs11.CKU_USER, pin); err != nil {
		mod.ctx.CloseSession(s)
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			// Someone else in this process logged in: the PIN was not
			// checked, so refuse rather than take the login on trust.
			return nil, fmt.Errorf("log in to token %q: already logged in by another user of %s in this process: %w", cfg.TokenLabel, cfg.Module, err)
		}
		return nil, fmt.Errorf("log in to token %q: %w", cfg.TokenLabel, err)
	}
	return &token{mod: mod, label: cfg.TokenLabel, slot: slot, login: s}, nil
}

func (t *token) close() {
	t.mod.ctx.Logout(t.login)
	t.mod.ctx.CloseSession(t.login)
	t.mod.releaseSlot(t.slot)
	t.mod.release()
}

func findSlot(ctx *pkcs11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list pkcs11 slots: %w", err)
	}
	var found []uint
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if ti.Label == label && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("%w: no token labelled %q", ErrTokenNotFound, label)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d tokens are labelled %q", len(found), label)
}

// keyTemplate selects a key of class by the config's label and id.
func keyTemplate(cfg PKCS11Config, class uint) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
	}
	if cfg.KeyLabel != "" {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.KeyLabel))
	}
	if id, _ := cfg.keyID(); id != nil {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	return t
}

func findObjects(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	objs, _, err := ctx.FindObjects(s, 2)
	if ferr := ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	return objs, err
}

// findOne returns the one object of class the config selects.
func findOne(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, cfg PKCS11Config, class uint) (pkcs11.ObjectHandle, error) {
	objs, err := findObjects(ctx, s, keyTemplate(cfg, class))
	if err != nil {
		return 0, fmt.Errorf("find key %s: %w", cfg.keyName(), err)
	}
	switch len(objs) {
	case 0:
		return 0, fmt.Errorf("%w: no RSA key %s on token %q", ErrKeyNotFound, cfg.keyName(), cfg.TokenLabel)
	case 1:
		return objs[0], nil
	}
	return 0, fmt.Errorf("more than one RSA key %s on token %q", cfg.keyName(), cfg.TokenLabel)
}

func (c PKCS11Config) keyName() string {
	switch {
	case c.KeyLabel != "" && c.KeyID != "":
		return fmt.Sprintf("%q (id %s)", c.KeyLabel, c.KeyID)
	case c.KeyLabel != "":
		return fmt.Sprintf("%q", c.KeyLabel)
	}
	return "id " + c.KeyID
}

// attr reads one attribute.
func attr(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, o pkcs11.ObjectHandle, typ uint) ([]byte, error) {
	a, err := ctx.GetAttributeValue(s, o, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, err
	}
	return a[0].Value, nil
}

func boolAttr(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, o pkcs11.ObjectHandle, typ uint) (bool, error) {
	v, err := attr(ctx, s, o, typ)
	if err != nil {
		return false, err
	}
	return len(v) == 1 && v[0] != 0, nil
}

// publicKey reads the RSA public key from the private key object, or from
// the public key object beside it when the token keeps it only there.
func publicKey(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, cfg PKCS11Config, priv pkcs11.ObjectHandle) (*rsa.PublicKey, error) {
	read := func(o pkcs11.ObjectHandle) (*rsa.PublicKey, error) {
		n, err := attr(ctx, s, o, pkcs11.CKA_MODULUS)
		if err != nil {
			return nil, err
		}
		e, err := attr(ctx, s, o, pkcs11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, err
		}
		be := new(big.Int).SetBytes(e)
		if len(n) == 0 || !be.IsInt64() || be.Int64() < 3 || be.Int64() > 1<<31-1 {
			return nil, errors.New("bad modulus or public exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(be.Int64())}, nil
	}
	pub, err := read(priv)
	if err != nil {
		o, ferr := findOne(ctx, s, cfg, pkcs11.CKO_PUBLIC_KEY)
		if ferr != nil {
			return nil, fmt.Errorf("read public key of %s: %w", cfg.keyName(), err)
		}
		if pub, err = read(o); err != nil {
			return nil, fmt.Errorf("read public key of %s: %w", cfg.keyName(), err)
		}
	}
	if pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("key %s is %d-bit RSA, want 2048 bits or more", cfg.keyName(), pub.N.BitLen())
	}
	return pub, nil
}

// PKCS11Custody is an RSA key on a PKCS#11 token that unwraps age ssh-rsa
// stanzas on the token. It is safe for concurrent use.
type PKCS11Custody struct {
	cfg  PKCS11Config
	mech string
	tok  *token
	key  pkcs11.ObjectHandle
	pub  *rsa.PublicKey
	ssh  ssh.PublicKey
	tag  string // the ssh-rsa stanza argument addressed to this key

	// opMu is held for reading by every token operation and for writing
	// by Close, so the module is never finalised under an unwrap.
	opMu sync.RWMutex

	// mu guards idle and closed.
	mu     sync.Mutex
	idle   []pkcs11.SessionHandle
	closed bool
}

var _ Custody = (*PKCS11Custody)(nil)

// OpenPKCS11 logs in to the token, finds the key and checks that it unwraps
// a test file key with the configured mechanism. Close releases it.
func OpenPKCS11(cfg PKCS11Config) (*PKCS11Custody, error) {
	tok, err := openToken(cfg, false)
	if err != nil {
		return nil, err
	}
	c, err := newPKCS11Custody(cfg, tok)
	if err != nil {
		tok.close()
		return nil, err
	}
	return c, nil
}

func newPKCS11Custody(cfg PKCS11Config, tok *token) (*PKCS11Custody, error) {
	ctx, s := tok.mod.ctx, tok.login
	key, err := findOne(ctx, s, cfg, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return nil, err
	}
	sensitive, err := boolAttr(ctx, s, key, pkcs11.CKA_SENSITIVE)
	if err != nil {
		return nil, fmt.Errorf("read CKA_SENSITIVE of %s: %w", cfg.keyName(), err)
	}
	extractable, err := boolAttr(ctx, s, key, pkcs11.CKA_EXTRACTABLE)
	if err != nil {
		return nil, fmt.Errorf("read CKA_EXTRACTABLE of %s: %w", cfg.keyName(), err)
	}
	if !sensitive || extractable {
		return nil, fmt.Errorf("%w: key %s on token %q", ErrKeyExtractable, cfg.keyName(), cfg.TokenLabel)
	}
	pub, err := publicKey(ctx, s, cfg, key)
	if err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	mech, _ := cfg.mechanism()
	c := &PKCS11Custody{cfg: cfg, mech: mech, tok: tok, key: key, pub: pub, ssh: sshPub, tag: sshTag(sshPub)}
	if err := c.selfTest(); err != nil {
		c.closeIdle()
		return nil, err
	}
	return c, nil
}

// sshTag is the ssh-rsa stanza argument: the first four bytes of the
// SHA-256 of the SSH wire-format public key, unpadded base64.
func sshTag(pk ssh.PublicKey) string {
	h := sha256.Sum256(pk.Marshal())
	return base64.RawStdEncoding.EncodeToString(h[:4])
}

// selfTest wraps a random file key to the public key and unwraps it on the
// token.
func (c *PKCS11Custody) selfTest() error {
	want := make([]byte, 16)
	if _, err := rand.Read(want); err != nil {
		return err
	}
	body, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, c.pub, want, []byte(oaepLabel))
	if err != nil {
		return err
	}
	got, err := c.unwrap(body)
	if errors.Is(err, age.ErrIncorrectIdentity) {
		return fmt.Errorf("key %s on token %q: the private key does not match its public key", c.cfg.keyName(), c.cfg.TokenLabel)
	}
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("key %s on token %q: test unwrap returned the wrong file key", c.cfg.keyName(), c.cfg.TokenLabel)
	}
	return nil
}

// Identity implements Custody.
func (c *PKCS11Custody) Identity() age.Identity { return pkcs11Identity{c} }

// Describe implements Custody.
func (c *PKCS11Custody) Describe() string {
	return fmt.Sprintf("PKCS#11 module %s, token %q, key %s", c.cfg.Module, c.cfg.TokenLabel, c.cfg.keyName())
}

// Recipient returns the key's public half as an age ssh-rsa recipient,
// for `age -r "ssh-rsa AAAA..."` or a recipients file.
func (c *PKCS11Custody) Recipient() string {
	return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(c.ssh)), "\n")
}

// AgeRecipient returns the key's public half as an age.Recipient.
func (c *PKCS11Custody) AgeRecipient() age.Recipient {
	r, err := agessh.NewRSARecipient(c.ssh)
	if err != nil {
		// OpenPKCS11 checked the key size, the only thing that can fail.
		panic(err)
	}
	return r
}

// Close logs out and releases the token. Unwraps after Close fail.
func (c *PKCS11Custody) Close() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.closeIdle()
	c.tok.close()
	return nil
}

func (c *PKCS11Custody) closeIdle() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, s := range idle {
		c.tok.mod.ctx.CloseSession(s)
	}
}

// session takes an idle session or opens one. The caller holds opMu for
// reading.
func (c *PKCS11Custody) session() (pkcs11.SessionHandle, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, errCustodyClosed
	}
	if n := len(c.idle); n > 0 {
		s := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()
	s, err := c.tok.mod.ctx.OpenSession(c.tok.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return 0, fmt.Errorf("open session on token %q: %w", c.tok.label, err)
	}
	return s, nil
}

// putSession returns a session to the pool, or closes it when it failed
// (it may hold an unfinished operation) or the pool is full.
func (c *PKCS11Custody) putSession(s pkcs11.SessionHandle, ok bool) {
	c.mu.Lock()
	if ok && !c.closed && len(c.idle) < maxIdleSessions {
		c.idle = append(c.idle, s)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.tok.mod.ctx.CloseSession(s)
}

// decrypt runs the custody's mechanism over body on the token.
func (c *PKCS11Custody) decrypt(body []byte) ([]byte, error) {
	c.opMu.RLock()
	defer c.opMu.RUnlock()
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	ctx := c.tok.mod.ctx
	err = ctx.DecryptInit(s, []*pkcs11.Mechanism{pkcs11Mechanism(c.mech)}, c.key)
	var out []byte
	if err == nil {
		out, err = ctx.Decrypt(s, body)
	}
	c.putSession(s, err == nil)
	return out, err
}

// unwrap recovers a file key from an ssh-rsa stanza body addressed to this
// key. A body that does not decrypt is age.ErrIncorrectIdentity (the tag is
// only a 32-bit hint); a failing token is an error of its own.
func (c *PKCS11Custody) unwrap(body []byte) ([]byte, error) {
	k := (c.pub.N.BitLen() + 7) / 8
	if len(body) != k || new(big.Int).SetBytes(body).Cmp(c.pub.N) >= 0 {
		return nil, age.ErrIncorrectIdentity
	}
	out, err := c.decrypt(body)
	if err != nil {
		var pe pkcs11.Error
		if errors.As(err, &pe) {
			switch pe {
			case pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:
				return nil, age.ErrIncorrectIdentity
			case pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID:
				if c.mech == MechanismOAEP {
					return nil, fmt.Errorf("token %q: %w (%w); set keys.pkcs11.mechanism to %s", c.tok.label, ErrOAEPUnsupported, err, MechanismRSAX509)
				}
			}
		}
		return nil, fmt.Errorf("unwrap on token %q: %w", c.tok.label, err)
	}
	if c.mech == MechanismOAEP {
		return out, nil
	}
	defer clear(out)
	if len(out) > k {
		return nil, age.ErrIncorrectIdentity
	}
	em := make([]byte, k)
	defer clear(em)
	copy(em[k-len(out):], out)
	fileKey, err := oaepDecode(sha256.New(), em, []byte(oaepLabel))
	if err != nil {
		return nil, age.ErrIncorrectIdentity
	}
	return fileKey, nil
}

var errOAEPDecode = errors.New("oaep decoding error")

// oaepDecode removes RSA-OAEP padding (RFC 8017, section 7.1.2, step 3)
// from em, the k-byte result of the raw RSA private-key operation, in
// constant time with respect to em's contents. It returns a copy of the
// message; em is left scrambled.
func oaepDecode(h hash.Hash, em, label []byte) ([]byte, error) {
	hLen := h.Size()
	k := len(em)
	if k < 2*hLen+2 {
		return nil, errOAEPDecode
	}
	h.Reset()
	h.Write(label)
	lHash := h.Sum(nil)

	firstByteIsZero := subtle.ConstantTimeByteEq(em[0], 0)
	seed, db := em[1:hLen+1], em[hLen+1:]
	mgf1XOR(seed, h, db)
	mgf1XOR(db, h, seed)
	lHashGood := subtle.ConstantTimeCompare(lHash, db[:hLen])

	// The message follows the first 0x01 after lHash; only zeros may
	// precede it.
	var lookingForIndex, index, invalid int
	lookingForIndex = 1
	rest := db[hLen:]
	for i := range rest {
		equals0 := subtle.ConstantTimeByteEq(rest[i], 0)
		equals1 := subtle.ConstantTimeByteEq(rest[i], 1)
		index = subtle.ConstantTimeSelect(lookingForIndex&equals1, i, index)
		lookingForIndex = subtle.ConstantTimeSelect(equals1, 0, lookingForIndex)
		invalid = subtle.ConstantTimeSelect(lookingForIndex&^equals0, 1, invalid)
	}
	if firstByteIsZero&lHashGood&^invalid&^lookingForIndex != 1 {
		return nil, errOAEPDecode
	}
	return append([]byte(nil), rest[index+1:]...), nil
}

// mgf1XOR XORs out with MGF1(seed) (RFC 8017, appendix B.2.1).
func mgf1XOR(out []byte, h hash.Hash, seed []byte) {
	var counter [4]byte
	var digest []byte
	for done := 0; done < len(out); {
		h.Reset()
		h.Write(seed)
		h.Write(counter[:])
		digest = h.Sum(digest[:0])
		for i := 0; i < len(digest) && done < len(out); i++ {
			out[done] ^= digest[i]
			done++
		}
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
	clear(digest)
}

// pkcs11Identity is the age identity of a PKCS11Custody.
type pkcs11Identity struct{ c *PKCS11Custody }

var _ age.Identity = pkcs11Identity{}

// Unwrap implements age.Identity: it tries the ssh-rsa stanzas whose tag
// names this key, and returns age.ErrIncorrectIdentity when none unwraps.
func (id pkcs11Identity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	for _, s := range stanzas {
		if s.Type != "ssh-rsa" {
			continue
		}
		if len(s.Args) != 1 {
			return nil, errors.New("invalid ssh-rsa recipient stanza")
		}
		if s.Args[0] != id.c.tag {
			continue
		}
		fileKey, err := id.c.unwrap(s.Body)
		if errors.Is(err, age.ErrIncorrectIdentity) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return fileKey, nil
	}
	return nil, age.ErrIncorrectIdentity
}

// GeneratePKCS11Key creates an RSA key pair of bits (2048, 3072 or 4096)
// on the token, labelled and identified as cfg says (a random CKA_ID when
// cfg has none), refusing a label or id already in use. The private key is
// sensitive, never extractable, and may only decrypt with cfg's mechanism.
// It returns the key's ssh-rsa recipient, after a test unwrap on the token.
func GeneratePKCS11Key(cfg PKCS11Config, bits int) (Generated, error) {
	if bits != 2048 && bits != 3072 && bits != 4096 {
		return Generated{}, fmt.Errorf("RSA key size %d: want 2048, 3072 or 4096", bits)
	}
	if cfg.KeyLabel == "" {
		return Generated{}, errors.New("keys.pkcs11.key_label: must be set to generate a key")
	}
	tok, err := openToken(cfg, true)
	if err != nil {
		return Generated{}, err
	}
	err = generateKeyPair(cfg, tok, bits)
	tok.close()
	if err != nil {
		return Generated{}, err
	}
	c, err := OpenPKCS11(cfg)
	if err != nil {
		return Generated{}, fmt.Errorf("key %s generated on token %q, but: %w", cfg.keyName(), cfg.TokenLabel, err)
	}
	defer c.Close()
	return Generated{Recipient: c.Recipient()}, nil
}

func generateKeyPair(cfg PKCS11Config, tok *token, bits int) error {
	ctx, s := tok.mod.ctx, tok.login
	// Refuse a key that shares the label or the id of one already there.
	for _, sel := range []PKCS11Config{{KeyLabel: cfg.KeyLabel}, {KeyID: cfg.KeyID}} {
		if sel.KeyLabel == "" && sel.KeyID == "" {
			continue
		}
		var tmpl []*pkcs11.Attribute
		if sel.KeyLabel != "" {
			tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, sel.KeyLabel))
		}
		if id, _ := sel.keyID(); id != nil {
			tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
		}
		objs, err := findObjects(ctx, s, tmpl)
		if err != nil {
			return fmt.Errorf("look for key %s: %w", sel.keyName(), err)
		}
		if len(objs) > 0 {
			return fmt.Errorf("%w: %s on token %q", ErrKeyExists, sel.keyName(), cfg.TokenLabel)
		}
	}
	id, _ := cfg.keyID()
	if id == nil {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return err
		}
	}
	mech, _ := cfg.mechanism()
	pubTmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.KeyLabel),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
	}
	privTmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, cfg.KeyLabel),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN_RECOVER, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, mechanismList(pkcs11Mechanism(mech).Mechanism)),
	}
	_, _, err := ctx.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubTmpl, privTmpl)
	if err != nil {
		return fmt.Errorf("generate RSA key %s on token %q: %w", cfg.keyName(), cfg.TokenLabel, err)
	}
	return nil
}

// mechanismList encodes a CK_MECHANISM_TYPE array, as
// CKA_ALLOWED_MECHANISMS holds, in the platform's CK_ULONG layout.
func mechanismList(mechs ...uint) []byte {
	var b []byte
	for _, m := range mechs {
		b = append(b, pkcs11.NewAttribute(0, m).Value...)
	}
	return b
}
