package extraction

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSplitAttackDetectedOnGroup: an attack spread round-robin over 16 API
// keys of one tenant. Each key sends too little to be caught alone (the
// data decides; the count is logged), the tenant's group is caught, and
// from then on every key's Decision carries the group's action.
func TestSplitAttackDetectedOnGroup(t *testing.T) {
	loadFixtures(t)
	tests := []struct {
		name   string
		stream func(*rand.Rand) []query
		within int
	}{
		{"uniform random", func(r *rand.Rand) []query { return uniformStream(r, 300) }, 300},
		{"jacobian λ=2 τ=3 25 seeds", func(r *rand.Rand) []query { return jbdaPeriodicStream(r, 25, 400, 2, 3) }, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMonitor(t, testConfig(t))
			const keys = 16
			group := []string{TenantGroup("mallory")}
			qs := tt.stream(rand.New(rand.NewPCG(3, 4)))
			// A benign client outside the tenant, to show it is untouched.
			benign := benignStream(rand.New(rand.NewPCG(5, 6)), len(qs))
			caught, aloneAtCatch := 0, 0
			for i, q := range qs {
				m.Observe(fmt.Sprintf("key:mallory-%02d", i%keys), group, q.x, q.label)
				m.Observe("key:alice", []string{TenantGroup("alice")}, benign[i].x, benign[i].label)
				m.Flush()
				if st, _ := m.Status(group[0], true); caught == 0 && len(st.Alarms) > 0 {
					caught = i + 1
					for k := range keys {
						if st, _ := m.Status(fmt.Sprintf("key:mallory-%02d", k), false); len(st.Alarms) > 0 {
							aloneAtCatch++
						}
					}
					t.Logf("group caught after %d queries (%d or %d per key): alarms %v, risk %.2f, action %v; keys caught on their own by then: %d",
						caught, caught/keys, (caught+keys-1)/keys, st.Alarms, st.Risk, st.Action, aloneAtCatch)
				}
			}
			if caught == 0 || caught > tt.within {
				t.Fatalf("group caught after %d queries, want within %d", caught, tt.within)
			}
			alone := 0
			for k := range keys {
				p := fmt.Sprintf("key:mallory-%02d", k)
				st, _ := m.Status(p, false)
				if len(st.Alarms) > 0 {
					alone++
				}
				if a := m.Decision(p); a < ActionAlert {
					t.Errorf("%s: Decision %v, want at least alert (from its group)", p, a)
				}
			}
			t.Logf("keys caught on their own by the end (%d queries each): %d of %d", len(qs)/keys, alone, keys)
			if aloneAtCatch != 0 {
				t.Errorf("%d keys were caught on their own before the group", aloneAtCatch)
			}
			if a := m.Decision("key:alice"); a != ActionNone {
				t.Errorf("benign key:alice: Decision %v, want none", a)
			}
		})
	}
}

// TestInterleavedAttack: natural queries mixed in one for one do not hide
// Jacobian augmentation from the out-of-distribution rate.
func TestInterleavedAttack(t *testing.T) {
	loadFixtures(t)
	m := newMonitor(t, testConfig(t))
	attack := jbdaPeriodicStream(rand.New(rand.NewPCG(8, 8)), 25, 200, 2, 3)
	natural := benignStream(rand.New(rand.NewPCG(9, 9)), len(attack))
	var mixed []query
	for i := range attack {
		mixed = append(mixed, natural[i], attack[i])
	}
	got := firstFlagged(m, "key:mixer", nil, mixed)
	st, _ := m.Status("key:mixer", false)
	t.Logf("flagged after %d queries (%d of them attack queries): alarms %v", got, got/2, st.Alarms)
	if got == 0 || got > 300 {
		t.Errorf("flagged after %d queries, want within 300 (150 attack queries)", got)
	}
}
