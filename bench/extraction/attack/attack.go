// Package attack holds the model-extraction attacks of the benchmark:
// equation-solving on returned probabilities (Tramèr et al., USENIX
// Security 2016), retraining on labels or probabilities from random or
// natural queries (the latter with probabilities is Knockoff Nets, Orekondy
// et al., CVPR 2019), and Jacobian-based dataset augmentation (Papernot et
// al., AsiaCCS 2017); and the ways of spreading them: over several
// principals (RoundRobin) and among natural queries (Interleave).
//
// An attack sees the victim only through an Oracle, the answers exactly as
// the server serves them: when a defence rounds, truncates or withholds
// probabilities, or refuses queries, the attack works with what it gets.
// Queries stay in the data's domain (whole pixel values 0..16) so that
// input validation cannot refuse them for their form. Every attack is
// deterministic given its seed and the answers.
package attack

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// The victims' input and output.
const (
	Dim      = 64 // 8×8 pixels
	Classes  = 10
	PixelMax = 16 // pixels are whole numbers 0..16
)

// Answer is the server's answer to one query.
type Answer struct {
	// Label is the top-1 class served: the argmax of Probs when
	// probabilities were served, else the label output; -1 for none.
	Label int
	// Probs are the served class probabilities; nil when none were.
	Probs []float64
	// Refused is set when the server refused the query (rate limited,
	// blocked): the answer carries no information.
	Refused bool
}

// Oracle is the victim as a principal sees it.
type Oracle interface {
	// Query sends each of xs as one query and returns one Answer per
	// query, in order. A refused query is an Answer with Refused set. An
	// error ends the attack: ErrBlocked (possibly wrapped) when the
	// server no longer answers the attacker at all. With an error, the
	// answers are those of the queries sent before it.
	Query(ctx context.Context, xs [][]float64) ([]Answer, error)
}

// ErrBlocked means the server refuses every query of the attacker.
var ErrBlocked = errors.New("attacker blocked")

// Observer receives the attacker's model after spent queries of the
// attack's own (the Oracle may have sent more, see Interleave).
type Observer func(spent int, model learn.Classifier) error

// Attack is one extraction attack.
type Attack interface {
	// Run attacks o, calling observe at every checkpoint (ascending
	// query counts; the last is the budget) or, for attacks that work in
	// rounds, after every round within the budget. When o reports
	// ErrBlocked, Run observes the model it has and returns the error.
	Run(ctx context.Context, o Oracle, checkpoints []int, observe Observer) error
}

// Uniform draws queries whose pixels are independent and uniform over the
// whole numbers 0..PixelMax.
type Uniform struct{ rng *rand.Rand }

// NewUniform returns a uniform query source seeded with seed.
func NewUniform(seed uint64) *Uniform {
	return &Uniform{rand.New(rand.NewPCG(seed, 0x756e69666f726d))}
}

// Next returns the next query.
func (u *Uniform) Next() []float64 {
	x := make([]float64, Dim)
	for i := range x {
		x[i] = float64(u.rng.IntN(PixelMax + 1))
	}
	return x
}

// Natural draws natural digits: first every image of a pool once, in a
// seeded order, then its translations by one pixel in the eight
// directions and by two pixels along each axis (vacated pixels are 0),
// also in a seeded order: 13 queries per pool image, after which it starts
// over.
type Natural struct {
	queue [][]float64
	next  int
}

// NewNatural returns a natural query source over pool.
func NewNatural(pool [][]float64, seed uint64) *Natural {
	rng := rand.New(rand.NewPCG(seed, 0x6e61747572616c))
	var originals, shifted [][]float64
	for _, i := range rng.Perm(len(pool)) {
		originals = append(originals, pool[i])
	}
	for _, x := range pool {
		for _, s := range Shifts {
			shifted = append(shifted, Translate(x, s[0], s[1]))
		}
	}
	rng.Shuffle(len(shifted), func(i, j int) { shifted[i], shifted[j] = shifted[j], shifted[i] })
	return &Natural{queue: append(originals, shifted...)}
}

// Next returns the next query.
func (n *Natural) Next() []float64 {
	x := n.queue[n.next]
	n.next = (n.next + 1) % len(n.queue)
	return x
}

// Shifts are the translations (rows, columns) Natural applies to each
// pool image.
var Shifts = [][2]int{{-1, -1}, {-1, 0}, {-1, 1}, {0, -1}, {0, 1}, {1, -1}, {1, 0}, {1, 1}, {-2, 0}, {2, 0}, {0, -2}, {0, 2}}

// Translate shifts an 8×8 image by dy rows and dx columns, filling with 0.
func Translate(x []float64, dy, dx int) []float64 {
	out := make([]float64, Dim)
	for r := range 8 {
		for c := range 8 {
			sr, sc := r-dy, c-dx
			if sr >= 0 && sr < 8 && sc >= 0 && sc < 8 {
				out[r*8+c] = x[sr*8+sc]
			}
		}
	}
	return out
}

// Source is where an attack's queries come from.
type Source interface{ Next() []float64 }

var (
	_ Source = (*Uniform)(nil)
	_ Source = (*Natural)(nil)
)

// quantum infers the rounding step of served probabilities: the largest
// 10^-k (k = 1..7) of which every served probability is a whole multiple,
// or 0 when they are not rounded to decimals.
func quantum(answers []Answer) float64 {
	for k := 1; k <= 7; k++ {
		q := math.Pow10(-k)
		ok, seen := true, false
		for _, a := range answers {
			for _, p := range a.Probs {
				seen = true
				m := p / q
				if math.Abs(m-math.Round(m)) > 1e-3 {
					ok = false
					break
				}
			}
			if !ok {
				break
			}
		}
		if ok && seen {
			return q
		}
	}
	return 0
}

// target is what a retraining attacker trains on for answer a: the served
// probabilities (renormalised) when soft and served, else the label
// one-hot.
func target(a Answer, soft bool) []float64 {
	if soft && a.Probs != nil {
		var s float64
		for _, p := range a.Probs {
			s += max(p, 0)
		}
		if s > 0 {
			t := make([]float64, Classes)
			for i, p := range a.Probs {
				t[i] = max(p, 0) / s
			}
			return t
		}
	}
	return learn.OneHot(a.Label, Classes)
}
