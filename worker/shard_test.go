package worker_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/worker"
)

// The circuit breaker pauses every bulk shard that holds messages, whatever
// CHATQ_BULK_SHARDS the process that opens it has, and leaves the other
// queues alone.
func TestCircuitPausesBulkShards(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	tasks := asynq.NewClientFromRedisClient(rdb)
	for _, q := range []string{"bulk-0", "bulk-2", "callbacks"} {
		if _, err := tasks.Enqueue(asynq.NewTask(enqueue.TaskSend, []byte("x")), asynq.Queue(q)); err != nil {
			t.Fatal(err)
		}
	}
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	paused := func() map[string]bool {
		t.Helper()
		out := map[string]bool{}
		for _, q := range []string{"bulk-0", "bulk-2", "callbacks"} {
			info, err := inspect.GetQueueInfo(q)
			if err != nil {
				t.Fatalf("queue %s: %v", q, err)
			}
			out[q] = info.Paused
		}
		return out
	}
	c := worker.NewCircuit(rdb, zap.NewNop())
	ctx := context.Background()
	if err := c.Pause(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if got := paused(); !got["bulk-0"] || !got["bulk-2"] || got["callbacks"] {
		t.Errorf("after Pause, paused = %v; want both shards and not callbacks", got)
	}
	if _, err := c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if got := paused(); got["bulk-0"] || got["bulk-2"] || got["callbacks"] {
		t.Errorf("after Resume, paused = %v; want none", got)
	}
}
