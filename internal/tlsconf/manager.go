package tlsconf

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultProtos are the ALPN protocols TLSConfig offers when given none:
// HTTP/2 and HTTP/1.1, for the REST listener.
var DefaultProtos = []string{"h2", "http/1.1"}

// tls12Suites are the TLS 1.2 suites allowed with min_version 1.2: ECDHE key
// exchange with AEAD ciphers. TLS 1.3 suites are all AEAD and not
// configurable.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// expiry levels, in increasing severity.
const (
	expiryOK = iota
	expirySoon
	expiryPast
)

// Manager holds the current certificate, key and client CAs, and reloads
// them when their files change (Run) or when asked (Reload). Its methods
// are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	// cur is the snapshot new handshakes use; it is swapped whole.
	cur atomic.Pointer[snapshot]

	// reloadMu serializes reloads; it guards seen.
	reloadMu sync.Mutex
	seen     digest // the files' contents as last loaded or tried

	// mu guards the fields below.
	mu          sync.Mutex
	reloads     int
	lastAttempt time.Time
	lastErr     error
	warned      *snapshot // the snapshot warnedLevel is about
	warnedLevel int
}

// New loads and checks the configured files and returns a Manager serving
// them. It starts nothing: call Run to follow changes to the files. A
// configuration without cert_file and key_file is an error.
func New(cfg Config, logger *slog.Logger) (*Manager, error) {
	return newManager(cfg, logger, time.Now)
}

func newManager(cfg Config, logger *slog.Logger, now func() time.Time) (*Manager, error) {
	if !cfg.Enabled() {
		return nil, errors.New("tls: cert_file and key_file must be set")
	}
	if err := cfg.Validate("tls"); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg.withDefaults(), log: logger, now: now}
	t := now()
	s, err := load(m.cfg, t)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	m.cur.Store(s)
	m.seen = s.digest
	m.log.Info("tls certificate loaded", certAttrs(s)...)
	m.checkExpiry(t)
	return m, nil
}

// TLSConfig returns a server configuration for a listener that offers the
// ALPN protocols protos, in order of preference (DefaultProtos when none:
// use it for net/http; pass "h2" for grpc-go's credentials.NewTLS). Every
// handshake uses the certificate and client CAs current at that moment.
//
// The configuration picks its settings in GetConfigForClient; a caller may
// wrap that function (grpc-go does) but must not replace it.
func (m *Manager) TLSConfig(protos ...string) *tls.Config {
	if len(protos) == 0 {
		protos = DefaultProtos
	}
	protos = slices.Clone(protos)
	s := m.cur.Load()
	// The outer configuration carries the same settings so that one that
	// loses GetConfigForClient still fails closed; handshakes use the one
	// GetConfigForClient returns.
	base := m.configFor(s, protos)
	type cached struct {
		s   *snapshot
		cfg *tls.Config
	}
	var last atomic.Pointer[cached]
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s := m.cur.Load()
		if c := last.Load(); c != nil && c.s == s {
			return c.cfg, nil
		}
		c := &cached{s: s, cfg: m.configFor(s, protos)}
		last.Store(c)
		return c.cfg, nil
	}
	base.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return m.cur.Load().cert, nil
	}
	base.Certificates = nil
	return base
}

// configFor is the configuration handshakes use while s is current.
func (m *Manager) configFor(s *snapshot, protos []string) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		CipherSuites: slices.Clone(tls12Suites),
		Certificates: []tls.Certificate{*s.cert},
		NextProtos:   protos,
		ClientAuth:   tls.NoClientCert,
	}
	if m.cfg.MinVersion == Version12 {
		c.MinVersion = tls.VersionTLS12
	}
	switch m.cfg.ClientAuth {
	case ClientAuthOptional:
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = s.pool
	case ClientAuthRequire:
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = s.pool
	}
	return c
}

// Reload reads the files now, whether or not they changed. On error the
// current certificate, key and client CAs stay in use; the error is logged
// and kept for Status.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	return m.reloadLocked()
}

// reloadLocked loads the files and, if they load, makes them current.
// m.reloadMu must be held.
func (m *Manager) reloadLocked() error {
	t := m.now()
	s, err := load(m.cfg, t)
	m.mu.Lock()
	m.lastAttempt = t
	m.lastErr = err
	if err == nil {
		m.reloads++
	}
	m.mu.Unlock()
	if err != nil {
		m.log.Error("tls reload failed; the current certificate stays in use", "err", err)
		return fmt.Errorf("tls reload: %w", err)
	}
	m.seen = s.digest
	old := m.cur.Swap(s)
	if old.digest == s.digest {
		m.log.Debug("tls files unchanged")
	} else {
		m.log.Info("tls certificate reloaded", certAttrs(s)...)
	}
	m.checkExpiry(t)
	return nil
}

// Run polls the files every reload interval until ctx is done, and reloads
// them once a change has stayed the same for one interval (so that a
// certificate and its key renamed into place one after the other are read
// together). Contents that failed to load are not retried until they
// change again. Run also logs, once each, when the current certificate
// comes within ExpiryWarning of expiring and when it expires.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.ReloadInterval)
	defer t.Stop()
	var pending digest
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.poll(&pending)
		m.checkExpiry(m.now())
	}
}

// poll reloads if the files changed and have not changed since the last
// poll; pending is the digest the last poll saw.
func (m *Manager) poll(pending *digest) {
	d := pollDigest(m.cfg)
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	switch {
	case d == m.seen:
		*pending = digest{}
	case d != *pending:
		*pending = d
	default:
		*pending = digest{}
		m.seen = d // not retried unless it changes, even if it fails
		_ = m.reloadLocked()
	}
}

// checkExpiry logs once when the current certificate comes within
// ExpiryWarning of its expiry, and once when it expires.
func (m *Manager) checkExpiry(now time.Time) {
	s := m.cur.Load()
	level := expiryLevel(s.cert.Leaf.NotAfter, now)
	m.mu.Lock()
	if m.warned != s {
		m.warned, m.warnedLevel = s, expiryOK
	}
	report := level > m.warnedLevel
	m.warnedLevel = max(m.warnedLevel, level)
	m.mu.Unlock()
	if !report {
		return
	}
	attrs := append(certAttrs(s), "expires_in", s.cert.Leaf.NotAfter.Sub(now).Round(time.Minute).String())
	if level == expiryPast {
		m.log.Error("tls certificate has expired; clients will refuse it", attrs...)
	} else {
		m.log.Warn("tls certificate expires soon", attrs...)
	}
}

func expiryLevel(notAfter, now time.Time) int {
	switch {
	case now.After(notAfter):
		return expiryPast
	case notAfter.Sub(now) < ExpiryWarning:
		return expirySoon
	}
	return expiryOK
}

func certAttrs(s *snapshot) []any {
	leaf := s.cert.Leaf
	attrs := []any{
		"subject", leaf.Subject.String(),
		"sans", sans(leaf),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"sha256", fingerprint(leaf),
	}
	if s.pool != nil {
		attrs = append(attrs, "client_cas", len(s.cas))
	}
	return attrs
}

func sans(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Status describes the certificate in use and the last reload, for `aegis
// doctor` and logs. It holds no key material.
type Status struct {
	CertFile     string    `json:"cert_file"`
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	DNSNames     []string  `json:"dns_names,omitempty"`
	IPAddresses  []string  `json:"ip_addresses,omitempty"`
	URIs         []string  `json:"uris,omitempty"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	SHA256       string    `json:"sha256"` // of the leaf certificate
	MinVersion   string    `json:"min_version"`
	ClientAuth   string    `json:"client_auth"`
	ClientCAFile string    `json:"client_ca_file,omitempty"`
	// ClientCAs are the subjects of the client CAs in use.
	ClientCAs []string `json:"client_cas,omitempty"`
	// LoadedAt is when the certificate in use was loaded.
	LoadedAt time.Time `json:"loaded_at"`
	// Reloads counts successful reloads since New.
	Reloads int `json:"reloads"`
	// LastReloadAt is the last reload attempt, successful or not (zero if
	// none); LastReloadError is its error, empty if it succeeded.
	LastReloadAt    time.Time `json:"last_reload_at,omitzero"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// Expired reports whether the certificate in use has expired at now.
func (s Status) Expired(now time.Time) bool { return now.After(s.NotAfter) }

// ExpiresSoon reports whether the certificate in use expires within
// ExpiryWarning of now (or has expired).
func (s Status) ExpiresSoon(now time.Time) bool { return s.NotAfter.Sub(now) < ExpiryWarning }

// Status returns the state of the certificate in use and of the last
// reload.
func (m *Manager) Status() Status {
	s := m.cur.Load()
	leaf := s.cert.Leaf
	st := Status{
		CertFile:     m.cfg.CertFile,
		Subject:      leaf.Subject.String(),
		Issuer:       leaf.Issuer.String(),
		DNSNames:     slices.Clone(leaf.DNSNames),
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
		SHA256:       fingerprint(leaf),
		MinVersion:   m.cfg.MinVersion,
		ClientAuth:   m.cfg.ClientAuth,
		ClientCAFile: m.cfg.ClientCAFile,
		LoadedAt:     s.loadedAt,
	}
	for _, ip := range leaf.IPAddresses {
		st.IPAddresses = append(st.IPAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		st.URIs = append(st.URIs, u.String())
	}
	for _, c := range s.cas {
		st.ClientCAs = append(st.ClientCAs, c.Subject.String())
	}
	m.mu.Lock()
	st.Reloads = m.reloads
	st.LastReloadAt = m.lastAttempt
	if m.lastErr != nil {
		st.LastReloadError = m.lastErr.Error()
	}
	m.mu.Unlock()
	return st
}
