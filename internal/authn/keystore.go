package authn

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// KeyStore holds API keys and authenticates them. Records live in two
// buckets of a bbolt database the caller opens and closes
// ("authn-api-keys": key id → JSON record; "authn-meta"), and in memory:
// verification never touches the disk. A key's secret is never stored, only
// HMAC-SHA256(pepper, secret).
//
// Last-use times are kept in memory (to the second) and written to the
// database every 10 s, by Flush and by Close; a crash loses at most that
// much. Create and Revoke are durable when they return.
//
// It accepts "Authorization: Bearer aegis_…" and "Authorization: ApiKey
// aegis_…". Any other Bearer token is not its credential (ErrNoCredential);
// an ApiKey credential that is not a well-formed key is refused.
type KeyStore struct {
	db    *bolt.DB
	now   func() time.Time
	macs  sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the pepper
	dummy [sha256.Size]byte

	// keys maps key id to entry. The map is never modified once published:
	// writers (holding mu) copy it and swap the pointer, so readers need
	// no lock.
	keys atomic.Pointer[map[string]*keyEntry]

	mu     sync.Mutex // serializes database writes and keys swaps
	closed atomic.Bool

	stop chan struct{} // closed by Close to stop the flusher
	done chan struct{} // closed when the flusher has returned
}

var _ Authenticator = (*KeyStore)(nil)

// KeyRecord describes an API key. It never holds the secret or its hash.
type KeyRecord struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Roles  []string        `json:"roles,omitempty"`
	Scopes pipeline.Scopes `json:"scopes,omitzero"`
	// Created is when the key was created.
	Created time.Time `json:"created"`
	// Expires is when the key stops working; zero if never.
	Expires time.Time `json:"expires,omitzero"`
	// LastUsed is when the key last authenticated a request (to the
	// second); zero if never.
	LastUsed time.Time `json:"last_used,omitzero"`
	// Revoked is when the key was revoked; zero if it was not.
	Revoked time.Time `json:"revoked,omitzero"`
}

// ErrKeyNotFound is returned by Get and Revoke for an unknown key id.
var ErrKeyNotFound = errors.New("api key not found")

// storedKey is the database record.
type storedKey struct {
	KeyRecord
	Hash []byte `json:"hash"` // HMAC-SHA256(pepper, secret)
}

type keyEntry struct {
	rec         KeyRecord // LastUsed is in used, not here
	hash        [sha256.Size]byte
	principalID string
	used        *usage // shared by every version of the entry
}

type usage struct {
	last    atomic.Int64 // Unix nanoseconds of the latest use; 0 if never
	flushed int64        // last value written to the database; guarded by KeyStore.mu
}

func (u *usage) touch(now time.Time) {
	n := now.UnixNano()
	if n-u.last.Load() >= int64(time.Second) {
		u.last.Store(n)
	}
}

var (
	bucketKeys  = []byte("authn-api-keys")
	bucketMeta  = []byte("authn-meta")
	pepperCheck = []byte("pepper-check")
)

const (
	flushInterval = 10 * time.Second
	maxNameLen    = 200
	maxRoles      = 64
)

// OpenKeyStore loads the API keys in db, creating its buckets if needed,
// and starts writing last-use times back every 10 s. pepper must be
// PepperSize bytes (see LoadOrCreatePepper) and the same every time: the
// store remembers an HMAC of a fixed string and refuses a different pepper.
//
// The caller keeps db open until Close has returned, and closes it.
func OpenKeyStore(db *bolt.DB, pepper []byte) (*KeyStore, error) {
	return openKeyStore(db, pepper, flushInterval, time.Now)
}

func openKeyStore(db *bolt.DB, pepper []byte, every time.Duration, now func() time.Time) (*KeyStore, error) {
	if len(pepper) != PepperSize {
		return nil, fmt.Errorf("api key store: pepper is %d bytes, want %d", len(pepper), PepperSize)
	}
	pepper = bytes.Clone(pepper)
	s := &KeyStore{db: db, now: now, stop: make(chan struct{}), done: make(chan struct{})}
	s.macs.New = func() any { return hmac.New(sha256.New, pepper) }
	rand.Read(s.dummy[:])
	check := s.mac("aegis authn pepper check v1")

	keys := map[string]*keyEntry{}
	err := db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		bk, err := tx.CreateBucketIfNotExists(bucketKeys)
		if err != nil {
			return err
		}
		switch got := meta.Get(pepperCheck); {
		case got == nil:
			if bk.Stats().KeyN > 0 {
				return errors.New("keys present but no pepper check")
			}
			if err := meta.Put(pepperCheck, check[:]); err != nil {
				return err
			}
		case !hmac.Equal(got, check[:]):
			return errors.New("pepper does not match the one the keys were created with")
		}
		return bk.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(v)
			if err != nil || e.rec.ID != string(k) {
				return fmt.Errorf("corrupt record %q", k)
			}
			keys[e.rec.ID] = e
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("api key store: %w", err)
	}
	s.keys.Store(&keys)
	if every > 0 {
		go s.flusher(every)
	} else {
		close(s.done)
	}
	return s, nil
}

func decodeEntry(v []byte) (*keyEntry, error) {
	var sk storedKey
	if err := json.Unmarshal(v, &sk); err != nil {
		return nil, err
	}
	if !validKeyID(sk.ID) || len(sk.Hash) != sha256.Size {
		return nil, errors.New("bad id or hash")
	}
	e := &keyEntry{rec: sk.KeyRecord, principalID: "key:" + sk.ID, used: new(usage)}
	copy(e.hash[:], sk.Hash)
	if !sk.LastUsed.IsZero() {
		e.used.last.Store(sk.LastUsed.UnixNano())
		e.used.flushed = sk.LastUsed.UnixNano()
	}
	e.rec.LastUsed = time.Time{}
	return e, nil
}

// mac returns HMAC-SHA256(pepper, secret).
func (s *KeyStore) mac(secret string) [sha256.Size]byte {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(secret))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	s.macs.Put(h)
	return sum
}

// Method implements Authenticator.
func (s *KeyStore) Method() string { return pipeline.MethodAPIKey }

// Authenticate implements Authenticator. The principal is "key:<id>" with
// the key's roles, scopes and expiry.
func (s *KeyStore) Authenticate(_ context.Context, c Credentials) (*pipeline.Principal, error) {
	scheme, cred, ok := splitAuthorization(c.Authorization)
	if !ok {
		return nil, ErrNoCredential
	}
	switch {
	case strings.EqualFold(scheme, schemeAPIKey):
	case strings.EqualFold(scheme, schemeBearer) && strings.HasPrefix(cred, APIKeyPrefix):
	default:
		return nil, ErrNoCredential
	}
	return s.verify(cred)
}

const (
	reasonKeyMalformed   = "api key: malformed"
	reasonKeyUnknown     = "api key: unknown id"
	reasonKeyWrongSecret = "api key: wrong secret"
	reasonKeyRevoked     = "api key: revoked"
	reasonKeyExpired     = "api key: expired"
	reasonKeyClosed      = "api key: store closed"
)

func (s *KeyStore) verify(key string) (*pipeline.Principal, error) {
	if s.closed.Load() {
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyClosed)
	}
	id, secret, ok := parseAPIKey(key)
	if !ok {
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyMalformed)
	}
	e := (*s.keys.Load())[id]
	// Hash and compare whether or not the id exists, so that the time
	// taken does not tell which ids do.
	want := &s.dummy
	if e != nil {
		want = &e.hash
	}
	got := s.mac(secret)
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	switch {
	case e == nil:
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyUnknown)
	case !match:
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyWrongSecret)
	case !e.rec.Revoked.IsZero():
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyRevoked)
	}
	now := s.now()
	if !e.rec.Expires.IsZero() && !now.Before(e.rec.Expires) {
		return nil, invalid(pipeline.MethodAPIKey, reasonKeyExpired)
	}
	e.used.touch(now)
	return &pipeline.Principal{
		ID:      e.principalID,
		Method:  pipeline.MethodAPIKey,
		Roles:   e.rec.Roles,
		Scopes:  e.rec.Scopes,
		Expires: e.rec.Expires,
	}, nil
}

// Create makes a new API key and returns it with its record. The key
// string is the only copy of the secret: show it once and drop it. ttl 0
// means the key does not expire.
func (s *KeyStore) Create(name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) (string, KeyRecord, error) {
	if err := checkKeyParams(name, roles, scopes, ttl); err != nil {
		return "", KeyRecord{}, fmt.Errorf("create api key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return "", KeyRecord{}, errors.New("create api key: store closed")
	}
	keys := *s.keys.Load()
	id := randomText(keyIDBytes)
	for keys[id] != nil {
		id = randomText(keyIDBytes)
	}
	secret := randomText(keySecretBytes)
	now := s.now().UTC().Round(0)
	e := &keyEntry{
		rec: KeyRecord{
			ID:      id,
			Name:    name,
			Roles:   slices.Clone(roles),
			Scopes:  cloneScopes(scopes),
			Created: now,
		},
		hash:        s.mac(secret),
		principalID: "key:" + id,
		used:        new(usage),
	}
	if ttl > 0 {
		e.rec.Expires = now.Add(ttl)
	}
	if err := s.putLocked(e, true); err != nil {
		return "", KeyRecord{}, fmt.Errorf("create api key: %w", err)
	}
	s.swapLocked(e)
	return APIKeyPrefix + id + "_" + secret, e.record(), nil
}

func checkKeyParams(name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) error {
	if name == "" || len(name) > maxNameLen || !printable(name) {
		return fmt.Errorf("name %q: want 1..%d printable characters", name, maxNameLen)
	}
	if len(roles) > maxRoles {
		return fmt.Errorf("roles: %d is more than %d", len(roles), maxRoles)
	}
	for _, r := range roles {
		if r == "" || len(r) > maxNameLen || !printable(r) {
			return fmt.Errorf("role %q: want 1..%d printable characters", r, maxNameLen)
		}
	}
	for _, m := range scopes.Models {
		if _, err := path.Match(m, ""); err != nil || m == "" {
			return fmt.Errorf("scopes.models: bad pattern %q", m)
		}
	}
	switch {
	case scopes.MaxBatch < 0:
		return fmt.Errorf("scopes.max_batch: %d is negative", scopes.MaxBatch)
	case !(scopes.MaxRate >= 0): // also refuses NaN
		return fmt.Errorf("scopes.max_rate: %v is negative", scopes.MaxRate)
	case scopes.TopK < 0:
		return fmt.Errorf("scopes.top_k: %d is negative", scopes.TopK)
	case ttl < 0:
		return fmt.Errorf("ttl: %s is negative", ttl)
	}
	switch scopes.OutputDetail {
	case "", pipeline.OutputFull, pipeline.OutputLabel:
	case pipeline.OutputTopK:
		if scopes.TopK < 1 {
			return errors.New("scopes.top_k: must be set for output_detail top_k")
		}
	default:
		return fmt.Errorf("scopes.output_detail: %q is not full, top_k or label", scopes.OutputDetail)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func cloneScopes(s pipeline.Scopes) pipeline.Scopes {
	s.Models = slices.Clone(s.Models)
	return s
}

// record returns a copy of e's record that shares nothing with e.
func (e *keyEntry) record() KeyRecord {
	r := e.rec
	r.Roles = slices.Clone(r.Roles)
	r.Scopes = cloneScopes(r.Scopes)
	if n := e.used.last.Load(); n != 0 {
		r.LastUsed = time.Unix(0, n).UTC()
	}
	return r
}

// putLocked writes e's record (with its current last use) to the
// database. With create set it refuses to overwrite a record.
func (s *KeyStore) putLocked(e *keyEntry, create bool) error {
	last := e.used.last.Load()
	sk := storedKey{KeyRecord: e.rec, Hash: e.hash[:]}
	if last != 0 {
		sk.LastUsed = time.Unix(0, last).UTC()
	}
	v, err := json.Marshal(sk)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketKeys)
		if create && bk.Get([]byte(e.rec.ID)) != nil {
			return fmt.Errorf("key id %s exists", e.rec.ID)
		}
		return bk.Put([]byte(e.rec.ID), v)
	})
	if err == nil {
		e.used.flushed = last
	}
	return err
}

// swapLocked publishes a copy of the key map with e in it.
func (s *KeyStore) swapLocked(e *keyEntry) {
	old := *s.keys.Load()
	keys := make(map[string]*keyEntry, len(old)+1)
	for id, o := range old {
		keys[id] = o
	}
	keys[e.rec.ID] = e
	s.keys.Store(&keys)
}

// Get returns the record of the key with this id, or ErrKeyNotFound.
func (s *KeyStore) Get(id string) (KeyRecord, error) {
	e := (*s.keys.Load())[id]
	if e == nil {
		return KeyRecord{}, ErrKeyNotFound
	}
	return e.record(), nil
}

// List returns every key's record, revoked and expired ones included,
// oldest first.
func (s *KeyStore) List() []KeyRecord {
	keys := *s.keys.Load()
	out := make([]KeyRecord, 0, len(keys))
	for _, e := range keys {
		out = append(out, e.record())
	}
	slices.SortFunc(out, func(a, b KeyRecord) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Revoke revokes the key with this id for good; revoking a revoked key
// does nothing. It returns ErrKeyNotFound for an unknown id. Requests
// already authenticated with the key are not affected.
func (s *KeyStore) Revoke(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return errors.New("revoke api key: store closed")
	}
	old := (*s.keys.Load())[id]
	if old == nil {
		return ErrKeyNotFound
	}
	if !old.rec.Revoked.IsZero() {
		return nil
	}
	e := *old
	e.rec.Revoked = s.now().UTC().Round(0)
	if err := s.putLocked(&e, false); err != nil {
		return fmt.Errorf("revoke api key %s: %w", id, err)
	}
	s.swapLocked(&e)
	return nil
}

// Flush writes last-use times that changed since the previous flush to
// the database, in one transaction.
func (s *KeyStore) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *KeyStore) flushLocked() error {
	var dirty []*keyEntry
	for _, e := range *s.keys.Load() {
		if e.used.last.Load() != e.used.flushed {
			dirty = append(dirty, e)
		}
	}
	if len(dirty) == 0 {
		return nil
	}
	lasts := make([]int64, len(dirty))
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketKeys)
		for i, e := range dirty {
			lasts[i] = e.used.last.Load()
			sk := storedKey{KeyRecord: e.rec, Hash: e.hash[:]}
			sk.LastUsed = time.Unix(0, lasts[i]).UTC()
			v, err := json.Marshal(sk)
			if err != nil {
				return err
			}
			if err := bk.Put([]byte(e.rec.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("flush api key last use: %w", err)
	}
	for i, e := range dirty {
		e.used.flushed = lasts[i]
	}
	return nil
}

func (s *KeyStore) flusher(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failed flush leaves the times dirty: the next one retries.
			_ = s.Flush()
		}
	}
}

// Close stops the background flusher and flushes last-use times. The store
// then refuses every key and every change. It does not close the database.
func (s *KeyStore) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.stop != nil {
		close(s.stop)
	}
	<-s.done
	return s.Flush()
}
