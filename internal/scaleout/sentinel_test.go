package scaleout

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
)

// With a Sentinel-managed master, two replicas and
// CHATQ_REDIS_WAIT_REPLICAS=1, the master is killed (SIGKILL) while the API
// takes messages and two workers send them. The sentinels promote a
// replica; the API answers 503 until then, and the producer sends those
// batches again with their idempotency keys. Every message the API acknowledged must still exist after the
// failover and end "read"; a message sent twice (its send on the wire, or
// its recorded outcome not yet on the replica, when the master died) is
// reported, within the bound of the sends in flight.
func TestSentinelFailover(t *testing.T) {
	const (
		workers     = 2
		concurrency = 20
		n           = 600
	)
	sn := redistest.StartSentinel(t)
	s := newStack(t, sn.Client(t),
		map[string]string{
			"CHATQ_REDIS_SENTINEL_ADDRS":  strings.Join(sn.SentinelAddrs(), ","),
			"CHATQ_REDIS_SENTINEL_MASTER": redistest.SentinelMaster,
			"CHATQ_REDIS_WAIT_REPLICAS":   "1",
			"CHATQ_REDIS_WAIT_TIMEOUT":    "500ms",
		},
		map[string]string{"CHATQ_CONCURRENCY": "20"})
	s.startAPI()
	ws := s.startWorkers(workers)

	msgs := s.newMessages("failover", n)
	type sent struct {
		ids []string
		err error
	}
	done := make(chan sent, 1)
	go func() {
		// Small batches, a little apart, so that the producer is still at
		// work when the master dies.
		ids, err := s.sendAll(msgs, 20, 40*time.Millisecond, 90*time.Second)
		done <- sent{ids, err}
	}()
	s.waitFor("a quarter of the messages to be sent", 30*time.Second, func() error {
		if a := s.sandbox.Stats().Accepted; a < n/4 {
			return fmt.Errorf("%d accepted", a)
		}
		return nil
	})
	killedAt := time.Now()
	old := sn.KillMaster(t)
	promoted := sn.WaitFailover(t, old, 30*time.Second)
	failover := time.Since(killedAt)

	res := <-done
	if res.err != nil {
		t.Fatalf("sending: %v", res.err)
	}
	o := s.settle(msgs, res.ids, 100*time.Second)
	st := s.sandbox.Stats()
	bound := int64(workers * concurrency)
	t.Logf("sentinel failover: master %s killed, %s promoted after %s; %d messages acknowledged, %d lost, "+
		"%d duplicates (bound %d, the sends in flight), %d not final; %d batch posts sent again; "+
		"all read %s after the last was acknowledged; sent by the workers: %v",
		old, promoted, failover.Round(time.Millisecond), len(res.ids), len(o.missing),
		st.Duplicates, bound, len(o.wrong), s.retried.Load(), o.took.Round(time.Millisecond), sentBy(ws))
	if len(o.missing) > 0 {
		idx := map[string]int{}
		for i, id := range res.ids {
			idx[id] = i
		}
		var lost []int
		for _, id := range o.missing {
			lost = append(lost, idx[id])
		}
		t.Logf("DEBUG lost indices %v", lost)
		for _, a := range sn.DataAddrs() {
			c := redis.NewClient(&redis.Options{Addr: a})
			info, _ := c.Info(context.Background(), "replication", "keyspace").Result()
			t.Logf("DEBUG node %s:\n%s", a, info)
			c.Close()
		}
		t.Errorf("%d acknowledged messages lost in the failover, such as %s", len(o.missing), o.missing[0])
	}
	if len(o.wrong) > 0 {
		t.Errorf("messages not read: %s", o.summary())
	}
	if st.Duplicates > bound {
		t.Errorf("%d duplicates, more than the %d sends in flight", st.Duplicates, bound)
	}
	if st.Accepted-st.Duplicates != int64(n) {
		t.Errorf("the sandbox accepted %d distinct messages, want %d", st.Accepted-st.Duplicates, n)
	}
}
