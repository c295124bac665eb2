package outguard_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/aegis-inference/aegis/internal/outguard"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/tensor"
)

// FuzzApply shapes random score tensors (any bit pattern: NaNs, infinities,
// denormals) under random policies. Apply must not panic, and when it
// succeeds: the label output is served unchanged, only the outputs the
// detail allows are served, with the documented shapes, and every row's
// top class (the first maximum of its scores) stays the predicted class.
func FuzzApply(f *testing.F) {
	seed := func(vals ...float32) []byte {
		var b []byte
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	f.Add(seed(0.1, 0.6, 0.25, 0.05, 0.7, 0.1, 0.1, 0.1), uint8(1), uint8(2), int8(2), uint8(0), uint8(0), uint8(4), uint8(0))
	f.Add(seed(0.004, 0.001, 0.4951, 0.4999), uint8(0), uint8(0), int8(2), uint8(128), uint8(40), uint8(4), uint8(1))
	f.Add(seed(2, -1, float32(math.NaN()), 7, float32(math.Inf(1)), 3), uint8(2), uint8(9), int8(-1), uint8(255), uint8(255), uint8(3), uint8(3))
	f.Add([]byte{}, uint8(1), uint8(1), int8(0), uint8(0), uint8(0), uint8(0), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, detail, k uint8, round int8, beta, gamma, cols, flags uint8) {
		p := outguard.Policy{
			Detail: []pipeline.OutputDetail{pipeline.OutputFull, pipeline.OutputTopK, pipeline.OutputLabel, ""}[detail%4],
			TopK:   int(k % 16),
			Round:  int(round%17) - 1,
		}
		if beta > 0 {
			p.ReverseSigmoid = outguard.ReverseSigmoid{Beta: float64(beta) / 255, Gamma: float64(gamma)/16 + 0.01}
		}
		withLabel, useFP64, withExtra, badShape := flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
		size := 4
		dtype := tensor.FP32
		if useFP64 {
			size, dtype = 8, tensor.FP64
		}
		c := int(cols % 12)
		rows := 0
		if c > 0 {
			rows = len(data) / size / c
		}
		scores := tensor.Tensor{Name: "probabilities", DType: dtype, Shape: []int64{int64(rows), int64(c)}, Data: data[:rows*c*size]}
		if badShape {
			scores.Data = data // may not match the shape
		}
		vals := make([]float64, rows*c)
		for i := range vals {
			if useFP64 {
				vals[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
			} else {
				vals[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
			}
		}
		tops := make([]int, rows)
		labels := make([]int64, rows)
		for r := range rows {
			tops[r] = -1
			for j := range c {
				v := vals[r*c+j]
				if !math.IsNaN(v) && (tops[r] < 0 || v > vals[r*c+tops[r]]) {
					tops[r] = j
				}
			}
			labels[r] = int64(tops[r])
		}
		var in []pipeline.OutputTensor
		if withLabel {
			in = append(in, pipeline.OutputTensor{Tensor: i64("label", []int64{int64(rows)}, labels...)})
		}
		in = append(in, pipeline.OutputTensor{Tensor: scores})
		if withExtra {
			in = append(in, pipeline.OutputTensor{Tensor: tensor.Tensor{Name: "note", DType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{data}}})
		}
		out, err := outguard.Apply(p, in, nil)
		if err != nil {
			return
		}
		if passThrough(p) {
			if len(out) != len(in) || &out[0] != &in[0] {
				t.Fatal("the full policy without rounding changed the response")
			}
			return
		}
		if badShape && len(data) != rows*c*size {
			t.Fatalf("scores of %d bytes for shape %v accepted", len(data), scores.Shape)
		}
		if l := byName(out, "label"); withLabel && (l == nil || len(intsOf(*l)) != rows) {
			t.Fatalf("label output lost: %v", names(out))
		}
		narrowed := outguard.Narrow(p, pipeline.Scopes{})
		for _, o := range out {
			switch o.Name {
			case "label":
				got := intsOf(o.Tensor)
				for r := range rows {
					if tops[r] >= 0 && got[r] != labels[r] {
						t.Fatalf("row %d: label %d, want %d", r, got[r], labels[r])
					}
				}
			case "probabilities":
				if narrowed.Detail != pipeline.OutputFull {
					t.Fatalf("scores served under %s", narrowed.Detail)
				}
				got := floatsOf(o.Tensor)
				if len(got) != rows*c {
					t.Fatalf("%d scores for %d×%d", len(got), rows, c)
				}
				for r := range rows {
					if tops[r] >= 0 && firstMax(got[r*c:r*c+c]) != tops[r] {
						t.Fatalf("row %d: top class %d, want %d (%v → %v)", r, firstMax(got[r*c:r*c+c]), tops[r], vals[r*c:r*c+c], got[r*c:r*c+c])
					}
				}
			case "topk_values", "topk_indices":
				if narrowed.Detail != pipeline.OutputTopK {
					t.Fatalf("%s served under %s", o.Name, narrowed.Detail)
				}
				kk := min(max(p.TopK, 1), c)
				if len(o.Shape) != 2 || o.Shape[0] != int64(rows) || o.Shape[1] != int64(kk) {
					t.Fatalf("%s: shape %v, want [%d %d]", o.Name, o.Shape, rows, kk)
				}
				if o.Name == "topk_indices" {
					idx := intsOf(o.Tensor)
					for r := range rows {
						seen := map[int64]bool{}
						for j := range kk {
							x := idx[r*kk+j]
							if x < 0 || x >= int64(c) || seen[x] {
								t.Fatalf("row %d: indices %v", r, idx[r*kk:r*kk+kk])
							}
							seen[x] = true
						}
						if tops[r] >= 0 && kk > 0 && idx[r*kk] != int64(tops[r]) {
							t.Fatalf("row %d: top-k led by %d, want %d", r, idx[r*kk], tops[r])
						}
					}
				} else {
					v := floatsOf(o.Tensor)
					for r := range rows {
						for j := 1; j < kk && tops[r] >= 0; j++ {
							if x := v[r*kk+j]; !math.IsNaN(x) && !(v[r*kk] > x) && !math.IsInf(v[r*kk], 1) {
								t.Fatalf("row %d: values %v not led by a strict maximum", r, v[r*kk:r*kk+kk])
							}
						}
					}
				}
			case "note":
				if narrowed.Detail != pipeline.OutputFull {
					t.Fatalf("unclassified output served under %s", narrowed.Detail)
				}
			default:
				t.Fatalf("unexpected output %q", o.Name)
			}
		}
	})
}

func passThrough(p outguard.Policy) bool {
	n := outguard.Narrow(p, pipeline.Scopes{})
	return n.Detail == pipeline.OutputFull && n.Round < 0 && !n.ReverseSigmoid.On()
}

func firstMax(row []float64) int {
	best := -1
	for i, v := range row {
		if !math.IsNaN(v) && (best < 0 || v > row[best]) {
			best = i
		}
	}
	return best
}
