package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// With WaitReplicas, Create and MarkEnqueued end with WAIT: on a server
// without replicas each waits the whole WaitTimeout, and still succeeds
// (the wait is best effort).
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	if !srv.Real() {
		t.Skip("miniredis has no WAIT")
	}
	const timeout = 50 * time.Millisecond
	st := store.New(srv.Client(t), store.Config{WaitReplicas: 1, WaitTimeout: timeout})
	ctx := context.Background()
	r := &store.Record{
		ID: "w1", Destination: "96996999699", Type: "text", Priority: "transactional",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
		CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional",
	}
	start := time.Now()
	res, err := st.Create(ctx, []*store.Record{r})
	if err != nil || res[0].Err != nil || !res[0].Created {
		t.Fatalf("Create: %v %+v", err, res)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("Create took %s, less than the WAIT timeout %s: no WAIT", took, timeout)
	}
	start = time.Now()
	if err := st.MarkEnqueued(ctx, r.ID); err != nil {
		t.Fatalf("MarkEnqueued: %v", err)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("MarkEnqueued took %s, less than the WAIT timeout %s: no WAIT", took, timeout)
	}
	if _, err := st.Get(ctx, r.ID); err != nil {
		t.Errorf("Get after Create: %v", err)
	}
}
