package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

func openTestStore(t testing.TB, db *bolt.DB, clk *clock) *KeyStore {
	t.Helper()
	s, err := openKeyStore(db, testPepper(), 0, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func createKey(t testing.TB, s *KeyStore, name string, roles []string, scopes pipeline.Scopes, ttl time.Duration) (string, KeyRecord) {
	t.Helper()
	key, rec, err := s.Create(name, roles, scopes, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return key, rec
}

func TestAPIKeyCreateAndVerify(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	scopes := pipeline.Scopes{Models: []string{"resnet-*"}, MaxBatch: 8, OutputDetail: pipeline.OutputLabel}
	key, rec := createKey(t, s, "ci", []string{"deployer"}, scopes, 24*time.Hour)

	id, secret, ok := parseAPIKey(key)
	if !ok || id != rec.ID {
		t.Fatalf("created key %q does not parse to id %q", key, rec.ID)
	}
	if len(secret) != keySecretLen || keySecretLen*5 < 256 {
		t.Errorf("secret is %d characters, want %d (≥ 256 bits)", len(secret), keySecretLen)
	}
	for _, scheme := range []string{"Bearer", "bearer", "ApiKey", "APIKEY"} {
		p, err := s.Authenticate(context.Background(), Credentials{Authorization: scheme + " " + key})
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		want := pipeline.Principal{ID: "key:" + rec.ID, Method: pipeline.MethodAPIKey, Roles: []string{"deployer"},
			Scopes: scopes, Expires: clk.Now().Add(24 * time.Hour)}
		if p.ID != want.ID || p.Method != want.Method || !slices.Equal(p.Roles, want.Roles) ||
			!slices.Equal(p.Scopes.Models, want.Scopes.Models) || p.Scopes.MaxBatch != 8 ||
			p.Scopes.OutputDetail != pipeline.OutputLabel || !p.Expires.Equal(want.Expires) {
			t.Errorf("%s: got %+v, want %+v", scheme, p, want)
		}
	}
	// Two keys never share id or secret.
	key2, rec2 := createKey(t, s, "ci", nil, pipeline.Scopes{}, 0)
	_, secret2, _ := parseAPIKey(key2)
	if rec2.ID == rec.ID || secret2 == secret {
		t.Error("two keys share an id or a secret")
	}
	if !rec2.Expires.IsZero() {
		t.Errorf("ttl 0: Expires %v, want zero", rec2.Expires)
	}
}

func TestAPIKeyRefuses(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	key, _ := createKey(t, s, "good", nil, pipeline.Scopes{}, 0)
	revoked, revokedRec := createKey(t, s, "revoked", nil, pipeline.Scopes{}, 0)
	if err := s.Revoke(revokedRec.ID); err != nil {
		t.Fatal(err)
	}
	expiring, _ := createKey(t, s, "expiring", nil, pipeline.Scopes{}, time.Hour)
	id, secret, _ := parseAPIKey(key)
	other, _ := createKey(t, s, "other", nil, pipeline.Scopes{}, 0)
	otherID, otherSecret, _ := parseAPIKey(other)

	change := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name, key, reason string
		// bearer is the result with "Bearer" if not reason: a Bearer token
		// without the key prefix is not an API key (it may be a JWT).
		bearer string
	}{
		{"unknown id", APIKeyPrefix + randomText(keyIDBytes) + "_" + secret, reasonKeyUnknown, ""},
		{"wrong secret", APIKeyPrefix + id + "_" + randomText(keySecretBytes), reasonKeyWrongSecret, ""},
		{"another key's secret", APIKeyPrefix + id + "_" + otherSecret, reasonKeyWrongSecret, ""},
		{"another key's id", APIKeyPrefix + otherID + "_" + secret, reasonKeyWrongSecret, ""},
		{"secret: first character changed", APIKeyPrefix + id + "_" + change(secret, 0), reasonKeyWrongSecret, ""},
		{"secret: middle character changed", APIKeyPrefix + id + "_" + change(secret, keySecretLen/2), reasonKeyWrongSecret, ""},
		{"secret: last character changed", APIKeyPrefix + id + "_" + change(secret, keySecretLen-1), reasonKeyWrongSecret, ""},
		{"id: one character changed", APIKeyPrefix + change(id, 3) + "_" + secret, reasonKeyUnknown, ""},
		{"revoked", revoked, reasonKeyRevoked, ""},
		{"wrong prefix", "aegiz_" + id + "_" + secret, reasonKeyMalformed, "no credential"},
		{"upper-case prefix", "AEGIS_" + id + "_" + secret, reasonKeyMalformed, "no credential"},
		{"missing secret", APIKeyPrefix + id, reasonKeyMalformed, ""},
		{"missing secret after separator", APIKeyPrefix + id + "_", reasonKeyMalformed, ""},
		{"missing id", APIKeyPrefix + "_" + secret, reasonKeyMalformed, ""},
		{"prefix only", APIKeyPrefix, reasonKeyMalformed, ""},
		{"separator moved", APIKeyPrefix + id[:15] + "_" + id[15:] + secret, reasonKeyMalformed, ""},
		{"overlong secret", key + "a", reasonKeyMalformed, ""},
		{"overlong", key + strings.Repeat("a", 10000), reasonKeyMalformed, ""},
		{"short secret", key[:len(key)-1], reasonKeyMalformed, ""},
		{"upper-case secret", APIKeyPrefix + id + "_" + strings.ToUpper(secret), reasonKeyMalformed, ""},
		{"digit 1 in secret", APIKeyPrefix + id + "_1" + secret[1:], reasonKeyMalformed, ""},
		{"digit 8 in id", APIKeyPrefix + "8" + id[1:] + "_" + secret, reasonKeyMalformed, ""},
		{"padding", APIKeyPrefix + id + "_" + secret[:len(secret)-1] + "=", reasonKeyMalformed, ""},
		{"dash separator", APIKeyPrefix + id + "-" + secret, reasonKeyMalformed, ""},
		{"non-ASCII", APIKeyPrefix + id + "_" + secret[:len(secret)-2] + "é", reasonKeyMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, scheme := range []string{"Bearer ", "ApiKey "} {
				want := tt.reason
				if scheme == "Bearer " && tt.bearer != "" {
					want = tt.bearer
				}
				p, err := s.Authenticate(context.Background(), Credentials{Authorization: scheme + tt.key})
				if got := reasonOf(err); got != want || p != nil {
					t.Errorf("%sgot %q, want %q", scheme, got, want)
				}
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains the secret", err)
				}
			}
		})
	}
	// The originals still work, so the refusals are the changes' doing.
	for _, k := range []string{key, other, expiring} {
		if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + k}); err != nil {
			t.Fatalf("unchanged key: %v", err)
		}
	}
	clk.Advance(time.Hour)
	if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + expiring}); reasonOf(err) != reasonKeyExpired {
		t.Errorf("expired: got %q, want %q", reasonOf(err), reasonKeyExpired)
	}
}

func TestAPIKeyNotItsCredential(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	for _, h := range []string{"", "Bearer", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", "Basic YTpi", "Token aegis_x", "Bearer  ", "Bearer aegis_a b"} {
		if _, err := s.Authenticate(context.Background(), Credentials{Authorization: h}); err != ErrNoCredential {
			t.Errorf("%q: got %v, want ErrNoCredential", h, err)
		}
	}
}

func TestAPIKeyStoreHoldsNoSecret(t *testing.T) {
	clk := newClock()
	db, path := openDB(t)
	s := openTestStore(t, db, clk)
	var secrets []string
	var ids []string
	for i := range 20 {
		key, rec := createKey(t, s, "k", nil, pipeline.Scopes{}, 0)
		_, secret, _ := parseAPIKey(key)
		secrets = append(secrets, secret)
		ids = append(ids, rec.ID)
		if i%2 == 0 {
			if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); err != nil {
				t.Fatal(err)
			}
			s.Revoke(rec.ID)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, secret := range secrets {
		raw, _ := keyEncoding.DecodeString(secret)
		for _, form := range [][]byte{[]byte(secret), []byte(strings.ToUpper(secret)), raw, []byte(base64.StdEncoding.EncodeToString(raw))} {
			if bytes.Contains(file, form) {
				t.Errorf("the database file contains secret %d", i)
			}
		}
		// The scan does find what is there.
		if !bytes.Contains(file, []byte(ids[i])) {
			t.Errorf("the database file lacks key id %d: the scan is broken", i)
		}
	}
}

func TestAPIKeyListAndGetHoldNoHash(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	_, rec := createKey(t, s, "a", []string{"r"}, pipeline.Scopes{}, 0)
	clk.Advance(time.Second)
	createKey(t, s, "b", nil, pipeline.Scopes{}, time.Hour)

	var stored storedKey
	db.View(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(bucketKeys).Get([]byte(rec.ID)), &stored) })
	if len(stored.Hash) != 32 {
		t.Fatalf("stored hash is %d bytes, want 32", len(stored.Hash))
	}
	got, err := s.Get(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	list := s.List()
	if len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Fatalf("List: got %+v, want a then b", list)
	}
	out := mustJSON(t, []any{list, got})
	for _, form := range []string{base64.StdEncoding.EncodeToString(stored.Hash), string(stored.Hash), "hash"} {
		if bytes.Contains(out, []byte(form)) {
			t.Errorf("List/Get output %s contains the hash (%q)", out, form)
		}
	}
	// Records handed out are copies.
	got.Roles[0] = "admin"
	if again, _ := s.Get(rec.ID); again.Roles[0] != "r" {
		t.Error("changing a returned record changed the store")
	}
	if _, err := s.Get("nosuchkeyidxxxxx"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Get unknown: got %v, want ErrKeyNotFound", err)
	}
	if err := s.Revoke("nosuchkeyidxxxxx"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Revoke unknown: got %v, want ErrKeyNotFound", err)
	}
}

func TestAPIKeyPersistence(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	path := filepath.Join(dir, "aegis.db")
	open := func() (*bolt.DB, *KeyStore) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := openKeyStore(db, testPepper(), 0, clk.Now)
		if err != nil {
			db.Close()
			t.Fatal(err)
		}
		return db, s
	}
	db, s := open()
	key, rec := createKey(t, s, "kept", []string{"user"}, pipeline.Scopes{MaxRate: 5}, time.Hour)
	gone, goneRec := createKey(t, s, "revoked", nil, pipeline.Scopes{}, 0)
	s.Revoke(goneRec.ID)
	if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db.Close()

	db, s = open()
	defer db.Close()
	defer s.Close()
	p, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key})
	if err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	if p.ID != "key:"+rec.ID || !slices.Equal(p.Roles, []string{"user"}) || p.Scopes.MaxRate != 5 || !p.Expires.Equal(rec.Expires) {
		t.Errorf("after reopen: got %+v", p)
	}
	if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + gone}); reasonOf(err) != reasonKeyRevoked {
		t.Errorf("revoked after reopen: got %q, want %q", reasonOf(err), reasonKeyRevoked)
	}
	if got, _ := s.Get(rec.ID); !got.LastUsed.Equal(clk.Now()) {
		t.Errorf("last used after reopen: got %v, want %v", got.LastUsed, clk.Now())
	}
}

func TestAPIKeyStoreRefusesOtherPepper(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	createKey(t, s, "a", nil, pipeline.Scopes{}, 0)
	s.Close()
	other := testPepper()
	other[0] ^= 1
	if _, err := openKeyStore(db, other, 0, clk.Now); err == nil {
		t.Error("another pepper: got nil, want an error")
	}
	if _, err := openKeyStore(db, other[:16], 0, clk.Now); err == nil {
		t.Error("short pepper: got nil, want an error")
	}
	if _, err := openKeyStore(db, testPepper(), 0, clk.Now); err != nil {
		t.Errorf("same pepper: %v", err)
	}
}

func TestAPIKeyLastUsedFlush(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	key, rec := createKey(t, s, "a", nil, pipeline.Scopes{}, 0)
	stored := func() time.Time {
		var sk storedKey
		if err := db.View(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(bucketKeys).Get([]byte(rec.ID)), &sk) }); err != nil {
			t.Fatal(err)
		}
		return sk.LastUsed
	}
	use := func() {
		if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); err != nil {
			t.Fatal(err)
		}
	}
	use()
	if got, _ := s.Get(rec.ID); !got.LastUsed.Equal(clk.Now()) {
		t.Errorf("in memory: got %v, want %v", got.LastUsed, clk.Now())
	}
	if got := stored(); !got.IsZero() {
		t.Errorf("before a flush the database has %v, want nothing: verification must not write", got)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !got.Equal(clk.Now()) {
		t.Errorf("after Flush: got %v, want %v", got, clk.Now())
	}
	// Within a second nothing changes; later it does, and Close flushes.
	t0 := clk.Now()
	clk.Advance(500 * time.Millisecond)
	use()
	if got, _ := s.Get(rec.ID); !got.LastUsed.Equal(t0) {
		t.Errorf("use within a second: got %v, want %v", got.LastUsed, t0)
	}
	clk.Advance(time.Minute)
	use()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !got.Equal(clk.Now()) {
		t.Errorf("after Close: got %v, want %v", got, clk.Now())
	}
}

func TestAPIKeyBackgroundFlush(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s, err := openKeyStore(db, testPepper(), 20*time.Millisecond, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key, rec := createKey(t, s, "a", nil, pipeline.Scopes{}, 0)
	if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var sk storedKey
		db.View(func(tx *bolt.Tx) error { return json.Unmarshal(tx.Bucket(bucketKeys).Get([]byte(rec.ID)), &sk) })
		if sk.LastUsed.Equal(clk.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("last use not flushed in the background within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAPIKeyClosedRefuses(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	key, rec := createKey(t, s, "a", nil, pipeline.Scopes{}, 0)
	s.Close()
	if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); reasonOf(err) != reasonKeyClosed {
		t.Errorf("after Close: got %q, want %q", reasonOf(err), reasonKeyClosed)
	}
	if _, _, err := s.Create("b", nil, pipeline.Scopes{}, 0); err == nil {
		t.Error("Create after Close: got nil, want an error")
	}
	if err := s.Revoke(rec.ID); err == nil {
		t.Error("Revoke after Close: got nil, want an error")
	}
}

func TestAPIKeyCreateValidates(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	tests := []struct {
		name   string
		key    string
		roles  []string
		scopes pipeline.Scopes
		ttl    time.Duration
	}{
		{name: "empty name", key: ""},
		{name: "control character", key: "a\nb"},
		{name: "long name", key: strings.Repeat("n", maxNameLen+1)},
		{name: "empty role", key: "a", roles: []string{""}},
		{name: "negative ttl", key: "a", ttl: -time.Second},
		{name: "bad model pattern", key: "a", scopes: pipeline.Scopes{Models: []string{"[a"}}},
		{name: "negative batch", key: "a", scopes: pipeline.Scopes{MaxBatch: -1}},
		{name: "unknown output detail", key: "a", scopes: pipeline.Scopes{OutputDetail: "some"}},
		{name: "top_k without k", key: "a", scopes: pipeline.Scopes{OutputDetail: pipeline.OutputTopK}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Create(tt.key, tt.roles, tt.scopes, tt.ttl); err == nil {
				t.Error("got nil, want an error")
			}
		})
	}
	if n := len(s.List()); n != 0 {
		t.Errorf("%d keys created by refused calls", n)
	}
}

func TestAPIKeyConcurrent(t *testing.T) {
	clk := newClock()
	db, _ := openDB(t)
	s := openTestStore(t, db, clk)
	key, _ := createKey(t, s, "hot", nil, pipeline.Scopes{}, 0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if _, err := s.Authenticate(context.Background(), Credentials{Authorization: "Bearer " + key}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			_, rec, err := s.Create("churn", nil, pipeline.Scopes{}, 0)
			if err != nil {
				t.Error(err)
				return
			}
			s.Revoke(rec.ID)
			clk.Advance(2 * time.Second)
			s.Flush()
			s.List()
		}
	})
	wg.Wait()
}

func TestPepperFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pepper")
	p1, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(p1) != PepperSize || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created %d bytes, mode %04o; want %d, 0600", len(p1), fi.Mode().Perm(), PepperSize)
	}
	if bytes.Equal(p1, make([]byte, PepperSize)) {
		t.Fatal("pepper is all zero")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries after creation, want only the pepper", len(ents))
	}
	p2, err := LoadOrCreatePepper(path)
	if err != nil || !bytes.Equal(p1, p2) {
		t.Fatalf("reload: got %x, %v; want %x", p2, err, p1)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644, 0o602} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreatePepper(path); err == nil {
			t.Errorf("mode %04o: got nil, want an error", mode)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadOrCreatePepper(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	for name, content := range map[string][]byte{"short": make([]byte, 31), "long": make([]byte, 33), "empty": nil} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreatePepper(p); err == nil {
			t.Errorf("%s file: got nil, want an error", name)
		}
	}
	if _, err := LoadOrCreatePepper(dir); err == nil {
		t.Error("directory: got nil, want an error")
	}
}
