package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// Request ids are a random per-process prefix and a counter: unique across
// replicas and restarts for correlation, and free of a system call per
// request. They identify requests in logs; they are not secrets.
var (
	idPrefix  = newIDPrefix()
	idCounter atomic.Uint64
)

func newIDPrefix() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b[:]) + "-"
}

// NewRequestID returns a new request id.
func NewRequestID() string {
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 36)
}
