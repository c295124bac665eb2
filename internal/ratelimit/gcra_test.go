package ratelimit

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// refBucket is a token bucket simulated the plain way: credit (in ns of
// emission time) refills with elapsed time up to the capacity, and a
// request of cost units takes cost × interval of it if there is enough.
type refBucket struct {
	interval, capacity int64
	credit, last       int64
}

func (b *refBucket) take(now, cost int64) bool {
	if now > b.last {
		b.credit = min(b.capacity, b.credit+(now-b.last))
		b.last = now
	}
	if b.credit < cost*b.interval {
		return false
	}
	b.credit -= cost * b.interval
	return true
}

// checkAgainstReference drives GCRA and the reference bucket through the
// same requests: steps of (ms elapsed, cost) pairs taken from ops.
func checkAgainstReference(t *testing.T, perSecond float64, burst int64, ops []byte) {
	r := newRule(perSecond, burst)
	ref := refBucket{interval: r.interval, capacity: r.tolerance(), credit: r.tolerance()}
	now, tat := testEpoch.UnixNano(), int64(0)
	ref.last = now
	for i := 0; i+1 < len(ops); i += 2 {
		now += int64(ops[i]) * int64(time.Millisecond) / 4
		cost := int64(ops[i+1])%r.burst + 1
		newTAT, wait, ok := conform(tat, now, r.interval, r.tolerance(), cost)
		if want := ref.take(now, cost); ok != want {
			t.Fatalf("step %d (cost %d): GCRA says %v, the token bucket %v", i/2, cost, ok, want)
		}
		if ok {
			tat = newTAT
			continue
		}
		if newTAT != tat && tat >= now {
			t.Fatalf("step %d: a refusal changed the state", i/2)
		}
		// wait is exact: the request conforms then and not a nanosecond
		// earlier.
		if _, _, ok := conform(tat, now+wait, r.interval, r.tolerance(), cost); !ok {
			t.Fatalf("step %d: refused again after the %dns it was told to wait", i/2, wait)
		}
		if _, _, ok := conform(tat, now+wait-1, r.interval, r.tolerance(), cost); ok {
			t.Fatalf("step %d: would conform before the %dns it was told to wait", i/2, wait)
		}
	}
}

func FuzzGCRA(f *testing.F) {
	f.Add(uint32(10), uint16(3), []byte{0, 1, 0, 1, 0, 1, 0, 1, 40, 1, 1, 1})
	f.Add(uint32(1), uint16(1), []byte{255, 1, 255, 1, 0, 1})
	f.Add(uint32(100000), uint16(64), []byte{1, 63, 1, 63, 2, 10, 0, 200})
	f.Fuzz(func(t *testing.T, rate uint32, burst uint16, ops []byte) {
		perSecond := float64(rate%2_000_000) / 7 // fractional rates too
		if perSecond < 0.01 {
			perSecond = 0.01
		}
		checkAgainstReference(t, perSecond, int64(burst%1000)+1, ops)
	})
}

func TestGCRAMatchesTokenBucket(t *testing.T) {
	// A fixed random walk, so the property holds in every plain test run.
	seed := uint64(1)
	next := func() uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return seed >> 33 }
	for range 200 {
		ops := make([]byte, 400)
		for i := 0; i < len(ops); i += 8 {
			binary.LittleEndian.PutUint64(ops[i:], next()<<31|next())
		}
		checkAgainstReference(t, float64(next()%10000)/3+0.5, int64(next()%50)+1, ops)
	}
}

func TestGCRANeverExceedsRate(t *testing.T) {
	// Requests every microsecond for 10 s: what passes is the burst plus
	// the rate × time, and never more. (The interval is rounded up to a
	// whole nanosecond, so a little less can pass at high rates: 3001 ns
	// for 333333/s.)
	for _, tc := range []struct {
		perSecond float64
		burst     int64
	}{{1, 1}, {3, 1}, {7.5, 10}, {1000, 5}, {333333, 100}} {
		r := newRule(tc.perSecond, tc.burst)
		var tat, passed int64
		const span = 10 * int64(time.Second)
		for now := int64(0); now < span; now += 1000 {
			if nt, _, ok := conform(tat, now, r.interval, r.tolerance(), 1); ok {
				tat = nt
				passed++
			}
		}
		most := tc.burst + int64(math.Floor(tc.perSecond*float64(span)/1e9))
		if passed > most || float64(passed) < 0.999*float64(most)-2 {
			t.Errorf("%v/s burst %d: %d passed in 10 s, want %d (at most)", tc.perSecond, tc.burst, passed, most)
		}
	}
}

func TestPeriodIndex(t *testing.T) {
	for _, tc := range []struct {
		name  string
		at    time.Time
		p     uint8
		label string
		end   time.Time
	}{
		{"day", time.Date(2040, 1, 31, 23, 59, 59, 999999999, time.UTC), periodDay, "20400131", time.Date(2040, 2, 1, 0, 0, 0, 0, time.UTC)},
		{"midnight starts the next day", time.Date(2040, 2, 1, 0, 0, 0, 0, time.UTC), periodDay, "20400201", time.Date(2040, 2, 2, 0, 0, 0, 0, time.UTC)},
		{"month", time.Date(2040, 2, 29, 12, 0, 0, 0, time.UTC), periodMonth, "204002", time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"december", time.Date(2039, 12, 31, 23, 0, 0, 0, time.UTC), periodMonth, "203912", time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"UTC, whatever the zone", time.Date(2040, 3, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)), periodMonth, "204002", time.Date(2040, 3, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			index, end := periodIndex(tc.p, tc.at.UnixNano())
			if got := periodLabelOf(tc.p, index); got != tc.label {
				t.Errorf("got period %s, want %s", got, tc.label)
			}
			if end != tc.end.UnixNano() {
				t.Errorf("got end %s, want %s", time.Unix(0, end).UTC(), tc.end)
			}
		})
	}
}

func FuzzQuotaKey(f *testing.F) {
	f.Add(uint8(1), int32(25000), "key:alice", "big")
	f.Add(uint8(2), int32(-1), "", "")
	f.Fuzz(func(t *testing.T, period uint8, index int32, principal, model string) {
		p := periodDay + period%2
		k := quotaKey{principal: principal, model: model, period: p}
		got, gotIndex, err := decodeQuotaKey(encodeQuotaKey(k, index))
		if err != nil || got != k || gotIndex != index {
			t.Fatalf("round trip of %+v@%d: got %+v@%d, %v", k, index, got, gotIndex, err)
		}
		// Decoding arbitrary bytes must not panic.
		decodeQuotaKey([]byte(principal))
	})
}
