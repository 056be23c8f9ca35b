package deadletter_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/deadletter"
	"github.com/chatq/chatq/internal/lanetest"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// fixture is a Manager on its own Redis, with the pieces to make dead
// letters as a worker does: a record moved to dead, its task archived.
type fixture struct {
	dead    *deadletter.Manager
	store   *store.Store
	client  *enqueue.Client
	archive *asynq.Inspector
}

func setup(tb testing.TB) *fixture {
	tb.Helper()
	rdb := redistest.Start(tb).Client(tb)
	client := enqueue.NewClient(rdb, enqueue.Config{MaxRetry: 3})
	tb.Cleanup(func() { _ = client.Close() })
	st := store.New(rdb, store.Config{})
	archive := asynq.NewInspectorFromRedisClient(rdb)
	return &fixture{dead: deadletter.New(st, client, archive), store: st, client: client, archive: archive}
}

// deadLetter enqueues a message and kills it: its task archived, its record
// dead with that error.
func (f *fixture) deadLetter(tb testing.TB, m *enqueue.Message, class, code string) string {
	tb.Helper()
	ctx := context.Background()
	rec, err := f.client.Send(ctx, m)
	if err != nil {
		tb.Fatal(err)
	}
	lanetest.Move(tb, f.client, f.store)
	if err := f.archive.ArchiveTask(rec.Queue, rec.ID); err != nil {
		tb.Fatalf("archive %s: %v", rec.ID, err)
	}
	if _, _, err := f.store.Begin(ctx, rec.ID, time.Now(), store.Owner{}); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := f.store.Move(ctx, rec.ID, store.Change{Status: store.Dead, Note: "gave up",
		Error: &store.ErrorInfo{Class: class, Code: code, Message: "refused", At: time.Now()}}); err != nil {
		tb.Fatal(err)
	}
	return rec.ID
}

func (f *fixture) taskState(tb testing.TB, queue, id string) string {
	tb.Helper()
	lanetest.Move(tb, f.client, f.store)
	info, err := f.archive.GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) {
		return "none"
	}
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.String()
}

func text(to, batch string, prio enqueue.Priority) *enqueue.Message {
	return &enqueue.Message{Destination: to, Payload: &enqueue.Text{Message: "hi"}, BatchID: batch, Priority: prio}
}

func TestRetryByIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	id := f.deadLetter(t, text("4420700001", "", ""), "permanent", "http_400")
	live, err := f.client.Send(ctx, text("4420700002", "", ""))
	if err != nil {
		t.Fatal(err)
	}

	rep, err := f.dead.Retry(ctx, []string{id, live.ID, "01NOSUCHMESSAGE"})
	if err != nil {
		t.Fatal(err)
	}
	want := deadletter.Report{Done: 1, NotDead: 1, NotFound: 1, Results: []deadletter.Result{
		{ID: id, Outcome: deadletter.Retried, Status: store.Queued},
		{ID: live.ID, Outcome: deadletter.NotDead, Status: store.Queued},
		{ID: "01NOSUCHMESSAGE", Outcome: deadletter.NotFound},
	}}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}

	// A fresh task, with the client's retry budget, where the archived one
	// was.
	info, err := f.archive.GetTaskInfo("transactional", id)
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending || info.Retried != 0 || info.MaxRetry != 3 || enqueue.RecordOf(info.ID, info.Payload) != id {
		t.Errorf("task after the retry: state %s, retried %d of %d, payload %q", info.State, info.Retried, info.MaxRetry, info.Payload)
	}
	rec, err := f.store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, h := range rec.History {
		notes = append(notes, string(h.Status)+":"+h.Note)
	}
	if diff := cmp.Diff([]string{"queued:", "sending:", "dead:gave up", "queued:" + deadletter.RetryNote}, notes); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if p, err := f.dead.List(ctx, store.DeadFilter{}, "", 10); err != nil || len(p.DeadLetters) != 0 {
		t.Errorf("dead letters after the retry: %v %+v", err, p.DeadLetters)
	}

	// A second retry finds it alive.
	rep, err = f.dead.Retry(ctx, []string{id})
	if err != nil || rep.Done != 0 || rep.NotDead != 1 {
		t.Errorf("second retry: %+v %v", rep, err)
	}
}

// A dead letter whose archived task asynq already dropped (its archive
// keeps 10,000 tasks for 90 days) is retried from its record alone; one
// that a dashboard "run" made pending keeps that task.
func TestRetryWithoutArchivedTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	gone := f.deadLetter(t, text("4420700001", "", ""), "retryable", "http_500")
	if err := f.archive.DeleteTask("transactional", gone); err != nil {
		t.Fatal(err)
	}
	running := f.deadLetter(t, text("4420700002", "", ""), "retryable", "http_500")
	if err := f.archive.RunTask("transactional", running); err != nil {
		t.Fatal(err)
	}
	rep, err := f.dead.Retry(ctx, []string{gone, running})
	if err != nil || rep.Done != 2 {
		t.Fatalf("retry: %+v %v", rep, err)
	}
	for _, id := range []string{gone, running} {
		if got := f.taskState(t, "transactional", id); got != "pending" {
			t.Errorf("task of %s: %s, want pending", id, got)
		}
	}
}

func TestRetryMatching(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	outage := []string{
		f.deadLetter(t, text("4420700001", "spring", enqueue.Bulk), "retryable", "http_500"),
		f.deadLetter(t, text("4420700002", "spring", enqueue.Bulk), "retryable", "http_500"),
		f.deadLetter(t, text("4420700003", "", ""), "retryable", "http_502"),
	}
	refused := f.deadLetter(t, text("4420700004", "spring", enqueue.Bulk), "permanent", "http_400")

	rep, err := f.dead.RetryMatching(ctx, store.DeadFilter{Class: "retryable", BatchID: "spring"})
	if err != nil || rep.Done != 2 || rep.Results != nil {
		t.Fatalf("retry of the spring outage: %+v %v", rep, err)
	}
	rep, err = f.dead.RetryMatching(ctx, store.DeadFilter{Class: "retryable"})
	if err != nil || rep.Done != 1 {
		t.Fatalf("retry of the rest of the outage: %+v %v", rep, err)
	}
	for _, id := range outage {
		if rec, err := f.store.Get(ctx, id); err != nil || rec.Status != store.Queued {
			t.Errorf("%s after the retry: %v %+v", id, err, rec)
		}
	}
	p, err := f.dead.List(ctx, store.DeadFilter{}, "", 10)
	if err != nil || len(p.DeadLetters) != 1 || p.DeadLetters[0].ID != refused {
		t.Errorf("dead letters left: %v %+v, want only %s", err, p.DeadLetters, refused)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	a := f.deadLetter(t, text("4420700001", "", enqueue.Bulk), "permanent", "http_400")
	b := f.deadLetter(t, text("4420700002", "", ""), "permanent", "131026")
	c := f.deadLetter(t, text("4420700003", "", ""), "permanent", "131026")

	rep, err := f.dead.Delete(ctx, []string{a})
	if err != nil || rep.Done != 1 {
		t.Fatalf("delete: %+v %v", rep, err)
	}
	if got := f.taskState(t, "bulk", a); got != "none" {
		t.Errorf("archived task of a deleted dead letter: %s", got)
	}
	rec, err := f.store.Get(ctx, a)
	if err != nil || rec.Status != store.Dead || rec.History[len(rec.History)-1].Note != deadletter.DeleteNote {
		t.Errorf("record of a deleted dead letter: %v %+v", err, rec)
	}
	rep, err = f.dead.DeleteMatching(ctx, store.DeadFilter{Code: "131026"})
	if err != nil || rep.Done != 2 {
		t.Fatalf("delete by filter: %+v %v", rep, err)
	}
	for _, id := range []string{b, c} {
		if got := f.taskState(t, "transactional", id); got != "none" {
			t.Errorf("archived task of %s: %s", id, got)
		}
	}
	if p, err := f.dead.List(ctx, store.DeadFilter{}, "", 10); err != nil || len(p.DeadLetters) != 0 {
		t.Errorf("dead letters after the deletes: %v %+v", err, p.DeadLetters)
	}
	// A deleted dead letter can still be retried by id.
	if rep, err := f.dead.Retry(ctx, []string{a}); err != nil || rep.Done != 1 {
		t.Errorf("retry of a deleted dead letter: %+v %v", rep, err)
	}
}

func TestParams(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		p     deadletter.Params
		want  store.DeadFilter
		field string // of the error, "" for none
	}{
		{"empty", deadletter.Params{}, store.DeadFilter{}, ""},
		{"all of them", deadletter.Params{Queue: "bulk", Class: "retryable", Code: "http_500", BatchID: "b", OlderThan: "10m", NewerThan: "2h"},
			store.DeadFilter{Queue: "bulk", Class: "retryable", Code: "http_500", BatchID: "b", DiedBefore: now.Add(-10 * time.Minute), DiedAfter: now.Add(-2 * time.Hour)}, ""},
		{"bulk shard", deadletter.Params{Queue: "bulk-3"}, store.DeadFilter{Queue: "bulk-3"}, ""},
		{"unknown queue", deadletter.Params{Queue: "callbacks"}, store.DeadFilter{}, "queue"},
		{"unknown class", deadletter.Params{Class: "fatal"}, store.DeadFilter{}, "class"},
		{"days", deadletter.Params{OlderThan: "2d"}, store.DeadFilter{}, "older_than"},
		{"negative", deadletter.Params{NewerThan: "-1h"}, store.DeadFilter{}, "newer_than"},
		{"empty window", deadletter.Params{OlderThan: "2h", NewerThan: "1h"}, store.DeadFilter{}, "newer_than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.p.Filter(now)
			var ve *enqueue.ValidationError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field):
				t.Fatalf("error %v, want one naming %s", err, tt.field)
			case tt.field == "":
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}

// A filter reads one tenant's dead letters: retrying or deleting
// everything of tenant default, or of acme, leaves the other's alone.
func TestMatchingActsOnOneTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	of := func(tenant string) *enqueue.Message {
		// Another recipient each: one business number's messages to one
		// recipient go in order, and the second would wait for the first.
		m := text("44207000"+strconv.Itoa(10+len(tenant)), "", "")
		m.Tenant = tenant
		return m
	}
	mine := f.deadLetter(t, of(""), "permanent", "http_400")
	theirs := f.deadLetter(t, of("acme"), "permanent", "http_400")
	listed := func(tenant string) []string {
		t.Helper()
		p, err := f.dead.List(ctx, store.DeadFilter{Tenant: tenant}, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range p.DeadLetters {
			ids = append(ids, d.ID)
		}
		return ids
	}
	if diff := cmp.Diff([][]string{{mine}, {theirs}}, [][]string{listed(""), listed("acme")}); diff != "" {
		t.Errorf("dead letters of default and acme (-want +got):\n%s", diff)
	}

	rep, err := f.dead.RetryMatching(ctx, store.DeadFilter{})
	if err != nil || rep.Done != 1 {
		t.Fatalf("retry tenant default's: %+v %v, want 1", rep, err)
	}
	rep, err = f.dead.DeleteMatching(ctx, store.DeadFilter{Tenant: "default"})
	if err != nil || rep.Done != 0 {
		t.Fatalf("delete tenant default's after the retry: %+v %v, want none", rep, err)
	}
	if rec, err := f.store.Get(ctx, theirs); err != nil || rec.Status != store.Dead {
		t.Fatalf("acme's dead letter after tenant default's retry: %v %v, want dead", rec, err)
	}
	if diff := cmp.Diff([]string{theirs}, listed("acme")); diff != "" {
		t.Errorf("acme's dead letters after tenant default's retry (-want +got):\n%s", diff)
	}
	rep, err = f.dead.DeleteMatching(ctx, store.DeadFilter{Tenant: "acme"})
	if err != nil || rep.Done != 1 || len(listed("acme")) != 0 {
		t.Errorf("delete acme's: %+v %v, then %v listed; want 1 deleted, none listed", rep, err, listed("acme"))
	}
	if state := f.taskState(t, "transactional", theirs); state != "none" {
		t.Errorf("acme's archived task after the deletion: %s, want none", state)
	}
}
