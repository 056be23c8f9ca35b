package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

func TestListMessagesOfARecipient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	campaign(t, st, 7)
	at := time.Now().UTC().Truncate(time.Millisecond).Add(time.Second)
	createAll(t, st, newRecord("solo", "+442070001", "transactional", "", at))
	if _, err := st.Cancel(ctx, "c04", time.Now()); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		f    store.MessageFilter
		want []string
	}{
		// Across campaigns and outside any, newest first; a leading +
		// does not matter, neither in the record nor in the search.
		{"recipient", store.MessageFilter{Destination: "442070001"}, []string{"solo", "c04", "c01"}},
		{"recipient with +", store.MessageFilter{Destination: "+442070001"}, []string{"solo", "c04", "c01"}},
		{"recipient and status", store.MessageFilter{Destination: "442070001", Statuses: []store.Status{store.Canceled}}, []string{"c04"}},
		{"recipient of two batches", store.MessageFilter{Destination: "442070000"}, []string{"other", "c06", "c03", "c00"}},
		{"unknown recipient", store.MessageFilter{Destination: "442079999"}, nil},
	}
	for _, tt := range tests {
		for _, limit := range []int{1, 2, 100} {
			if diff := cmp.Diff(tt.want, allMessages(t, st, tt.f, limit)); diff != "" {
				t.Errorf("%s, limit %d (-want +got):\n%s", tt.name, limit, diff)
			}
		}
	}
}

func TestListBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	createAll(t, st, newRecord("a1", "442070001", "bulk", "autumn", at), newRecord("s1", "442070002", "bulk", "spring", at.Add(time.Second)))
	createAll(t, st, newRecord("w1", "442070003", "bulk", "winter", at.Add(2*time.Second)), newRecord("n1", "442070004", "bulk", "", at.Add(3*time.Second)))
	// A later message moves its campaign to the top.
	createAll(t, st, newRecord("a2", "442070005", "bulk", "autumn", at.Add(4*time.Second)))

	all := func(limit int) []store.Batch {
		var out []store.Batch
		cursor := ""
		for range 100 {
			p, err := st.ListBatches(ctx, store.DefaultTenant, cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p.Batches...)
			if cursor = p.Next; cursor == "" {
				return out
			}
		}
		t.Fatal("the listing does not end")
		return nil
	}
	want := []store.Batch{
		{ID: "autumn", LastCreatedAt: at.Add(4 * time.Second)},
		{ID: "winter", LastCreatedAt: at.Add(2 * time.Second)},
		{ID: "spring", LastCreatedAt: at.Add(time.Second)},
	}
	for _, limit := range []int{1, 2, 10} {
		if diff := cmp.Diff(want, all(limit)); diff != "" {
			t.Errorf("limit %d (-want +got):\n%s", limit, diff)
		}
	}
	// A campaign whose records are all gone leaves the listing.
	if err := rdb.Del(ctx, "chatq:batch:{winter}").Err(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Batch{want[0], want[2]}, all(1)); diff != "" {
		t.Errorf("after winter expired (-want +got):\n%s", diff)
	}
	if _, err := st.ListBatches(ctx, store.DefaultTenant, "Zm9v", 10); !errors.Is(err, store.ErrInvalidCursor) {
		t.Errorf("bad cursor: %v, want ErrInvalidCursor", err)
	}
}

// tally is a store.Counter that remembers what it was told.
type tally struct {
	mu sync.Mutex
	n  map[store.Status]int
}

func (c *tally) StatusChanged(st store.Status, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[st] += n
}

func TestCounterHearsEveryStatusChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &tally{n: map[store.Status]int{}}
	st := store.New(redistest.Start(t).Client(t), store.Config{Counter: c})
	at := time.Now()
	createAll(t, st, newRecord("m1", "442070001", "bulk", "", at), newRecord("m2", "442070002", "bulk", "", at), newRecord("m3", "442070003", "bulk", "", at))
	if _, _, err := st.Begin(ctx, "m1", at, store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Submit(ctx, "m1", "pid-m1", at); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []store.Event{
		{ID: "pid-m1", Status: store.Delivered, At: at, Key: "d"},
		{ID: "pid-m1", Status: store.Delivered, At: at, Key: "d2"}, // repeated: no change
		{ID: "pid-m1", Status: store.Read, At: at, Key: "r"},
	} {
		if _, err := st.ApplyEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Cancel(ctx, "m2", at); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cancel(ctx, "m1", at); !errors.Is(err, store.ErrRefused) {
		t.Fatalf("cancel after read: %v, want ErrRefused", err)
	}
	kill(t, st, "m3", "permanent", "http_400", at)
	want := map[store.Status]int{store.Queued: 3, store.Sending: 1, store.Submitted: 1, store.Delivered: 1, store.Read: 1, store.Canceled: 1, store.Dead: 1}
	if diff := cmp.Diff(want, c.n); diff != "" {
		t.Errorf("counted (-want +got):\n%s", diff)
	}
}

// The recipient and campaign indexes do not keep the entries of expired
// records for ever, however often a recipient gets messages.
func TestIndexesForgetExpiredRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{TTL: time.Hour})
	now := time.Now().UTC().Truncate(time.Millisecond)
	// Index entries older than the TTL, as a recipient written to every
	// day for months keeps them.
	createAll(t, st, newRecord("old", "442070001", "bulk", "winter", now.Add(-2*time.Hour)))
	for i := range 64 {
		createAll(t, st, newRecord(fmt.Sprintf("m%02d", i), "442070001", "bulk", "spring", now))
	}
	if err := rdb.ZScore(ctx, "chatq:to:{442070001}", "old").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the recipient's index still holds an entry past the TTL: %v", err)
	}
	if err := rdb.ZScore(ctx, "chatq:batches", "winter").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("the campaign index still holds a campaign past the TTL: %v", err)
	}
	if n := rdb.ZCard(ctx, "chatq:to:{442070001}").Val(); n != 64 {
		t.Errorf("the recipient's index holds %d entries, want the 64 live ones", n)
	}
}
