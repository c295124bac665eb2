// Package learn is the little machine learning the extraction benchmark's
// attackers need, written out so that it is deterministic and has no
// dependencies: fully connected networks with ReLU hidden layers and a
// softmax output (no hidden layer is multinomial logistic regression),
// trained with Adam on cross-entropy against hard or soft targets, the
// gradient of an output probability with respect to the input (for
// Jacobian-based augmentation), and a Cholesky solver for least squares.
//
// Everything is float64 and single-threaded. Given the same data, the same
// configuration and the same random source, training gives bit-identical
// weights.
package learn

import (
	"errors"
	"math"
	"math/rand/v2"
)

// Classifier predicts a class for an input.
type Classifier interface {
	Predict(x []float64) int
}

// Net is a fully connected network: ReLU between layers, softmax on the
// last. Inputs are multiplied by Scale before the first layer.
type Net struct {
	Scale  float64
	Layers []Dense
}

// Dense is one layer: out = W·in + B, W row-major [Out][In].
type Dense struct {
	In, Out int
	W, B    []float64
}

var _ Classifier = (*Net)(nil)

// NewNet returns a network with the given layer sizes (input first, classes
// last), weights drawn from rng with He initialisation and zero biases.
func NewNet(sizes []int, scale float64, rng *rand.Rand) *Net {
	n := &Net{Scale: scale}
	for i := 0; i+1 < len(sizes); i++ {
		in, out := sizes[i], sizes[i+1]
		d := Dense{In: in, Out: out, W: make([]float64, in*out), B: make([]float64, out)}
		std := math.Sqrt(2 / float64(in))
		if i+2 == len(sizes) {
			std = math.Sqrt(1 / float64(in))
		}
		for j := range d.W {
			d.W[j] = rng.NormFloat64() * std
		}
		n.Layers = append(n.Layers, d)
	}
	return n
}

// Classes is the number of outputs.
func (n *Net) Classes() int { return n.Layers[len(n.Layers)-1].Out }

// forward fills acts[0] (the scaled input) to acts[len(Layers)] (the
// logits); hidden activations are after ReLU.
func (n *Net) forward(x []float64, acts [][]float64) {
	a0 := acts[0]
	for i, v := range x {
		a0[i] = v * n.Scale
	}
	for l, d := range n.Layers {
		in, out := acts[l], acts[l+1]
		for o := range d.Out {
			w := d.W[o*d.In : (o+1)*d.In]
			s := d.B[o]
			for i, v := range in {
				s += w[i] * v
			}
			if l+1 < len(n.Layers) && s < 0 {
				s = 0
			}
			out[o] = s
		}
	}
}

func (n *Net) newActs() [][]float64 {
	acts := make([][]float64, len(n.Layers)+1)
	acts[0] = make([]float64, n.Layers[0].In)
	for l, d := range n.Layers {
		acts[l+1] = make([]float64, d.Out)
	}
	return acts
}

// Softmax turns logits into probabilities in place.
func Softmax(z []float64) {
	m := math.Inf(-1)
	for _, v := range z {
		m = max(m, v)
	}
	var s float64
	for i, v := range z {
		z[i] = math.Exp(v - m)
		s += z[i]
	}
	for i := range z {
		z[i] /= s
	}
}

// Probs returns the class probabilities of x.
func (n *Net) Probs(x []float64) []float64 {
	acts := n.newActs()
	n.forward(x, acts)
	p := acts[len(acts)-1]
	Softmax(p)
	return p
}

// Predict returns the most probable class of x (the lowest on ties).
func (n *Net) Predict(x []float64) int {
	acts := n.newActs()
	n.forward(x, acts)
	return Argmax(acts[len(acts)-1])
}

// Argmax returns the index of the largest value, the first on ties, -1 for
// none.
func Argmax(v []float64) int {
	best := -1
	for i, x := range v {
		if best < 0 || x > v[best] {
			best = i
		}
	}
	return best
}

// InputGrad returns ∂p_class/∂x, the gradient of the softmax probability of
// class with respect to the (unscaled) input.
func (n *Net) InputGrad(x []float64, class int) []float64 {
	acts := n.newActs()
	n.forward(x, acts)
	L := len(n.Layers)
	p := append([]float64(nil), acts[L]...)
	Softmax(p)
	// ∂p_c/∂z_j = p_c (δ_cj − p_j)
	delta := make([]float64, len(p))
	for j := range p {
		delta[j] = -p[class] * p[j]
	}
	delta[class] += p[class]
	for l := L - 1; l >= 0; l-- {
		d := n.Layers[l]
		prev := make([]float64, d.In)
		for o := range d.Out {
			if delta[o] == 0 {
				continue
			}
			w := d.W[o*d.In : (o+1)*d.In]
			for i := range prev {
				prev[i] += w[i] * delta[o]
			}
		}
		if l > 0 {
			for i, a := range acts[l] {
				if a <= 0 {
					prev[i] = 0
				}
			}
		}
		delta = prev
	}
	for i := range delta {
		delta[i] *= n.Scale
	}
	return delta
}

// TrainConfig says how Fit trains.
type TrainConfig struct {
	Batch int     // examples per step
	LR    float64 // Adam's step size at the start; it decays linearly to 0
	L2    float64 // weight decay on weights (not biases)
	// Steps is Epochs passes over the data, bounded by MinSteps and
	// MaxSteps.
	Epochs             int
	MinSteps, MaxSteps int
}

// DefaultTrain trains for 100 epochs within 400..10000 steps of 32
// examples: 100 epochs for every training set the benchmark builds (up to
// 3,200 examples), so that a surrogate is trained as far on 2,000 answers
// as on 200.
var DefaultTrain = TrainConfig{Batch: 32, LR: 0.01, L2: 1e-4, Epochs: 100, MinSteps: 400, MaxSteps: 10000}

// Fit trains n on xs against targets ts (probability vectors; one-hot for
// hard labels) by minimising cross-entropy with Adam, drawing minibatches
// from rng.
func (n *Net) Fit(xs, ts [][]float64, cfg TrainConfig, rng *rand.Rand) error {
	if len(xs) == 0 {
		return errors.New("fit: no examples")
	}
	if len(xs) != len(ts) {
		return errors.New("fit: examples and targets differ in number")
	}
	batch := min(cfg.Batch, len(xs))
	steps := cfg.Epochs * len(xs) / batch
	steps = max(cfg.MinSteps, min(cfg.MaxSteps, steps))

	grads := make([]Dense, len(n.Layers))
	m := make([]Dense, len(n.Layers))
	v := make([]Dense, len(n.Layers))
	for l, d := range n.Layers {
		for _, g := range []*Dense{&grads[l], &m[l], &v[l]} {
			*g = Dense{In: d.In, Out: d.Out, W: make([]float64, len(d.W)), B: make([]float64, len(d.B))}
		}
	}
	acts := n.newActs()
	L := len(n.Layers)
	deltas := make([][]float64, L+1)
	for l := range deltas {
		deltas[l] = make([]float64, len(acts[l]))
	}
	order := rng.Perm(len(xs))
	next := 0
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	b1t, b2t := 1.0, 1.0
	for step := range steps {
		for l := range grads {
			clear(grads[l].W)
			clear(grads[l].B)
		}
		for range batch {
			if next == len(order) {
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				next = 0
			}
			k := order[next]
			next++
			n.forward(xs[k], acts)
			p := deltas[L]
			copy(p, acts[L])
			Softmax(p)
			for j, t := range ts[k] {
				p[j] -= t
			}
			for l := L - 1; l >= 0; l-- {
				d, g := n.Layers[l], grads[l]
				in, dout, din := acts[l], deltas[l+1], deltas[l]
				clear(din)
				for o := range d.Out {
					e := dout[o]
					if e == 0 {
						continue
					}
					g.B[o] += e
					gw := g.W[o*d.In : (o+1)*d.In]
					w := d.W[o*d.In : (o+1)*d.In]
					for i, a := range in {
						gw[i] += e * a
						din[i] += e * w[i]
					}
				}
				if l > 0 {
					for i, a := range in {
						if a <= 0 {
							din[i] = 0
						}
					}
				}
			}
		}
		lr := cfg.LR * (1 - float64(step)/float64(steps))
		b1t *= beta1
		b2t *= beta2
		scale := 1 / float64(batch)
		for l := range n.Layers {
			d := &n.Layers[l]
			adam(d.W, grads[l].W, m[l].W, v[l].W, scale, cfg.L2, lr, b1t, b2t)
			adam(d.B, grads[l].B, m[l].B, v[l].B, scale, 0, lr, b1t, b2t)
		}
	}
	return nil
}

func adam(w, g, m, v []float64, scale, l2, lr, b1t, b2t float64) {
	const beta1, beta2, eps = 0.9, 0.999, 1e-8
	for i := range w {
		gi := g[i]*scale + l2*w[i]
		m[i] = beta1*m[i] + (1-beta1)*gi
		v[i] = beta2*v[i] + (1-beta2)*gi*gi
		mh := m[i] / (1 - b1t)
		vh := v[i] / (1 - b2t)
		w[i] -= lr * mh / (math.Sqrt(vh) + eps)
	}
}

// OneHot returns the one-hot vector of class among k classes.
func OneHot(class, k int) []float64 {
	t := make([]float64, k)
	t[class] = 1
	return t
}

// Agreement is the fraction of xs on which c predicts want.
func Agreement(c Classifier, xs [][]float64, want []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	same := 0
	for i, x := range xs {
		if c.Predict(x) == want[i] {
			same++
		}
	}
	return float64(same) / float64(len(xs))
}
