package store_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
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

func TestNoticesDoNotGrowWithTheHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	newCallbackRecord(t, st, "long")
	at := t0
	step := func() time.Time { at = at.Add(time.Second); return at }
	// Fifteen failed attempts, then one accepted: 32 history entries.
	for range 15 {
		if _, _, err := st.Begin(ctx, "long", step(), store.Owner{}); err != nil {
			t.Fatal(err)
		}
		e := &store.ErrorInfo{Class: "transient", Code: "500", Message: "upstream error", At: step()}
		if _, _, err := st.Move(ctx, "long", store.Change{Status: store.Retrying, At: at, Failed: true, Error: e}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.Begin(ctx, "long", step(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "long", "0a4a2a8c-7f0e-4c43-9d1c-0b5b0e6f7d21", step()); err != nil {
		t.Fatal(err)
	}
	raws, err := rdb.LRange(ctx, "chatq:cbq:{long}", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	largest := 0
	for _, raw := range raws {
		largest = max(largest, len(raw))
	}
	r, err := st.Get(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.History) != 33 || len(raws) != 33 {
		t.Fatalf("%d history entries and %d notices, want 33 of each", len(r.History), len(raws))
	}
	if largest > 400 {
		t.Errorf("the largest of %d notices is %d bytes, want at most 400 whatever the history's length", len(raws), largest)
	}
}

func TestNoticesAreTheRecordAsOfEachChange(t *testing.T) {
	t.Parallel()
	for _, mini := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "miniredis"}[mini], func(t *testing.T) {
			t.Parallel()
			testNoticesAsOfEachChange(t, redistest.Start(t, redistest.Options{ForceMiniredis: mini}))
		})
	}
}

func testNoticesAsOfEachChange(t *testing.T, srv *redistest.Server) {
	ctx := context.Background()
	st := store.New(srv.Client(t), store.Config{})
	newCallbackRecord(t, st, "asof")
	// snapshot is the record's JSON right after a change: what the
	// change's callback must say.
	var want []string
	snapshot := func() {
		t.Helper()
		r, err := st.Get(ctx, "asof")
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(b))
	}
	note := func(at time.Time, text string) {
		t.Helper()
		if err := st.Note(ctx, "asof", at, text); err != nil {
			t.Fatal(err)
		}
	}
	event := func(ev store.Event) {
		t.Helper()
		ev.ID, ev.Key = "pid-asof", string(ev.Status)+ev.At.String()
		if _, err := st.ApplyEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	snapshot()
	if _, _, err := st.Begin(ctx, "asof", t0.Add(time.Second), store.Owner{Worker: "w1", Task: "asof"}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	// A long last error (kept in parts), then a shorter one: each notice
	// tells its own.
	e := &store.ErrorInfo{Class: "transient", Code: "503", Message: "upstream unavailable: " + strings.Repeat("the gateway said no; ", 12), At: t0.Add(2 * time.Second)}
	if _, _, err := st.Move(ctx, "asof", store.Change{Status: store.Retrying, At: e.At, Failed: true, Error: e}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	note(t0.Add(3*time.Second), "waiting for the sender's rate")
	if _, _, err := st.Begin(ctx, "asof", t0.Add(4*time.Second), store.Owner{Worker: "w2", Task: "asof"}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	e = &store.ErrorInfo{Class: "transient", Code: "500", Message: "upstream error", At: t0.Add(4500 * time.Millisecond)}
	if _, _, err := st.Move(ctx, "asof", store.Change{Status: store.Retrying, At: e.At, Failed: true, Error: e}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	if _, _, err := st.Begin(ctx, "asof", t0.Add(4600*time.Millisecond), store.Owner{Worker: "w2", Task: "asof"}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	if _, err := st.Submit(ctx, "asof", "pid-asof", t0.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	snapshot()
	event(store.Event{Status: store.Enqueued, WhatsAppID: "wamid.asof", At: t0.Add(6 * time.Second)})
	snapshot()
	pricing := &store.Pricing{Billable: true, PricingModel: "PMP", Category: "utility", Type: "regular"}
	event(store.Event{Status: store.Sent, Pricing: pricing, At: t0.Add(7 * time.Second)})
	snapshot()
	// Annotations and a later pricing change what the record says now,
	// not what it said at the changes before.
	event(store.Event{Status: store.Sent, At: t0.Add(8 * time.Second)})
	note(t0.Add(9*time.Second), "an operator looked")
	event(store.Event{Status: store.Read, Pricing: &store.Pricing{Billable: false, PricingModel: "PMP", Category: "utility", Type: "free"},
		At: t0.Add(10 * time.Second)})
	snapshot()
	event(store.Event{Status: store.Delivered, At: t0.Add(11 * time.Second)})

	got := drainNotices(t, st, "asof")
	if len(got) != len(want) {
		t.Fatalf("%d notices, want %d", len(got), len(want))
	}
	for i, n := range got {
		b, err := json.Marshal(n.Record)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want[i], string(b)); diff != "" {
			t.Errorf("notice %d (-the record after its change +the notice):\n%s", n.Seq, diff)
		}
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

func TestNoticesOfBeforeTheUpgradeAreRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	newCallbackRecord(t, st, "old")
	drainNotices(t, st, "old")
	// A notice as it was written before: a copy of the record's hash.
	old := `{"n":2,"t":1795600801000,"f":{"d":"96996999699","t":"text","p":"transactional","s":"sending","a":"1",` +
		`"h":"[{\"status\":\"queued\",\"at\":\"2026-11-25T10:00:00Z\"},{\"status\":\"sending\",\"at\":\"2026-11-25T10:00:01Z\"}]",` +
		`"c":"1795600800000","u":"1795600801000","q":"transactional","cb":"https://app.example.com/events","hn":"2","cn":"2"}}`
	if err := rdb.RPush(ctx, "chatq:cbq:{old}", old).Err(); err != nil {
		t.Fatal(err)
	}
	// The record has moved on since: the notice says what it was then.
	if _, _, err := st.Begin(ctx, "old", t0.Add(time.Second), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "old", "pid-old", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := st.NextNotice(ctx, "old")
	if err != nil || n == nil || n.Record == nil {
		t.Fatalf("old notice: %+v %v", n, err)
	}
	r := n.Record
	if n.Seq != 2 || r.Status != store.Sending || r.Attempts != 1 || len(r.History) != 2 || r.ProviderMessageID != nil ||
		!r.UpdatedAt.Equal(t0.Add(time.Second)) || n.Queued.UnixMilli() != 1795600801000 {
		t.Errorf("old notice read as %d %+v queued %s", n.Seq, r, n.Queued)
	}
}

func TestNoticeOfAGoneRecordHasNoRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	newCallbackRecord(t, st, "gone")
	if err := rdb.Del(ctx, "chatq:m:{gone}").Err(); err != nil {
		t.Fatal(err)
	}
	n, err := st.NextNotice(ctx, "gone")
	if err != nil || n == nil {
		t.Fatalf("notice: %v %v", n, err)
	}
	if n.Seq != 1 || n.Record != nil {
		t.Errorf("notice %d of a gone record has record %+v", n.Seq, n.Record)
	}
}
