package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// dueAt returns when the send entry of id is due, or the zero time when it
// has none.
func dueAt(tb testing.TB, st *store.Store, id string) time.Time {
	tb.Helper()
	entries, err := st.Due(context.Background(), time.Now().Add(1000*time.Hour), 10000)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if e.ID == id && !e.Notices {
			return e.At
		}
	}
	return time.Time{}
}

// near reports whether got lies within a second of want.
func near(got, want time.Time) bool {
	d := got.Sub(want)
	return d > -time.Second && d < time.Second
}

// A message is on the due index for as long as it needs a task: from its
// creation (a grace after it is due), while it is taken up (a short
// lease), while it waits for a retry (a grace after the retry), and off it
// once it ends.
func TestDueIndexFollowsTheMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{DueGrace: 30 * time.Second, SendLease: 5 * time.Second})
	now := time.Now().UTC().Truncate(time.Millisecond)
	later := now.Add(time.Hour)
	for _, r := range []*store.Record{
		{ID: "now", Status: store.Queued, CreatedAt: now, UpdatedAt: now, Queue: "bulk"},
		{ID: "later", Status: store.Scheduled, SendAt: &later, CreatedAt: now, UpdatedAt: now, Queue: "bulk"},
	} {
		r.History = []store.HistoryEntry{{Status: r.Status, At: now}}
		if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if got := dueAt(t, st, "now"); !near(got, now.Add(30*time.Second)) {
		t.Errorf("a new message is due at %s, want its creation + 30s (%s)", got, now.Add(30*time.Second))
	}
	if got := dueAt(t, st, "later"); !near(got, later.Add(30*time.Second)) {
		t.Errorf("a scheduled message is due at %s, want its send_at + 30s", got)
	}
	if _, _, err := st.Begin(ctx, "now", time.Now(), store.Owner{Worker: "w1", Task: "now"}); err != nil {
		t.Fatal(err)
	}
	if got := dueAt(t, st, "now"); !near(got, time.Now().Add(5*time.Second)) {
		t.Errorf("a message taken up is due at %s, want in 5s", got)
	}
	retry := time.Now().Add(time.Minute)
	if _, _, err := st.Move(ctx, "now", store.Change{Status: store.Retrying, Failed: true, Due: retry, Task: "now"}); err != nil {
		t.Fatal(err)
	}
	if got := dueAt(t, st, "now"); !near(got, retry.Add(30*time.Second)) {
		t.Errorf("a retrying message is due at %s, want its retry + 30s", got)
	}
	if _, _, err := st.Begin(ctx, "now", time.Now(), store.Owner{Worker: "w1", Task: "now"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "now", "pid-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := dueAt(t, st, "now"); !got.IsZero() {
		t.Errorf("a submitted message is still due at %s", got)
	}
	if _, err := st.Cancel(ctx, "later", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := dueAt(t, st, "later"); !got.IsZero() {
		t.Errorf("a canceled message is still due at %s", got)
	}
	r, err := st.Get(ctx, "now")
	if err != nil {
		t.Fatal(err)
	}
	if r.Failures != 1 || r.Attempts != 2 || r.TaskID != "now" {
		t.Errorf("failures %d, attempts %d, task %q; want 1, 2, now", r.Failures, r.Attempts, r.TaskID)
	}
}

// Only the task that owns a message being sent may take it up again; it
// then owns up to the previous attempt: a failure, and a possible duplicate
// (it was on the wire from its take-up) that the next send's history notes.
func TestBeginTakesOverOnlyForTheOwningTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("m")
	a := store.Owner{Worker: "w1", Task: "m"}
	if r, o, err := st.Begin(ctx, "m", t0, a); err != nil || o != store.Changed || r.SentAgain || !r.OnWire {
		t.Fatalf("begin: %s %v; sent again %v, on the wire %v", o, err, r.SentAgain, r.OnWire)
	}
	// Another task of the message (an operator's, a stale one) sends
	// nothing while it is being sent.
	if _, o, err := st.Begin(ctx, "m", t0, store.Owner{Worker: "w2", Task: "other"}); err != nil || o != store.Refused {
		t.Errorf("begin by another task: %s %v, want refused", o, err)
	}
	// asynq hands the owning task back (its worker was lost), to w2.
	r, o, err := st.Begin(ctx, "m", t0, store.Owner{Worker: "w2", Task: "m"})
	if err != nil || o != store.Changed {
		t.Fatalf("begin by the owning task: %s %v", o, err)
	}
	if r.Owner != "w2" || r.Failures != 1 || r.Attempts != 2 || !r.SentAgain {
		t.Errorf("after the take-over: owner %q, failures %d, attempts %d, sent again %v; want w2, 1, 2, true", r.Owner, r.Failures, r.Attempts, r.SentAgain)
	}
	// Only once: the next send after a recorded failure is no duplicate.
	if _, _, err := st.Move(ctx, "m", store.Change{Status: store.Retrying, Failed: true, Task: "m"}); err != nil {
		t.Fatal(err)
	}
	if r, _, err := st.Begin(ctx, "m", t0, a); err != nil || r.SentAgain {
		t.Errorf("third send: sent again %v, %v; want false", r.SentAgain, err)
	}
	r, err = st.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"queued", "sending", "sending (sent again: the previous attempt's outcome was not recorded (worker lost))", "retrying", "sending"}, statuses(r)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// The sweeper hands a message whose send was lost to a new task; the old
// one, should asynq run it again, can change nothing.
func TestReassignHandsTheMessageToANewTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("m")
	if _, _, err := st.Begin(ctx, "m", t0, store.Owner{Worker: "w1", Task: "m"}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	task, err := st.Reassign(ctx, r)
	if err != nil || task != "m-1" {
		t.Fatalf("reassign: %q %v, want m-1", task, err)
	}
	// A second sweeper that read the record before sees it moved on.
	if again, err := st.Reassign(ctx, r); err != nil || again != "" {
		t.Errorf("a stale reassign: %q %v, want nothing", again, err)
	}
	// The lost task's late moves are refused; the new task sends, as a
	// possible duplicate.
	if o, _, err := st.Move(ctx, "m", store.Change{Status: store.Retrying, Failed: true, Task: "m"}); err != nil || o != store.Refused {
		t.Errorf("the old task's retry: %s %v, want refused", o, err)
	}
	if _, o, err := st.Begin(ctx, "m", t0, store.Owner{Worker: "w3", Task: "m"}); err != nil || o != store.Refused {
		t.Errorf("the old task's send: %s %v, want refused", o, err)
	}
	r, o, err := st.Begin(ctx, "m", t0, store.Owner{Worker: "w2", Task: "m-1"})
	if err != nil || o != store.Changed {
		t.Fatalf("the new task's begin: %s %v", o, err)
	}
	if !r.SentAgain {
		t.Error("the new task's send is not a possible duplicate")
	}
}

// One worker at a time holds the sweeper's lease; another takes it once it
// lapses or is given up.
func TestOneSweeperAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := setup(t)
	lead := func(w string) bool {
		t.Helper()
		ok, err := st.Lead(ctx, w, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !lead("w1") || lead("w2") || !lead("w1") {
		t.Fatal("w1 should take and keep the lease, w2 not get it")
	}
	poll.Until(t, 10*time.Second, "w2 takes the lapsed lease", func() (bool, string) { return lead("w2"), "" })
	if lead("w1") {
		t.Error("w1 took the lease back from w2")
	}
	if err := st.Resign(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if lead("w1") {
		t.Error("w1's resign gave up w2's lease")
	}
	if err := st.Resign(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	if !lead("w1") {
		t.Error("the lease w2 gave up was not free")
	}
}

func TestHeartbeats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := setup(t)
	if err := st.Heartbeat(ctx, "w1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.Heartbeat(ctx, "w2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.StopHeartbeat(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	alive, err := st.Alive(ctx, []string{"w1", "w2", "w3"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]bool{"w1": true, "w2": false, "w3": false}, alive); diff != "" {
		t.Errorf("alive (-want +got):\n%s", diff)
	}
}

// A removal of what a sweep read does not undo a newer write.
func TestDropDueKeepsNewerEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("a")
	create("b")
	entries, err := st.Due(ctx, time.Now().Add(time.Hour), 10)
	if err != nil || len(entries) != 2 {
		t.Fatalf("due: %v %v", entries, err)
	}
	if err := st.Postpone(ctx, "b", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.DropDue(ctx, entries...); err != nil {
		t.Fatal(err)
	}
	var ids []string
	left, err := st.Due(ctx, time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"b"}) {
		t.Errorf("left on the index: %v, want b (written after the read)", ids)
	}
}

// TestRepeatedKeyKeepsAWaitingRecordDue is a regression test: a repeated
// idempotency key took the first record off the sweeper's index even while
// it still waited to be sent, so that the sweeper never wrote the task a
// crashed producer had left unwritten.
func TestRepeatedKeyKeepsAWaitingRecordDue(t *testing.T) {
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
	if _, _, err := st.Begin(ctx, "s-first", t0, store.Owner{}); err != nil {
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
	due := dueSends(t, st, time.Now().Add(time.Hour))
	if !slices.Contains(due, "w-first") || slices.Contains(due, "s-first") {
		t.Errorf("due = %v, want w-first (still waiting) and not s-first (sent)", due)
	}
}

// A submit repeated because its answer was lost changes nothing; another
// acceptance of the same message is kept in the history.
func TestRepeatedSubmitChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("m")
	if _, _, err := st.Begin(ctx, "m", t0, store.Owner{Task: "m"}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []store.Outcome{store.Changed, store.Duplicate} {
		if o, err := st.Submit(ctx, "m", "pid-1", t0); err != nil || o != want {
			t.Errorf("submit %d: %s %v, want %s", i+1, o, err, want)
		}
	}
	if o, err := st.Submit(ctx, "m", "pid-2", t0); err != nil || o != store.Kept {
		t.Errorf("another acceptance: %s %v, want kept", o, err)
	}
	r, err := st.Get(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"queued", "sending", "submitted", "submitted (accepted again after submitted)"}, statuses(r)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}
