package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram: exact below 64 ns, then 32
// buckets per power of two (a bucket is at most 1/32 ≈ 3% of its value
// wide), up to about 19 hours. Adding is O(1) and allocation-free, so the
// harness can count every response of a long run in bounded memory.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histExact   = 64 // values below this have a bucket each
	histSub     = 32 // buckets per power of two above it
	histBuckets = histExact + 40*histSub
)

// histIndex is the bucket of d (clamped to [0, histBuckets)).
func histIndex(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) - 6 // v>>e is in [32, 64)
	i := histExact + (e-1)*histSub + int(v>>e) - histSub
	return min(i, histBuckets-1)
}

// histLower is the smallest value of bucket i.
func histLower(i int) time.Duration {
	if i < histExact {
		return time.Duration(i)
	}
	e := (i-histExact)/histSub + 1
	m := uint64((i-histExact)%histSub + histSub)
	return time.Duration(m << e)
}

func (h *hist) add(d time.Duration) {
	h.counts[histIndex(d)]++
	h.n++
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	if o == nil {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile is the nearest-rank quantile q (0..1): the middle of the
// bucket holding it, never more than the largest value seen; 0 when
// empty.
func (h *hist) quantile(q float64) time.Duration {
	if h == nil || h.n == 0 {
		return 0
	}
	rank := uint64(float64(h.n)*q + 0.9999999)
	rank = max(1, min(rank, h.n))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo := histLower(i)
			if i < histExact {
				return lo
			}
			hi := histLower(i + 1)
			return min(lo+(hi-lo)/2, h.max)
		}
	}
	return h.max
}

func (h *hist) count() uint64 {
	if h == nil {
		return 0
	}
	return h.n
}
