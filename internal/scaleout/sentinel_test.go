package scaleout

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
)

// With a Sentinel-managed master, two replicas and
// CHATQ_REDIS_WAIT_REPLICAS=1, the master is killed (SIGKILL) while the API
// takes messages and two workers send them. The sentinels promote a
// replica; the API answers 503 until then, and the producer sends those
// batches again with their idempotency keys. Every message the API
// acknowledged must still exist after the failover and end "read"; a
// message sent twice (its send on the wire, or its recorded outcome not yet
// on the replica, when the master died) is reported, within the bound of
// the sends in flight. The run takes about 20s, unless a task is left
// behind as an orphan (see settle below).
func TestSentinelFailover(t *testing.T) {
	const (
		workers     = 2
		concurrency = 20
		n           = 600
	)
	if testing.Short() {
		t.Skip("a Sentinel failover under load takes 20s")
	}
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
	// A dequeue that Redis ran just before it died, but whose answer the
	// worker never got, leaves its task active with no worker on the
	// promoted replica: asynq's recoverer hands it back once its lease is
	// 30s past expiry, checking every minute, so up to two minutes after
	// the dequeue. Usually all is read within a second.
	o := s.settle(msgs, res.ids, 150*time.Second)
	st := s.sandbox.Stats()
	bound := int64(workers * concurrency)
	t.Logf("sentinel failover: master %s killed, %s promoted after %s; %d messages acknowledged, %d lost, "+
		"%d duplicates (bound %d, the sends in flight), %d not final; %d batch posts sent again; "+
		"all read %s after the last was acknowledged; sent by the workers: %v",
		old, promoted, failover.Round(time.Millisecond), len(res.ids), len(o.missing),
		st.Duplicates, bound, len(o.wrong), s.retried.Load(), o.took.Round(time.Millisecond), sentBy(ws))
	if len(o.missing) > 0 {
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
	// The dashboard opens its own connections, through the sentinels.
	checkDashboard(t, s, []string{"transactional", "bulk"})
}
