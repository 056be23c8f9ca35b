package scaleout

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
)

// On a three-master Redis Cluster, with the bulk queue in three shards:
// the API and two worker processes take a few hundred messages of both
// priorities, some with status callbacks, to "read" through the sandbox's
// webhooks, each sent once; the shards sit on three different masters and
// each carries messages; the dashboard lists them.
func TestClusterEndToEnd(t *testing.T) {
	const shards = 3
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	s := newStack(t, rdb,
		map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": strings.Join(c.Addrs(), ",")},
		map[string]string{"CHATQ_BULK_SHARDS": fmt.Sprint(shards)})
	s.startAPI()
	workers := s.startWorkers(2)

	msgs := s.newMessages("cluster", 300)
	ids := s.send(msgs, 50, 30*time.Second)
	o := s.settle(msgs, ids, 45*time.Second)
	st := s.sandbox.Stats()
	sent := sentBy(workers)
	t.Logf("cluster: %d messages read %s after the last was accepted; sent by the workers: %v; sandbox accepted %d, duplicates %d",
		len(msgs), o.took.Round(time.Millisecond), sent, st.Accepted, st.Duplicates)
	if len(o.missing) > 0 || len(o.wrong) > 0 {
		t.Fatalf("after %s: %s", o.took.Round(time.Millisecond), o.summary())
	}
	if st.Accepted != int64(len(msgs)) || st.Duplicates != 0 {
		t.Errorf("sandbox accepted %d messages with %d duplicates, want %d and none", st.Accepted, st.Duplicates, len(msgs))
	}
	for i, n := range sent {
		if n == 0 {
			t.Errorf("worker %d sent nothing (sent: %v)", i+1, sent)
		}
	}
	s.checkCallbacks(msgs, ids, 20*time.Second)
	checkShards(t, rdb, shards)
	checkDashboard(t, s, enqueue.BulkQueues(shards))
}

// checkShards checks that the bulk shards live on different masters and
// that each carried messages, and logs where every send queue lives.
func checkShards(t *testing.T, rdb *redis.ClusterClient, shards int) {
	t.Helper()
	ctx := context.Background()
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	masterOf := func(q string) string {
		slot, err := rdb.ClusterKeySlot(ctx, "asynq:{"+q+"}:pending").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("no master serves slot %d", slot)
		return ""
	}
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	var where []string
	masters := map[string]bool{}
	for _, q := range enqueue.SendQueues(shards) {
		m := masterOf(q)
		info, err := inspector.GetQueueInfo(q)
		processed := 0
		if err == nil {
			processed = info.Processed
		}
		where = append(where, fmt.Sprintf("%s on %s (%d sent)", q, m, processed))
		if !enqueue.IsSendQueue(q) || q == string(enqueue.Transactional) || q == string(enqueue.Bulk) {
			continue
		}
		masters[m] = true
		if processed == 0 {
			t.Errorf("bulk shard %s carried no message", q)
		}
	}
	t.Logf("queues: %s", strings.Join(where, "; "))
	if len(masters) != shards {
		t.Errorf("the %d bulk shards live on %d masters, want %d", shards, len(masters), shards)
	}
}

// checkDashboard reads the queues through the asynq dashboard, which opens
// its own connections to the cluster.
func checkDashboard(t *testing.T, s *stack, queues []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.api+"/monitoring/api/queues", nil)
	req.SetBasicAuth("ops", apiKey)
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard queues: %d %s", resp.StatusCode, body)
	}
	for _, q := range queues {
		if !strings.Contains(string(body), `"`+q+`"`) {
			t.Errorf("the dashboard does not list queue %s: %s", q, body)
		}
	}
}
