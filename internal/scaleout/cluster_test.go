package scaleout

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// On a three-master Redis Cluster, with the bulk queue in three shards:
// the API and two worker processes take a few hundred messages of both
// priorities, some with status callbacks, to "read" through the sandbox's
// webhooks, each sent once; the shards sit on three different masters and
// each carries messages; the dashboard lists them.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster and four processes")
	}
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
	checkParkedEvents(t, rdb)
}

// checkParkedEvents runs the store's correlation on the cluster where the
// end-to-end flow rarely goes: webhooks that overtake the worker's record
// of the acceptance wait parked, on another master than the record, and
// Submit, in its two round trips, applies them.
func checkParkedEvents(t *testing.T, rdb *redis.ClusterClient) {
	t.Helper()
	ctx := context.Background()
	st := store.New(rdb, store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	// The record's {parked-1} is slot 13436, the mapping's {pid-parked}
	// slot 2362: the third master and the first.
	rec := &store.Record{
		ID: "parked-1", Destination: "96996999699", Type: "text", Priority: "bulk",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: at}},
		CreatedAt: at, UpdatedAt: at, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "bulk",
	}
	if _, err := st.Create(ctx, []*store.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Begin(ctx, rec.ID, at, store.Owner{}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []store.Event{
		{ID: "wamid.parked", Status: store.Sent, At: at.Add(2 * time.Second), Key: "sent:2"},
		{ID: "pid-parked", WhatsAppID: "wamid.parked", Status: store.Enqueued, At: at.Add(time.Second), Key: "enqueued:1"},
	} {
		if res, err := st.ApplyEvent(ctx, ev); err != nil || res.Correlation != store.Parked {
			t.Fatalf("%s before the submit: %+v, %v; want it parked", ev.Status, res, err)
		}
	}
	if o, err := st.Submit(ctx, rec.ID, "pid-parked", at); err != nil || o != store.Changed {
		t.Fatalf("Submit: %s, %v", o, err)
	}
	got, err := st.Get(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var history []store.Status
	for _, h := range got.History {
		history = append(history, h.Status)
	}
	want := []store.Status{store.Queued, store.Sending, store.Submitted, store.Enqueued, store.Sent}
	if diff := cmp.Diff(want, history); diff != "" || got.Status != store.Sent {
		t.Errorf("status %s; history (-want +got):\n%s", got.Status, diff)
	}
}

// checkShards checks that the bulk shards live on different masters and
// that each carried messages, and logs where every send queue lives.
func checkShards(t *testing.T, rdb *redis.ClusterClient, shards int) {
	t.Helper()
	ctx := context.Background()
	masterOf := func(q string) string {
		node, err := rdb.MasterForKey(ctx, "asynq:{"+q+"}:pending")
		if err != nil {
			t.Fatalf("master of queue %s: %v", q, err)
		}
		return node.Options().Addr
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
		if q == string(enqueue.Transactional) || q == string(enqueue.Bulk) {
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
