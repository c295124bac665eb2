package benchutil

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// Child is a benchmark's server process: this same binary started again
// with env added to the environment. It prints one JSON line, starting
// with the ready prefix, once it listens, and shuts down when its stdin
// closes (StdinClosed).
type Child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser

	once sync.Once
	err  error
}

// StartChild starts the server process and waits, at most two minutes,
// for its line starting with ready, which it decodes into info.
func StartChild(env []string, ready string, info any) (*Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
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
	c := &Child{cmd: cmd, stdin: stdin}
	got := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		found := false
		for sc.Scan() {
			if line := sc.Bytes(); !found && bytes.HasPrefix(line, []byte(ready)) {
				found = true
				got <- json.Unmarshal(line, info)
			}
		}
		if !found {
			got <- errors.New("server process exited before it listened")
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			c.Stop()
			return nil, err
		}
	case <-time.After(2 * time.Minute):
		c.Stop()
		return nil, errors.New("server process did not listen within 2 minutes")
	}
	return c, nil
}

// Pid returns the server process's id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Stop closes the server process's stdin, which makes it shut down, and
// kills it (by its handle) if it has not exited within a minute. It
// returns the process's failure, if any; calls after the first return the
// same.
func (c *Child) Stop() error {
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

// StdinClosed returns a channel closed once this process's stdin closes:
// in a server process, the harness asking it to shut down.
func StdinClosed() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(ch)
	}()
	return ch
}
