package attack

import (
	"context"
	"math/rand/v2"
)

// RoundRobin spreads queries over several principals' oracles, one query
// to each in turn: an attack split over many API keys.
type RoundRobin struct {
	Oracles []Oracle
	next    int
}

var _ Oracle = (*RoundRobin)(nil)

// Query implements Oracle.
func (r *RoundRobin) Query(ctx context.Context, xs [][]float64) ([]Answer, error) {
	out := make([]Answer, 0, len(xs))
	for _, x := range xs {
		o := r.Oracles[r.next]
		r.next = (r.next + 1) % len(r.Oracles)
		a, err := o.Query(ctx, [][]float64{x})
		out = append(out, a...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Interleave hides an attack among natural queries: before each attack
// query it sends Ratio natural queries on average (drawn from Natural in
// turn; fractions carry over), whose answers the attack never sees. The
// natural queries cost the attacker queries: count them beneath
// Interleave.
type Interleave struct {
	Oracle  Oracle
	Natural Source
	Ratio   float64
	owed    float64
}

var _ Oracle = (*Interleave)(nil)

// NewInterleave returns an Interleave over o.
func NewInterleave(o Oracle, natural [][]float64, ratio float64, seed uint64) *Interleave {
	rng := rand.New(rand.NewPCG(seed, 0x6d6978))
	pool := make([][]float64, len(natural))
	for i, k := range rng.Perm(len(natural)) {
		pool[i] = natural[k]
	}
	return &Interleave{Oracle: o, Natural: &cycle{pool: pool}, Ratio: ratio}
}

// Query implements Oracle.
func (m *Interleave) Query(ctx context.Context, xs [][]float64) ([]Answer, error) {
	out := make([]Answer, 0, len(xs))
	for _, x := range xs {
		m.owed += m.Ratio
		var batch [][]float64
		for ; m.owed >= 1; m.owed-- {
			batch = append(batch, m.Natural.Next())
		}
		if len(batch) > 0 {
			if _, err := m.Oracle.Query(ctx, batch); err != nil {
				return out, err
			}
		}
		a, err := m.Oracle.Query(ctx, [][]float64{x})
		out = append(out, a...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// cycle returns its pool's images in turn, forever.
type cycle struct {
	pool [][]float64
	next int
}

func (c *cycle) Next() []float64 {
	x := c.pool[c.next]
	c.next = (c.next + 1) % len(c.pool)
	return x
}
