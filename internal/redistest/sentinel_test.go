package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
)

// A write a replica has survives the master's crash: the sentinels promote
// a replica, and the client follows.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	rdb := s.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Wait(ctx, 1, time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("WAIT 1: %d, %v", n, err)
	}
	start := time.Now()
	old := s.KillMaster(t)
	now := s.WaitFailover(t, old, 20*time.Second)
	t.Logf("failover from %s to %s in %s", old, now, time.Since(start).Round(time.Millisecond))
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("after failover, GET k = %q, %v; want v", got, err)
	}
}
