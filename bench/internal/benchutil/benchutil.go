// Package benchutil holds what the benchmark harnesses share: finding the
// repository and describing how busy the machine was.
package benchutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RepoRoot is the directory holding go.mod, at or above the working
// directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("go.mod not found above %s", dir)
		}
		d = parent
	}
}

// LoadAverage returns the 1, 5 and 15 minute load averages.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
