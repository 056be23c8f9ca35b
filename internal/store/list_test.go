package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// campaign creates a batch of n records "c00".."c<n-1>", all in the same
// millisecond, so that listings page through ties, plus one of another
// batch. Record i goes to 44207000<i mod 3>.
func campaign(tb testing.TB, st *store.Store, n int) {
	tb.Helper()
	at := time.Now().UTC().Truncate(time.Millisecond)
	var recs []*store.Record
	for i := range n {
		recs = append(recs, newRecord(fmt.Sprintf("c%02d", i), fmt.Sprintf("44207000%d", i%3), "bulk", "spring", at))
	}
	recs = append(recs, newRecord("other", "442070000", "bulk", "autumn", at))
	createAll(tb, st, recs...)
}

func allMessages(tb testing.TB, st *store.Store, f store.MessageFilter, limit int) []string {
	tb.Helper()
	var ids []string
	cursor := ""
	for range 1000 {
		p, err := st.ListMessages(context.Background(), f, cursor, limit)
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
		if cursor = p.Next; cursor == "" {
			return ids
		}
	}
	tb.Fatal("the listing does not end")
	return nil
}

func TestListMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	campaign(t, st, 7)
	if _, _, err := st.Begin(ctx, "c01", time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "c01", "pid-c01", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cancel(ctx, "c02", time.Now()); err != nil {
		t.Fatal(err)
	}

	// Ties are listed by id, descending.
	tests := []struct {
		name string
		f    store.MessageFilter
		want []string
	}{
		{"batch", store.MessageFilter{BatchID: "spring"}, []string{"c06", "c05", "c04", "c03", "c02", "c01", "c00"}},
		{"destination", store.MessageFilter{BatchID: "spring", Destination: "+442070001"}, []string{"c04", "c01"}},
		{"status", store.MessageFilter{BatchID: "spring", Statuses: []store.Status{store.Submitted, store.Canceled}}, []string{"c02", "c01"}},
		{"status and destination", store.MessageFilter{BatchID: "spring", Statuses: []store.Status{store.Queued}, Destination: "442070000"}, []string{"c06", "c03", "c00"}},
		{"other batch", store.MessageFilter{BatchID: "autumn"}, []string{"other"}},
		{"unknown batch", store.MessageFilter{BatchID: "winter"}, nil},
	}
	for _, tt := range tests {
		for _, limit := range []int{1, 3, 100} {
			if diff := cmp.Diff(tt.want, allMessages(t, st, tt.f, limit)); diff != "" {
				t.Errorf("%s, limit %d (-want +got):\n%s", tt.name, limit, diff)
			}
		}
	}
	if _, err := st.ListMessages(ctx, store.MessageFilter{}, "", 10); !errors.Is(err, store.ErrBatchRequired) {
		t.Errorf("listing without a batch: %v, want ErrBatchRequired", err)
	}
	if _, err := st.ListMessages(ctx, store.MessageFilter{BatchID: "spring"}, "Zm9v", 10); !errors.Is(err, store.ErrInvalidCursor) {
		t.Errorf("bad cursor: %v, want ErrInvalidCursor", err)
	}
}

func TestBatchCountsAndCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	campaign(t, st, 6)
	// c00 is being sent, c01 submitted, c02 dead; c03..c05 wait, one of
	// them for a retry.
	for _, id := range []string{"c00", "c01"} {
		if _, _, err := st.Begin(ctx, id, time.Now(), store.Owner{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Submit(ctx, "c01", "pid-c01", time.Now()); err != nil {
		t.Fatal(err)
	}
	kill(t, st, "c02", "permanent", "http_400", time.Now())
	if _, _, err := st.Move(ctx, "c05", store.Change{Status: store.Retrying}); err != nil {
		t.Fatal(err)
	}

	c, err := st.BatchCounts(ctx, "spring")
	if err != nil {
		t.Fatal(err)
	}
	counts, total := c.Status, c.Total
	want := map[store.Status]int{
		store.Scheduled: 0, store.Queued: 2, store.Sending: 1, store.Retrying: 1, store.Submitted: 1, store.Dead: 1,
		store.Expired: 0, store.Canceled: 0, store.Enqueued: 0, store.Sent: 0, store.Delivered: 0, store.Read: 0, store.Failed: 0,
	}
	if diff := cmp.Diff(want, counts); diff != "" || total != 6 {
		t.Errorf("counts (-want +got):\n%s\ntotal %d, want 6", diff, total)
	}

	canceled, tooLate, err := st.CancelBatch(ctx, "spring", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if canceled != 3 || tooLate != 3 {
		t.Errorf("canceled %d, too late %d; want 3 and 3", canceled, tooLate)
	}
	got := map[string]store.Status{}
	for _, id := range []string{"c00", "c01", "c02", "c03", "c04", "c05", "other"} {
		r, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got[id] = r.Status
	}
	if diff := cmp.Diff(map[string]store.Status{
		"c00": store.Sending, "c01": store.Submitted, "c02": store.Dead,
		"c03": store.Canceled, "c04": store.Canceled, "c05": store.Canceled, "other": store.Queued,
	}, got); diff != "" {
		t.Errorf("statuses after the cancel (-want +got):\n%s", diff)
	}
	// Again: nothing left to cancel.
	if canceled, tooLate, err = st.CancelBatch(ctx, "spring", time.Now()); err != nil || canceled != 0 || tooLate != 6 {
		t.Errorf("second cancel: %d %d %v; want 0 canceled, 6 too late", canceled, tooLate, err)
	}

	// Expired records are left out.
	if err := rdb.Del(ctx, "chatq:m:{c03}").Err(); err != nil {
		t.Fatal(err)
	}
	if c, err = st.BatchCounts(ctx, "spring"); err != nil || c.Total != 5 {
		t.Errorf("total %d %v after a record expired, want 5", c.Total, err)
	}
	if c, err = st.BatchCounts(ctx, "winter"); err != nil || c.Total != 0 {
		t.Errorf("unknown batch: total %d %v", c.Total, err)
	}
}
