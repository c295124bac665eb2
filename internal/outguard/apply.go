package outguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// ErrNothingToServe reports a response that the policy leaves empty: the
// caller asked only for outputs the policy does not serve.
var ErrNothingToServe = errors.New("the policy serves none of the requested outputs")

// Apply shapes a response's outputs by p and returns the outputs to serve,
// in order: under top_k the scores output is replaced by TopKValues
// ([batch, k], the scores' datatype) and TopKIndices (INT64 [batch, k]);
// under label it is dropped, and replaced by a label (INT64 [batch], named
// LabelOutput or DefaultLabel) if the response has none. specs, when not
// nil, are the model's declared outputs; they decide which outputs are the
// label and the scores when the policy does not name them. The tensors'
// data are not modified in place: shaped outputs get new buffers.
func Apply(p Policy, outs []pipeline.OutputTensor, specs []tensor.Spec) ([]pipeline.OutputTensor, error) {
	if p.passThrough() {
		return outs, nil
	}
	var lp Policy
	if needsLayout(p) {
		var err error
		if lp, err = resolve(p, specs); err != nil {
			return nil, err
		}
	}
	w, err := prepare(lp, outs, needsLayout(p))
	if err != nil {
		return nil, err
	}
	defer w.release()
	return w.finish(p)
}

// work is a response being shaped. It comes from workPool: release it
// when done. Nothing finish returns refers to its buffers.
type work struct {
	outs []pipeline.OutputTensor
	l    layout
	// scores holds the scores output decoded, row-major [batch][classes];
	// nil without one. Marking and the reverse sigmoid change it; finish
	// encodes it.
	scores []float64
	// labels holds the label output decoded; nil without one.
	labels []int64
	// rows and answered are rowLabels' results and the marker's copy.
	rows, answered []int64
	// Reused buffers behind scores and labels, and top_k's working rows.
	scoresBuf []float64
	labelsBuf []int64
	vals      []float64
	idx       []int64
	// sh holds a small response's shaped outputs; slab their data. The
	// response keeps them: Guard hands sh back to its pool when the
	// response is released (shaped.attach), Apply never does.
	sh   *shaped
	slab []byte
}

// shaped holds what finish makes for a small response, in one
// allocation: the list of outputs, the top_k outputs' shapes and the data.
type shaped struct {
	out    [4]pipeline.OutputTensor
	shapes [4]int64
	data   [64]byte
	// prev is the response's release function before attach; free is
	// sh.release, bound once so that attaching allocates nothing.
	prev, free func()
}

var shapedPool sync.Pool // of *shaped

// shapedOf returns w's shaped, taken on first use.
func (w *work) shapedOf() *shaped {
	if w.sh == nil {
		w.sh, _ = shapedPool.Get().(*shaped)
		if w.sh == nil {
			w.sh = new(shaped)
			w.sh.free = w.sh.release
		}
		w.slab = w.sh.data[:0]
	}
	return w.sh
}

// attach makes resp's release also give sh back to the pool, once the
// transport has encoded the outputs sh holds.
func (sh *shaped) attach(resp *pipeline.Response) {
	sh.prev = resp.Releaser()
	resp.SetRelease(sh.free)
}

// release gives sh back to the pool, then calls the response's previous
// release function.
func (sh *shaped) release() {
	prev := sh.prev
	sh.out, sh.prev = [4]pipeline.OutputTensor{}, nil
	shapedPool.Put(sh)
	if prev != nil {
		prev()
	}
}

// buf returns an empty slice with room for n bytes of a shaped output's
// data, carved from the slab.
func (w *work) buf(n int) []byte {
	w.shapedOf()
	if cap(w.slab)-len(w.slab) < n {
		w.slab = make([]byte, 0, max(n, 64))
	}
	l := len(w.slab)
	w.slab = w.slab[:l+n]
	return w.slab[l : l : l+n]
}

var workPool = sync.Pool{New: func() any { return new(work) }}

// maxPooled is the most elements a work's buffers keep for reuse.
const maxPooled = 1 << 14

func (w *work) release() {
	if max(cap(w.scoresBuf), cap(w.labelsBuf), cap(w.rows), cap(w.answered), cap(w.vals), cap(w.idx)) > maxPooled {
		return
	}
	*w = work{scoresBuf: w.scoresBuf[:0], labelsBuf: w.labelsBuf[:0], rows: w.rows[:0], answered: w.answered[:0],
		vals: w.vals[:0], idx: w.idx[:0]}
	workPool.Put(w)
}

// needsLayout reports whether shaping under p must know which outputs are
// the label and the scores. Full detail with rounding alone does not: it
// rounds every floating-point output.
func needsLayout(p Policy) bool {
	return p.detail() != pipeline.OutputFull || p.ReverseSigmoid.On()
}

// prepare decodes the label and scores of outs, located by lp (a policy
// resolve returned); without findLayout it leaves them unknown (full
// detail, rounding only).
func prepare(lp Policy, outs []pipeline.OutputTensor, findLayout bool) (*work, error) {
	w := workPool.Get().(*work)
	w.outs, w.l = outs, layout{label: -1, scores: -1}
	if !findLayout {
		return w, nil
	}
	var buf [4]tensor.Tensor // no allocation for the usual few outputs
	ts := buf[:0]
	for i := range outs {
		ts = append(ts, outs[i].Tensor)
	}
	l, err := locateResolved(lp, ts)
	if err != nil {
		w.release()
		return nil, err
	}
	w.l = l
	if l.scores >= 0 {
		w.scores = readFloatsInto(w.scoresBuf[:0], &outs[l.scores].Tensor)
		w.scoresBuf = w.scores[:0]
	}
	if l.label >= 0 {
		w.labels = readIntsInto(w.labelsBuf[:0], &outs[l.label].Tensor)
		w.labelsBuf = w.labels[:0]
	}
	return w, nil
}

// rowLabels returns each row's answered label: the label output's, else
// the scores' argmax; nil when the response has neither.
// (in a buffer of w's, valid until the next call).
func (w *work) rowLabels() []int64 {
	if w.labels != nil {
		w.rows = append(w.rows[:0], w.labels...)
		return w.rows
	}
	if w.scores == nil {
		return nil
	}
	w.rows = slices.Grow(w.rows[:0], w.l.batch)[:w.l.batch]
	for r := range w.rows {
		w.rows[r] = int64(argmax(w.row(r)))
	}
	return w.rows
}

func (w *work) row(r int) []float64 {
	c := w.l.classes
	return w.scores[r*c : (r+1)*c]
}

// relabel makes row r answer label c: the label output says c and, in the
// scores, c and the top class trade places, so the two never contradict.
func (w *work) relabel(r int, c int64) {
	if w.labels != nil {
		w.labels[r] = c
	}
	if w.scores != nil && c >= 0 && c < int64(w.l.classes) {
		row := w.row(r)
		if top := argmax(row); top >= 0 && top != int(c) {
			row[top], row[c] = row[c], row[top]
		}
	}
}

// finish applies p to the decoded outputs and encodes the response.
func (w *work) finish(p Policy) ([]pipeline.OutputTensor, error) {
	l, detail := w.l, p.detail()
	rows, classes := l.batch, l.classes
	// Every step below keeps each row's top class: it is decided here,
	// after marking and before anything perturbs or rounds the scores.
	var topsBuf [8]int // no allocation for small batches
	tops := rowTops(topsBuf[:0], w.scores, rows, classes)
	if w.scores != nil && p.ReverseSigmoid.On() && classes >= 2 {
		if !isDistribution(w.scores, classes) {
			softmaxRows(w.scores, classes)
		}
		var buf [32]float64
		scratch := buf[:0]
		if classes > len(buf) {
			scratch = make([]float64, classes)
		} else {
			scratch = buf[:classes]
		}
		for r := range rows {
			reverseSigmoid(w.row(r), tops[r], p.ReverseSigmoid.Beta, p.ReverseSigmoid.Gamma, scratch)
		}
	}
	var out []pipeline.OutputTensor
	if sh := w.shapedOf(); len(w.outs)+1 <= len(sh.out) {
		out = sh.out[:0]
	} else {
		out = make([]pipeline.OutputTensor, 0, len(w.outs)+1)
	}
	for i, o := range w.outs {
		switch {
		case i == l.label:
			o.Tensor = withIntsIn(w.buf(len(w.labels)*o.DType.Size()), o.Tensor, w.labels)
			out = append(out, o)
		case i == l.scores:
			switch detail {
			case pipeline.OutputFull:
				roundRows(w.scores, classes, p.Round)
				o.Tensor = withRowsIn(w.buf(len(w.scores)*o.DType.Size()), o.Tensor, w.scores, classes, tops)
				out = append(out, o)
			case pipeline.OutputTopK:
				k := min(p.k(), classes)
				vals, idx := topKInto(w.vals[:0], w.idx[:0], w.scores, classes, k)
				w.vals, w.idx = vals, idx
				roundRows(vals, k, p.Round)
				var firstBuf [8]int
				first := append(firstBuf[:0], make([]int, len(tops))...) // each row's top class leads its top k
				for r, top := range tops {
					if top < 0 {
						first[r] = -1
					}
				}
				shapes := w.shapedOf().shapes[:]
				shapes[0], shapes[1], shapes[2], shapes[3] = int64(rows), int64(k), int64(rows), int64(k)
				v := tensor.Tensor{Name: TopKValues, DType: o.DType, Shape: shapes[0:2:2]}
				ix := tensor.Tensor{Name: TopKIndices, DType: tensor.Int64, Shape: shapes[2:4:4]}
				out = append(out,
					pipeline.OutputTensor{Tensor: withRowsIn(w.buf(len(vals)*o.DType.Size()), v, vals, k, first), Binary: o.Binary},
					pipeline.OutputTensor{Tensor: withIntsIn(w.buf(len(idx)*8), ix, idx), Binary: o.Binary})
			default:
				if l.label < 0 {
					name := p.LabelOutput
					if name == "" {
						name = DefaultLabel
					}
					labels := make([]int64, rows)
					for r := range labels {
						labels[r] = int64(max(tops[r], 0))
					}
					out = append(out, pipeline.OutputTensor{Tensor: int64Tensor(name, []int64{int64(rows)}, labels), Binary: o.Binary})
				}
			}
		case detail == pipeline.OutputFull:
			if isScoresType(o.DType) && p.Round >= 0 {
				var err error
				if o.Tensor, err = roundTensor(o.Tensor, p.Round); err != nil {
					return nil, err
				}
			}
			out = append(out, o)
		}
		// Anything else is dropped: under top_k and label only the label
		// and the scores are served.
	}
	if len(out) == 0 && len(w.outs) > 0 {
		return nil, ErrNothingToServe
	}
	return out, nil
}

// rowTops returns the argmax of each row of v (rows of cols), appended to
// dst; -1 for a row without one (all NaN, or no columns).
func rowTops(dst []int, v []float64, rows, cols int) []int {
	tops := slices.Grow(dst[:0], rows)[:rows]
	for r := range tops {
		tops[r] = -1
		if cols > 0 && (r+1)*cols <= len(v) {
			tops[r] = argmax(v[r*cols : (r+1)*cols])
		}
	}
	return tops
}

// roundTensor returns t with every element rounded to n decimals; rows of
// a rank-2 tensor keep their top element strictly highest.
func roundTensor(t tensor.Tensor, n int) (tensor.Tensor, error) {
	if e, err := tensor.NumElements(t.Shape); err != nil || int64(len(t.Data)) != e*int64(t.DType.Size()) {
		return t, fmt.Errorf("output %q: %d bytes for shape %v", t.Name, len(t.Data), t.Shape)
	}
	v := readFloats(&t)
	cols := len(v)
	if len(t.Shape) == 2 {
		cols = int(t.Shape[1])
	}
	if cols <= 0 {
		return t, nil
	}
	tops := rowTops(nil, v, len(v)/cols, cols)
	roundRows(v, cols, n)
	return withRows(t, v, cols, tops), nil
}

// withRows encodes v (rows of cols) into t's datatype, first making each
// row's top element (tops[r]; -1 for none) strictly greater than the
// others as the datatype represents them: two scores that differ in
// float64 may be one float32.
func withRows(t tensor.Tensor, v []float64, cols int, tops []int) tensor.Tensor {
	return withRowsIn(nil, t, v, cols, tops)
}

// withRowsIn is withRows writing into dst's spare capacity when it has
// room.
func withRowsIn(dst []byte, t tensor.Tensor, v []float64, cols int, tops []int) tensor.Tensor {
	conv := func(x float64) float64 { return x }
	next := func(x float64) float64 { return math.Nextafter(x, math.Inf(1)) }
	if t.DType == tensor.FP32 {
		conv = func(x float64) float64 { return float64(float32(x)) }
		next = func(x float64) float64 { return float64(math.Nextafter32(float32(x), float32(math.Inf(1)))) }
	}
	for r, top := range tops {
		if top < 0 || (r+1)*cols > len(v) {
			continue
		}
		row := v[r*cols : (r+1)*cols]
		lead, above := conv(row[top]), math.Inf(-1)
		for j, x := range row {
			if c := conv(x); j != top && c >= lead && c > above {
				above = c
			}
		}
		if !math.IsInf(above, -1) && !math.IsInf(above, 1) {
			row[top] = next(above)
		}
	}
	return withFloatsIn(dst, t, v)
}

// roundRows rounds v (rows of cols) to n decimals (nothing when n < 0).
// If rounding ties a row's top element with another, the top one is
// raised by one step, so the predicted class stays the first maximum.
func roundRows(v []float64, cols, n int) {
	if n < 0 || cols <= 0 {
		return
	}
	scale := math.Pow10(n)
	for r := 0; r+cols <= len(v); r += cols {
		row := v[r : r+cols]
		top := argmax(row)
		for i, x := range row {
			row[i] = roundTo(x, scale)
		}
		if top < 0 {
			continue
		}
		for j, x := range row {
			if j != top && x == row[top] {
				if q := row[top] * scale; math.Abs(q) < 1<<52 {
					row[top] = (math.Round(q) + 1) / scale
				}
				break
			}
		}
	}
}

// roundTo rounds x to the nearest multiple of 1/scale (half away from
// zero). Values too large to have a fractional part at that scale, and
// non-finite ones, are returned as they are.
func roundTo(x, scale float64) float64 {
	q := x * scale
	if math.IsNaN(q) || math.Abs(q) >= 1<<52 {
		return x
	}
	return math.Round(q) / scale
}

// argmax returns the index of the first largest element, NaNs ignored;
// -1 when there is none.
func argmax(row []float64) int {
	best := -1
	for i, x := range row {
		if math.IsNaN(x) {
			continue
		}
		if best < 0 || x > row[best] {
			best = i
		}
	}
	return best
}

// topK returns the k highest of each row of v (rows of cols) in descending
// order, ties to the lower index, NaNs last, and their indices.
func topK(v []float64, cols, k int) ([]float64, []int64) { return topKInto(nil, nil, v, cols, k) }

// topKInto is topK appending to vals and idx.
func topKInto(vals []float64, idx []int64, v []float64, cols, k int) ([]float64, []int64) {
	rows := 0
	if cols > 0 {
		rows = len(v) / cols
	}
	vals = slices.Grow(vals[:0], rows*k)
	idx = slices.Grow(idx[:0], rows*k)
	if k == 1 {
		// The top of each row: its first maximum, NaNs last.
		for r := range rows {
			row := v[r*cols : (r+1)*cols]
			best := argmax(row)
			if best < 0 {
				best = 0 // all NaN: the first
			}
			vals = append(vals, row[best])
			idx = append(idx, int64(best))
		}
		return vals, idx
	}
	// before reports whether element a of row ranks before element b.
	before := func(row []float64, a, b int) bool {
		x, y := row[a], row[b]
		switch {
		case math.IsNaN(y):
			return !math.IsNaN(x) || a < b
		case math.IsNaN(x):
			return false
		case x != y:
			return x > y
		}
		return a < b
	}
	if k <= 8 {
		// Selection: k passes over the row, cheaper than sorting for the
		// small k served in practice.
		var takenBuf [64]bool // no allocation for up to 64 classes
		taken := takenBuf[:0]
		if cols > len(takenBuf) {
			taken = make([]bool, cols)
		} else {
			taken = takenBuf[:cols]
		}
		for r := range rows {
			row := v[r*cols : (r+1)*cols]
			clear(taken)
			for range k {
				best := -1
				for i := range row {
					if !taken[i] && (best < 0 || before(row, i, best)) {
						best = i
					}
				}
				taken[best] = true
				vals = append(vals, row[best])
				idx = append(idx, int64(best))
			}
		}
		return vals, idx
	}
	order := make([]int, cols)
	for r := range rows {
		row := v[r*cols : (r+1)*cols]
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			if before(row, a, b) {
				return -1
			}
			if before(row, b, a) {
				return 1
			}
			return 0
		})
		for _, i := range order[:k] {
			vals = append(vals, row[i])
			idx = append(idx, int64(i))
		}
	}
	return vals, idx
}

// isDistribution reports whether every row of v (rows of cols) is a
// probability distribution: values in [0, 1] summing to 1 within FP32
// rounding.
func isDistribution(v []float64, cols int) bool {
	for r := 0; r+cols <= len(v); r += cols {
		sum := 0.0
		for _, x := range v[r : r+cols] {
			if !(x >= 0 && x <= 1) {
				return false
			}
			sum += x
		}
		if math.Abs(sum-1) > 1e-3 {
			return false
		}
	}
	return true
}

// softmaxRows turns each row of logits into probabilities in place.
func softmaxRows(v []float64, cols int) {
	for r := 0; r+cols <= len(v); r += cols {
		row := v[r : r+cols]
		top := argmax(row)
		if top < 0 || math.IsInf(row[top], 0) {
			continue // no finite maximum: left as it is
		}
		m, sum := row[top], 0.0
		for i, x := range row {
			e := math.Exp(x - m)
			if math.IsNaN(e) {
				e = 0
			}
			row[i] = e
			sum += e
		}
		for i := range row {
			row[i] /= sum
		}
	}
}

// reverseSigmoid perturbs one probability row in place (Lee et al. 2019):
// y' = α(y − β(s(γ·logit(y)) − ½)), α renormalising to 1, then keeps the
// row's top class top (decided before the row became probabilities, which
// may tie near-equal logits): if the maximum is elsewhere the two trade
// places, and a tie is broken in the top class's favour. Rows with
// non-finite values are left as they are. scratch (len(row) long) keeps
// the row in case it must be restored.
//
// s(γ·logit(y)) is computed by squashRow as 1/(1 + 2^(−γ·log2(y/(1−y))))
// with the table-and-polynomial log2 and exp2 of fastmath.go, not
// math.Log and math.Exp, which were most of the cost. Their relative
// errors (below 1e-13 and 2e-14) move s by under 1e-13, so y' stays
// within about 1e-13 of the exact formula (the tests require 1e-9 and
// see under 1e-15), far below FP32 resolution. y ≤ 0 gives s = 0 and
// y ≥ 1 gives s = 1; a power that overflows (underflows) gives s = 0
// (1), as in the exact formula. Subnormal y are handled correctly, which
// math.Log on amd64 is not (golang.org/issue/56600).
func reverseSigmoid(row []float64, top int, beta, gamma float64, scratch []float64) {
	if top < 0 || top >= len(row) {
		return
	}
	orig := scratch[:len(row)]
	for i, x := range row { // copied to orig as it is checked
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return
		}
		orig[i] = x
	}
	squashRow(row, orig, gamma) // row[i] = s(γ·logit(orig[i]))
	sum := 0.0
	for i, y := range orig {
		p := y - beta*(row[i]-0.5)
		if !(p > 0) {
			p = 0
		}
		row[i] = p
		sum += p
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		copy(row, orig)
		return
	}
	m := 0 // argmax(row), found as it is normalised (no NaN left)
	for i := range row {
		row[i] /= sum
		if row[i] > row[m] {
			m = i
		}
	}
	if m != top && row[m] > row[top] {
		row[m], row[top] = row[top], row[m]
	}
	for j := range row {
		if j != top && row[j] == row[top] {
			row[top] = math.Nextafter(row[top], math.Inf(1))
			break
		}
	}
}

// readFloats decodes an FP32 or FP64 tensor; nil for other datatypes or
// data that does not fill whole elements.
func readFloats(t *tensor.Tensor) []float64 { return readFloatsInto(nil, t) }

// readFloatsInto is readFloats appending to dst[:0].
func readFloatsInto(dst []float64, t *tensor.Tensor) []float64 {
	var n int
	switch t.DType {
	case tensor.FP32:
		if len(t.Data)%4 != 0 {
			return nil
		}
		n = len(t.Data) / 4
	case tensor.FP64:
		if len(t.Data)%8 != 0 {
			return nil
		}
		n = len(t.Data) / 8
	default:
		return nil
	}
	v := slices.Grow(dst[:0], n)[:n]
	if t.DType == tensor.FP32 {
		for i := range v {
			v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		}
	} else {
		for i := range v {
			v[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	}
	return v
}

// withFloats returns t with data v in t's datatype (FP32 or FP64), in a
// new buffer.
func withFloats(t tensor.Tensor, v []float64) tensor.Tensor { return withFloatsIn(nil, t, v) }

// withFloatsIn is withFloats writing into dst's spare capacity when it
// has room.
func withFloatsIn(dst []byte, t tensor.Tensor, v []float64) tensor.Tensor {
	size := t.DType.Size()
	b := dst[:0]
	if cap(b) < len(v)*size {
		b = make([]byte, 0, len(v)*size)
	}
	for _, x := range v {
		if t.DType == tensor.FP32 {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(x)))
		} else {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
		}
	}
	t.Data = b
	return t
}

// readInts decodes an INT64 or INT32 tensor.
func readInts(t *tensor.Tensor) []int64 { return readIntsInto(nil, t) }

// readIntsInto is readInts appending to dst[:0].
func readIntsInto(dst []int64, t *tensor.Tensor) []int64 {
	size := t.DType.Size()
	if size == 0 || len(t.Data)%size != 0 {
		return nil
	}
	n := len(t.Data) / size
	v := slices.Grow(dst[:0], n)[:n]
	for i := range v {
		v[i] = tensor.ReadInt(t.Data[size*i:], size)
	}
	return v
}

// withInts returns t with data v in t's integer datatype, in a new buffer.
func withInts(t tensor.Tensor, v []int64) tensor.Tensor { return withIntsIn(nil, t, v) }

// withIntsIn is withInts writing into dst's spare capacity when it has
// room.
func withIntsIn(dst []byte, t tensor.Tensor, v []int64) tensor.Tensor {
	size := t.DType.Size()
	b := dst[:0]
	if cap(b) < len(v)*size {
		b = make([]byte, 0, len(v)*size)
	}
	for _, x := range v {
		b = tensor.AppendLE(b, uint64(x), size)
	}
	t.Data = b
	return t
}

func int64Tensor(name string, shape []int64, v []int64) tensor.Tensor {
	return withInts(tensor.Tensor{Name: name, DType: tensor.Int64, Shape: shape}, v)
}

// Labels returns each row's predicted class from a model's outputs: the
// label output's values, else the argmax of the scores (first maximum).
// labelOutput and scoresOutput name those outputs, or are empty to find
// them by datatype and shape; specs are the model's declared outputs, or
// nil.
func Labels(outs []tensor.Tensor, specs []tensor.Spec, labelOutput, scoresOutput string) ([]int64, error) {
	a, err := ReadAnswers(outs, specs, labelOutput, scoresOutput)
	return a.Labels, err
}

// Answers is what a classifier answered for a batch.
type Answers struct {
	// Labels holds each row's predicted class, as Labels returns it.
	Labels []int64
	// Scores holds the scores output decoded, row-major [batch][Classes];
	// nil when the model has none.
	Scores  []float64
	Classes int
}

// Row returns row r's scores, or nil without a scores output.
func (a *Answers) Row(r int) []float64 {
	if a.Scores == nil {
		return nil
	}
	return a.Scores[r*a.Classes : (r+1)*a.Classes]
}

// ReadAnswers reads each row's predicted class, as Labels does, and the
// scores behind it when the model has a scores output.
func ReadAnswers(outs []tensor.Tensor, specs []tensor.Spec, labelOutput, scoresOutput string) (Answers, error) {
	l, err := locate(Policy{LabelOutput: labelOutput, ScoresOutput: scoresOutput}, outs, specs)
	if err != nil {
		return Answers{}, err
	}
	w := &work{l: l}
	if l.label >= 0 {
		w.labels = readInts(&outs[l.label])
	}
	if l.scores >= 0 {
		w.scores = readFloats(&outs[l.scores])
	}
	labels := w.rowLabels()
	if labels == nil {
		return Answers{}, fmt.Errorf("%w: no label or scores output", ErrLayout)
	}
	return Answers{Labels: labels, Scores: w.scores, Classes: l.classes}, nil
}
