package worker

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A task that asynq archives while its record is pending (its worker died
// on the last retry and the recoverer archived it) ends as a dead letter;
// one whose record is already dead or submitted is left alone.
func TestArchivedTasksOfPendingRecordsBecomeDeadLetters(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	client := enqueue.NewClient(rdb, enqueue.Config{})
	defer client.Close()
	st := store.New(rdb, store.Config{})
	inspector := asynq.NewInspectorFromRedisClient(rdb)

	var ids []string
	for _, dest := range []string{"4420799000019", "4420799000029"} {
		rec, err := client.Send(ctx, &enqueue.Message{Destination: dest, Payload: &enqueue.Text{Message: "orphan"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	// The first was taken up by a worker that then vanished; the second
	// was accepted upstream before its task was archived.
	if _, _, err := st.Begin(ctx, ids[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	st.Begin(ctx, ids[1], time.Now())
	if _, err := st.Submit(ctx, ids[1], "p1", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := inspector.ArchiveTask("transactional", id); err != nil {
			t.Fatal(err)
		}
	}

	n, err := settleArchived(ctx, inspector, st, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("settled %d (%v), want 1", n, err)
	}
	r, _ := st.Get(ctx, ids[0])
	if r.Status != store.Dead || r.LastError == nil || r.LastError.Code != "archived" {
		t.Errorf("orphan: status %s, last error %+v", r.Status, r.LastError)
	}
	if r, _ := st.Get(ctx, ids[1]); r.Status != store.Submitted {
		t.Errorf("submitted message moved to %s", r.Status)
	}
	if n, _ := settleArchived(ctx, inspector, st, time.Now()); n != 0 {
		t.Errorf("a second pass settled %d more", n)
	}
}
