package main

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
	"github.com/aegis-inference/aegis/bench/extraction/learn"
)

// scenario is an attack on a victim, sent by one principal, split over
// several, or hidden among natural queries; or the benign clients.
type scenario struct {
	name   string
	kind   string // eqsolve, label-random, label-natural, knockoff, jacobian, benign
	victim string // model name; "" for benign (both victims)
	spread string // "", "split", "interleave"
}

// Attack kinds, as the report names them.
var kindDesc = map[string]string{
	"eqsolve":       "equation-solving on returned probabilities, uniform random queries (Tramèr et al. 2016)",
	"label-random":  "retraining on labels of uniform random queries",
	"label-natural": "retraining on labels of natural queries (held-out pool and its translations)",
	"knockoff":      "retraining on served probabilities of natural queries (Knockoff Nets, Orekondy et al. 2019)",
	"jacobian":      "Jacobian-based augmentation from 25 natural seeds, λ = 2 pixels, τ = 3 (Papernot et al. 2017)",
	"benign":        "benign clients, each with its own key, replaying the held-out digits to both victims",
}

func short(victim string) string { return strings.TrimPrefix(victim, "digits_") }

// allScenarios lists every scenario the benchmark knows, in report order.
func allScenarios(split int) []scenario {
	var out []scenario
	add := func(kind, victim, spread string) {
		name := kind + "@" + short(victim)
		switch spread {
		case "split":
			name = fmt.Sprintf("split%d:%s", split, name)
		case "interleave":
			name = "interleave:" + name
		}
		out = append(out, scenario{name: name, kind: kind, victim: victim, spread: spread})
	}
	add("eqsolve", victimLogreg, "")
	for _, k := range []string{"label-random", "label-natural", "knockoff", "jacobian"} {
		add(k, victimLogreg, "")
		add(k, victimMLP, "")
	}
	add("eqsolve", victimLogreg, "split")
	for _, k := range []string{"label-random", "knockoff", "jacobian"} {
		add(k, victimMLP, "split")
	}
	add("eqsolve", victimLogreg, "interleave")
	add("jacobian", victimMLP, "interleave")
	out = append(out, scenario{name: "benign", kind: "benign"})
	return out
}

// selectScenarios keeps the scenarios matching any of the patterns
// (path.Match syntax on the name; "all" or none for every one).
func selectScenarios(all []scenario, patterns []string) ([]scenario, error) {
	if len(patterns) == 0 || slices.Contains(patterns, "all") {
		return all, nil
	}
	var out []scenario
	for _, s := range all {
		for _, p := range patterns {
			ok, err := path.Match(p, s.name)
			if err != nil {
				return nil, fmt.Errorf("-scenarios: %q: %w", p, err)
			}
			if ok {
				out = append(out, s)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-scenarios: %v match none of the scenarios", patterns)
	}
	return out, nil
}

// sizes is the surrogate's architecture: the attacker assumes the
// victim's family (Tramèr et al.'s setting): a logistic regression for
// the logistic regression, one hidden layer of 64 ReLU units for the MLP.
func sizes(victim string) []int {
	if victim == victimMLP {
		return []int{attack.Dim, 64, attack.Classes}
	}
	return []int{attack.Dim, attack.Classes}
}

// jacobianSeeds is the size of the Jacobian attack's natural seed set:
// with doubling rounds it spends 25, 50, 100, ... queries.
const jacobianSeeds = 25

// quickTrain trains surrogates in quick runs: a fraction of
// learn.DefaultTrain's steps (figures not meaningful, code paths the same).
var quickTrain = learn.TrainConfig{Batch: 32, LR: 0.01, L2: 1e-4, Epochs: 20, MinSteps: 60, MaxSteps: 200}

// train is how the attackers train their surrogates.
func (o options) train() learn.TrainConfig {
	switch {
	case o.quick:
		return quickTrain
	case o.epochs > 0:
		t := learn.DefaultTrain
		t.Epochs = o.epochs
		return t
	}
	return learn.DefaultTrain
}

// newAttack builds the scenario's attack for one seed, training with train.
func (s scenario) newAttack(h *heldout, seed uint64, train learn.TrainConfig) attack.Attack {
	switch s.kind {
	case "eqsolve":
		return attack.EqSolve{Seed: seed, Train: train}
	case "label-random":
		return attack.Retrain{Source: attack.NewUniform(seed), Sizes: sizes(s.victim), Seed: seed, Train: train}
	case "label-natural":
		return attack.Retrain{Source: attack.NewNatural(h.pool(), seed), Sizes: sizes(s.victim), Seed: seed, Train: train}
	case "knockoff":
		return attack.Retrain{Source: attack.NewNatural(h.pool(), seed), Soft: true, Sizes: sizes(s.victim), Seed: seed, Train: train}
	case "jacobian":
		return attack.Jacobian{Seeds: h.seeds(jacobianSeeds, seed), Lambda: 2, Tau: 3, Sizes: sizes(s.victim), Seed: seed, Train: train}
	}
	panic("unknown attack " + s.kind)
}

// checkpoints are the attack's own query counts at which its model is
// measured. Equation-solving is measured finely around 65 (Dim+1, where
// exact probabilities determine the model) and on to 40×65; the others
// at the Jacobian attack's doubling rounds, and at 2,000, the budget of
// the watermark criterion (a surrogate trained on at most 2,000 answers;
// the Jacobian attack's last round is cut short there).
func (s scenario) checkpoints(quick bool) []int {
	if s.kind == "eqsolve" {
		if quick {
			return []int{10, 30, 50, 60, 64, 65, 70, 80, 100}
		}
		return []int{10, 20, 30, 40, 50, 60, 64, 65, 66, 70, 80, 100, 150, 200, 300, 400, 650, 1000, 1300, 1950, 2600}
	}
	if quick {
		return []int{25, 50, 100}
	}
	return []int{25, 50, 100, 200, 400, 800, 1600, 2000}
}
