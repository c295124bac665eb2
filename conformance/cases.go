package conformance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aegis-inference/aegis/internal/tensor"
)

// DefaultDataDir is where Debian's libonnx-testdata installs the ONNX
// backend test data.
const DefaultDataDir = "/usr/share/libonnx-testdata/data"

// DataDirEnv overrides DefaultDataDir.
const DataDirEnv = "AEGIS_ONNX_TESTDATA"

// Suites are the test data directories the conformance run covers.
var Suites = []string{"node", "simple", "pytorch-converted"}

// DataDir returns the test data directory: $AEGIS_ONNX_TESTDATA or
// DefaultDataDir. It fails, naming the package to install, if the directory
// is missing.
func DataDir() (string, error) {
	dir := os.Getenv(DataDirEnv)
	if dir == "" {
		dir = DefaultDataDir
	}
	for _, s := range Suites {
		if fi, err := os.Stat(filepath.Join(dir, s)); err != nil || !fi.IsDir() {
			return "", fmt.Errorf("ONNX backend test data not found at %s (missing %s/): install the Debian package libonnx-testdata (scripts/install-deps.sh), or set %s", dir, s, DataDirEnv)
		}
	}
	return dir, nil
}

// CaseNames lists every case of the given suites under dir as
// "suite/test_name", sorted.
func CaseNames(dir string, suites ...string) ([]string, error) {
	var out []string
	for _, s := range suites {
		entries, err := os.ReadDir(filepath.Join(dir, s))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, s, e.Name(), "model.onnx")); err != nil {
				continue
			}
			out = append(out, s+"/"+e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Case is one ONNX backend test case: a model and its test data sets.
type Case struct {
	// Name is "suite/test_name".
	Name string
	// ModelName is the name the case's model is served under.
	ModelName string
	Model     []byte
	Graph     *Graph
	DataSets  []DataSet
	// Unsupported says why the protocol cannot carry this case (sequence,
	// map or optional values, or element types without a protocol
	// datatype); "" when it can.
	Unsupported string
}

// DataSet is one test_data_set_N: inputs named and ordered as the model's
// graph inputs, and the expected outputs named and ordered as its outputs.
type DataSet struct {
	Name    string
	Inputs  []tensor.Tensor
	Outputs []tensor.Tensor
}

var unsafeModelChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// ModelName returns the model name a case is served under: the case name
// with "/" as "." and any other character a model name may not hold as "_".
func ModelName(caseName string) string {
	n := unsafeModelChars.ReplaceAllString(strings.ReplaceAll(caseName, "/", "."), "_")
	if len(n) > 128 {
		n = n[:128]
	}
	return n
}

// LoadCase reads case name ("suite/test_name") from dir. A case the protocol
// cannot carry is returned with Unsupported set and no data sets; an error
// means the files are missing or malformed.
func LoadCase(dir, name string) (*Case, error) {
	cdir := filepath.Join(dir, filepath.FromSlash(name))
	model, err := os.ReadFile(filepath.Join(cdir, "model.onnx"))
	if err != nil {
		return nil, err
	}
	g, err := ParseModel(model)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &Case{Name: name, ModelName: ModelName(name), Model: model, Graph: g}
	if len(g.Inputs) == 0 {
		// An infer request must carry at least one input tensor.
		c.Unsupported = "the model takes no inputs, and an inference request must carry at least one: " + ErrUnsupported.Error()
		return c, nil
	}
	for _, vi := range slices.Concat(g.Inputs, g.Outputs) {
		if err := vi.Supported(); err != nil {
			c.Unsupported = err.Error()
			return c, nil
		}
	}
	sets, err := filepath.Glob(filepath.Join(cdir, "test_data_set_*"))
	if err != nil {
		return nil, err
	}
	sortNumbered(sets)
	for _, sdir := range sets {
		ds, err := loadDataSet(sdir, g)
		if errors.Is(err, ErrUnsupported) {
			c.Unsupported = err.Error()
			c.DataSets = nil
			return c, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		c.DataSets = append(c.DataSets, ds)
	}
	if len(c.DataSets) == 0 {
		return nil, fmt.Errorf("%s: no test data sets", name)
	}
	return c, nil
}

func loadDataSet(dir string, g *Graph) (DataSet, error) {
	ds := DataSet{Name: filepath.Base(dir)}
	var err error
	if ds.Inputs, err = loadTensors(dir, "input_", g.Inputs); err != nil {
		return ds, err
	}
	if ds.Outputs, err = loadTensors(dir, "output_", g.Outputs); err != nil {
		return ds, err
	}
	return ds, nil
}

// loadTensors reads prefixK.pb for K = 0.. and names each after the K-th
// declared value, as the ONNX backend runner passes them positionally.
func loadTensors(dir, prefix string, decl []ValueInfo) ([]tensor.Tensor, error) {
	files, err := filepath.Glob(filepath.Join(dir, prefix+"*.pb"))
	if err != nil {
		return nil, err
	}
	sortNumbered(files)
	if len(files) != len(decl) {
		return nil, fmt.Errorf("%s: %d %s files for %d declared values", filepath.Base(dir), len(files), strings.TrimSuffix(prefix, "_"), len(decl))
	}
	out := make([]tensor.Tensor, len(files))
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		t, err := DecodeTensor(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(f), err)
		}
		want, _ := DTypeOf(decl[i].ElemType)
		if want == tensor.BF16 && t.DType == tensor.Uint16 {
			// numpy has no bfloat16, so the ONNX test generator stored
			// BFLOAT16 values as UINT16 tensors of their bit patterns.
			t.DType = tensor.BF16
		}
		if want != t.DType {
			return nil, fmt.Errorf("%s: %s data for %q, declared %s", filepath.Base(f), t.DType, decl[i].Name, want)
		}
		t.Name = decl[i].Name
		out[i] = t
	}
	return out, nil
}

// sortNumbered sorts paths ending in _N or _N.pb by N, so input_10 follows
// input_9.
func sortNumbered(paths []string) {
	num := func(p string) int {
		base := strings.TrimSuffix(filepath.Base(p), ".pb")
		i := strings.LastIndexByte(base, '_')
		n, err := strconv.Atoi(base[i+1:])
		if err != nil {
			return -1
		}
		return n
	}
	slices.SortFunc(paths, func(a, b string) int { return num(a) - num(b) })
}
