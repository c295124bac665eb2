// Package tlsconf serves TLS and mutual TLS for Aegis's listeners from
// certificate files it reloads while the server runs, and makes the small
// local CA the demo and the tests use.
//
// A Manager loads a certificate chain, its key and (for mutual TLS) a
// bundle of client CAs, and hands out *tls.Config values that read the
// current files at every handshake: a reload applies to new connections
// without restarting a listener, for net/http and grpc-go alike.
//
// Defaults that hold for every Manager:
//   - TLS 1.3 only; min_version "1.2" adds TLS 1.2 with ECDHE key exchange
//     and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305): no CBC, no RSA
//     key exchange, no TLS 1.0 or 1.1;
//   - client_auth "none"; "optional" verifies a client certificate when one
//     is presented and fails the handshake when it does not verify, so an
//     unverified certificate is never passed on; "require" fails the
//     handshake without a verified client certificate;
//   - client certificates verify against client_ca_file only, never the
//     system roots;
//   - a key file that group or others may access is refused, at start and
//     at every reload;
//   - an expired certificate is refused; one that expires within 30 days
//     (ExpiryWarning) is logged as a warning and shown in Status;
//   - a reload is all or nothing: if the new certificate, key or CA bundle
//     does not load, the old ones stay in use and the error is logged and
//     kept in Status; key material is never logged;
//   - ALPN offers "h2" and "http/1.1" unless the caller names protocols
//     (gRPC: "h2" only).
package tlsconf

import (
	"errors"
	"fmt"
	"time"
)

// The values Config.MinVersion and Config.ClientAuth accept.
const (
	Version12 = "1.2"
	Version13 = "1.3"

	ClientAuthNone     = "none"
	ClientAuthOptional = "optional"
	ClientAuthRequire  = "require"
)

// DefaultReloadInterval is how often a Manager polls its files when
// Config.ReloadInterval is zero.
const DefaultReloadInterval = 5 * time.Second

// ExpiryWarning is how close to its expiry a certificate is reported as
// expiring.
const ExpiryWarning = 30 * 24 * time.Hour

// Config is the TLS configuration of the server's listeners. The zero value
// is TLS off; an empty MinVersion, ClientAuth or ReloadInterval means its
// default (Default).
type Config struct {
	// CertFile is the server certificate chain, PEM, leaf first.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the server certificate's private key, PEM (PKCS #8,
	// PKCS #1 or SEC 1). Group and others must have no access to it.
	KeyFile string `yaml:"key_file"`
	// MinVersion is "1.3" (default) or "1.2".
	MinVersion string `yaml:"min_version"`
	// ClientAuth is "none" (default), "optional" or "require".
	ClientAuth string `yaml:"client_auth"`
	// ClientCAFile is the PEM bundle of CAs client certificates must chain
	// to. Required when ClientAuth is not "none", refused otherwise.
	ClientCAFile string `yaml:"client_ca_file"`
	// ReloadInterval is how often the files are checked for changes
	// (default 5s). A change is applied once the files have stayed the same
	// for one interval, so a certificate and key renamed into place one
	// after the other are read as a pair.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// Default returns the configuration with every default filled in and TLS
// off (no certificate).
func Default() Config {
	return Config{
		MinVersion:     Version13,
		ClientAuth:     ClientAuthNone,
		ReloadInterval: DefaultReloadInterval,
	}
}

// Enabled reports whether TLS is configured: a certificate or key file is
// set.
func (c Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// withDefaults fills in empty fields.
func (c Config) withDefaults() Config {
	d := Default()
	if c.MinVersion == "" {
		c.MinVersion = d.MinVersion
	}
	if c.ClientAuth == "" {
		c.ClientAuth = d.ClientAuth
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = d.ReloadInterval
	}
	return c
}

// Validate checks every field and names the first bad one, prefixed with
// prefix (for example "tls"). It reads no file; New does.
func (c Config) Validate(prefix string) error {
	if prefix != "" {
		prefix += "."
	}
	c = c.withDefaults()
	switch c.MinVersion {
	case Version12, Version13:
	default:
		return fmt.Errorf("%smin_version: %q is not 1.2 or 1.3", prefix, c.MinVersion)
	}
	switch c.ClientAuth {
	case ClientAuthNone, ClientAuthOptional, ClientAuthRequire:
	default:
		return fmt.Errorf("%sclient_auth: %q is not none, optional or require", prefix, c.ClientAuth)
	}
	if c.ReloadInterval < 10*time.Millisecond || c.ReloadInterval > time.Hour {
		return fmt.Errorf("%sreload_interval: %s is not within 10ms..1h", prefix, c.ReloadInterval)
	}
	if !c.Enabled() {
		if c.ClientAuth != ClientAuthNone || c.ClientCAFile != "" {
			return fmt.Errorf("%sclient_auth: mutual TLS needs cert_file and key_file", prefix)
		}
		return nil
	}
	switch {
	case c.CertFile == "":
		return fmt.Errorf("%scert_file: must be set with key_file", prefix)
	case c.KeyFile == "":
		return fmt.Errorf("%skey_file: must be set with cert_file", prefix)
	case c.ClientAuth != ClientAuthNone && c.ClientCAFile == "":
		return fmt.Errorf("%sclient_ca_file: must be set for client_auth %q", prefix, c.ClientAuth)
	case c.ClientAuth == ClientAuthNone && c.ClientCAFile != "":
		return fmt.Errorf("%sclient_ca_file: set but client_auth is none (set client_auth to optional or require)", prefix)
	}
	return nil
}

// Errors a load reports, checked with errors.Is.
var (
	// ErrInsecureKeyFile: the key file is not a regular file, or group or
	// others may access it.
	ErrInsecureKeyFile = errors.New("key file is not a regular file private to its owner")
	// ErrExpired: the certificate's NotAfter has passed.
	ErrExpired = errors.New("certificate has expired")
	// ErrKeyMismatch: the key is not the certificate's.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
)
