package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// envInfo describes the machine a run happened on.
type envInfo struct {
	date       string
	cpus       int
	cpuModel   string
	cpuFlags   string // the flags that matter here: sha_ni, avx2, avx512f
	memTotal   string
	kernel     string
	goVersion  string
	ageVersion string
	coreutils  string
	revision   string
	loadBefore string
	loadAfter  string
}

func environment() envInfo {
	e := envInfo{
		date:       time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		cpus:       runtime.NumCPU(),
		goVersion:  runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		cpuModel:   "unknown",
		loadBefore: benchutil.LoadAverage(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				if e.cpuModel == "unknown" {
					e.cpuModel = strings.TrimSpace(v)
				}
			case "flags":
				if e.cpuFlags == "" {
					have := strings.Fields(v)
					var fl []string
					for _, f := range []string{"sha_ni", "avx2", "avx512f", "vaes"} {
						if slices.Contains(have, f) {
							fl = append(fl, f)
						}
					}
					e.cpuFlags = strings.Join(fl, " ")
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					e.memTotal = human(kb << 10)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	e.ageVersion = firstLine("age", "--version")
	e.coreutils = firstLine("sha256sum", "--version")
	e.revision = "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		e.revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--", "internal").Output(); err == nil && len(st) > 0 {
			e.revision += " with uncommitted changes in internal/"
		}
	}
	return e
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// otherBenchmarks lists running processes of the serving benchmark, which
// would compete for the CPUs (as `pgrep -f 'bench/serving|/serving '`).
func otherBenchmarks() []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if strings.Contains(cmd, "bench/serving") || strings.Contains(cmd+" ", "/serving ") {
			out = append(out, strings.TrimPrefix(strings.TrimSuffix(d, "/cmdline"), "/proc/")+" "+cmd)
		}
	}
	return out
}
