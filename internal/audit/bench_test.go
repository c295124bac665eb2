package audit

import (
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkWrite measures Write, one goroutine and GOMAXPROCS goroutines,
// in default mode (write(2) per batch) and durable mode (fdatasync per
// group-committed batch), with a checkpoint every 1000 records.
//
//	go test -run '^$' -bench BenchmarkWrite -benchtime 2s ./internal/audit/
func BenchmarkWrite(b *testing.B) {
	for _, mode := range []struct {
		name    string
		durable bool
	}{{"default", false}, {"durable", true}} {
		b.Run(mode.name+"/serial", func(b *testing.B) {
			_, priv := newKey(b)
			l := openLog(b, Config{Path: filepath.Join(b.TempDir(), "audit.log"), SigningKey: priv, Durable: mode.durable})
			defer l.Close()
			r := sample(1)
			for b.Loop() {
				r.Time = r.Time.AddDate(0, 0, 0)
				if err := l.Write(r); err != nil {
					b.Fatal(err)
				}
			}
			reportBatches(b, l)
		})
		b.Run(mode.name+"/parallel", func(b *testing.B) {
			_, priv := newKey(b)
			l := openLog(b, Config{Path: filepath.Join(b.TempDir(), "audit.log"), SigningKey: priv, Durable: mode.durable})
			defer l.Close()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				r := sample(1)
				for pb.Next() {
					if err := l.Write(r); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportBatches(b, l)
		})
	}
	// Durable with the writers in flight reported (Config.Siblings), as
	// the server does: with GOMAXPROCS 1 the leader yields before its
	// fsync so the other writers join its batch.
	b.Run("durable/parallel-siblings", func(b *testing.B) {
		_, priv := newKey(b)
		var inFlight atomic.Int64
		l := openLog(b, Config{Path: filepath.Join(b.TempDir(), "audit.log"), SigningKey: priv, Durable: true,
			Siblings: func() int { return int(inFlight.Load()) }})
		defer l.Close()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			r := sample(1)
			for pb.Next() {
				inFlight.Add(1)
				err := l.Write(r)
				inFlight.Add(-1)
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportBatches(b, l)
	})
}

func reportBatches(b *testing.B, l *Log) {
	st := l.Stats()
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Records)/float64(st.Batches), "records/batch")
	}
}

// BenchmarkEncode is the part of Write spent under the lock: encoding and
// hashing one record.
func BenchmarkEncode(b *testing.B) {
	r := sample(1)
	r.Prev = Genesis
	var buf []byte
	for b.Loop() {
		buf = appendRequest(buf[:0], r)
		lineHash(buf)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkVerify measures Verify (and so Open, which checks the active
// file the same way) per record.
func BenchmarkVerify(b *testing.B) {
	pub, priv := newKey(b)
	path := filepath.Join(b.TempDir(), "audit.log")
	l := openLog(b, Config{Path: path, SigningKey: priv, MaxFileBytes: 1 << 30})
	writeN(b, l, 0, 10000)
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := Verify([]string{path}, pub, VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/record")
}
