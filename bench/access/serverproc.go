package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	once sync.Once
	err  error
}

// startChild starts the server process on work and waits until every
// instance listens.
func startChild(work, lib string, pin bool, procs int) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"=1", envWork+"="+work, envLib+"="+lib)
	if pin {
		cmd.Env = append(cmd.Env, envCPU+"=1")
	}
	if procs > 0 {
		cmd.Env = append(cmd.Env, envProcs+"="+strconv.Itoa(procs))
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
	c := &childProc{cmd: cmd, stdin: stdin}
	got := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Bytes()
			if !found && bytes.HasPrefix(line, []byte(`{"instances"`)) {
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

// stop closes the server process's stdin, which makes it shut every
// instance down (closing the audit logs), and kills it (by its handle) if
// it has not exited within a minute. It returns the process's failure, if
// any; calls after the first return the same.
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
