package extraction

import (
	"math"
	"math/bits"
)

// sqDist is the squared L2 distance between a and b (same length).
func sqDist(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		d0 := a[i] - b[i]
		d1 := a[i+1] - b[i+1]
		d2 := a[i+2] - b[i+2]
		d3 := a[i+3] - b[i+3]
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// sqDistBounded is sqDist, except that it may stop early and return any
// value above bound once the partial sum exceeds it (checked every 16
// features).
func sqDistBounded(a, b []float32, bound float32) float32 {
	b = b[:len(a)]
	var s float32
	i := 0
	for ; i+16 <= len(a); i += 16 {
		x := (*[16]float32)(a[i : i+16])
		y := (*[16]float32)(b[i : i+16])
		d0, d1, d2, d3 := x[0]-y[0], x[1]-y[1], x[2]-y[2], x[3]-y[3]
		d4, d5, d6, d7 := x[4]-y[4], x[5]-y[5], x[6]-y[6], x[7]-y[7]
		d8, d9, d10, d11 := x[8]-y[8], x[9]-y[9], x[10]-y[10], x[11]-y[11]
		d12, d13, d14, d15 := x[12]-y[12], x[13]-y[13], x[14]-y[14], x[15]-y[15]
		s += ((d0*d0 + d1*d1) + (d2*d2 + d3*d3)) + ((d4*d4 + d5*d5) + (d6*d6 + d7*d7)) +
			((d8*d8 + d9*d9) + (d10*d10 + d11*d11)) + ((d12*d12 + d13*d13) + (d14*d14 + d15*d15))
		if s > bound {
			return s
		}
	}
	for ; i < len(a); i++ {
		d := a[i] - b[i]
		s += d * d
	}
	return s
}

// appendCapped appends v to s, growing its capacity by doubling but never
// beyond limit elements, so that the state's accounted size stays within
// the configured bound. len(s)+len(v) must not exceed limit.
func appendCapped[T any](s []T, limit int, v ...T) []T {
	if need := len(s) + len(v); need > cap(s) {
		n := min(max(2*cap(s), need, 16), limit)
		ns := make([]T, len(s), n)
		copy(ns, s)
		s = ns
	}
	return append(s, v...)
}

// outcomes is a ring of the last n yes/no outcomes (n ≤ maxWindow).
type outcomes struct {
	bits  [maxWindow / 64]uint64
	next  int // position of the next outcome
	count int // outcomes held, ≤ window
	yes   int // yes outcomes held
}

func (o *outcomes) add(v bool, window int) {
	w, b := o.next/64, uint(o.next%64)
	if o.count == window {
		if o.bits[w]&(1<<b) != 0 {
			o.yes--
		}
	} else {
		o.count++
	}
	if v {
		o.bits[w] |= 1 << b
		o.yes++
	} else {
		o.bits[w] &^= 1 << b
	}
	o.next = (o.next + 1) % window
}

// recount recomputes yes from the bits (for tests of the ring).
func (o *outcomes) recount() int {
	n := 0
	for _, w := range o.bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// knnState is the k-nearest-neighbour detector's state for one subject: a
// ring of the latest History queries.
type knnState struct {
	hist   []float32 // up to History rows of dim, grown on demand
	keys   []float32 // each row's search key (searchKey), to skip rows that cannot be near
	rows   int       // rows held
	next   int       // row to overwrite next once full
	win    outcomes  // suspicious or not, per scored query
	last   float64   // last mean k-NN distance (NaN before the first)
	scored uint64
}

// knnResult is what one query did to the kNN detector.
type knnResult struct {
	repeat bool // an exact copy of a query in the history
	scored bool
	dist   float64 // mean distance to the k nearest (a lower bound ≥ τ when not suspicious)
}

// observe scores x against the history (before adding it) and adds it.
// An exact repeat of a query in the history is neither scored nor added.
func (s *knnState) observe(x, key []float32, cfg *KNNConfig, dim int, best []float32) knnResult {
	k := cfg.K
	kl := len(key)
	norm := key[kl-1]
	var r knnResult
	if s.rows >= k {
		// Only whether the mean of the k nearest distances is below the
		// threshold τ matters, so the search need not look further than kτ:
		// if a k-th nearest is further, the mean is at least τ whatever the
		// others are. A neighbour not found within kτ counts as kτ, so dist
		// is exact below τ and a lower bound (≥ τ) above it. Most rows are
		// abandoned after their first 16 features.
		limit := float32(float64(k) * cfg.Threshold)
		best = best[:k]
		for i := range best {
			best[i] = limit * limit
		}
		//
		// A row whose search key is further from x's than the current
		// bound is further than it, so most rows are skipped on their keys
		// (a few numbers each, held together) without reading them. The
		// slack covers the keys' rounding: a row is only skipped when it
		// is certainly out of reach.
		reach := sqrt32(best[k-1]) + keySlack*norm
		for i := 0; i < s.rows; i++ {
			if i = s.nextNear(i, key, reach); i == s.rows {
				break
			}
			d := sqDistBounded(x, s.hist[i*dim:(i+1)*dim], best[k-1])
			if d >= best[k-1] {
				continue
			}
			if d == 0 {
				r.repeat = true
				return r
			}
			// Insert into the sorted k best.
			j := k - 1
			for j > 0 && best[j-1] > d {
				best[j] = best[j-1]
				j--
			}
			best[j] = d
			reach = sqrt32(best[k-1]) + keySlack*norm
		}
		var sum float64
		for _, d := range best {
			sum += math.Sqrt(float64(d))
		}
		r.scored = true
		r.dist = sum / float64(k)
		// All k found within kτ, and their mean below τ.
		suspicious := best[k-1] < limit*limit && r.dist < cfg.Threshold
		if !suspicious {
			r.dist = max(r.dist, cfg.Threshold)
		}
		s.last = r.dist
		s.scored++
		s.win.add(suspicious, cfg.Window)
	} else {
		for i := 0; i < s.rows; i++ {
			if sqDist(x, s.hist[i*dim:(i+1)*dim]) == 0 {
				r.repeat = true
				return r
			}
		}
	}
	if s.rows < cfg.History {
		s.hist = appendCapped(s.hist, cfg.History*dim, x...)
		s.keys = appendCapped(s.keys, cfg.History*kl, key...)
		s.rows++
	} else {
		copy(s.hist[s.next*dim:(s.next+1)*dim], x)
		copy(s.keys[s.next*kl:(s.next+1)*kl], key)
		s.next = (s.next + 1) % cfg.History
	}
	return r
}

// nextNear returns the first row from i on whose search key is within
// reach of key (allowing for the rows' keySlack), or s.rows if none is.
func (s *knnState) nextNear(i int, key []float32, reach float32) int {
	kl := len(key)
	if kl == keyLen(SearchAxes) { // the usual case, unrolled
		k0, k1, k2, k3, k4 := key[0], key[1], key[2], key[3], key[4]
		keys := s.keys[:s.rows*kl]
		for ; i < s.rows; i++ {
			rk := (*[6]float32)(keys[i*6 : i*6+6])
			d0, d1, d2, d3, d4 := k0-rk[0], k1-rk[1], k2-rk[2], k3-rk[3], k4-rk[4]
			far := reach + keySlack*rk[5]
			if (d0*d0+d1*d1)+(d2*d2+d3*d3)+d4*d4 <= far*far {
				return i
			}
		}
		return s.rows
	}
	for ; i < s.rows; i++ {
		rk := s.keys[i*kl : (i+1)*kl : (i+1)*kl]
		var lb float32
		for j := range kl - 1 {
			d := key[j] - rk[j]
			lb += d * d
		}
		if far := reach + keySlack*rk[kl-1]; lb <= far*far {
			return i
		}
	}
	return s.rows
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

func (s *knnState) alarm(cfg *KNNConfig) bool { return s.win.yes >= cfg.AlarmCount }

func (s *knnState) progress(cfg *KNNConfig) float64 {
	return float64(s.win.yes) / float64(cfg.AlarmCount)
}

// oodRateState is the out-of-distribution rate detector's state.
type oodRateState struct {
	win outcomes
}

func (s *oodRateState) rate() float64 {
	if s.win.count == 0 {
		return 0
	}
	return float64(s.win.yes) / float64(s.win.count)
}

// alarm: at least MinQueries in the window, and at least kmin[n] of the n
// out of distribution.
func (s *oodRateState) alarm(cfg *OODRateConfig, kmin []int) bool {
	return s.win.count >= cfg.MinQueries && s.win.yes >= kmin[s.win.count]
}

func (s *oodRateState) progress(kmin []int) float64 {
	if s.win.count == 0 {
		return 0
	}
	return float64(s.win.yes) / float64(kmin[s.win.count])
}

// binomialAlarmCounts returns kmin[n] for n = 0..window: the smallest k with
// P(Binomial(n, p) ≥ k) ≤ alpha, or n+1 when even k = n is more likely.
func binomialAlarmCounts(window int, p, alpha float64) []int {
	kmin := make([]int, window+1)
	lp, lq := math.Log(p), math.Log1p(-p)
	for n := 0; n <= window; n++ {
		// Sum the upper tail from k = n down until it exceeds alpha.
		tail := 0.0
		k := n + 1
		for j := n; j >= 0; j-- {
			lg, _ := math.Lgamma(float64(n + 1))
			la, _ := math.Lgamma(float64(j + 1))
			lb, _ := math.Lgamma(float64(n - j + 1))
			tail += math.Exp(lg - la - lb + float64(j)*lp + float64(n-j)*lq)
			if tail > alpha {
				break
			}
			k = j
		}
		kmin[n] = max(k, 1)
	}
	return kmin
}

// pradaClass is PRADA's per-class state. The growing set's vectors live in
// the subject's shared slots; the threshold statistics cover every distance
// ever added to the set.
type pradaClass struct {
	stored  int32   // vectors of this class in the slots
	added   int64   // distances added to D_Gc
	sum     float64 // of D_Gc
	sumSq   float64 // of D_Gc
	thresh  float64 // T_c
	started bool    // G_c has been seeded
}

// Accounting for memory bounds: bytes per slot besides its vector, per
// class, and the fixed part of a subject.
const (
	slotBytes         = 12 // class int32 + sequence uint64
	classBytes        = 48 // sizeof(pradaClass) rounded
	subjectFixedBytes = 2048
)

// pradaState is PRADA's state for one subject.
type pradaState struct {
	vecs    []float32 // MaxStored rows of dim, grown on demand
	class   []int32   // class of each slot
	seq     []uint64  // insertion order of each slot
	nextSeq uint64
	classes []pradaClass // indexed by label, grown on demand

	dist    []float64 // ring of the latest Window minimum distances (D)
	dnext   int
	dadded  uint64 // distances ever added
	tested  bool
	below   int // consecutive tests with W < Delta
	lastW   float64
	lastP   float64
	outOfRg uint64 // labels outside 0..MaxClasses-1
}

// pradaResult is what one query did to PRADA.
type pradaResult struct {
	repeat bool
	tested bool
	w, p   float64
}

// observe runs one step of PRADA's Algorithm 1 for query x predicted as
// label: the minimum distance of x to the growing set of its class joins
// the pool D, x joins the set if that distance exceeds the class threshold
// T_c (which then becomes max(T_c, mean − std of the set's distances)), and
// every TestEvery distances, once |D| > MinDistances, W is computed on D
// without its outliers.
func (s *pradaState) observe(x []float32, label int, cfg *PRADAConfig, dim int, sw *swScratch, pool []float64) pradaResult {
	var r pradaResult
	if label < 0 || label >= cfg.MaxClasses {
		s.outOfRg++
		return r
	}
	if label >= len(s.classes) {
		s.classes = appendCapped(s.classes, cfg.MaxClasses, make([]pradaClass, label+1-len(s.classes))...)
	}
	c := &s.classes[label]
	if !c.started {
		c.started = true
		s.store(x, int32(label), cfg, dim)
		return r
	}
	// d_min to G_c. G_c may be empty if its vectors were all replaced by
	// other classes'; then x starts it again.
	best := float32(math.Inf(1))
	for i, cl := range s.class {
		if cl != int32(label) {
			continue
		}
		if d := sqDistBounded(x, s.vecs[i*dim:(i+1)*dim], best); d < best {
			best = d
		}
	}
	if math.IsInf(float64(best), 1) {
		s.store(x, int32(label), cfg, dim)
		return r
	}
	if best == 0 {
		r.repeat = true
		return r
	}
	dmin := math.Sqrt(float64(best))
	if len(s.dist) < cfg.Window {
		s.dist = appendCapped(s.dist, cfg.Window, dmin)
	} else {
		s.dist[s.dnext] = dmin
		s.dnext = (s.dnext + 1) % cfg.Window
	}
	s.dadded++
	if dmin > c.thresh {
		s.store(x, int32(label), cfg, dim)
		c.added++
		c.sum += dmin
		c.sumSq += dmin * dmin
		n := float64(c.added)
		mean := c.sum / n
		sd := math.Sqrt(max(c.sumSq/n-mean*mean, 0))
		c.thresh = max(c.thresh, mean-sd)
	}
	if len(s.dist) > cfg.MinDistances && s.dadded%uint64(cfg.TestEvery) == 0 {
		w, p, ok := s.test(cfg, sw, pool)
		if ok {
			r.tested, r.w, r.p = true, w, p
			s.tested, s.lastW, s.lastP = true, w, p
			if w < cfg.Delta {
				s.below++
			} else {
				s.below = 0
			}
		}
	}
	return r
}

// test computes Shapiro–Wilk on the pool without values beyond
// OutlierSigma standard deviations of its mean.
func (s *pradaState) test(cfg *PRADAConfig, sw *swScratch, pool []float64) (w, p float64, ok bool) {
	var sum, sumSq float64
	for _, d := range s.dist {
		sum += d
		sumSq += d * d
	}
	n := float64(len(s.dist))
	mean := sum / n
	lim := cfg.OutlierSigma * math.Sqrt(max(sumSq/n-mean*mean, 0))
	pool = pool[:0]
	for _, d := range s.dist {
		if math.Abs(d-mean) <= lim {
			pool = append(pool, d)
		}
	}
	w, p, err := sw.test(pool)
	if err != nil {
		// Too few left, or all equal: a degenerate pool is as far from
		// normal as it gets.
		if len(pool) >= ShapiroMinN {
			return 0, 0, true
		}
		return 0, 0, false
	}
	return w, p, true
}

// store adds x to the growing set of class cl, making room if needed: the
// oldest vector of cl if cl holds MaxPerClass, else a free slot, else the
// oldest vector of the class holding most.
func (s *pradaState) store(x []float32, cl int32, cfg *PRADAConfig, dim int) {
	slot := -1
	switch {
	case int(s.classes[cl].stored) >= cfg.MaxPerClass:
		slot = s.oldest(cl)
	case len(s.class) < cfg.MaxStored:
		s.vecs = appendCapped(s.vecs, cfg.MaxStored*dim, x...)
		s.class = appendCapped(s.class, cfg.MaxStored, cl)
		s.seq = appendCapped(s.seq, cfg.MaxStored, s.nextSeq)
		s.nextSeq++
		s.classes[cl].stored++
		return
	default:
		var most int32
		for i := range s.classes {
			if s.classes[i].stored > s.classes[most].stored {
				most = int32(i)
			}
		}
		slot = s.oldest(most)
	}
	s.classes[s.class[slot]].stored--
	copy(s.vecs[slot*dim:(slot+1)*dim], x)
	s.class[slot] = cl
	s.seq[slot] = s.nextSeq
	s.nextSeq++
	s.classes[cl].stored++
}

// oldest returns the slot of class cl inserted first.
func (s *pradaState) oldest(cl int32) int {
	slot, seq := -1, uint64(math.MaxUint64)
	for i, c := range s.class {
		if c == cl && s.seq[i] < seq {
			slot, seq = i, s.seq[i]
		}
	}
	return slot
}

func (s *pradaState) alarm(cfg *PRADAConfig) bool { return s.below >= cfg.Persist }

func (s *pradaState) progress(cfg *PRADAConfig) float64 {
	if !s.tested {
		return 0
	}
	return (1 - s.lastW) / (1 - cfg.Delta)
}

// bytes is the state's memory by accounting: capacities of its slices.
func (s *pradaState) bytes() int {
	return 4*cap(s.vecs) + 4*cap(s.class) + 8*cap(s.seq) + classBytes*cap(s.classes) + 8*cap(s.dist)
}

func (s *knnState) bytes() int { return 4*cap(s.hist) + 4*cap(s.keys) }
