package main

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// envInfo describes the machine a run happened on.
type envInfo struct {
	cpus       int
	cpuModel   string
	kernel     string
	goVersion  string
	ortVersion string
	fsType     string // the file system the audit logs are on
	// fdatasync latency on that file system (fsyncProbe), 0 if unknown
	fsync50, fsync99 time.Duration
	loadBefore       string // /proc/loadavg when the run started
	revision         string // git commit, and whether internal/ had local changes
}

func environment(root, dir string) envInfo {
	e := envInfo{
		cpus:      runtime.NumCPU(),
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		cpuModel:  "unknown",
		fsType:    "unknown",
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
	if err := os.MkdirAll(dir, 0o755); err == nil {
		var st syscall.Statfs_t
		if syscall.Statfs(dir, &st) == nil {
			e.fsType = fsName(int64(st.Type))
		}
		e.fsync50, e.fsync99 = fsyncProbe(dir)
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		e.revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "internal", "cmd").Output(); err == nil && len(st) > 0 {
			e.revision += " with uncommitted changes in internal/ or cmd/"
		}
	}
	return e
}

// fsName names a statfs magic number.
func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs (fdatasync costs nothing: durable figures are not meaningful)"
	case 0x794c7630:
		return "overlayfs"
	case 0x2fc12fc1:
		return "zfs"
	}
	return "unknown"
}

// fsyncProbe appends a line of an audit record's size to a new file in dir
// and fdatasyncs it, 500 times, as the durable audit log does for a batch
// of one, and returns the p50 and p99 of the pair; zeros if it fails.
func fsyncProbe(dir string) (p50, p99 time.Duration) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return 0, 0
	}
	defer os.Remove(f.Name())
	defer f.Close()
	line := make([]byte, 640)
	line[len(line)-1] = '\n'
	lat := make([]time.Duration, 0, 500)
	for range 500 {
		t0 := time.Now()
		if _, err := f.Write(line); err != nil {
			return 0, 0
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, 0
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return benchutil.Percentile(lat, 0.5), benchutil.Percentile(lat, 0.99)
}
