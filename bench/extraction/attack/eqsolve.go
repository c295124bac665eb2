package attack

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// EqSolve is equation-solving (Tramèr et al. 2016) against a multinomial
// logistic regression: with softmax outputs, log(p_i/p_r) = (w_i−w_r)·x +
// (b_i−b_r) is linear in x, so each query whose probabilities are served
// gives up to Classes−1 linear equations in the (Dim+1)·(Classes−1)
// unknowns (class 0's parameters are fixed at zero: softmax is invariant to
// a common shift). Dim+1 = 65 queries with exact probabilities determine
// the model; the attack solves the equations from uniform random queries
// by least squares.
//
// When probabilities are rounded, zeroed or partly withheld, the attack
// infers the rounding step, drops probabilities served as 0, takes the
// most probable served class as the reference of each query, and weights
// each equation by the inverse of its variance under rounding. When no
// query yields an equation but scores are served (the top class and its
// probability only), it fits the scores instead (scoreFit: one nonlinear
// equation per query) unless they fit too badly to be merely rounded;
// then, or when no scores are served at all, it trains a logistic
// regression on the labels (label-only retraining).
type EqSolve struct {
	Seed  uint64
	Train learn.TrainConfig // of the label-only fallback; zero: learn.DefaultTrain
}

var _ Attack = EqSolve{}

// Run implements Attack.
func (e EqSolve) Run(ctx context.Context, o Oracle, checkpoints []int, observe Observer) error {
	src := NewUniform(e.Seed)
	s := newSystem()
	s.scores = &scoreFit{}
	var xs [][]float64
	var answers []Answer
	spent := 0
	for _, cp := range checkpoints {
		var batch [][]float64
		for ; spent < cp; spent++ {
			batch = append(batch, src.Next())
		}
		got, err := o.Query(ctx, batch)
		xs, answers = append(xs, batch[:len(got)]...), append(answers, got...)
		if err != nil && !errors.Is(err, ErrBlocked) {
			return err
		}
		model, merr := s.model(xs, answers, e.Seed, e.Train)
		if merr != nil {
			return merr
		}
		if err != nil {
			spent -= len(batch) - len(got)
			if oerr := observe(spent, model); oerr != nil {
				return oerr
			}
			return err
		}
		if err := observe(spent, model); err != nil {
			return err
		}
	}
	return nil
}

// system accumulates the normal equations AᵀWA θ = AᵀW y of the weighted
// least-squares problem, in blocks of Dim+1 unknowns for classes
// 1..Classes−1.
type system struct {
	q     float64 // rounding step the equations were weighted for
	used  int     // answers accumulated
	eqs   int     // equations accumulated
	ata   []float64
	atb   []float64
	outer []float64 // φφᵀ scratch

	scores *scoreFit // the fallback when scores give no equation
}

const blk = Dim + 1

func newSystem() *system {
	n := blk * (Classes - 1)
	return &system{ata: make([]float64, n*n), atb: make([]float64, n), outer: make([]float64, blk*blk)}
}

func (s *system) reset(q float64) {
	clear(s.ata)
	clear(s.atb)
	s.q, s.used, s.eqs = q, 0, 0
}

// model brings the system up to date with answers and returns the
// recovered model.
func (s *system) model(xs [][]float64, answers []Answer, seed uint64, train learn.TrainConfig) (learn.Classifier, error) {
	if q := quantum(answers); q != s.q {
		s.reset(q)
	}
	for ; s.used < len(answers); s.used++ {
		s.add(xs[s.used], answers[s.used])
	}
	if s.eqs == 0 {
		if usableScores(answers) < scoreMinUse {
			return labelOnlyNet(xs, answers, seed, train)
		}
		net, err := s.scores.fit(xs, answers, s.q, func() (*learn.Net, error) { return labelOnlyNet(xs, answers, seed, train) })
		if err != nil || s.scores.misfit <= scoreMisfit {
			return net, err
		}
		return labelOnlyNet(xs, answers, seed, train)
	}
	theta, err := s.solve()
	if err != nil {
		return nil, err
	}
	net := &learn.Net{Scale: 1, Layers: []learn.Dense{{In: Dim, Out: Classes, W: make([]float64, Dim*Classes), B: make([]float64, Classes)}}}
	d := &net.Layers[0]
	for c := 1; c < Classes; c++ {
		t := theta[(c-1)*blk : c*blk]
		for i := range Dim {
			d.W[c*Dim+i] = t[i] / PixelMax
		}
		d.B[c] = t[Dim]
	}
	return net, nil
}

// add accumulates the equations of one answer.
func (s *system) add(x []float64, a Answer) {
	if a.Refused || a.Probs == nil {
		return
	}
	r := learn.Argmax(a.Probs)
	if r < 0 || a.Probs[r] <= 0 {
		return
	}
	// The error of log p̂ is about ε/p: ε half the rounding step, or
	// float32 rounding when not rounded.
	sd := func(p float64) float64 {
		eps := max(s.q/2, p*0x1p-23)
		return eps / p
	}
	phi := make([]float64, blk)
	for i, v := range x {
		phi[i] = v / PixelMax
	}
	phi[Dim] = 1
	for i := range blk {
		for j := range blk {
			s.outer[i*blk+j] = phi[i] * phi[j]
		}
	}
	sdr := sd(a.Probs[r])
	lr := math.Log(a.Probs[r])
	var wr float64 // sum of weights coupling to the reference
	for c, p := range a.Probs {
		if c == r || p <= 0 || c >= Classes {
			continue
		}
		sdc := sd(p)
		w := 1 / (sdc*sdc + sdr*sdr)
		y := math.Log(p) - lr
		// Equation: (θ_c − θ_r)·φ = y.
		s.addBlock(c, c, w)
		s.addRHS(c, w*y, phi)
		if r != 0 && c != 0 {
			s.addBlock(c, r, -w)
			s.addBlock(r, c, -w)
		}
		wr += w
		s.addRHS(r, -w*y, phi)
		s.eqs++
	}
	s.addBlock(r, r, wr)
}

// addBlock adds w·φφᵀ to block (i, j); class 0 has no block.
func (s *system) addBlock(i, j int, w float64) {
	if i == 0 || j == 0 || w == 0 {
		return
	}
	n := blk * (Classes - 1)
	oi, oj := (i-1)*blk, (j-1)*blk
	for a := range blk {
		row := s.ata[(oi+a)*n+oj : (oi+a)*n+oj+blk]
		o := s.outer[a*blk : (a+1)*blk]
		for b := range row {
			row[b] += w * o[b]
		}
	}
}

func (s *system) addRHS(i int, wy float64, phi []float64) {
	if i == 0 {
		return
	}
	v := s.atb[(i-1)*blk : i*blk]
	for a := range v {
		v[a] += wy * phi[a]
	}
}

// solve solves the normal equations with a small ridge, which picks a
// near minimum-norm solution while the system is underdetermined.
func (s *system) solve() ([]float64, error) {
	n := blk * (Classes - 1)
	var tr float64
	for i := range n {
		tr += s.ata[i*n+i]
	}
	a := make([]float64, len(s.ata))
	for ridge := 1e-10 * tr / float64(n); ridge < tr; ridge *= 100 {
		copy(a, s.ata)
		for i := range n {
			a[i*n+i] += ridge
		}
		theta, err := learn.SolveSPD(a, n, s.atb)
		if err == nil {
			return theta, nil
		}
	}
	return nil, fmt.Errorf("equation-solving: normal equations not solvable (%d equations)", s.eqs)
}

// labelOnlyNet trains a logistic regression on the served labels: what an
// attacker does when no probabilities are served.
func labelOnlyNet(xs [][]float64, answers []Answer, seed uint64, train learn.TrainConfig) (*learn.Net, error) {
	var tx, ty [][]float64
	for i, a := range answers {
		if !a.Refused && a.Label >= 0 && a.Label < Classes {
			tx, ty = append(tx, xs[i]), append(ty, learn.OneHot(a.Label, Classes))
		}
	}
	rng := rand.New(rand.NewPCG(seed, uint64(len(tx))))
	net := learn.NewNet([]int{Dim, Classes}, 1.0/PixelMax, rng)
	if len(tx) == 0 {
		return net, nil
	}
	if err := net.Fit(tx, ty, trainOr(train), rng); err != nil {
		return nil, err
	}
	return net, nil
}
