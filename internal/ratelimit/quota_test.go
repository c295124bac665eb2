package ratelimit

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aegis-inference/aegis/internal/apierr"
)

func TestQuotas(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.DailyRequests = 3
		cfg.MonthlyRequests = 5
		l := e.limiter(cfg)
		p := principal("key:alice")
		// testEpoch is 2040-01-31 12:00 UTC.
		for i := range 3 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgDaily, 12*time.Hour)
		if err := admit(l, principal("key:bob"), "m"); err != nil {
			t.Errorf("bob: %v", err)
		}
		// Next day, next month: both budgets start again.
		e.clock.Advance(12 * time.Hour)
		for i := range 3 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("February 1st, request %d: %v", i+1, err)
			}
		}
		e.clock.Advance(24 * time.Hour)
		for i := range 2 {
			if err := admit(l, p, "m"); err != nil {
				t.Fatalf("February 2nd, request %d: %v", i+1, err)
			}
		}
		// Five in February: the monthly budget is spent until March 1st.
		wantRefused(t, admit(l, p, "m"), apierr.ResourceExhausted, msgMonthly, 28*24*time.Hour) // 2040 is a leap year
		e.clock.Set(time.Date(2040, time.March, 1, 0, 0, 0, 0, time.UTC))
		if err := admit(l, p, "m"); err != nil {
			t.Fatalf("March 1st: %v", err)
		}
	})
}

func TestModelQuotas(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		cfg := baseConfig()
		cfg.DailyRequests = 4
		cfg.Models = map[string]ModelLimits{"big": {DailyRequests: 1, MonthlyRequests: 10}}
		l := e.limiter(cfg)
		p := principal("key:alice")
		if err := admit(l, p, "big"); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, admit(l, p, "big"), apierr.ResourceExhausted, msgModelDaily, 12*time.Hour)
		// The refusal did not count against the principal's budget.
		for i := range 3 {
			if err := admit(l, p, "small"); err != nil {
				t.Fatalf("small, request %d: %v", i+1, err)
			}
		}
		wantRefused(t, admit(l, p, "small"), apierr.ResourceExhausted, msgDaily, 12*time.Hour)
	})
}

func TestQuotasSurviveRestart(t *testing.T) {
	e := newEnv(t, BackendMemory, nil)
	cfg := baseConfig()
	cfg.DailyRequests = 3
	cfg.Models = map[string]ModelLimits{"big": {MonthlyRequests: 2}}
	l, err := New(e.config(cfg), Options{DB: e.db, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p := principal("key:alice")
	for range 2 {
		if err := admit(l, p, "big"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil { // writes the counters
		t.Fatal(err)
	}
	e.reopenDB()
	l = e.limiter(cfg)
	wantRefused(t, admit(l, p, "big"), apierr.ResourceExhausted, msgModelMonth, 12*time.Hour) // until February
	if err := admit(l, p, "small"); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, admit(l, p, "small"), apierr.ResourceExhausted, msgDaily, 12*time.Hour)
}

func TestQuotasFlushedPeriodically(t *testing.T) {
	// Without Close (a crash), what was counted before the last flush
	// survives.
	e := newEnv(t, BackendMemory, nil)
	cfg := baseConfig()
	cfg.DailyRequests = 10
	cfg.QuotaFlushInterval = 10 * time.Millisecond
	l := e.limiter(cfg)
	p := principal("key:alice")
	for range 4 {
		if err := admit(l, p, "m"); err != nil {
			t.Fatal(err)
		}
	}
	day, _ := periodIndex(periodDay, e.clock.Now().UnixNano())
	month, _ := periodIndex(periodMonth, e.clock.Now().UnixNano())
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got int64
		if err := loadQuotas(e.db, day, month, func(q quotaEntry) {
			if q.key.principal == p.ID {
				got = q.n
			}
		}); err != nil {
			t.Fatal(err)
		}
		if got == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored count %d after 5 s, want 4", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestQuotaPruning(t *testing.T) {
	// Counters of ended periods are deleted from bbolt.
	e := newEnv(t, BackendMemory, nil)
	cfg := baseConfig()
	cfg.DailyRequests = 10
	l := e.limiter(cfg)
	ms := l.store.(*memStore)
	if err := admit(l, principal("key:alice"), "m"); err != nil {
		t.Fatal(err)
	}
	if err := ms.flush(); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(24 * time.Hour)
	if err := admit(l, principal("key:bob"), "m"); err != nil {
		t.Fatal(err)
	}
	if err := ms.flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := e.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQuotas).ForEach(func(k, _ []byte) error {
			key, index, err := decodeQuotaKey(k)
			got = append(got, fmt.Sprintf("%s@%s", key.principal, periodLabelOf(key.period, index)))
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	if want := "[key:bob@20400201]"; fmt.Sprint(got) != want {
		t.Errorf("stored counters %v, want %s", got, want)
	}
}
