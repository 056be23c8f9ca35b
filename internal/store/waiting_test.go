package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A message that waits 50 times before its send still ends with every
// status change of its life in its history, and its callback receiver
// hears of each status change once and of no wait.
func TestFiftyWaitsLeaveTheHistoryWholeAndSendNoNotice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	r := &store.Record{
		ID: "w50", Destination: "96996999699", Type: "text", Priority: "transactional",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
		CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional",
		CallbackURL: "https://example.com/hook",
	}
	if res, err := st.Create(ctx, []*store.Record{r}); err != nil || res[0].Err != nil {
		t.Fatalf("create: %v %+v", err, res)
	}
	at := t0
	for i := range 50 {
		at = at.Add(time.Second)
		until := at.Add(time.Second)
		reason := store.WaitPairRate
		if i%2 == 1 {
			reason = store.WaitSenderRate
		}
		if err := st.Wait(ctx, r, "w50", store.Waiting{Reason: reason, Since: at, Until: &until}, until, time.Time{}); err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	if _, o, err := st.Begin(ctx, "w50", at, store.Owner{Task: "w50"}); err != nil || o != store.Changed {
		t.Fatalf("begin: %v %v", o, err)
	}
	if _, err := st.Submit(ctx, "w50", "pid-w50", at); err != nil {
		t.Fatal(err)
	}
	for i, s := range []store.Status{store.Sent, store.Delivered, store.Read} {
		ev := store.Event{ID: "pid-w50", Status: s, At: at.Add(time.Duration(i+1) * time.Second), Key: string(s)}
		if _, err := st.ApplyEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Get(ctx, "w50")
	if err != nil {
		t.Fatal(err)
	}
	var history []store.Status
	for _, h := range got.History {
		history = append(history, h.Status)
	}
	want := []store.Status{store.Queued, store.Sending, store.Submitted, store.Sent, store.Delivered, store.Read}
	if !slices.Equal(history, want) || got.Waiting != nil {
		t.Errorf("history %v waiting %+v, want %v and no wait", history, got.Waiting, want)
	}
	// One notice per status change, in order, none for a wait.
	var notified []store.Status
	for {
		n, err := st.NextNotice(ctx, "w50")
		if err != nil {
			t.Fatal(err)
		}
		if n == nil {
			break
		}
		notified = append(notified, n.Record.Status)
		if _, err := st.AckNotice(ctx, "w50", n); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(notified, want) {
		t.Errorf("callback notices %v, want one per status: %v", notified, want)
	}
	// The wait indexes forget a message once its wait ends.
	p, err := st.ListMessages(ctx, store.MessageFilter{Tenant: store.DefaultTenant, Waiting: store.WaitSenderRate}, "", 10)
	if err != nil || len(p.Records) != 0 {
		t.Errorf("messages waiting for the sender's rate: %d (%v), want none", len(p.Records), err)
	}
	counts, err := st.WaitingCounts(ctx, []string{""})
	if err != nil || counts[""][store.WaitSenderRate] != 0 || counts[""][store.WaitPairRate] != 0 {
		t.Errorf("waiting counts %v (%v), want none", counts, err)
	}
}

// GET /v1/messages?waiting= lists what waits for that reason now.
func TestListingByWaitReason(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	for _, id := range []string{"a", "b", "c"} {
		create(id)
	}
	wait := func(id string, reason store.WaitReason) {
		t.Helper()
		r, err := st.Peek(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Wait(ctx, r, id, store.Waiting{Reason: reason, Since: t0}, time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	wait("a", store.WaitPaused)
	wait("b", store.WaitPaused)
	wait("c", store.WaitCircuitOpen)
	wait("b", store.WaitCircuitOpen) // b's wait changes reason
	list := func(reason store.WaitReason) []string {
		t.Helper()
		p, err := st.ListMessages(ctx, store.MessageFilter{Tenant: store.DefaultTenant, Waiting: reason}, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
		slices.Sort(ids)
		return ids
	}
	if got := list(store.WaitPaused); !slices.Equal(got, []string{"a"}) {
		t.Errorf("paused: %v, want [a]", got)
	}
	if got := list(store.WaitCircuitOpen); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("circuit_open: %v, want [b c]", got)
	}
	if _, err := st.Cancel(ctx, "c", t0); err != nil {
		t.Fatal(err)
	}
	if got := list(store.WaitCircuitOpen); !slices.Equal(got, []string{"b"}) {
		t.Errorf("circuit_open after c was canceled: %v, want [b]", got)
	}
	counts, err := st.WaitingCounts(ctx, []string{""})
	if err != nil || counts[""][store.WaitCircuitOpen] != 1 || counts[""][store.WaitPaused] != 1 {
		t.Errorf("waiting counts %v (%v), want one paused, one circuit_open", counts[""], err)
	}
}

// Take is Begin for a send: it updates the record Peek read from the
// take-up's answer, a possible duplicate and the payload included.
func TestTakeUpdatesThePeekedRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("t")
	rec, err := st.Peek(ctx, "t")
	if err != nil || rec == nil || len(rec.History) != 0 {
		t.Fatalf("peek: %+v %v; want no history", rec, err)
	}
	rec.Payload = nil
	a := store.Owner{Worker: "w1", Task: "t"}
	if o, err := st.Take(ctx, rec, t0, a); err != nil || o != store.Changed {
		t.Fatalf("take: %s %v", o, err)
	}
	if rec.Status != store.Sending || rec.Attempts != 1 || rec.SentAgain || string(rec.Payload) != `{"type":"text","message":"hi"}` || rec.Owner != "w1" {
		t.Errorf("after the take-up: %s, %d attempts, sent again %v, payload %s, owner %q", rec.Status, rec.Attempts, rec.SentAgain, rec.Payload, rec.Owner)
	}
	// Its worker lost, the owning task takes it up again: a possible
	// duplicate, one failure.
	if o, err := st.Take(ctx, rec, t0, store.Owner{Worker: "w2", Task: "t"}); err != nil || o != store.Changed {
		t.Fatalf("second take: %s %v", o, err)
	}
	if rec.Attempts != 2 || rec.Failures != 1 || !rec.SentAgain || rec.Owner != "w2" {
		t.Errorf("after the take-over: %d attempts, %d failures, sent again %v, owner %q", rec.Attempts, rec.Failures, rec.SentAgain, rec.Owner)
	}
	// Another task is refused, and says the status.
	other := &store.Record{ID: "t"}
	if o, err := st.Take(ctx, other, t0, store.Owner{Worker: "w3", Task: "x"}); err != nil || o != store.Refused || other.Status != store.Sending {
		t.Errorf("a third task's take: %s %v, status %s; want refused while sending", o, err, other.Status)
	}
}

// A message that waited (a pause) and goes back to its sender's lane is
// counted and listed there, not twice; when it waits again for the same
// reason, the wait indexes have it again, and its wait goes on since when
// it began.
func TestAMessageBackInItsLaneWaitsThereOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("l1")
	rec, err := st.Peek(ctx, "l1")
	if err != nil {
		t.Fatal(err)
	}
	paused := store.Waiting{Reason: store.WaitPaused, Since: t0}
	if err := st.Wait(ctx, rec, "l1", paused, time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	count := func() int64 {
		t.Helper()
		counts, err := st.WaitingCounts(ctx, []string{""})
		if err != nil {
			t.Fatal(err)
		}
		return counts[""][store.WaitPaused]
	}
	if n := count(); n != 1 {
		t.Fatalf("waiting paused: %d, want 1", n)
	}
	// The sweeper gives it a new task: back to its lane.
	if err := st.AddToLanes(ctx, []*store.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("back in its lane, it still counts %d in the wait index, want 0 (the lane counts it)", n)
	}
	if p, err := st.ListMessages(ctx, store.MessageFilter{Tenant: store.DefaultTenant, Waiting: store.WaitPaused}, "", 10); err != nil || len(p.Records) != 0 {
		t.Errorf("listed as waiting paused from its lane: %d %v", len(p.Records), err)
	}
	// Out of the lane, held by the same pause again.
	rec, err = st.Peek(ctx, "l1")
	if err != nil {
		t.Fatal(err)
	}
	again := store.Waiting{Reason: store.WaitPaused, Since: rec.Waiting.Since}
	if err := st.Wait(ctx, rec, "l1", again, time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("waiting paused again: %d, want 1", n)
	}
	if got, _ := st.Peek(ctx, "l1"); got.Waiting == nil || !got.Waiting.Since.Equal(t0) {
		t.Errorf("wait %+v, want the one since %s going on", got.Waiting, t0)
	}
}
