// Package lanetest moves the senders' bulk lanes into asynq at once, as
// their feeders would at their own pace, for tests that look at asynq's
// tasks without running a worker.
package lanetest

import (
	"context"
	"testing"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/store"
)

// Move writes the asynq task of every message waiting in a sender's lane.
func Move(tb testing.TB, client *enqueue.Client, st *store.Store) {
	tb.Helper()
	ctx := context.Background()
	lanes, err := st.Lanes(ctx)
	if err != nil {
		tb.Fatalf("list lanes: %v", err)
	}
	for _, l := range lanes {
		for {
			n, err := client.MoveLane(ctx, l, 1000)
			if err != nil {
				tb.Fatalf("move lane %s: %v", l, err)
			}
			if n == 0 {
				break
			}
		}
	}
}
