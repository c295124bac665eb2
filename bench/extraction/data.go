package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aegis-inference/aegis/bench/extraction/attack"
)

// The held-out digits (testdata/digits/heldout.json: the 450 rows of
// sklearn's digits that train_test_split(test_size=0.25, random_state=0)
// kept out of the victims' training) are split in two, by position (the
// file is already in random order):
//
//   - the first poolSize rows are the attacker's natural data: knockoff
//     and label-only natural queries (and their translations), the
//     Jacobian seeds, the natural cover queries that hide an attack;
//   - the remaining rows are the evaluation set: agreement between a
//     surrogate and the victim is measured on them only.
//
// Benign clients replay all 450 rows: they stand for the population the
// model serves, of which the attacker's pool is a sample.
const poolSize = 200

// heldout is the held-out data.
type heldout struct {
	Inputs [][]float64 `json:"inputs"`
	Labels []int       `json:"labels"`
}

func loadHeldout(root string) (*heldout, error) {
	path := filepath.Join(root, "testdata", "digits", "heldout.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h heldout
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(h.Inputs) != len(h.Labels) || len(h.Inputs) <= poolSize {
		return nil, fmt.Errorf("%s: %d inputs and %d labels, want as many and more than %d", path, len(h.Inputs), len(h.Labels), poolSize)
	}
	for i, x := range h.Inputs {
		if len(x) != attack.Dim {
			return nil, fmt.Errorf("%s: input %d has %d values, want %d", path, i, len(x), attack.Dim)
		}
	}
	return &h, nil
}

func (h *heldout) pool() [][]float64 { return h.Inputs[:poolSize] }
func (h *heldout) eval() [][]float64 { return h.Inputs[poolSize:] }

// seeds returns n pool images for the Jacobian attack, as evenly spread
// over the true classes as the pool allows, in pool order after a seeded
// rotation: the attacker is assumed to hold a few labelled digits of each
// class, as Papernot et al.'s 150 MNIST test digits.
func (h *heldout) seeds(n int, seed uint64) [][]float64 {
	pool := h.pool()
	start := int(seed*37) % len(pool)
	perClass := make([][][]float64, attack.Classes)
	for k := range pool {
		i := (start + k) % len(pool)
		perClass[h.Labels[i]] = append(perClass[h.Labels[i]], pool[i])
	}
	var out [][]float64
	for round := 0; len(out) < n; round++ {
		added := false
		for c := range perClass {
			if round < len(perClass[c]) && len(out) < n {
				out = append(out, perClass[c][round])
				added = true
			}
		}
		if !added {
			break
		}
	}
	return out
}
