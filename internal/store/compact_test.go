package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// TestADeliveredRecordStaysCompact follows a message through its whole
// life (take-up, acceptance, the four status webhooks with their pricing)
// and checks that Redis keeps its record in the compact encoding of a small
// hash (listpack) to the end. A record lives CHATQ_RECORD_TTL (30 days)
// after its last change, so the records of delivered messages are most of
// what a deployment's Redis holds: a value over 64 bytes (Redis's
// hash-max-listpack-value) turns the whole hash into a hash table, which
// cost a delivered record about 1,700 bytes instead of about 700. The
// history and the pricing object are kept short for that, and read back
// unchanged.
func TestADeliveredRecordStaysCompact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	r := newRecord("life1", "4915112345679", "bulk", "", at)
	r.Payload = []byte(`{"type":"text","message":"Hi Maria, your order 0048213 has shipped and arrives on Thursday. Track it in the app."}`)
	createAll(t, st, r)
	rec, err := st.Peek(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := st.Take(ctx, rec, at.Add(10*time.Millisecond), store.Owner{Worker: "w1", Task: r.ID}); err != nil || o != store.Changed {
		t.Fatalf("take: %v %s", err, o)
	}
	if _, err := st.Accept(ctx, rec, "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", at.Add(250*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	pricing := &store.Pricing{Billable: true, PricingModel: "PMP", Category: "marketing", Type: "regular"}
	wamid := "wamid.HBgNNDkxNTExMjM0NTY3ORUCABEYEjdBMkQ0RjZCOEE5QzFFM0I1RAA="
	events := []store.Event{
		{ID: "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", WhatsAppID: wamid, Status: store.Enqueued, At: at.Add(400 * time.Millisecond), Key: "e"},
		{ID: wamid, GsID: "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", Status: store.Sent, At: at.Add(2 * time.Second), Key: "s", Pricing: pricing},
		{ID: wamid, GsID: "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", Status: store.Delivered, At: at.Add(3 * time.Second), Key: "d", Pricing: pricing},
		{ID: wamid, Status: store.Read, At: at.Add(95 * time.Minute), Key: "r"},
	}
	for _, ev := range events {
		res, err := st.ApplyEvent(ctx, ev)
		if err != nil || res.Outcome != store.Changed {
			t.Fatalf("event %s: %v %+v", ev.Status, err, res)
		}
	}
	key := "chatq:m:{" + r.ID + "}"
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Errorf("a read message's record is a %s (%d bytes), want a listpack", enc, rdb.MemoryUsage(ctx, key).Val())
	}
	t.Logf("a read message's record: %d bytes", rdb.MemoryUsage(ctx, key).Val())
	got, err := st.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.HistoryEntry{
		{Status: store.Queued, At: at},
		{Status: store.Sending, At: at.Add(10 * time.Millisecond)},
		{Status: store.Submitted, At: at.Add(250 * time.Millisecond)},
		{Status: store.Enqueued, At: at.Add(400 * time.Millisecond)},
		{Status: store.Sent, At: at.Add(2 * time.Second)},
		{Status: store.Delivered, At: at.Add(3 * time.Second)},
		{Status: store.Read, At: at.Add(95 * time.Minute)},
	}
	if d := cmp.Diff(want, got.History); d != "" {
		t.Errorf("history (-want +got):\n%s", d)
	}
	if d := cmp.Diff(pricing, got.Pricing); d != "" {
		t.Errorf("pricing (-want +got):\n%s", d)
	}
}

// TestTheHistoryKeepsEveryNoteAndTime checks what the short history must
// keep besides statuses: notes of any text (quotes, backslashes, other
// scripts, the separators of the form itself), times before the record's
// creation (a provider's clock behind chatq's), an entry implied by a later
// one, and repeats, in order.
func TestTheHistoryKeepsEveryNoteAndTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	r := newRecord("notes1", "4915112345670", "transactional", "", at)
	createAll(t, st, r)
	if _, _, err := st.Begin(ctx, r.ID, at.Add(time.Millisecond), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, r.ID, "pid-notes1", at.Add(2*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	// A note that looks like entries of the short form, a delivery among
	// them, is a note: the read that follows still implies the delivery.
	if err := st.Note(ctx, r.ID, at.Add(3*time.Millisecond), `V0 "V1\" \\V2`); err != nil {
		t.Fatal(err)
	}
	// A read with no delivered before it implies the delivery; a sent
	// stamped before the message was created comes late and is kept as a
	// note; a repeated read is kept too.
	for _, ev := range []store.Event{
		{ID: "pid-notes1", Status: store.Read, At: at.Add(36 * time.Hour), Key: "r1"},
		{ID: "pid-notes1", Status: store.Sent, At: at.Add(-3 * time.Second), Key: "s1"},
		{ID: "pid-notes1", Status: store.Read, At: at.Add(37 * time.Hour), Key: "r2"},
	} {
		if _, err := st.ApplyEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	notes := []string{`say "hi" \ to them`, `Q0"V1`, "ünïcödé, 日本語, <b>&amp;</b>", `\"`, "line\nbreak\ttab"}
	for i, n := range notes {
		if err := st.Note(ctx, r.ID, at.Add(time.Duration(40+i)*time.Hour), n); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.HistoryEntry{
		{Status: store.Queued, At: at},
		{Status: store.Sending, At: at.Add(time.Millisecond)},
		{Status: store.Submitted, At: at.Add(2 * time.Millisecond)},
		{Status: store.Submitted, At: at.Add(3 * time.Millisecond), Note: `V0 "V1\" \\V2`},
		{Status: store.Delivered, At: at.Add(36 * time.Hour), Note: "implied by read"},
		{Status: store.Read, At: at.Add(36 * time.Hour)},
		{Status: store.Sent, At: at.Add(-3 * time.Second), Note: "after read, not applied"},
		{Status: store.Read, At: at.Add(37 * time.Hour), Note: "repeated"},
	}
	for i, n := range notes {
		want = append(want, store.HistoryEntry{Status: store.Read, At: at.Add(time.Duration(40+i) * time.Hour), Note: n})
	}
	if d := cmp.Diff(want, got.History); d != "" {
		t.Errorf("history (-want +got):\n%s", d)
	}
	if strings.Contains(got.History[len(got.History)-1].Note, "\\t") {
		t.Errorf("a note came back escaped: %q", got.History[len(got.History)-1].Note)
	}
}

// A record written before histories were short keeps its JSON history and
// pricing, and its later changes append to them in JSON: an entry implied
// by a read is added unless the history names the delivery already.
func TestARecordOfJSONHistoryGrowsInJSON(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, id := range []string{"old1", "old2"} {
		r := newRecord(id, "4915112345671", "bulk", "", at)
		createAll(t, st, r)
		if _, _, err := st.Begin(ctx, id, at, store.Owner{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Submit(ctx, id, "pid-"+id, at); err != nil {
			t.Fatal(err)
		}
	}
	old := `[{"status":"queued","at":"2026-11-25T10:00:00.000Z"},{"status":"sending","at":"2026-11-25T10:00:00.000Z"},` +
		`{"status":"submitted","at":"2026-11-25T10:00:00.000Z","note":"say \"hi\""}]`
	rdb.HSet(ctx, "chatq:m:{old1}", "h", old, "pr", `{"billable":false,"pricing_model":"PMP","category":"service","type":"free_customer_service"}`)
	rdb.HSet(ctx, "chatq:m:{old2}", "h", strings.Replace(old, `]`, `,{"status":"delivered","at":"2026-11-25T10:00:01.000Z"}]`, 1))
	for _, id := range []string{"old1", "old2"} {
		if _, err := st.ApplyEvent(ctx, store.Event{ID: "pid-" + id, Status: store.Read, At: at.Add(time.Hour), Key: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Get(ctx, "old1")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.HistoryEntry{
		{Status: store.Queued, At: at}, {Status: store.Sending, At: at}, {Status: store.Submitted, At: at, Note: `say "hi"`},
		{Status: store.Delivered, At: at.Add(time.Hour), Note: "implied by read"}, {Status: store.Read, At: at.Add(time.Hour)},
	}
	if d := cmp.Diff(want, got.History); d != "" {
		t.Errorf("history (-want +got):\n%s", d)
	}
	if got.Pricing == nil || got.Pricing.Type != "free_customer_service" {
		t.Errorf("JSON pricing read as %+v", got.Pricing)
	}
	raw := rdb.HGet(ctx, "chatq:m:{old1}", "h").Val()
	if !strings.HasPrefix(raw, `[{"status":"queued"`) || !strings.HasSuffix(raw, `{"status":"read","at":"2026-11-25T11:00:00.000Z"}]`) {
		t.Errorf("JSON history written as %s", raw)
	}
	other, err := st.Get(ctx, "old2")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(other.History); n != 5 || other.History[4].Status != store.Read || other.History[3].Note != "" {
		t.Errorf("a JSON history that names the delivery got %+v", other.History)
	}
}

// A callback URL and metadata longer than a listpack's 64-byte values are
// kept in parts, so that they do not turn the record into a hash table
// either; they read back whole, from the record and from its callback
// notices. Longer than eight parts, they are kept whole.
func TestLongCallbackURLAndMetadataKeepTheRecordCompact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	cb := "https://hooks.example.com/chatq/status?tenant=acme-industries&token=" + strings.Repeat("f0e1d2c3", 10)
	meta := map[string]string{"order": "0048213", "customer": "cus_8Jd02kLq9", "campaign": "winter-sale-2026", "note": "ünïcödé " + strings.Repeat("x", 70)}
	r := newRecord("cb1", "4915112345672", "transactional", "", at)
	r.CallbackURL, r.Metadata = cb, meta
	big := newRecord("cb2", "4915112345673", "transactional", "", at)
	big.Metadata = map[string]string{"blob": strings.Repeat("y", 600)}
	createAll(t, st, r, big)
	key := "chatq:m:{" + r.ID + "}"
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Errorf("a queued record with a %d-byte callback URL is a %s", len(cb), enc)
	}
	if _, _, err := st.Begin(ctx, r.ID, at, store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, r.ID, "pid-cb1", at); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyEvent(ctx, store.Event{ID: "pid-cb1", Status: store.Delivered, At: at.Add(time.Second), Key: "d"}); err != nil {
		t.Fatal(err)
	}
	if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
		t.Errorf("a delivered record with a %d-byte callback URL is a %s", len(cb), enc)
	}
	for _, want := range []*store.Record{r, big} {
		got, err := st.Get(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.CallbackURL != want.CallbackURL || !cmp.Equal(got.Metadata, want.Metadata) {
			t.Errorf("%s read back callback %q, metadata %v", want.ID, got.CallbackURL, got.Metadata)
		}
	}
	n, err := st.NextNotice(ctx, r.ID)
	if err != nil || n == nil || n.Record == nil {
		t.Fatalf("notice: %+v, %v", n, err)
	}
	if n.Record.CallbackURL != cb || !cmp.Equal(n.Record.Metadata, meta) {
		t.Errorf("the notice's record has callback %q, metadata %v", n.Record.CallbackURL, n.Record.Metadata)
	}
}

// A failed message's last error (its JSON, the upstream's words inside)
// is kept in parts too, so that the record of a message that failed or was
// retried keeps the compact encoding; a later, shorter error leaves none
// of the earlier one's parts behind.
func TestAFailedRecordStaysCompact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	r := newRecord("failed1", "4915112345672", "bulk", "", at)
	createAll(t, st, r)
	key := "chatq:m:{" + r.ID + "}"
	fail := func(e *store.ErrorInfo, to store.Status) {
		t.Helper()
		if _, _, err := st.Begin(ctx, r.ID, e.At.Add(-time.Millisecond), store.Owner{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Move(ctx, r.ID, store.Change{Status: to, At: e.At, Failed: true, Error: e}); err != nil {
			t.Fatal(err)
		}
		if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
			t.Errorf("the record after a %d-byte error is a %s (%d bytes), want a listpack", len(e.Message), enc, rdb.MemoryUsage(ctx, key).Val())
		}
		got, err := st.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(e, got.LastError); d != "" {
			t.Errorf("last error (-want +got):\n%s", d)
		}
	}
	long := &store.ErrorInfo{Class: "transient", Code: "131000", At: at.Add(time.Second),
		Message: `Something went wrong: "the recipient's phone could not be reached" ` + strings.Repeat("(retry later) ", 10)}
	fail(long, store.Retrying)
	t.Logf("the record of a retried message: %d bytes", rdb.MemoryUsage(ctx, key).Val())
	short := &store.ErrorInfo{Class: "permanent", Code: "http_400", Message: "Invalid Destination", At: at.Add(2 * time.Second)}
	fail(short, store.Dead)
	fields, err := rdb.HKeys(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, f := range fields {
		if strings.HasPrefix(f, "e") && f != "e" {
			parts = append(parts, f)
		}
	}
	if len(parts) != 1 || parts[0] != "e1" {
		t.Errorf("after a 2-part error the record holds the error parts e, %v; want e, e1", parts)
	}
}
