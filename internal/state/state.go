// Package state keeps what Aegis must remember across restarts. The
// embedded store is a bbolt file; a Redis store for several replicas will
// implement the same interfaces.
package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Versions remembers the highest version deployed of each model, for
// anti-rollback.
type Versions interface {
	// Highest returns the highest version recorded for model, or 0.
	Highest(model string) (int64, error)
	// Record raises the recorded version of model to v if v is higher.
	Record(model string, v int64) error
}

// Bolt is the embedded store.
type Bolt struct {
	db *bolt.DB
}

var _ Versions = (*Bolt)(nil)

var bucketVersions = []byte("deployed-versions")

// OpenBolt opens (creating) the store in dir, mode 0600 in a 0700
// directory. Only one process may hold it open.
func OpenBolt(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "aegis.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketVersions)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &Bolt{db: db}, nil
}

// DB returns the underlying database, for components that keep their own
// buckets in it (API keys).
func (b *Bolt) DB() *bolt.DB { return b.db }

// Close closes the store.
func (b *Bolt) Close() error { return b.db.Close() }

// Highest implements Versions.
func (b *Bolt) Highest(model string) (int64, error) {
	var v int64
	err := b.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketVersions).Get([]byte(model))
		if raw == nil {
			return nil
		}
		if len(raw) != 8 {
			return errors.New("corrupt version record")
		}
		v = int64(binary.BigEndian.Uint64(raw))
		return nil
	})
	return v, err
}

// Record implements Versions. The write is durable before it returns.
func (b *Bolt) Record(model string, v int64) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketVersions)
		if raw := bk.Get([]byte(model)); len(raw) == 8 && int64(binary.BigEndian.Uint64(raw)) >= v {
			return nil
		}
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], uint64(v))
		return bk.Put([]byte(model), buf[:])
	})
}
