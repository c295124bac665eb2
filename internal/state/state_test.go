package state

import "testing"

func TestVersionsPersistAndOnlyRise(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Highest("m"); err != nil || v != 0 {
		t.Fatalf("fresh store: %d %v", v, err)
	}
	for _, v := range []int64{3, 1, 7, 5} {
		if err := s.Record("m", v); err != nil {
			t.Fatal(err)
		}
	}
	s.Record("other", 2)
	s.Close()
	s, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Highest("m"); v != 7 {
		t.Errorf("after reopen: %d, want 7", v)
	}
	if v, _ := s.Highest("other"); v != 2 {
		t.Errorf("other: %d, want 2", v)
	}
}
