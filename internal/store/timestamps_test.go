package store_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// stamp is the one timestamp form of chatq's JSON: RFC 3339, UTC,
// milliseconds.
var stamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// timestamps collects every string under a key named like a timestamp.
func timestamps(tb testing.TB, v any, path string, out map[string]string) {
	tb.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p := path + "." + k
			if s, ok := x.(string); ok && (k == "at" || strings.HasSuffix(k, "_at")) {
				out[p] = s
			}
			timestamps(tb, x, p, out)
		}
	case []any:
		for i, x := range v {
			timestamps(tb, x, path+"["+strconv.Itoa(i)+"]", out)
		}
	}
}

// wantStamps fails unless every timestamp of the JSON b has the one form.
func wantStamps(tb testing.TB, b []byte, min int) {
	tb.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatal(err)
	}
	got := map[string]string{}
	timestamps(tb, v, "", got)
	if len(got) < min {
		tb.Errorf("found %d timestamps in %s, want at least %d", len(got), b, min)
	}
	for p, s := range got {
		if !stamp.MatchString(s) {
			tb.Errorf("%s = %q, want RFC 3339 in UTC with milliseconds", p, s)
		}
	}
}

// A record's history once mixed whole seconds, milliseconds and
// nanoseconds, and times kept the zone they came in; every timestamp of a
// record now reads alike.
func TestRecordTimestampsAreUTCMilliseconds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, create := setup(t)
	create("ts1")
	plus2 := time.FixedZone("+02", 2*3600)
	if _, _, err := st.Begin(ctx, "ts1", t0.Add(1500*time.Microsecond), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Move(ctx, "ts1", store.Change{Status: store.Retrying, At: t0.Add(2*time.Second + 123456789).In(plus2), Note: "throttled"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Begin(ctx, "ts1", t0.Add(3*time.Second), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "ts1", "pid-ts1", t0.Add(4*time.Second+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyEvent(ctx, store.Event{ID: "pid-ts1", Status: store.Failed, At: t0.Add(5 * time.Second).In(plus2), Key: "failed",
		Error: &store.ErrorInfo{Class: "permanent", Code: "131026", Message: "undeliverable", At: t0.Add(5*time.Second + 7).In(plus2)}}); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, "ts1")
	if err != nil {
		t.Fatal(err)
	}
	sendAt, expiresAt := t0.In(plus2), t0.Add(time.Minute+999999)
	got.SendAt, got.ExpiresAt = &sendAt, &expiresAt
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	// created_at, updated_at, send_at, expires_at, last_error.at and six
	// history entries.
	wantStamps(t, b, 11)
	b, err = json.Marshal(store.DeadLetter{Record: got, DiedAt: t0.Add(time.Nanosecond)})
	if err != nil {
		t.Fatal(err)
	}
	wantStamps(t, b, 12)
}

// Records written before timestamps had one form still read, and answer
// in the one form.
func TestStoredHistoryOfAnyPrecisionStillReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st := store.New(rdb, store.Config{})
	r := &store.Record{
		ID: "old1", Destination: "96996999699", Type: "text", Priority: "transactional",
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
		CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional",
	}
	if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, "*old1*").Result()
	if err != nil {
		t.Fatal(err)
	}
	old := `[{"status":"queued","at":"2026-11-25T10:00:00Z"},{"status":"sending","at":"2026-11-25T10:00:01.5Z"},` +
		`{"status":"retrying","at":"2026-11-25T12:00:02.123456789+02:00","note":"throttled"}]`
	n := 0
	for _, k := range keys {
		if rdb.Type(ctx, k).Val() == "hash" && rdb.HExists(ctx, k, "h").Val() {
			rdb.HSet(ctx, k, "h", old, "e", `{"class":"retryable","code":"http_500","message":"boom","at":"2026-11-25T10:00:01.5Z"}`)
			n++
		}
	}
	if n != 1 {
		t.Fatalf("found %d record hashes among %v", n, keys)
	}
	got, err := st.Get(ctx, "old1")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 25, 10, 0, 2, 123456789, time.UTC); !got.History[2].At.Equal(want) {
		t.Errorf("history[2].at = %v, want %v", got.History[2].At, want)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	wantStamps(t, b, 6)
}
