package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA key loaded from a JWKS.
const minRSABits = 2048

// keySet is one loaded JWKS: signing keys by kid. It is immutable; a
// change in the source publishes a new one, with an empty token cache.
type keySet struct {
	byKid       map[string][]jose.JSONWebKey
	fingerprint [sha256.Size]byte
	cache       *tokenCache // tokens verified with this set; nil if off
}

// jwksSource loads key sets from a URL or a file and keeps the current one.
type jwksSource struct {
	url, file   string
	client      *http.Client
	timeout     time.Duration
	maxBytes    int64
	minInterval time.Duration
	cacheSize   int
	now         func() time.Time

	set atomic.Pointer[keySet]

	mu          sync.Mutex // guards the fields below
	lastAttempt time.Time  // start of the latest load
	inflight    *load      // the load under way, or nil
	stamp       fs.FileInfo
}

// load is one load of the key set; waiters read err after done closes.
type load struct {
	done chan struct{}
	err  error
}

var errRateLimited = errors.New("jwks: refreshed too recently")

func newJWKSSource(c JWTConfig, now func() time.Time) *jwksSource {
	s := &jwksSource{
		url:         c.JWKSURL,
		file:        c.JWKSFile,
		timeout:     c.FetchTimeout,
		maxBytes:    c.MaxJWKSBytes,
		minInterval: c.MinRefreshInterval,
		cacheSize:   c.TokenCacheSize,
		now:         now,
	}
	if s.url != "" {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 1
		s.client = &http.Client{
			Transport: tr,
			// A redirect is an answer we do not accept: the configured URL
			// is the only source of keys.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s.set.Store(&keySet{})
	return s
}

// current returns the key set in use.
func (s *jwksSource) current() *keySet { return s.set.Load() }

// refresh loads the key set again. Without force it does nothing and
// returns errRateLimited if a load started less than minInterval ago. If a
// load is under way it waits for that one instead (and with force, then
// starts its own). It returns when the load ends or ctx does; the load
// itself is bounded by the fetch timeout, not by ctx.
func (s *jwksSource) refresh(ctx context.Context, force bool) error {
	for {
		s.mu.Lock()
		if l := s.inflight; l != nil {
			s.mu.Unlock()
			select {
			case <-l.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if force {
				continue
			}
			return l.err
		}
		now := s.now()
		if !force && !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.minInterval {
			s.mu.Unlock()
			return errRateLimited
		}
		s.lastAttempt = now
		l := &load{done: make(chan struct{})}
		s.inflight = l
		s.mu.Unlock()

		go func() {
			l.err = s.load()
			s.mu.Lock()
			s.inflight = nil
			s.mu.Unlock()
			close(l.done)
		}()
		select {
		case <-l.done:
			return l.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changed reports whether the JWKS file differs from the one last loaded.
// It is true for a URL source.
func (s *jwksSource) changed() bool {
	if s.file == "" {
		return true
	}
	fi, err := os.Stat(s.file)
	if err != nil {
		return true // let the load report it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.stamp
	return old == nil || !os.SameFile(old, fi) || !old.ModTime().Equal(fi.ModTime()) || old.Size() != fi.Size()
}

// load reads and parses the source and publishes the key set if it
// differs from the current one.
func (s *jwksSource) load() error {
	var (
		b     []byte
		stamp fs.FileInfo
		err   error
	)
	if s.url != "" {
		b, err = s.fetch()
	} else {
		b, stamp, err = s.readFile()
	}
	if err != nil {
		return err
	}
	byKid, fp, err := parseJWKS(b)
	if err != nil {
		return err
	}
	if stamp != nil {
		s.mu.Lock()
		s.stamp = stamp
		s.mu.Unlock()
	}
	if s.current().fingerprint == fp && s.current().byKid != nil {
		return nil
	}
	ks := &keySet{byKid: byKid, fingerprint: fp}
	if s.cacheSize > 0 {
		ks.cache = newTokenCache(s.cacheSize)
	}
	s.set.Store(ks)
	return nil
}

func (s *jwksSource) fetch() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", s.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: status %d", s.url, resp.StatusCode)
	}
	return readCapped(resp.Body, s.maxBytes, s.url)
}

func (s *jwksSource) readFile() ([]byte, fs.FileInfo, error) {
	f, err := os.Open(s.file)
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: %w", err)
	}
	b, err := readCapped(f, s.maxBytes, s.file)
	return b, fi, err
}

func readCapped(r io.Reader, max int64, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", name, max)
	}
	return b, nil
}

// parseJWKS returns the usable signing keys of a JWK Set by kid, and a
// fingerprint of them. A key is usable if it has a kid, is a valid public
// RSA (2048 bits or more), EC or Ed25519 key, and its "use" is absent or
// "sig". Other keys (encryption keys, symmetric keys, kinds go-jose does
// not know) are skipped, so one odd key does not hide the rest.
func parseJWKS(b []byte) (map[string][]jose.JSONWebKey, [sha256.Size]byte, error) {
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	var fp [sha256.Size]byte
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fp, fmt.Errorf("jwks: %w", err)
	}
	if doc.Keys == nil {
		return nil, fp, errors.New(`jwks: no "keys" member`)
	}
	byKid := map[string][]jose.JSONWebKey{}
	var prints []string
	for _, raw := range *doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil || !usableKey(&k) {
			continue
		}
		tp, err := k.Thumbprint(crypto.SHA256)
		if err != nil {
			continue
		}
		byKid[k.KeyID] = append(byKid[k.KeyID], k)
		prints = append(prints, fmt.Sprintf("%q %q %q %x", k.KeyID, k.Algorithm, k.Use, tp))
	}
	slices.Sort(prints)
	fp = sha256.Sum256([]byte(strings.Join(prints, "\n")))
	return byKid, fp, nil
}

func usableKey(k *jose.JSONWebKey) bool {
	if k.KeyID == "" || (k.Use != "" && k.Use != "sig") || !k.Valid() || !k.IsPublic() {
		return false
	}
	if pub, ok := k.Key.(*rsa.PublicKey); ok && pub.N.BitLen() < minRSABits {
		return false
	}
	return true
}

// keyFits reports whether k may verify a signature made with alg: its
// "alg", if set, is alg, and its type and curve are those alg uses.
func keyFits(k *jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		want := map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
		return want != "" && pub.Curve.Params().Name == want
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	}
	return false
}
