package attack

import (
	"math"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// scoreFit fits a logistic regression to served scores that give no
// linear equation. When a server serves only the top class and its
// (rounded) probability, each query still gives one nonlinear equation,
// log p_y(x) = z_y − log Σ_j exp(z_j) = log p̂_y; a top score served as 1
// (saturated by rounding) says p_y ≥ 1 − q/2. The fit minimises the
// weighted squared log-residuals of every served score (weights: the
// inverse variance under rounding; a saturated score's residual counts
// only below its bound) by Levenberg–Marquardt over the (Dim+1)·(Classes−1)
// parameters (class 0's fixed at 0), from where the previous checkpoint
// left it (first from a label-only fit). It is the attacker who reads the
// confidence a hardened server still serves, not only the label.
//
// The attacker also checks the fit: under rounding alone each weighted
// squared residual is about 1/3 on average (a uniform rounding error over
// a step of 2ε has variance ε²/3). When the mean is far above that
// (misfit), the scores are not a rounded softmax of a linear function of
// the input (the server perturbs them, e.g. with a reverse sigmoid), and
// the attacker learns from the labels instead.
type scoreFit struct {
	theta  []float64 // blocks of blk for classes 1..Classes−1: W/PixelMax then b
	mu     float64   // damping
	misfit float64   // mean weighted squared residual of the last fit
}

// scoreMisfit is the mean weighted squared residual above which the
// scores are taken to be perturbed: thirty times what rounding explains.
const scoreMisfit = 10

const (
	scoreIters = 12 // Levenberg–Marquardt iterations per checkpoint
	// scoreMinUse is how many usable scores it takes to fit them: half
	// the parameters. Fewer leave the fit so underdetermined that it
	// does worse than the labels alone.
	scoreMinUse = blk * (Classes - 1) / 2
)

// usableScores counts the served scores that give a residual.
func usableScores(answers []Answer) int {
	n := 0
	for _, a := range answers {
		if a.Refused {
			continue
		}
		for _, p := range a.Probs {
			if p > 0 {
				n++
			}
		}
	}
	return n
}

// residual is one served score: query row, class, log p̂ (or the log of
// the bound for a saturated score), weight.
type residual struct {
	row, c    int
	l, w      float64
	saturated bool
}

func scoreResiduals(answers []Answer, q float64) []residual {
	var out []residual
	for i, a := range answers {
		if a.Refused {
			continue
		}
		for c, p := range a.Probs {
			switch {
			case p <= 0 || c >= Classes:
			case q > 0 && p >= 1-q/2:
				b := 1 - q/2
				e := (q / 2) / b
				out = append(out, residual{row: i, c: c, l: math.Log(b), w: 1 / (e * e), saturated: true})
			default:
				e := max(q/2, p*0x1p-23) / p
				out = append(out, residual{row: i, c: c, l: math.Log(p), w: 1 / (e * e)})
			}
		}
	}
	return out
}

// logits fills z with the model's logits for x (class 0's are 0).
func (f *scoreFit) logits(x []float64, z []float64) {
	z[0] = 0
	for c := 1; c < Classes; c++ {
		t := f.theta[(c-1)*blk : c*blk]
		s := t[Dim]
		for k, v := range x {
			s += t[k] * v / PixelMax
		}
		z[c] = s
	}
}

// logSoftmax turns logits into log-probabilities in place, and returns
// the probabilities in p.
func logSoftmax(z, p []float64) {
	m := math.Inf(-1)
	for _, v := range z {
		m = max(m, v)
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	lse := m + math.Log(s)
	for i, v := range z {
		z[i] = v - lse
		p[i] = math.Exp(z[i])
	}
}

// cost is the weighted sum of squared residuals at the current theta.
func (f *scoreFit) cost(xs [][]float64, rs []residual, byRow [][]int) float64 {
	z := make([]float64, Classes)
	p := make([]float64, Classes)
	var s float64
	for i, idx := range byRow {
		if len(idx) == 0 {
			continue
		}
		f.logits(xs[i], z)
		logSoftmax(z, p)
		for _, k := range idx {
			r := z[rs[k].c] - rs[k].l
			if rs[k].saturated && r > 0 {
				r = 0
			}
			s += rs[k].w * r * r
		}
	}
	return s
}

// fit refines the model on every answer so far.
func (f *scoreFit) fit(xs [][]float64, answers []Answer, q float64, init func() (*learn.Net, error)) (*learn.Net, error) {
	if f.theta == nil {
		net, err := init()
		if err != nil {
			return nil, err
		}
		// Softmax is invariant to a common shift: subtract class 0's row.
		d := net.Layers[0]
		f.theta = make([]float64, blk*(Classes-1))
		for c := 1; c < Classes; c++ {
			t := f.theta[(c-1)*blk : c*blk]
			for k := range Dim {
				t[k] = (d.W[c*Dim+k] - d.W[k]) * net.Scale * PixelMax
			}
			t[Dim] = d.B[c] - d.B[0]
		}
		f.mu = 1e-3
	}
	rs := scoreResiduals(answers, q)
	byRow := make([][]int, len(answers))
	for k, r := range rs {
		byRow[r.row] = append(byRow[r.row], k)
	}
	n := blk * (Classes - 1)
	ata := make([]float64, n*n)
	atb := make([]float64, n)
	a := make([]float64, n*n)
	z := make([]float64, Classes)
	p := make([]float64, Classes)
	g := make([]float64, Classes)
	G := make([]float64, (Classes-1)*(Classes-1))
	phi := make([]float64, blk)
	outer := make([]float64, blk*blk)
	cost := f.cost(xs, rs, byRow)
	for range scoreIters {
		clear(ata)
		clear(atb)
		for i, idx := range byRow {
			if len(idx) == 0 {
				continue
			}
			f.logits(xs[i], z)
			logSoftmax(z, p)
			for k, v := range xs[i] {
				phi[k] = v / PixelMax
			}
			phi[Dim] = 1
			clear(G)
			used := false
			for _, k := range idx {
				res := rs[k]
				r := z[res.c] - res.l
				if res.saturated && r > 0 {
					continue
				}
				used = true
				// ∂ log p_c / ∂θ_j = (δ_cj − p_j) φ, j = 1..Classes−1.
				for j := 1; j < Classes; j++ {
					g[j] = -p[j]
				}
				if res.c > 0 {
					g[res.c]++
				}
				for j := 1; j < Classes; j++ {
					for l := 1; l <= j; l++ {
						G[(j-1)*(Classes-1)+(l-1)] += res.w * g[j] * g[l]
					}
					wr := res.w * r * g[j]
					b := atb[(j-1)*blk : j*blk]
					for m, v := range phi {
						b[m] -= wr * v
					}
				}
			}
			if !used {
				continue
			}
			for m := range blk {
				for o := 0; o <= m; o++ {
					outer[m*blk+o] = phi[m] * phi[o]
				}
			}
			// Lower triangle of Σ G ⊗ φφᵀ.
			for j := 1; j < Classes; j++ {
				for l := 1; l <= j; l++ {
					gjl := G[(j-1)*(Classes-1)+(l-1)]
					if gjl == 0 {
						continue
					}
					oj, ol := (j-1)*blk, (l-1)*blk
					for m := range blk {
						row := ata[(oj+m)*n+ol:]
						last := blk - 1
						if j == l {
							last = m
						}
						for o := 0; o <= last; o++ {
							pm := phi[m] * phi[o]
							if o <= m {
								pm = outer[m*blk+o]
							}
							row[o] += gjl * pm
						}
					}
				}
			}
		}
		// Damped step (and a small ridge, for directions no residual
		// reaches); accept it if the cost falls.
		var tr float64
		for i := range n {
			tr += ata[i*n+i]
		}
		ridge := 1e-9*tr/float64(n) + 1e-12
		improved := false
		for range 8 {
			copy(a, ata)
			for i := range n {
				a[i*n+i] += f.mu*ata[i*n+i] + ridge
			}
			step, err := learn.SolveSPD(a, n, atb)
			if err != nil {
				f.mu *= 10
				continue
			}
			old := append([]float64(nil), f.theta...)
			for i := range f.theta {
				f.theta[i] += step[i]
			}
			if c := f.cost(xs, rs, byRow); c < cost && !math.IsNaN(c) {
				cost, improved = c, true
				f.mu = max(f.mu/3, 1e-9)
				break
			}
			copy(f.theta, old)
			f.mu *= 4
		}
		if !improved {
			break
		}
	}
	used := 0
	for i, idx := range byRow {
		if len(idx) > 0 {
			f.logits(xs[i], z)
			logSoftmax(z, p)
			for _, k := range idx {
				if r := z[rs[k].c] - rs[k].l; !rs[k].saturated || r < 0 {
					used++
				}
			}
		}
	}
	f.misfit = cost / float64(max(used, 1))
	net := &learn.Net{Scale: 1, Layers: []learn.Dense{{In: Dim, Out: Classes, W: make([]float64, Dim*Classes), B: make([]float64, Classes)}}}
	d := &net.Layers[0]
	for c := 1; c < Classes; c++ {
		t := f.theta[(c-1)*blk : c*blk]
		for k := range Dim {
			d.W[c*Dim+k] = t[k] / PixelMax
		}
		d.B[c] = t[Dim]
	}
	return net, nil
}
