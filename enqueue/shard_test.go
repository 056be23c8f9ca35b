package enqueue_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/lanetest"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

func TestBulkQueue(t *testing.T) {
	tests := []struct {
		destination string
		shards      int
		want        string
	}{
		{"96996999699", 0, "bulk"},
		{"96996999699", 1, "bulk"},
		// FNV-1a of the digits, modulo the shards, and the names of
		// BulkQueues: producers and workers of one deployment must agree on
		// both, so a change here breaks deployments that update one side
		// first.
		{"96996999699", 3, "bulk-2"},
		{"+96996999699", 3, "bulk-2"},
		{"4915123456789", 3, "bulk-0"},
		{"15550001237", 3, "bulk-1-4"},
		{"442071234567", 64, "bulk-24-129"},
	}
	for _, tc := range tests {
		if got := enqueue.BulkQueue(tc.destination, tc.shards); got != tc.want {
			t.Errorf("BulkQueue(%q, %d) = %q, want %q", tc.destination, tc.shards, got, tc.want)
		}
	}
}

// Destinations spread over every shard, roughly evenly.
func TestBulkQueueSpreads(t *testing.T) {
	const shards, n = 3, 3000
	counts := map[string]int{}
	for i := range n {
		counts[enqueue.BulkQueue(fmt.Sprintf("4420%07d", i), shards)]++
	}
	for _, q := range enqueue.BulkQueues(shards) {
		if c := counts[q]; c < n/shards*8/10 || c > n/shards*12/10 {
			t.Errorf("%s holds %d of %d destinations, want about %d: %v", q, c, n, n/shards, counts)
		}
	}
}

func TestSendQueues(t *testing.T) {
	tests := []struct {
		shards int
		want   []string
	}{
		{0, []string{"transactional", "bulk"}},
		{1, []string{"transactional", "bulk"}},
		{3, []string{"transactional", "bulk", "bulk-0", "bulk-1-4", "bulk-2"}},
	}
	for _, tc := range tests {
		if diff := cmp.Diff(tc.want, enqueue.SendQueues(tc.shards)); diff != "" {
			t.Errorf("SendQueues(%d) (-want +got):\n%s", tc.shards, diff)
		}
	}
}

func TestIsSendQueue(t *testing.T) {
	tests := map[string]bool{
		"transactional": true, "bulk": true, "bulk-0": true, "bulk-12": true, "bulk-1-4": true, "bulk-24-129": true,
		"callbacks": false, "bulk-": false, "bulk-x": false, "bulk-01": false, "bulk-1a": false, "bulk-1-": false,
		"bulk-1-x": false, "bulk-1-4-2": false, "": false, "default": false,
	}
	for name, want := range tests {
		if got := enqueue.IsSendQueue(name); got != want {
			t.Errorf("IsSendQueue(%q) = %v, want %v", name, got, want)
		}
	}
}

// With shards, a bulk message's record and task name its shard; a
// transactional message stays in its one queue.
func TestSendBatchShardsBulk(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	client := enqueue.NewClient(rdb, enqueue.Config{BulkShards: 3})
	t.Cleanup(func() { _ = client.Close() })
	inspect := asynq.NewInspectorFromRedisClient(rdb)

	var msgs []*enqueue.Message
	for i := range 12 {
		msgs = append(msgs, &enqueue.Message{
			Destination: fmt.Sprintf("4420700%05d", i), Priority: enqueue.Bulk,
			Payload: &enqueue.Text{Message: "hello"},
		})
	}
	msgs = append(msgs, &enqueue.Message{Destination: "442070099999", Payload: &enqueue.Text{Message: "code 1234"}})
	res, err := client.SendBatch(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	lanetest.Move(t, client, store.New(rdb, store.Config{}))
	used := map[string]bool{}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("message %d: %v", i, r.Err)
		}
		want := enqueue.BulkQueue(msgs[i].Destination, 3)
		if msgs[i].Priority != enqueue.Bulk {
			want = "transactional"
		}
		if r.Record.Queue != want {
			t.Errorf("message %d to %s: record queue %q, want %q", i, msgs[i].Destination, r.Record.Queue, want)
		}
		if _, err := inspect.GetTaskInfo(want, r.Record.ID); err != nil {
			t.Errorf("message %d: no task in %s: %v", i, want, err)
		}
		used[want] = true
	}
	if len(used) != 4 {
		t.Errorf("12 bulk destinations used queues %v, want all three shards and transactional", used)
	}
}
