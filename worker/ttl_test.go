package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// A message scheduled further ahead than the record TTL is sent at its
// send_at: its record waits for it.
func TestScheduledBeyondTheRecordTTLIsSent(t *testing.T) {
	b := setup(t, sandbox.Config{}, false)
	const ttl = time.Second
	client := enqueue.NewClient(b.rdb, enqueue.Config{TTL: ttl})
	b.worker(t, b.ca, worker.Config{Concurrency: 2, RecordTTL: ttl, DelayedTaskCheckInterval: 100 * time.Millisecond})

	m := text("447700900321", "see you tomorrow")
	m.SendAt = time.Now().Add(3 * ttl)
	rec, err := client.Send(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	got := b.waitAll(t, []string{rec.ID}, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted })[0]
	// asynq keeps a task's due time in whole seconds.
	if got.SendAt == nil || got.History[len(got.History)-1].At.Before(got.SendAt.Add(-time.Second)) {
		t.Errorf("submitted before its send_at %v: %+v", got.SendAt, got.History)
	}
	if n := b.sandbox.Stats().Accepted; n != 1 {
		t.Errorf("the sandbox accepted %d messages, want 1", n)
	}
}
