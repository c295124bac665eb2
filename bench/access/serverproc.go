package main

import (
	"strconv"

	"github.com/aegis-inference/aegis/bench/internal/benchutil"
)

// childProc is the running server process.
type childProc struct {
	*benchutil.Child
	info childInfo
}

// startChild starts the server process on work and waits until every
// instance listens.
func startChild(work, lib string, pin bool, procs int) (*childProc, error) {
	env := []string{envChild + "=1", envWork + "=" + work, envLib + "=" + lib}
	if pin {
		env = append(env, envCPU+"=1")
	}
	if procs > 0 {
		env = append(env, envProcs+"="+strconv.Itoa(procs))
	}
	c := &childProc{}
	var err error
	if c.Child, err = benchutil.StartChild(env, `{"instances"`, &c.info); err != nil {
		return nil, err
	}
	return c, nil
}
