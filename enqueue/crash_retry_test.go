package enqueue_test

import (
	"context"
	"testing"
)

// TestRetriedBatchSendsWhatACrashLeftWithoutATask is a regression test: a
// producer that died after writing a batch's records but before their
// tasks left messages that a retry of the same batch answered from the
// records without writing the tasks, and took off the sweeper's index, so
// that they were never sent.
func TestRetriedBatchSendsWhatACrashLeftWithoutATask(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	first, err := f.client.SendBatch(ctx, batch(3, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	// The crash, after the fact: the bulk messages' lane entries (their
	// tasks to be) are gone, and the records are on the due index, as
	// Create left them.
	for _, r := range first {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if err := f.rdb.Del(ctx, "chatq:lane:{default}").Err(); err != nil {
		t.Fatal(err)
	}

	second, err := f.client.SendBatch(ctx, batch(3, "crash"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range second {
		if r.Err != nil || r.Created || r.Record.ID != first[i].Record.ID {
			t.Fatalf("retry, item %d: created %v err %v, want record %s again", i, r.Created, r.Err, first[i].Record.ID)
		}
		f.task(t, "bulk", r.Record.ID)
	}
	// A third send finds the tasks and writes nothing more.
	if _, err := f.client.SendBatch(ctx, batch(3, "crash")); err != nil {
		t.Fatal(err)
	}
	if n := f.tasks(t, "bulk"); n != 3 {
		t.Errorf("%d tasks, want 3", n)
	}
}
