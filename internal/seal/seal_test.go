package seal_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
)

// plaintext returns deterministic test data spanning several age chunks
// (64 KiB each) and ending in a partial chunk.
func plaintext(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func newIdentityFile(t *testing.T) (*keys.FileCustody, string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identity.txt")
	g, err := keys.GenerateIdentityFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := keys.LoadIdentityFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, path, g.Recipient
}

func encrypt(t *testing.T, data []byte, recipient string) []byte {
	t.Helper()
	r, err := keys.ParseRecipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := seal.Encrypt(&buf, bytes.NewReader(data), r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTripAndDigest(t *testing.T) {
	c, _, rcpt := newIdentityFile(t)
	for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, 300_000} {
		data := plaintext(n)
		enc := encrypt(t, data, rcpt)
		p, err := seal.Decrypt(bytes.NewReader(enc), int64(len(enc)), c.Identity())
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(p.Bytes(), data) {
			t.Errorf("%d bytes: plaintext differs", n)
		}
		if p.SHA256() != sha256.Sum256(data) {
			t.Errorf("%d bytes: digest differs", n)
		}
		p.Wipe()
		if p.Bytes() != nil {
			t.Error("plaintext still reachable after Wipe")
		}
		p.Wipe() // twice is fine
	}
}

// TestTamperSweep flips single bytes across the header, every payload
// chunk and the final chunk, and truncates the file at many lengths: every
// variant must be refused without a panic, and nothing decrypted returned.
func TestTamperSweep(t *testing.T) {
	c, _, rcpt := newIdentityFile(t)
	data := plaintext(3*64<<10 + 1000) // three full chunks and a partial one
	enc := encrypt(t, data, rcpt)
	hdrEnd := bytes.Index(enc, []byte("\n---")) + 1
	hdrEnd += bytes.IndexByte(enc[hdrEnd:], '\n') + 1
	const chunk = 64<<10 + 16
	payload := hdrEnd + 16 // after the 16-byte nonce
	positions := []int{0, 5, 20, hdrEnd / 2, hdrEnd - 2, hdrEnd - 1, hdrEnd, hdrEnd + 15}
	for c := 0; c < 4; c++ {
		start := payload + c*chunk
		for _, off := range []int{0, 1, 1000, chunk / 2, chunk - 17, chunk - 1} {
			if p := start + off; p < len(enc) {
				positions = append(positions, p)
			}
		}
	}
	positions = append(positions, len(enc)-1, len(enc)-16, len(enc)-17)
	for _, pos := range positions {
		bad := bytes.Clone(enc)
		bad[pos] ^= 0x01
		if p, err := seal.Decrypt(bytes.NewReader(bad), int64(len(bad)), c.Identity()); err == nil {
			p.Wipe()
			t.Errorf("byte %d of %d flipped: accepted", pos, len(enc))
		}
	}
	for _, n := range []int{0, 10, hdrEnd - 1, hdrEnd, payload, payload + chunk, payload + chunk + 1, len(enc) - 1000, len(enc) - 1} {
		if p, err := seal.Decrypt(bytes.NewReader(enc[:n]), int64(n), c.Identity()); err == nil {
			p.Wipe()
			t.Errorf("truncated to %d of %d bytes: accepted", n, len(enc))
		}
	}
	// An appended byte is refused too.
	long := append(bytes.Clone(enc), 0)
	if p, err := seal.Decrypt(bytes.NewReader(long), int64(len(long)), c.Identity()); err == nil {
		p.Wipe()
		t.Error("extra trailing byte accepted")
	}
	other, _, _ := newIdentityFile(t)
	if _, err := seal.Decrypt(bytes.NewReader(enc), int64(len(enc)), other.Identity()); !errors.Is(err, age.ErrIncorrectIdentity) {
		t.Errorf("wrong key: %v, want ErrIncorrectIdentity", err)
	}
}

// TestAgeCLIInterop: files from the age tool decrypt in Aegis, and files
// Aegis encrypts decrypt with `age -d`.
func TestAgeCLIInterop(t *testing.T) {
	ageBin, err := exec.LookPath("age")
	if err != nil {
		t.Fatal("the age tool is required (Debian package age)")
	}
	c, idPath, rcpt := newIdentityFile(t)
	dir := t.TempDir()
	data := plaintext(200_000)
	plain := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(plain, data, 0o600); err != nil {
		t.Fatal(err)
	}

	byCLI := filepath.Join(dir, "cli.age")
	if out, err := exec.Command(ageBin, "-r", rcpt, "-o", byCLI, plain).CombinedOutput(); err != nil {
		t.Fatalf("age -r: %v\n%s", err, out)
	}
	p, err := seal.DecryptFile(byCLI, c.Identity(), 0)
	if err != nil {
		t.Fatalf("decrypt age CLI output: %v", err)
	}
	if !bytes.Equal(p.Bytes(), data) {
		t.Error("age CLI -> Aegis: plaintext differs")
	}
	p.Wipe()

	byAegis := filepath.Join(dir, "aegis.age")
	r, _ := keys.ParseRecipient(rcpt)
	if err := seal.EncryptFile(plain, byAegis, r); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ageBin, "-d", "-i", idPath, byAegis).Output()
	if err != nil {
		t.Fatalf("age -d: %v", err)
	}
	if !bytes.Equal(out, data) {
		t.Error("Aegis -> age CLI: plaintext differs")
	}
	// Armored files from the CLI are refused rather than misread.
	armored := filepath.Join(dir, "armored.age")
	if out, err := exec.Command(ageBin, "-a", "-r", rcpt, "-o", armored, plain).CombinedOutput(); err != nil {
		t.Fatalf("age -a: %v\n%s", err, out)
	}
	if p, err := seal.DecryptFile(armored, c.Identity(), 0); err == nil {
		if !bytes.Equal(p.Bytes(), data) {
			t.Error("armored file decrypted to different data")
		}
		p.Wipe()
	}
}

// TestPlaintextMemoryProtected checks the mapping's flags in smaps: excluded
// from core dumps ("dd").
func TestPlaintextMemoryProtected(t *testing.T) {
	c, _, rcpt := newIdentityFile(t)
	data := plaintext(1 << 20)
	enc := encrypt(t, data, rcpt)
	p, err := seal.Decrypt(bytes.NewReader(enc), int64(len(enc)), c.Identity())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wipe()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimLeft(strings.ToLower(hexAddr(p.Bytes())), "0")
	found := false
	entries := strings.Split(string(smaps), "\n")
	for i, line := range entries {
		if !strings.HasPrefix(line, addr+"-") {
			continue
		}
		found = true
		for _, l := range entries[i+1:] {
			if strings.HasPrefix(l, "VmFlags:") {
				if !strings.Contains(l, " dd") {
					t.Errorf("plaintext mapping not excluded from core dumps: %s", l)
				}
				if p.Locked && !strings.Contains(l, " lo") {
					t.Errorf("plaintext reported locked but flags are %s", l)
				}
				break
			}
		}
		break
	}
	if !found {
		t.Fatalf("no mapping at %s in smaps", addr)
	}
}

func hexAddr(b []byte) string {
	return strings.TrimPrefix(strings.TrimPrefix(fmtPtr(b), "0x"), "0X")
}

// TestScryptWorkFactorCapped: a passphrase file demanding more scrypt work
// than the cap is refused before any scrypt work is done.
func TestScryptWorkFactorCapped(t *testing.T) {
	const pass = "correct horse battery staple"
	custody, err := keys.NewPassphrase(pass)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(10)
	var buf bytes.Buffer
	if err := seal.Encrypt(&buf, bytes.NewReader([]byte("weights")), r); err != nil {
		t.Fatal(err)
	}
	enc := buf.Bytes()
	p, err := seal.Decrypt(bytes.NewReader(enc), int64(len(enc)), custody.Identity())
	if err != nil || string(p.Bytes()) != "weights" {
		t.Fatalf("work factor 10: %v", err)
	}
	p.Wipe()
	// Claim 2^30 (128 GiB of scrypt memory) in the stanza.
	hostile := bytes.Replace(enc, []byte(" 10\n"), []byte(" 30\n"), 1)
	if bytes.Equal(hostile, enc) {
		t.Fatal("could not find the work factor in the header")
	}
	_, err = seal.Decrypt(bytes.NewReader(hostile), int64(len(hostile)), custody.Identity())
	if err == nil || !strings.Contains(err.Error(), "work factor") {
		t.Errorf("work factor 30: %v, want a work factor refusal", err)
	}
}
