package attack

import (
	"context"
	"errors"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// Jacobian is Jacobian-based dataset augmentation (Papernot et al. 2017):
// start from a small set of natural seeds labelled by the victim, then in
// each round train a substitute on every labelled point and add, for each
// point x with victim label y, the point x + λ_ρ·sign(∂F_y/∂x) (F the
// substitute's softmax output), clipped to the pixel range; the new points
// are labelled by the victim. The set doubles every round. The step
// changes sign every Tau rounds, λ_ρ = λ·(−1)^⌊ρ/τ⌋ (the paper's periodic
// step size; Tau 0 keeps it positive), so that later rounds move points
// towards the decision boundaries rather than away. Papernot et al. use λ
// = 0.1 on [0,1] inputs and τ = 3; here λ is in pixel units and whole (2,
// one eighth of the range), so that queries stay whole pixel values.
type Jacobian struct {
	Seeds  [][]float64
	Lambda float64
	Tau    int
	Sizes  []int
	Seed   uint64
	Train  learn.TrainConfig // zero: learn.DefaultTrain
}

var _ Attack = Jacobian{}

// Run implements Attack: it observes the substitute after every round; the
// last checkpoint is the budget, and the round that would exceed it is cut
// short.
func (j Jacobian) Run(ctx context.Context, o Oracle, checkpoints []int, observe Observer) error {
	budget := checkpoints[len(checkpoints)-1]
	var xs [][]float64 // labelled points
	var labels []int
	pending := j.Seeds
	spent := 0
	for round := uint64(0); len(pending) > 0 && spent < budget; round++ {
		if n := budget - spent; len(pending) > n {
			pending = pending[:n]
		}
		got, err := o.Query(ctx, pending)
		if err != nil && !errors.Is(err, ErrBlocked) {
			return err
		}
		spent += len(got)
		for k, a := range got {
			if !a.Refused && a.Label >= 0 && a.Label < Classes {
				xs, labels = append(xs, pending[k]), append(labels, a.Label)
			}
		}
		ts := make([][]float64, len(labels))
		for k, y := range labels {
			ts[k] = learn.OneHot(y, Classes)
		}
		sub, ferr := fit(xs, ts, j.Sizes, j.Train, j.Seed, round)
		if ferr != nil {
			return ferr
		}
		if oerr := observe(spent, sub); oerr != nil {
			return oerr
		}
		if err != nil {
			return err
		}
		step := j.Lambda
		if j.Tau > 0 && (int(round)/j.Tau)%2 == 1 {
			step = -step
		}
		pending = nil
		for k, x := range xs {
			g := sub.InputGrad(x, labels[k])
			nx := make([]float64, Dim)
			for i := range nx {
				v := x[i]
				switch {
				case g[i] > 0:
					v += step
				case g[i] < 0:
					v -= step
				}
				nx[i] = min(PixelMax, max(0, v))
			}
			pending = append(pending, nx)
		}
	}
	return nil
}
