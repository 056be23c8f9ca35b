package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/store"
)

// TestRepeatedKeyKeepsAWaitingRecordUnsent is a regression test: a
// repeated idempotency key took the first record off the unsent index even
// while it still waited to be sent, so that the sweeper never wrote the
// task a crashed producer had left unwritten.
func TestRepeatedKeyKeepsAWaitingRecordUnsent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := setup(t)
	rec := func(id string) *store.Record {
		return &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "bulk", Status: store.Queued,
			CreatedAt: t0, UpdatedAt: t0, Queue: "bulk", IdempotencyKey: id[:2], Fingerprint: "fp",
			History: []store.HistoryEntry{{Status: store.Queued, At: t0}}}
	}
	for _, id := range []string{"w-first", "s-first"} {
		if res, err := st.Create(ctx, []*store.Record{rec(id)}); err != nil || !res[0].Created {
			t.Fatal(err, res)
		}
	}
	// s-first was sent; w-first still waits, perhaps without a task.
	if _, _, err := st.Begin(ctx, "s-first", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "s-first", "pid-1", t0); err != nil {
		t.Fatal(err)
	}
	res, err := st.Create(ctx, []*store.Record{rec("w-again"), rec("s-again")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Record.ID != "w-first" || res[1].Record.ID != "s-first" {
		t.Fatalf("repeated keys answered %+v", res)
	}
	unsent, err := st.Unsent(ctx, time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(unsent, "w-first") || slices.Contains(unsent, "s-first") {
		t.Errorf("unsent = %v, want w-first (still waiting) and not s-first (sent)", unsent)
	}
}
