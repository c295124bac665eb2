package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// childProc is the running server process.
type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	info  childInfo
	ctl   *http.Client

	once sync.Once
	err  error
}

// startChild starts the server process on work, bound to cpu if cpu ≥ 0,
// living at most ttl, and waits until it listens.
func startChild(work, lib string, cpu int, ttl time.Duration) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"=1", envWork+"="+work, envLib+"="+lib, envTTL+"="+ttl.String())
	if cpu >= 0 {
		cmd.Env = append(cmd.Env, envCPU+"="+strconv.Itoa(cpu))
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server process: %w", err)
	}
	c := &childProc{cmd: cmd, stdin: stdin, ctl: &http.Client{Timeout: 10 * time.Second}}
	got := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		found := false
		for sc.Scan() {
			if line := sc.Bytes(); !found && bytes.HasPrefix(line, []byte(`{"http"`)) {
				found = true
				got <- json.Unmarshal(line, &c.info)
			}
		}
		if !found {
			got <- errors.New("server process exited before it listened")
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			c.stop()
			return nil, err
		}
	case <-time.After(2 * time.Minute):
		c.stop()
		return nil, errors.New("server process did not listen within 2 minutes")
	}
	return c, nil
}

func (c *childProc) pid() int { return c.cmd.Process.Pid }

// stop closes the server process's stdin, which makes it shut down, and
// kills it (by its handle) if it has not exited within a minute. Calls
// after the first return the first's result.
func (c *childProc) stop() error {
	c.once.Do(func() {
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case c.err = <-done:
		case <-time.After(time.Minute):
			c.cmd.Process.Kill()
			<-done
			c.err = errors.New("did not exit within a minute of its stdin closing; killed")
		}
	})
	return c.err
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

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// procTicks returns utime+stime of pid, in 1/userHZ s.
func procTicks(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	// After the command: utime and stime are fields 14 and 15 of stat.
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseUint(string(f[11]), 10, 64)
	s, _ := strconv.ParseUint(string(f[12]), 10, 64)
	return u + s, true
}
