package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// childProc is the running server process.
type childProc struct {
	*benchutil.Child
	info childInfo
	ctl  *http.Client
}

// startChild starts the server process on work, bound to cpu if cpu ≥ 0,
// living at most ttl, and waits until it listens.
func startChild(work, lib string, cpu int, ttl time.Duration) (*childProc, error) {
	env := []string{envChild + "=1", envWork + "=" + work, envLib + "=" + lib, envTTL + "=" + ttl.String()}
	if cpu >= 0 {
		env = append(env, envCPU+"="+strconv.Itoa(cpu))
	}
	c := &childProc{ctl: &http.Client{Timeout: 10 * time.Second}}
	var err error
	if c.Child, err = benchutil.StartChild(env, `{"http"`, &c.info); err != nil {
		return nil, err
	}
	return c, nil
}

// stats asks the server process for its counters.
func (c *childProc) stats() (serverStats, error) {
	var st serverStats
	resp, err := c.ctl.Get("http://" + c.info.Control + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("control: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// gc makes the server process collect and return free memory to the
// operating system.
func (c *childProc) gc() error {
	resp, err := c.ctl.Post("http://"+c.info.Control+"/gc", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// procMem is a reading of /proc/PID/status.
type procMem struct {
	rss, rssAnon uint64 // bytes
	threads      int
}

// readProcMem reads VmRSS, RssAnon and Threads of pid.
func readProcMem(pid int) (procMem, error) {
	var m procMem
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, err
	}
	found := false
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "VmRSS":
			m.rss, found = n<<10, true
		case "RssAnon":
			m.rssAnon = n << 10
		case "Threads":
			m.threads = int(n)
		}
	}
	if !found {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}
