package extraction

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Monitor watches one model's queries per principal and per group of
// principals. Observe and Decision are cheap and safe to call from any
// goroutine; the detectors run on the Monitor's own worker goroutine.
type Monitor struct {
	cfg Config
	now func() time.Time

	queue  chan *message
	wake   chan struct{} // a control message or Close waits: poll now
	alerts chan Alert
	done   chan struct{}
	wg     sync.WaitGroup
	stop   chan struct{} // closed by Close: the worker drains the queue and ends
	closed atomic.Bool
	// closeMu orders control requests' sends before Close: they wait for
	// an answer, so they must not be sent once the worker may be gone.
	// Observations do not take it (they are not waited for).
	closeMu sync.RWMutex

	// principals and groups map names to *subject. Written by the worker
	// only; read by anyone (Decision, Status).
	principals sync.Map
	groups     sync.Map

	// The worker updates stats with every observation; the padding keeps
	// them off the cache lines the request path reads (queue, closed), so
	// that a request does not wait for the line to come back from the
	// worker's CPU.
	_     [128]byte
	stats struct {
		observed, dropped, rejected, alertsDropped, untracked, evicted atomic.Uint64
		subjects                                                       atomic.Int64
	}
	_ [128]byte

	// oodKmin[n] is the OOD count that raises the alarm among n queries.
	oodKmin []int

	// Worker-only state.
	seq    uint64 // observations handled, numbering them
	sw     swScratch
	pool64 []float64
	best   []float32
	key    []float32 // the observation's kNN search key (searchKey)
}

// message is one observation or control request for the worker.
type message struct {
	principal string
	groups    []string
	x         []float32
	label     int
	// Control requests, with done closed when handled.
	reset *string
	group bool
	run   func() // run by the worker
	done  chan struct{}
}

// inlineMessage is a message with room for its row, for rows of at most
// inlineDim features: one allocation per observation instead of two.
type inlineMessage struct {
	message
	row [inlineDim]float32
}

const inlineDim = 64

// subject is one principal's or group's state.
type subject struct {
	name  string
	group bool

	// Read by anyone.
	action atomic.Int32               // Action
	member atomic.Pointer[[]*subject] // a principal's groups

	// Worker only.
	queries, repeats uint64
	lastSeen         time.Time
	seq              uint64 // Monitor.seq at the last observation, for eviction order
	knn              knnState
	prada            pradaState
	ood              oodRateState
	alarmed          [numDetectors]bool
	alarmSince       [numDetectors]time.Time
	alarmLast        [numDetectors]time.Time // condition last met
	groupNames       []string
	forgotten        bool // removed from its table (Reset or eviction)
}

// ErrClosed is returned by Observe after Close.
var ErrClosed = errors.New("extraction: monitor closed")

// New validates cfg and starts a Monitor's worker. Close stops it.
func New(cfg Config) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg:    cfg,
		now:    cfg.Now,
		queue:  make(chan *message, cfg.QueueSize),
		wake:   make(chan struct{}, 1),
		alerts: make(chan Alert, cfg.AlertBuffer),
		done:   make(chan struct{}),
		stop:   make(chan struct{}),
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.best = make([]float32, max(cfg.KNN.K, 1))
	m.key = make([]float32, keyLen(len(cfg.KNN.Axes)))
	if !cfg.OODRate.Disabled {
		m.oodKmin = binomialAlarmCounts(cfg.OODRate.Window, cfg.OODRate.BaseRate, cfg.OODRate.Alpha)
	}
	m.wg.Add(1)
	go m.run()
	return m, nil
}

// Close stops the worker after it has handled the observations already
// queued, and closes the Alerts channel.
func (m *Monitor) Close() {
	m.closeMu.Lock()
	if m.closed.Swap(true) {
		m.closeMu.Unlock()
		return
	}
	close(m.stop)
	m.closeMu.Unlock()
	m.poke()
	m.wg.Wait()
	close(m.alerts)
}

// Alerts delivers an Alert whenever a principal or group escalates: a
// detector raises its alarm, or the action rises. The server should audit
// each and forward it to the webhook. Alerts that find the buffer full are
// dropped and counted (Stats.AlertsDropped).
func (m *Monitor) Alerts() <-chan Alert { return m.alerts }

// Observe records one query: the principal's ID, its groups' keys (for
// aggregation across principals, e.g. "tenant:acme", NetGroup(addr)), the
// input row (Dim features; copied) and the label the model predicted. It
// never blocks: when the worker is behind by QueueSize observations the
// observation is dropped and counted (Stats.Dropped). An input of the
// wrong length is counted as rejected. groups is copied.
func (m *Monitor) Observe(principal string, groups []string, x []float32, label int) {
	if len(x) != m.cfg.Dim {
		m.stats.rejected.Add(1)
		return
	}
	m.enqueue(principal, groups, true, label, func(dst []float32) { copy(dst, x) })
}

// enqueue queues an observation whose row fill writes; copyGroups says
// whether groups must be copied.
func (m *Monitor) enqueue(principal string, groups []string, copyGroups bool, label int, fill func(x []float32)) {
	if m.closed.Load() {
		m.stats.dropped.Add(1)
		return
	}
	// A fresh message rather than a recycled one: recycled messages were
	// last written on the worker's CPU, and taking one back costs the
	// request more than allocating. The queue is never closed (an
	// observation that races Close stays in it, unhandled), so the send
	// needs no lock.
	if copyGroups {
		groups = slices.Clone(groups)
	}
	var msg *message
	if m.cfg.Dim <= inlineDim {
		im := new(inlineMessage)
		im.x = im.row[:m.cfg.Dim]
		msg = &im.message
	} else {
		msg = &message{x: make([]float32, m.cfg.Dim)}
	}
	msg.principal, msg.groups, msg.label = principal, groups, label
	fill(msg.x)
	select {
	case m.queue <- msg:
	default:
		m.stats.dropped.Add(1)
	}
}

// ObserveEncoded is ObserveBatch for rows and labels as a model's tensors
// hold them: rows little-endian FP32 (Dim per row), labels little-endian
// INT64, one per row. The rows are decoded straight into the queued
// observations. Unlike Observe's, groups is kept, not copied: the caller
// must not modify it afterwards.
func (m *Monitor) ObserveEncoded(principal string, groups []string, rows, labels []byte) {
	n := len(labels) / 8
	if len(labels)%8 != 0 || len(rows) != n*m.cfg.Dim*4 {
		m.stats.rejected.Add(uint64(max(n, 1)))
		return
	}
	for r := range n {
		row := rows[r*m.cfg.Dim*4 : (r+1)*m.cfg.Dim*4]
		label := int(int64(binary.LittleEndian.Uint64(labels[8*r:])))
		m.enqueue(principal, groups, false, label, func(x []float32) {
			for i := range x {
				x[i] = math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))
			}
		})
	}
}

// ObserveBatch records a batch: inputs holds len(labels) rows of Dim
// features, row i predicted as labels[i].
func (m *Monitor) ObserveBatch(principal string, groups []string, inputs []float32, labels []int) {
	if len(inputs) != len(labels)*m.cfg.Dim {
		m.stats.rejected.Add(uint64(len(labels)))
		return
	}
	for i, l := range labels {
		m.Observe(principal, groups, inputs[i*m.cfg.Dim:(i+1)*m.cfg.Dim], l)
	}
}

// control sends a control message and waits for the worker to handle it.
func (m *Monitor) control(msg *message) bool {
	msg.done = make(chan struct{})
	m.closeMu.RLock()
	if m.closed.Load() {
		m.closeMu.RUnlock()
		return false
	}
	m.queue <- msg // blocks: control requests are never dropped
	m.closeMu.RUnlock()
	m.poke()
	<-msg.done
	return true
}

// Flush waits until every observation queued before it has been handled.
func (m *Monitor) Flush() { m.control(&message{}) }

// inWorker runs f on the worker once every observation queued before it
// has been handled, and waits for it; f may read the subjects' worker-only
// state. Once the Monitor is closed it waits for the worker to end and
// runs f itself.
func (m *Monitor) inWorker(f func()) {
	if !m.control(&message{run: f}) {
		m.wg.Wait()
		f()
	}
}

// Reset forgets everything about a principal (or, with group, a group):
// its detectors' state, alarms and action. For an admin who has reviewed
// an alarm.
func (m *Monitor) Reset(name string, group bool) {
	m.control(&message{reset: &name, group: group})
}

// Decision returns the action for principal's next request: the most
// severe of its own and its groups' actions. Lock-free.
func (m *Monitor) Decision(principal string) Action {
	v, ok := m.principals.Load(principal)
	if !ok {
		return ActionNone
	}
	s := v.(*subject)
	a := Action(s.action.Load())
	if gs := s.member.Load(); gs != nil {
		for _, g := range *gs {
			a = max(a, Action(g.action.Load()))
		}
	}
	return a
}

// run is the worker. It polls the queue rather than waiting on it: a
// goroutine woken by a channel send runs next on the sender's CPU, so a
// waiting worker would run its several microseconds of detectors in the
// middle of the request that observed, ahead of the response. Polling
// takes what has queued in one go, at most pollMax after it was queued.
func (m *Monitor) run() {
	defer m.wg.Done()
	sweep := time.Now().Add(m.cfg.SweepEvery)
	idle := pollMin
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		busy := false
	drain:
		for {
			select {
			case msg := <-m.queue:
				m.handle(msg)
				busy = true
			default:
				break drain
			}
		}
		select {
		case <-m.stop:
			// Close: handle what was queued before it (every control
			// request was: see closeMu), then end.
			for {
				select {
				case msg := <-m.queue:
					m.handle(msg)
				default:
					return
				}
			}
		default:
		}
		if now := time.Now(); !now.Before(sweep) {
			m.sweep()
			sweep = now.Add(m.cfg.SweepEvery)
		}
		if busy {
			idle = pollMin
		} else {
			idle = min(2*idle, pollMax)
		}
		timer.Reset(idle)
		select {
		case <-timer.C:
		case <-m.wake:
			timer.Stop()
		}
	}
}

// poke makes the worker poll now (for control messages and Close, whose
// callers wait).
func (m *Monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// The worker's polling interval: pollMin after it found work, doubling
// while it finds none, up to pollMax.
const (
	pollMin = time.Millisecond
	pollMax = 16 * time.Millisecond
)

func (m *Monitor) handle(msg *message) {
	if msg.done != nil {
		if msg.reset != nil {
			m.reset(*msg.reset, msg.group)
		}
		if msg.run != nil {
			msg.run()
		}
		close(msg.done)
		return
	}
	m.process(msg)
}

func (m *Monitor) reset(name string, group bool) {
	table := &m.principals
	if group {
		table = &m.groups
	}
	if v, ok := table.LoadAndDelete(name); ok {
		v.(*subject).forgotten = true
		m.stats.subjects.Add(-1)
	}
}

// process runs the detectors of the principal and each of its groups on
// one observation.
func (m *Monitor) process(msg *message) {
	now := m.now()
	m.seq++
	m.stats.observed.Add(1)
	searchKey(m.key, msg.x, m.cfg.KNN.Axes)
	isOOD := false
	if !m.cfg.OODRate.Disabled {
		isOOD = m.cfg.OOD.OOD(msg.x)
	}
	p := m.lookup(msg.principal, false, now)
	if p != nil && (!slices.Equal(p.groupNames, msg.groups) || anyForgotten(*p.member.Load())) {
		gs := make([]*subject, 0, len(msg.groups))
		for _, name := range msg.groups {
			if g := m.lookup(name, true, now); g != nil {
				gs = append(gs, g)
			}
		}
		p.groupNames = slices.Clone(msg.groups)
		p.member.Store(&gs)
	}
	if p != nil {
		m.update(p, msg, isOOD, now)
		for _, g := range *p.member.Load() {
			m.update(g, msg, isOOD, now)
		}
	} else {
		for _, name := range msg.groups {
			if g := m.lookup(name, true, now); g != nil {
				m.update(g, msg, isOOD, now)
			}
		}
	}
}

func anyForgotten(gs []*subject) bool {
	for _, g := range gs {
		if g.forgotten {
			return true
		}
	}
	return false
}

// lookup returns the subject, creating it (and evicting another if
// MaxSubjects is reached) if needed; nil if there is no room.
func (m *Monitor) lookup(name string, group bool, now time.Time) *subject {
	table := &m.principals
	if group {
		table = &m.groups
	}
	if v, ok := table.Load(name); ok {
		return v.(*subject)
	}
	if m.stats.subjects.Load() >= int64(m.cfg.MaxSubjects) && !m.evictOne() {
		m.stats.untracked.Add(1)
		return nil
	}
	s := &subject{name: name, group: group, lastSeen: now}
	s.knn.last = math.NaN()
	empty := []*subject{}
	s.member.Store(&empty)
	table.Store(name, s)
	m.stats.subjects.Add(1)
	return s
}

// evictOne forgets the subject seen least recently among those whose action
// is none. It scans every subject: it runs only when MaxSubjects is reached.
func (m *Monitor) evictOne() bool {
	var victim *subject
	scan := func(_, v any) bool {
		s := v.(*subject)
		if Action(s.action.Load()) == ActionNone && (victim == nil || s.seq < victim.seq) {
			victim = s
		}
		return true
	}
	m.principals.Range(scan)
	m.groups.Range(scan)
	if victim == nil {
		return false
	}
	m.reset(victim.name, victim.group)
	m.stats.evicted.Add(1)
	return true
}

// update runs one subject's detectors on one observation and publishes the
// result.
func (m *Monitor) update(s *subject, msg *message, isOOD bool, now time.Time) {
	s.lastSeen = now
	s.seq = m.seq
	s.queries++
	cfg := &m.cfg
	repeat := false
	var cond [numDetectors]bool
	if !cfg.KNN.Disabled {
		r := s.knn.observe(msg.x, m.key, &cfg.KNN, cfg.Dim, m.best)
		repeat = r.repeat
	}
	if !repeat && !cfg.PRADA.Disabled {
		if cap(m.pool64) < cfg.PRADA.Window {
			m.pool64 = make([]float64, 0, cfg.PRADA.Window)
		}
		r := s.prada.observe(msg.x, msg.label, &cfg.PRADA, cfg.Dim, &m.sw, m.pool64)
		repeat = r.repeat
	}
	if repeat {
		s.repeats++
	}
	// Repeats count here: repeating an out-of-distribution query is no
	// less out of distribution.
	if !cfg.OODRate.Disabled {
		s.ood.win.add(isOOD, cfg.OODRate.Window)
	}
	if !cfg.PRADA.Disabled {
		cond[DetectorPRADA] = s.prada.alarm(&cfg.PRADA)
	}
	if !cfg.KNN.Disabled {
		cond[DetectorKNN] = s.knn.alarm(&cfg.KNN)
	}
	if !cfg.OODRate.Disabled {
		cond[DetectorOODRate] = s.ood.alarm(&cfg.OODRate, m.oodKmin)
	}
	m.evaluate(s, cond, now)
}

// evaluate latches alarms, computes risk and action, publishes them and
// sends an Alert on escalation.
func (m *Monitor) evaluate(s *subject, cond [numDetectors]bool, now time.Time) {
	cfg := &m.cfg
	var raised []Detector
	for d := range numDetectors {
		switch {
		case cond[d]:
			if !s.alarmed[d] {
				s.alarmed[d] = true
				s.alarmSince[d] = now
				raised = append(raised, d)
			}
			s.alarmLast[d] = now
		case s.alarmed[d] && cfg.LatchFor > 0 && now.Sub(s.alarmLast[d]) >= cfg.LatchFor:
			s.alarmed[d] = false
		}
	}
	st := m.statusOf(s, now) // on the stack: Status and Snapshot make their own
	prev := Action(s.action.Swap(int32(st.Action)))
	if len(raised) > 0 || st.Action > prev {
		a := Alert{
			Time: now, Subject: s.name, Group: s.group, Raised: raised,
			Risk: st.Risk, Action: st.Action, Previous: prev, Status: st,
		}
		select {
		case m.alerts <- a:
		default:
			m.stats.alertsDropped.Add(1)
		}
	}
}

// sweep re-evaluates subjects whose alarms may have expired while they were
// idle (a blocked principal sends no more queries). An idle subject's
// conditions are not met: they are met only by the queries that reach them.
func (m *Monitor) sweep() {
	if m.cfg.LatchFor == 0 {
		return
	}
	now := m.now()
	visit := func(_, v any) bool {
		s := v.(*subject)
		for d := range numDetectors {
			if s.alarmed[d] && now.Sub(s.alarmLast[d]) >= m.cfg.LatchFor {
				m.evaluate(s, [numDetectors]bool{}, now)
				break
			}
		}
		return true
	}
	m.principals.Range(visit)
	m.groups.Range(visit)
}
