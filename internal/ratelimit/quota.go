package ratelimit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Quota periods are UTC days and UTC calendar months. A period's index is
// days since the epoch, or year×12 + month − 1.

const nsPerDay = int64(24 * time.Hour)

// periodIndex returns the index of the period of kind p containing now (ns
// since the epoch) and when that period ends.
func periodIndex(p uint8, now int64) (index int32, end int64) {
	if p == periodDay {
		d := now / nsPerDay
		if now < 0 && now%nsPerDay != 0 {
			d--
		}
		return int32(d), (d + 1) * nsPerDay
	}
	t := time.Unix(0, now).UTC()
	y, m, _ := t.Date()
	return int32(y*12 + int(m) - 1), time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
}

// periodLabelOf names a period in Redis keys: 20260305 for a day, 202603 for
// a month.
func periodLabelOf(p uint8, index int32) string {
	if p == periodDay {
		return time.Unix(int64(index)*86400, 0).UTC().Format("20060102")
	}
	return fmt.Sprintf("%04d%02d", index/12, index%12+1)
}

// bbolt layout: bucket "ratelimit-quotas", key
//
//	period (1 byte) | index (4 bytes, big-endian) | uvarint len(principal) | principal | model
//
// and value the count (8 bytes, big-endian). Keys of ended periods are
// deleted by the next flush.
var bucketQuotas = []byte("ratelimit-quotas")

type quotaEntry struct {
	key   quotaKey
	index int32
	n     int64
}

func encodeQuotaKey(k quotaKey, index int32) []byte {
	b := make([]byte, 0, 5+binary.MaxVarintLen64+len(k.principal)+len(k.model))
	b = append(b, k.period)
	b = binary.BigEndian.AppendUint32(b, uint32(index))
	b = binary.AppendUvarint(b, uint64(len(k.principal)))
	b = append(b, k.principal...)
	return append(b, k.model...)
}

var errCorruptQuota = errors.New("corrupt quota record")

func decodeQuotaKey(b []byte) (quotaKey, int32, error) {
	if len(b) < 6 || (b[0] != periodDay && b[0] != periodMonth) {
		return quotaKey{}, 0, errCorruptQuota
	}
	k := quotaKey{period: b[0]}
	index := int32(binary.BigEndian.Uint32(b[1:5]))
	n, w := binary.Uvarint(b[5:])
	if w <= 0 || n > uint64(len(b)-5-w) {
		return quotaKey{}, 0, errCorruptQuota
	}
	rest := b[5+w:]
	k.principal = string(rest[:n])
	k.model = string(rest[n:])
	return k, index, nil
}

// loadQuotas calls fn for every counter of the periods indexed by day and
// month.
func loadQuotas(db *bolt.DB, day, month int32, fn func(quotaEntry)) error {
	return db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQuotas).Cursor()
		for _, pi := range [...]struct {
			p     uint8
			index int32
		}{{periodDay, day}, {periodMonth, month}} {
			prefix := binary.BigEndian.AppendUint32([]byte{pi.p}, uint32(pi.index))
			for k, v := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
				key, index, err := decodeQuotaKey(k)
				if err != nil || len(v) != 8 {
					return fmt.Errorf("load quotas: %w", errCorruptQuota)
				}
				fn(quotaEntry{key: key, index: index, n: int64(binary.BigEndian.Uint64(v))})
			}
		}
		return nil
	})
}

// writeQuotas stores entries in one transaction and deletes the counters
// of periods before day and month.
func writeQuotas(db *bolt.DB, entries []quotaEntry, day, month int32) error {
	return db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketQuotas)
		var v [8]byte
		for _, e := range entries {
			binary.BigEndian.PutUint64(v[:], uint64(e.n))
			if err := b.Put(encodeQuotaKey(e.key, e.index), v[:]); err != nil {
				return err
			}
		}
		var stale [][]byte
		c := b.Cursor()
		for _, pi := range [...]struct {
			p     uint8
			index int32
		}{{periodDay, day}, {periodMonth, month}} {
			for k, _ := c.Seek([]byte{pi.p}); k != nil && k[0] == pi.p && len(k) >= 5 && int32(binary.BigEndian.Uint32(k[1:5])) < pi.index; k, _ = c.Next() {
				stale = append(stale, bytes.Clone(k)) // k is only valid until the tree changes
			}
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}
