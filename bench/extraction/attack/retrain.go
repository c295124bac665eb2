package attack

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// Retrain queries the victim with inputs from a source and, at every
// checkpoint, trains a fresh surrogate on every answer so far: on the
// served probabilities when Soft (and probabilities are served), else on
// the labels. With uniform queries and labels this is Tramèr et al.'s
// retraining; with natural queries and probabilities it is Knockoff Nets
// (Orekondy et al. 2019) with a random sampling strategy.
type Retrain struct {
	Source Source
	Soft   bool
	// Sizes are the surrogate's layer sizes (Dim first, Classes last).
	Sizes []int
	Seed  uint64
	// Train is how the surrogate is trained; zero means
	// learn.DefaultTrain.
	Train learn.TrainConfig
}

var _ Attack = Retrain{}

// Run implements Attack.
func (r Retrain) Run(ctx context.Context, o Oracle, checkpoints []int, observe Observer) error {
	var xs, ts [][]float64
	spent := 0
	for i, cp := range checkpoints {
		var batch [][]float64
		for ; spent < cp; spent++ {
			batch = append(batch, r.Source.Next())
		}
		got, err := o.Query(ctx, batch)
		if err != nil && !errors.Is(err, ErrBlocked) {
			return err
		}
		for k, a := range got {
			if !a.Refused && a.Label >= 0 && a.Label < Classes {
				xs, ts = append(xs, batch[k]), append(ts, target(a, r.Soft))
			}
		}
		if err != nil {
			spent -= len(batch) - len(got)
		}
		model, ferr := fit(xs, ts, r.Sizes, r.Train, r.Seed, uint64(i))
		if ferr != nil {
			return ferr
		}
		if oerr := observe(spent, model); oerr != nil {
			return oerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// trainOr returns t, or learn.DefaultTrain when t is zero.
func trainOr(t learn.TrainConfig) learn.TrainConfig {
	if t == (learn.TrainConfig{}) {
		return learn.DefaultTrain
	}
	return t
}

// fit trains a fresh network of the given sizes, seeded by (seed, stream);
// with no examples it returns the untrained network.
func fit(xs, ts [][]float64, sizes []int, train learn.TrainConfig, seed, stream uint64) (*learn.Net, error) {
	rng := rand.New(rand.NewPCG(seed, 0x666974<<8|stream))
	net := learn.NewNet(sizes, 1.0/PixelMax, rng)
	if len(xs) == 0 {
		return net, nil
	}
	if err := net.Fit(xs, ts, trainOr(train), rng); err != nil {
		return nil, err
	}
	return net, nil
}
