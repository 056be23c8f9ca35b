package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// setup returns a store on its own Redis and a function that creates a
// queued record.
func setup(tb testing.TB) (*store.Store, func(id string) *store.Record) {
	tb.Helper()
	st := store.New(redistest.Start(tb).Client(tb), store.Config{})
	create := func(id string) *store.Record {
		tb.Helper()
		r := &store.Record{
			ID: id, Destination: "96996999699", Type: "text", Priority: "transactional",
			Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
			CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional",
		}
		res, err := st.Create(context.Background(), []*store.Record{r})
		if err != nil || res[0].Err != nil || !res[0].Created {
			tb.Fatalf("create %s: %v %+v", id, err, res)
		}
		return r
	}
	return st, create
}

func statuses(r *store.Record) []string {
	var out []string
	for _, h := range r.History {
		s := string(h.Status)
		if h.Note != "" {
			s += " (" + h.Note + ")"
		}
		out = append(out, s)
	}
	return out
}

func TestDeliveryEventsMoveOnlyForward(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name   string
		events []store.Status
		want   store.Status
	}{
		{"in order", []store.Status{store.Enqueued, store.Sent, store.Delivered, store.Read}, store.Read},
		{"delivered before sent", []store.Status{store.Delivered, store.Sent}, store.Delivered},
		{"read alone", []store.Status{store.Read}, store.Read},
		{"failed after sent", []store.Status{store.Sent, store.Failed}, store.Failed},
		{"failed then delivered", []store.Status{store.Failed, store.Delivered}, store.Delivered},
		{"delivered then failed", []store.Status{store.Delivered, store.Failed}, store.Delivered},
		{"failed then sent", []store.Status{store.Failed, store.Sent}, store.Failed},
		{"read then enqueued", []store.Status{store.Read, store.Enqueued}, store.Read},
	}
	st, create := setup(t)
	for i, tt := range tests {
		id := fmt.Sprintf("fwd%d", i)
		create(id)
		if _, _, err := st.Begin(ctx, id, t0, store.Owner{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Submit(ctx, id, "pid-"+id, t0); err != nil {
			t.Fatal(err)
		}
		for j, ev := range tt.events {
			res, err := st.ApplyEvent(ctx, store.Event{ID: "pid-" + id, Status: ev, At: t0.Add(time.Duration(j) * time.Second), Key: fmt.Sprint(ev, j)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Correlation != store.Matched {
				t.Errorf("%s: event %s: correlation %s", tt.name, ev, res.Correlation)
			}
		}
		r, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != tt.want {
			t.Errorf("%s: status %s, want %s; history %v", tt.name, r.Status, tt.want, statuses(r))
		}
	}
}

func TestReadImpliesDeliveredAndDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("a")
	st.Begin(ctx, "a", t0, store.Owner{})
	st.Submit(ctx, "a", "pid-a", t0)
	read := store.Event{ID: "wamid.1", GsID: "pid-a", Status: store.Read, At: t0.Add(3 * time.Second), Key: "read:3000"}
	for range 3 {
		if _, err := st.ApplyEvent(ctx, read); err != nil {
			t.Fatal(err)
		}
	}
	// A delivered that arrives after read is kept as history only.
	if _, err := st.ApplyEvent(ctx, store.Event{ID: "wamid.1", GsID: "pid-a", Status: store.Delivered, At: t0.Add(2 * time.Second), Key: "delivered:2000"}); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Get(ctx, "a")
	want := []string{"queued", "sending", "submitted", "delivered (implied by read)", "read", "delivered (after read, not applied)"}
	if diff := cmp.Diff(want, statuses(r)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if r.Attempts != 1 || r.ProviderMessageID == nil || *r.ProviderMessageID != "pid-a" {
		t.Errorf("attempts %d, provider id %v", r.Attempts, r.ProviderMessageID)
	}
}

func TestEarlyEventsAreParkedUntilTheIDIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("b")
	st.Begin(ctx, "b", t0, store.Owner{})
	// The webhooks overtake the worker: enqueued names the provider id and
	// reveals the WhatsApp id; sent names only the WhatsApp id.
	res, err := st.ApplyEvent(ctx, store.Event{ID: "wamid.b", Status: store.Sent, At: t0.Add(2 * time.Second), Key: "sent:2"})
	if err != nil || res.Correlation != store.Parked {
		t.Fatalf("sent: %+v %v", res, err)
	}
	res, err = st.ApplyEvent(ctx, store.Event{ID: "pid-b", WhatsAppID: "wamid.b", Status: store.Enqueued, At: t0.Add(time.Second), Key: "enqueued:1"})
	if err != nil || res.Correlation != store.Parked {
		t.Fatalf("enqueued: %+v %v", res, err)
	}
	if _, err := st.Submit(ctx, "b", "pid-b", t0); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Get(ctx, "b")
	if r.Status != store.Sent || r.WhatsAppMessageID == nil || *r.WhatsAppMessageID != "wamid.b" {
		t.Errorf("status %s wamid %v; history %v", r.Status, r.WhatsAppMessageID, statuses(r))
	}
}

func TestOwnPhaseEndsAreFinal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("c")
	if _, err := st.Cancel(ctx, "c", t0); err != nil {
		t.Fatal(err)
	}
	if _, o, _ := st.Begin(ctx, "c", t0, store.Owner{}); o != store.Refused {
		t.Errorf("begin after cancel: %s", o)
	}
	create("d")
	st.Begin(ctx, "d", t0, store.Owner{})
	if _, err := st.Cancel(ctx, "d", t0); !errors.Is(err, store.ErrRefused) {
		t.Errorf("cancel while sending: %v", err)
	}
	st.Move(ctx, "d", store.Change{Status: store.Dead, Error: &store.ErrorInfo{Class: "permanent", Code: "http_400", Message: "Invalid Destination"}})
	if o, _, _ := st.Move(ctx, "d", store.Change{Status: store.Retrying}); o != store.Refused {
		t.Errorf("retrying after dead: %s", o)
	}
	if err := st.Requeue(ctx, "d", t0, "retried by an operator"); err != nil {
		t.Fatal(err)
	}
	r, _ := st.Get(ctx, "d")
	want := []string{"queued", "sending", "dead", "queued (retried by an operator)"}
	if diff := cmp.Diff(want, statuses(r)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if r.LastError == nil || r.LastError.Code != "http_400" {
		t.Errorf("last error %+v", r.LastError)
	}
	if _, err := st.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get missing: %v", err)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _ := setup(t)
	rec := func(id, fp string) *store.Record {
		return &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "bulk", Status: store.Queued,
			CreatedAt: t0, UpdatedAt: t0, Queue: "bulk", IdempotencyKey: "k1", Fingerprint: fp}
	}
	res, err := st.Create(ctx, []*store.Record{rec("first", "fp1")})
	if err != nil || !res[0].Created {
		t.Fatal(err, res)
	}
	res, err = st.Create(ctx, []*store.Record{rec("second", "fp1"), rec("third", "fp2")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Created || res[0].Record.ID != "first" {
		t.Errorf("same key and body: %+v", res[0])
	}
	if !errors.Is(res[1].Err, store.ErrIdempotencyConflict) {
		t.Errorf("same key, other body: %v", res[1].Err)
	}
}

// A wait is no attempt, no history entry and no callback notice: only a
// real send moves the message to sending.
func TestAWaitIsNoAttemptNorStatusChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("h")
	r, err := st.Peek(ctx, "h")
	if err != nil || r == nil {
		t.Fatalf("peek: %v %v", r, err)
	}
	for i := range 50 {
		until := t0.Add(time.Duration(i+1) * time.Second)
		w := store.Waiting{Reason: store.WaitPairRate, Since: t0, Until: &until}
		if err := st.Wait(ctx, r, "h", w, until, until); err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	got, err := st.Get(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.Queued || got.Attempts != 0 || len(got.History) != 1 {
		t.Fatalf("after 50 waits: %s, %d attempts, history %v; want queued, 0, [queued]", got.Status, got.Attempts, got.History)
	}
	if got.Waiting == nil || got.Waiting.Reason != store.WaitPairRate || got.Waiting.Until == nil || !got.Waiting.Until.Equal(t0.Add(50*time.Second)) {
		t.Fatalf("waiting = %+v, want pair_rate until the last wait's end", got.Waiting)
	}
	st.Begin(ctx, "h", t0, store.Owner{})
	st.Move(ctx, "h", store.Change{Status: store.Retrying, Error: &store.ErrorInfo{Class: "retryable", Code: "http_500"}})
	st.Begin(ctx, "h", t0, store.Owner{})
	got, _ = st.Get(ctx, "h")
	if got.Attempts != 2 || got.Waiting != nil || got.PairSlot != nil {
		t.Errorf("attempts %d, waiting %+v, pair slot %v after two sends; want 2, none, none", got.Attempts, got.Waiting, got.PairSlot)
	}
	var statuses []store.Status
	for _, e := range got.History {
		statuses = append(statuses, e.Status)
	}
	if want := []store.Status{store.Queued, store.Sending, store.Retrying, store.Sending}; !slices.Equal(statuses, want) {
		t.Errorf("history %v, want %v", statuses, want)
	}
}

// A message ended without a send (refused by the policy, expired before
// its slot) made no attempt; one that ends after a send did.
func TestAnEndBeforeTheSendIsNoAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	for _, tt := range []struct {
		id     string
		change store.Change
		begun  bool
		want   int
	}{
		{"refused", store.Change{Status: store.Dead, Error: &store.ErrorInfo{Class: "policy", Code: "suppressed"}}, false, 0},
		{"expired", store.Change{Status: store.Expired}, false, 0},
		{"gave-up", store.Change{Status: store.Dead, Error: &store.ErrorInfo{Class: "retryable", Code: "http_500"}}, true, 1},
	} {
		create(tt.id)
		if tt.begun {
			if _, o, err := st.Begin(ctx, tt.id, t0, store.Owner{}); err != nil || o != store.Changed {
				t.Fatalf("%s: begin: %v %v", tt.id, o, err)
			}
		}
		if o, _, err := st.Move(ctx, tt.id, tt.change); err != nil || o != store.Changed {
			t.Fatalf("%s: move to %s: %v %v", tt.id, tt.change.Status, o, err)
		}
		r, err := st.Get(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != tt.change.Status || r.Attempts != tt.want {
			t.Errorf("%s: %s after %d attempts, want %s after %d", tt.id, r.Status, r.Attempts, tt.change.Status, tt.want)
		}
	}
}
