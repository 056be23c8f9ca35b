package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// recordingNotifier remembers what it was told.
type recordingNotifier struct {
	mu  sync.Mutex
	got []string
}

func (n *recordingNotifier) Notify(_ context.Context, id string, seq int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, id+":"+string(rune('0'+seq)))
}

func (n *recordingNotifier) calls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

// drainNotices reads and acknowledges every pending notice of id.
func drainNotices(tb testing.TB, st *store.Store, id string) []*store.Notice {
	tb.Helper()
	ctx := context.Background()
	var out []*store.Notice
	for {
		n, err := st.NextNotice(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		if n == nil {
			return out
		}
		if ok, err := st.AckNotice(ctx, id, n); err != nil || !ok {
			tb.Fatalf("ack notice %d: %v %v", n.Seq, ok, err)
		}
		out = append(out, n)
	}
}

func TestStatusChangesQueueNoticesInOrder(t *testing.T) {
	t.Parallel()
	// chatq dev runs these scripts on miniredis: cjson and TIME must work
	// there too.
	for _, mini := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "miniredis"}[mini], func(t *testing.T) {
			t.Parallel()
			testNoticesInOrder(t, redistest.Start(t, redistest.Options{ForceMiniredis: mini}))
		})
	}
}

func testNoticesInOrder(t *testing.T, srv *redistest.Server) {
	ctx := context.Background()
	notifier := &recordingNotifier{}
	st := store.New(srv.Client(t), store.Config{Notifier: notifier})
	create := func(id, callbackURL string) {
		t.Helper()
		r := &store.Record{
			ID: id, Destination: "96996999699", Type: "text", Priority: "transactional", CallbackURL: callbackURL,
			Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
			CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"secret body"}`), Queue: "transactional",
			FallbackTemplate: []byte(`{"type":"template","template":{"elementName":"x","languageCode":"en","params":[]}}`),
		}
		if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	create("cb1", "https://app.example.com/events")
	create("plain", "")

	for _, id := range []string{"cb1", "plain"} {
		if _, _, err := st.Begin(ctx, id, t0.Add(time.Second), store.Owner{}); err != nil {
			t.Fatal(err)
		}
		if err := st.Note(ctx, id, t0.Add(1500*time.Millisecond), "an annotation changes no status"); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Submit(ctx, id, "pid-"+id, t0.Add(2*time.Second)); err != nil {
			t.Fatal(err)
		}
		for i, ev := range []store.Status{store.Delivered, store.Sent, store.Delivered} {
			if _, err := st.ApplyEvent(ctx, store.Event{ID: "pid-" + id, Status: ev, At: t0.Add(time.Duration(3+i) * time.Second), Key: string(ev)}); err != nil {
				t.Fatal(err)
			}
		}
	}

	got := drainNotices(t, st, "cb1")
	type view struct {
		Seq     int64
		Status  store.Status
		History int
	}
	var views []view
	for _, n := range got {
		views = append(views, view{n.Seq, n.Record.Status, len(n.Record.History)})
		if len(n.Record.Payload) != 0 || len(n.Record.FallbackTemplate) != 0 {
			t.Errorf("notice %d carries a payload", n.Seq)
		}
		if n.Record.CallbackURL != "https://app.example.com/events" {
			t.Errorf("notice %d has callback URL %q", n.Seq, n.Record.CallbackURL)
		}
		if n.Queued.IsZero() {
			t.Errorf("notice %d has no queue time", n.Seq)
		}
	}
	// The late "sent" and the repeated "delivered" change no status: no
	// notice. The note is in the history, not a notice.
	want := []view{{1, store.Queued, 1}, {2, store.Sending, 2}, {3, store.Submitted, 4}, {4, store.Delivered, 5}}
	if diff := cmp.Diff(want, views); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
	if n := drainNotices(t, st, "plain"); len(n) != 0 {
		t.Errorf("a record without a callback URL queued %d notices", len(n))
	}
	if diff := cmp.Diff([]string{"cb1:1", "cb1:2", "cb1:3", "cb1:4"}, notifier.calls()); diff != "" {
		t.Errorf("notifier calls (-want +got):\n%s", diff)
	}
}

func TestNoticesDueUntilDrained(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{NoticeGrace: time.Minute})
	r := &store.Record{
		ID: "due1", Destination: "96996999699", Type: "text", Priority: "bulk", CallbackURL: "https://x.example/cb",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}}, CreatedAt: t0, UpdatedAt: t0, Queue: "bulk",
	}
	if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
		t.Fatal(err)
	}
	// Left to the notifier for the grace, then due.
	if due := dueNotices(t, st, time.Now()); len(due) != 0 {
		t.Errorf("due before the grace: %v", due)
	}
	if due := dueNotices(t, st, time.Now().Add(2*time.Minute)); len(due) != 1 || due[0] != "due1" {
		t.Fatalf("due after the grace: %v", due)
	}
	// Handed out (a sweep gave it a task): not due again for a grace.
	if err := st.DeferNotices(ctx, time.Now(), "due1"); err != nil {
		t.Fatal(err)
	}
	if due := dueNotices(t, st, time.Now().Add(30*time.Second)); len(due) != 0 {
		t.Errorf("due again at once: %v", due)
	}
	n, err := st.NextNotice(ctx, "due1")
	if err != nil || n == nil {
		t.Fatalf("next: %v %v", n, err)
	}
	if _, _, err := st.Begin(ctx, "due1", t0, store.Owner{}); err != nil {
		t.Fatal(err)
	}
	// Acknowledging a notice that is no longer first does nothing.
	if ok, _ := st.AckNotice(ctx, "due1", n); !ok {
		t.Fatal("first ack refused")
	}
	if ok, _ := st.AckNotice(ctx, "due1", n); ok {
		t.Error("a second ack of the same notice removed the next one")
	}
	// Not drained yet ("sending" waits): stays on the index.
	if err := st.NoticesDrained(ctx, "due1"); err != nil {
		t.Fatal(err)
	}
	if due := dueNotices(t, st, time.Now().Add(2*time.Minute)); len(due) != 1 {
		t.Errorf("a record with a pending notice left the index: %v", due)
	}
	drainNotices(t, st, "due1")
	if err := st.NoticesDrained(ctx, "due1"); err != nil {
		t.Fatal(err)
	}
	if due := dueNotices(t, st, time.Now().Add(2*time.Minute)); len(due) != 0 {
		t.Errorf("a drained record stays due: %v", due)
	}
}

// dueNotices returns the ids of the notice entries the due index has due
// at at.
func dueNotices(tb testing.TB, st *store.Store, at time.Time) []string {
	tb.Helper()
	entries, err := st.Due(context.Background(), at, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if e.Notices {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// newCallbackRecord creates a queued record with a callback URL.
func newCallbackRecord(tb testing.TB, st *store.Store, id string) {
	tb.Helper()
	r := &store.Record{
		ID: id, Destination: "96996999699", Type: "text", Priority: "transactional", CallbackURL: "https://app.example.com/events",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}}, Metadata: map[string]string{"order": "A-1"},
		CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"secret body"}`), Queue: "transactional",
	}
	if _, err := st.Create(context.Background(), []*store.Record{r}); err != nil {
		tb.Fatal(err)
	}
}

func TestHistoryKeepsStatusChangesPastTheCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	newCallbackRecord(t, st, "chatty")
	if _, _, err := st.Begin(ctx, "chatty", t0.Add(time.Second), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "chatty", "pid-chatty", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(3 * time.Second)
	for i := range 151 { // one sent, then 150 repeats of it
		at = at.Add(time.Second)
		ev := store.Event{ID: "pid-chatty", Status: store.Sent, At: at, Key: "sent" + strconv.Itoa(i)}
		if _, err := st.ApplyEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []store.Status{store.Delivered, store.Read} {
		at = at.Add(time.Second)
		if _, err := st.ApplyEvent(ctx, store.Event{ID: "pid-chatty", Status: s, At: at, Key: string(s)}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := st.Get(ctx, "chatty")
	if err != nil {
		t.Fatal(err)
	}
	// queued, sending, submitted, sent and 96 repeats fill the 100 entries
	// annotations may take; the status changes after them are kept.
	var statuses []store.Status
	for _, e := range r.History {
		if e.Note == "" {
			statuses = append(statuses, e.Status)
		}
	}
	wantStatuses := []store.Status{store.Queued, store.Sending, store.Submitted, store.Sent, store.Delivered, store.Read}
	if diff := cmp.Diff(wantStatuses, statuses); diff != "" {
		t.Errorf("status changes in the history (-want +got):\n%s", diff)
	}
	if len(r.History) != 102 {
		t.Errorf("%d history entries, want 102: 100 until the cap, then the 2 status changes", len(r.History))
	}
	notices := drainNotices(t, st, "chatty")
	if len(notices) != 6 {
		t.Fatalf("%d notices, want 6", len(notices))
	}
	for i, n := range notices[4:] {
		h := n.Record.History
		if len(h) != 101+i || h[len(h)-1].Status != n.Record.Status {
			t.Errorf("notice %d (%s): %d history entries ending in %+v", n.Seq, n.Record.Status, len(h), h[len(h)-1])
		}
	}
}
