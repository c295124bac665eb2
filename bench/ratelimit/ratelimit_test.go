package main

import (
	"testing"
	"time"
)

// TestQuickRun runs every part of the harness briefly: it must finish
// without error (the figures mean nothing at this size).
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and redis-benchmark")
	}
	o := options{redis: true, memory: true, overload: true, conns: 4, pool: 2, requests: 2000, rounds: 1,
		principals: 10, service: 2 * time.Millisecond, loadFor: 200 * time.Millisecond}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
}
