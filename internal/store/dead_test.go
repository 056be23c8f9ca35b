package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// newRecord lays out a queued record for Create.
func newRecord(id, dest, queue, batch string, created time.Time) *store.Record {
	r := &store.Record{
		ID: id, Destination: dest, Type: "text", Priority: "transactional",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: created}},
		CreatedAt: created, UpdatedAt: created, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: queue,
	}
	if queue == "bulk" {
		r.Priority = "bulk"
	}
	if batch != "" {
		r.BatchID = &batch
	}
	return r
}

func createAll(tb testing.TB, st *store.Store, recs ...*store.Record) {
	tb.Helper()
	res, err := st.Create(context.Background(), recs)
	if err != nil {
		tb.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || !r.Created {
			tb.Fatalf("create %s: %+v", recs[i].ID, r)
		}
	}
}

// kill moves a record to dead as the worker does.
func kill(tb testing.TB, st *store.Store, id, class, code string, at time.Time) {
	tb.Helper()
	o, _, err := st.Move(context.Background(), id, store.Change{Status: store.Dead, At: at, Note: "test",
		Error: &store.ErrorInfo{Class: class, Code: code, Message: "refused", At: at}})
	if err != nil || o != store.Changed {
		tb.Fatalf("kill %s: %s %v", id, o, err)
	}
}

func deadIDs(p store.DeadPage) []string {
	var ids []string
	for _, d := range p.DeadLetters {
		ids = append(ids, d.ID)
	}
	return ids
}

// allDead pages through the dead letters limit at a time.
func allDead(tb testing.TB, st *store.Store, f store.DeadFilter, limit int) []string {
	tb.Helper()
	var ids []string
	cursor := ""
	for range 1000 {
		p, err := st.ListDead(context.Background(), f, cursor, limit)
		if err != nil {
			tb.Fatal(err)
		}
		if len(p.DeadLetters) > limit {
			tb.Fatalf("page of %d for limit %d", len(p.DeadLetters), limit)
		}
		ids = append(ids, deadIDs(p)...)
		if cursor = p.Next; cursor == "" {
			return ids
		}
	}
	tb.Fatal("the listing does not end")
	return nil
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st := store.New(rdb, store.Config{})
	now := time.Now().UTC().Truncate(time.Millisecond)
	died := now.Add(-time.Hour)

	createAll(t, st,
		newRecord("d1", "4420700001", "transactional", "", now.Add(-2*time.Hour)),
		newRecord("d2", "4420700002", "bulk", "promo", now.Add(-2*time.Hour)),
		newRecord("d3", "4420700003", "bulk", "promo", now.Add(-2*time.Hour)),
		newRecord("d4", "4420700004", "transactional", "promo", now.Add(-2*time.Hour)),
		newRecord("d5", "4420700005", "transactional", "", now.Add(-2*time.Hour)),
		newRecord("alive", "4420700006", "transactional", "promo", now.Add(-2*time.Hour)),
	)
	// d2 and d3 die in the same millisecond: the cursor must tell them apart.
	kill(t, st, "d1", "permanent", "http_400", died)
	kill(t, st, "d2", "retryable", "http_500", died.Add(time.Minute))
	kill(t, st, "d3", "retryable", "http_500", died.Add(time.Minute))
	kill(t, st, "d4", "policy", "suppressed", died.Add(2*time.Minute))
	kill(t, st, "d5", "retryable", "http_503", now.Add(-5*time.Second))

	newestFirst := []string{"d5", "d4", "d3", "d2", "d1"}
	tests := []struct {
		name string
		f    store.DeadFilter
		want []string
	}{
		{"all", store.DeadFilter{}, newestFirst},
		{"queue", store.DeadFilter{Queue: "bulk"}, []string{"d3", "d2"}},
		{"class", store.DeadFilter{Class: "retryable"}, []string{"d5", "d3", "d2"}},
		{"code", store.DeadFilter{Code: "http_400"}, []string{"d1"}},
		{"class and code", store.DeadFilter{Class: "retryable", Code: "http_503"}, []string{"d5"}},
		{"batch", store.DeadFilter{BatchID: "promo"}, []string{"d4", "d3", "d2"}},
		{"died after", store.DeadFilter{DiedAfter: died.Add(30 * time.Second)}, []string{"d5", "d4", "d3", "d2"}},
		{"died before", store.DeadFilter{DiedBefore: now.Add(-time.Minute)}, []string{"d4", "d3", "d2", "d1"}},
		{"window", store.DeadFilter{DiedAfter: died.Add(30 * time.Second), DiedBefore: died.Add(90 * time.Second)}, []string{"d3", "d2"}},
		{"nothing", store.DeadFilter{Code: "131026"}, nil},
	}
	for _, tt := range tests {
		for _, limit := range []int{1, 2, 100} {
			if diff := cmp.Diff(tt.want, allDead(t, st, tt.f, limit)); diff != "" {
				t.Errorf("%s, limit %d (-want +got):\n%s", tt.name, limit, diff)
			}
		}
	}

	p, err := st.ListDead(ctx, store.DeadFilter{Code: "http_400"}, "", 10)
	if err != nil || len(p.DeadLetters) != 1 {
		t.Fatalf("list: %v %+v", err, p)
	}
	if d := p.DeadLetters[0]; !d.DiedAt.Equal(died) || d.LastError == nil || d.LastError.Code != "http_400" {
		t.Errorf("dead letter %+v died at %s, want %s with its last error", d.Record, d.DiedAt, died)
	}
	if _, err := st.ListDead(ctx, store.DeadFilter{}, "not a cursor", 10); err == nil {
		t.Error("a bad cursor was accepted")
	}

	// A retry takes d2 back to queued, onto the unsent index, off the list.
	outcomes, sts, err := st.RetryDead(ctx, []string{"d2", "alive", "gone"}, now, "retried by an operator")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Outcome{store.Changed, store.Refused, store.Missing}, outcomes); diff != "" {
		t.Errorf("retry outcomes (-want +got):\n%s", diff)
	}
	if sts[1] != store.Queued {
		t.Errorf("status of the live record: %s", sts[1])
	}
	rec, err := st.Get(ctx, "d2")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"queued", "dead (test)", "queued (retried by an operator)"}, statuses(rec)); diff != "" {
		t.Errorf("history of a retried dead letter (-want +got):\n%s", diff)
	}
	if due := dueSends(t, st, time.Now().Add(time.Hour)); !contains(due, "d2") {
		t.Errorf("a retried dead letter is not on the due index: %v", due)
	}
	if diff := cmp.Diff([]string{"d5", "d4", "d3", "d1"}, allDead(t, st, store.DeadFilter{}, 100)); diff != "" {
		t.Errorf("after a retry (-want +got):\n%s", diff)
	}

	// It dies again: back on the list, at its new time.
	kill(t, st, "d2", "retryable", "http_500", now)
	if diff := cmp.Diff([]string{"d2", "d5", "d4", "d3", "d1"}, allDead(t, st, store.DeadFilter{}, 100)); diff != "" {
		t.Errorf("after a second death (-want +got):\n%s", diff)
	}

	// A delete keeps the record, dead, and notes it.
	outcomes, _, err = st.DropDead(ctx, []string{"d1", "alive", "gone"}, now, "removed from the dead letters by an operator")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Outcome{store.Kept, store.Refused, store.Missing}, outcomes); diff != "" {
		t.Errorf("delete outcomes (-want +got):\n%s", diff)
	}
	rec, err = st.Get(ctx, "d1")
	if err != nil || rec.Status != store.Dead {
		t.Fatalf("deleted dead letter: %v %+v", err, rec)
	}
	if last := rec.History[len(rec.History)-1]; last.Status != store.Dead || last.Note != "removed from the dead letters by an operator" {
		t.Errorf("last history entry %+v", last)
	}

	// Entries whose record left dead, or expired, are dropped on the way.
	if err := st.Requeue(ctx, "d3", now, "run again from the dead-letter queue"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, "chatq:m:{d4}").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, "chatq:dead", redis.Z{Score: float64(now.UnixMilli()), Member: "alive"}).Err(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"d2", "d5"}, allDead(t, st, store.DeadFilter{}, 1)); diff != "" {
		t.Errorf("after stale entries (-want +got):\n%s", diff)
	}
	left, err := rdb.ZRange(ctx, "chatq:dead", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"d5", "d2"}, left); diff != "" {
		t.Errorf("index after the listing (-want +got):\n%s", diff)
	}
}

// A dead letter index that a filter mostly skips comes back in short
// pages, never a page of more work than the budget.
func TestDeadLettersNarrowFilterPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	now := time.Now().UTC().Truncate(time.Millisecond)
	const n = 6000
	recs := make([]*store.Record, n)
	pipe := rdb.Pipeline()
	for i := range recs {
		// Written dead at once, for speed: one bulk message among
		// thousands of transactional ones.
		queue := "transactional"
		if i == 0 {
			queue = "bulk"
		}
		recs[i] = newRecord(fmt.Sprintf("n%05d", i), "4420700001", queue, "", now.Add(-time.Hour))
		recs[i].Status = store.Dead
		pipe.ZAdd(ctx, "chatq:dead", redis.Z{Score: float64(now.Add(-time.Hour).Add(time.Duration(i) * time.Millisecond).UnixMilli()), Member: recs[i].ID})
	}
	createAll(t, st, recs...)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := st.ListDead(ctx, store.DeadFilter{Queue: "bulk"}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.DeadLetters) != 0 || p.Next == "" {
		t.Fatalf("first page: %d dead letters, next %q; want an empty page that goes on", len(p.DeadLetters), p.Next)
	}
	if diff := cmp.Diff([]string{"n00000"}, allDead(t, st, store.DeadFilter{Queue: "bulk"}, 10)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The dead letters stay bounded without anyone listing them: a new one
// takes out those that died longer than the record TTL ago, whose records
// are gone.
func TestDeadLettersTrimAsTheyAreWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{TTL: time.Hour})
	now := time.Now()
	for i, died := range []time.Time{now.Add(-3 * time.Hour), now.Add(-61 * time.Minute), now.Add(-59 * time.Minute)} {
		id := fmt.Sprintf("old%d", i)
		createAll(t, st, newRecord(id, "96996999699", "transactional", "", died))
		kill(t, st, id, "permanent", "400", died)
	}
	createAll(t, st, newRecord("new", "96996999699", "transactional", "", now))
	kill(t, st, "new", "permanent", "400", now)
	got, err := rdb.ZRange(ctx, "chatq:dead", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"old2", "new"}, got); diff != "" {
		t.Errorf("dead letters index after a new one (-want +got):\n%s", diff)
	}
}

// dueSends returns the ids of the send entries the due index has due at
// at.
func dueSends(tb testing.TB, st *store.Store, at time.Time) []string {
	tb.Helper()
	entries, err := st.Due(context.Background(), at, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if !e.Notices {
			ids = append(ids, e.ID)
		}
	}
	return ids
}
