package store

import "sync"

// defaultRefCache is the default size of a refCache generation.
const defaultRefCache = 50_000

// refCache remembers which record a provider or WhatsApp id belongs to, so
// that of the webhooks of a message only the first needs a Redis lookup
// before its status change: the others cost one round trip, not two.
//
// A mapping never changes once written (ids are never reused), so a
// remembered one cannot be stale; at worst its record has expired, which
// the status change reports as it would after a lookup.
//
// It keeps two generations of at most size ids each: when the newer is
// full, the older is dropped. An id looked up in the older generation moves
// to the newer one, so the ids in use stay.
type refCache struct {
	size int

	mu       sync.Mutex
	cur, old map[string]string
}

// newRefCache returns a cache of two generations of size ids, or nil (no
// caching) when size is negative.
func newRefCache(size int) *refCache {
	if size < 0 {
		return nil
	}
	if size == 0 {
		size = defaultRefCache
	}
	return &refCache{size: size, cur: make(map[string]string)}
}

// get returns the record id of ref, if remembered.
func (c *refCache) get(ref string) (string, bool) {
	if c == nil || ref == "" {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.cur[ref]; ok {
		return id, true
	}
	id, ok := c.old[ref]
	if ok {
		c.putLocked(ref, id)
	}
	return id, ok
}

// put remembers that ref belongs to record id.
func (c *refCache) put(ref, id string) {
	if c == nil || ref == "" || id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(ref, id)
}

func (c *refCache) putLocked(ref, id string) {
	if len(c.cur) >= c.size {
		c.old, c.cur = c.cur, make(map[string]string, c.size)
	}
	c.cur[ref] = id
}
