package store

import (
	"fmt"
	"testing"
)

func TestRefCacheKeepsTwoGenerations(t *testing.T) {
	c := newRefCache(2)
	c.put("a", "1")
	c.put("b", "2")
	c.put("c", "3") // the first generation is full: a and b move to the older one
	c.put("d", "4")
	if id, ok := c.get("a"); !ok || id != "1" {
		t.Errorf("get(a) = %q, %v; want 1 from the older generation", id, ok)
	}
	// a moved to the newer generation, which was full: c and d, then a,
	// made it roll over, and b went with the oldest.
	if id, ok := c.get("b"); ok {
		t.Errorf("get(b) = %q after two roll-overs, want nothing", id)
	}
	for _, want := range []struct{ ref, id string }{{"a", "1"}, {"c", "3"}, {"d", "4"}} {
		if id, ok := c.get(want.ref); !ok || id != want.id {
			t.Errorf("get(%s) = %q, %v; want %s", want.ref, id, ok, want.id)
		}
	}
}

func TestRefCacheIsBounded(t *testing.T) {
	c := newRefCache(100)
	for i := range 10_000 {
		c.put(fmt.Sprint("ref-", i), fmt.Sprint("id-", i))
	}
	if n := len(c.cur) + len(c.old); n > 200 {
		t.Errorf("%d ids remembered, want at most 200", n)
	}
	if id, ok := c.get("ref-9999"); !ok || id != "id-9999" {
		t.Errorf("the last id put is not remembered: %q %v", id, ok)
	}
}

func TestRefCacheOff(t *testing.T) {
	c := newRefCache(-1)
	c.put("a", "1")
	if _, ok := c.get("a"); ok {
		t.Error("a cache of negative size remembered an id")
	}
}
