package doctor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// certExpiring writes a self-signed certificate valid until notAfter.
func certExpiring(t *testing.T, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "server.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLSCheck(t *testing.T) {
	now := time.Now()
	env := goodEnv(t)
	expect(t, env, "tls", OK, "client certificates not requested")

	env = goodEnv(t)
	env.Config.TLS.CertFile, env.Config.TLS.KeyFile, env.Config.TLS.Plaintext = "", "", true
	expect(t, env, "tls", Warn, "TLS is off")
	if !Run(env).Failed(true) {
		t.Error("plain HTTP passes strict")
	}

	env = goodEnv(t)
	env.Config.TLS.CertFile = certExpiring(t, now.Add(-time.Hour))
	expect(t, env, "tls", Fail, "expired")

	env = goodEnv(t)
	env.Config.TLS.CertFile = certExpiring(t, now.Add(10*24*time.Hour))
	expect(t, env, "tls", Warn, "expires in")

	env = goodEnv(t)
	env.Config.TLS.ClientAuth, env.Config.TLS.ClientCAFile = "optional", env.Config.TLS.CertFile
	expect(t, env, "tls", OK, "optional mTLS")
}

func TestAccessCheck(t *testing.T) {
	expect(t, goodEnv(t), "access", OK, "authentication on")

	env := goodEnv(t)
	env.Config.Auth.PolicyFile = ""
	expect(t, env, "access", Warn, "every request will be denied")

	env = goodEnv(t)
	env.Config.Auth.Disabled, env.Config.Auth.PolicyFile = true, ""
	expect(t, env, "access", Warn, "authentication is off")
	if !Run(env).Failed(true) {
		t.Error("authentication off passes strict")
	}

	env = goodEnv(t)
	env.Config.Audit.Disabled = true
	expect(t, env, "access", Warn, "audit log is off")
}
