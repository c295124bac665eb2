package authn

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/aegis-inference/aegis/internal/pipeline"
)

// tokenCache remembers tokens that passed every check, by the SHA-256 of
// the token, until they expire. It holds at most max entries; inserting
// into a full cache drops an arbitrary one (Go's map iteration order is
// randomised), so growth is bounded whatever the traffic.
type tokenCache struct {
	max int

	mu sync.RWMutex // guards m
	m  map[[sha256.Size]byte]*pipeline.Principal
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[sha256.Size]byte]*pipeline.Principal)}
}

// get returns a copy of the principal remembered for the token with this
// hash, if there is one and it has not expired at now (with skew, as the
// full check would allow).
func (c *tokenCache) get(sum [sha256.Size]byte, now time.Time, skew time.Duration) (*pipeline.Principal, bool) {
	c.mu.RLock()
	p := c.m[sum]
	c.mu.RUnlock()
	if p == nil || now.Add(-skew).After(p.Expires) {
		return nil, false
	}
	cp := *p
	return &cp, true
}

// put remembers p for the token with this hash. p.Expires must be set.
func (c *tokenCache) put(sum [sha256.Size]byte, p *pipeline.Principal) {
	cp := *p
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if len(c.m) < c.max {
			break
		}
		delete(c.m, k)
	}
	c.m[sum] = &cp
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
