package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// envInfo describes the machine a run happened on.
type envInfo struct {
	cpus       int
	cpuModel   string
	kernel     string
	goVersion  string
	loadBefore string // /proc/loadavg when the run started
	revision   string // git commit, and whether internal/ or cmd/ had local changes
}

func environment(root string) envInfo {
	e := envInfo{
		cpus:      runtime.NumCPU(),
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		cpuModel:  "unknown",
		revision:  "unknown",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.kernel = strings.TrimSpace(string(b))
	}
	e.loadBefore = benchutil.LoadAverage()
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		e.revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "internal", "cmd").Output(); err == nil && len(st) > 0 {
			e.revision += " with uncommitted changes in internal/ or cmd/"
		}
	}
	return e
}
