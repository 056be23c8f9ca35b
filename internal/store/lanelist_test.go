package store_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A listing of what waits for a reason also lists, from the lanes it is
// given, the tenant's bulk messages that may go and have no task yet:
// newest first across the lanes and the waits written on records, page by
// page. A lane's entries of another tenant's messages (its sender changed
// tenants while they waited) are neither listed nor named by a cursor,
// however many of them one page meets.
func TestAListingOfWaitsReadsTheLanesItIsGiven(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{ScanBudget: 4})
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	bulk := func(id, tenant, sender, batch string, at time.Time) *store.Record {
		r := newRecord(id, "96996999601", "bulk", batch, at)
		r.Tenant, r.Sender = tenant, sender
		return r
	}
	a1 := bulk("a1", "acme", "4915100000301", "spring", base.Add(1*time.Second))
	a2 := bulk("a2", "acme", "4915100000301", "", base.Add(2*time.Second))
	a3 := bulk("a3", "acme", "4915100000301", "spring", base.Add(3*time.Second))
	a4 := bulk("a4", "acme", "4915100000302", "spring", base.Add(4*time.Second))
	a5 := bulk("a5", "acme", "4915100000302", "", base.Add(5*time.Second))
	// In its lane with its wait written too, as for a moment when it
	// leaves its lane to wait: listed once.
	a6 := bulk("a6", "acme", "4915100000302", "", base.Add(6*time.Second))
	// Due in an hour: scheduled, not waiting.
	later := bulk("later", "acme", "4915100000301", "", base)
	sendAt := time.Now().Add(time.Hour)
	later.SendAt = &sendAt
	// Another tenant's, in the first sender's lane, all of one
	// millisecond, newer than every one of acme's.
	var foreign []*store.Record
	for i := range 9 {
		foreign = append(foreign, bulk(fmt.Sprintf("b%d", i), "bolt", "4915100000301", "", base.Add(10*time.Second)))
	}
	// A message of acme whose wait is written on its record.
	w1 := newRecord("w1", "96996999602", "transactional", "spring", base)
	w1.Tenant = "acme"
	laned := append([]*store.Record{a1, a2, a3, a4, a5, a6, later}, foreign...)
	createAll(t, st, append(slices.Clone(laned), w1)...)
	if err := st.AddToLanes(ctx, laned); err != nil {
		t.Fatal(err)
	}
	for id, since := range map[string]time.Time{"w1": base.Add(2500 * time.Millisecond), "a6": a6.CreatedAt} {
		r, err := st.Peek(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Wait(ctx, r, id, store.Waiting{Reason: store.WaitSenderRate, Since: since}, time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// a2 got its task: its lane entry is stale until the feeder drops it.
	if _, _, err := st.Begin(ctx, "a2", time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}

	lanes := []string{"4915100000301", "4915100000302"}
	walk := func(f store.MessageFilter, limit int) []string {
		t.Helper()
		var ids []string
		cursor := ""
		for range 20 {
			p, err := st.ListMessages(ctx, f, cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Records {
				ids = append(ids, r.ID)
			}
			raw, _ := base64.RawURLEncoding.DecodeString(p.Next)
			if _, id, _ := strings.Cut(string(raw), ":"); f.Tenant != "bolt" && strings.HasPrefix(id, "b") {
				t.Errorf("a cursor names bolt's message %s", id)
			}
			if p.Next == "" {
				return ids
			}
			cursor = p.Next
		}
		t.Fatalf("no end after 20 pages: %v", ids)
		return nil
	}
	for _, tt := range []struct {
		name  string
		f     store.MessageFilter
		limit int
		want  []string
	}{
		{"acme, pages of 2", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes}, 2, []string{"a6", "a5", "a4", "a3", "w1", "a1"}},
		{"acme, one page", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes}, 100, []string{"a6", "a5", "a4", "a3", "w1", "a1"}},
		{"a campaign of acme", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes, BatchID: "spring"}, 1, []string{"a4", "a3", "w1", "a1"}},
		{"acme, one lane", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes[1:]}, 2, []string{"a6", "a5", "a4", "w1"}},
		{"acme, no lane", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate}, 2, []string{"a6", "w1"}},
		{"acme, pages of 1", store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes}, 1, []string{"a6", "a5", "a4", "a3", "w1", "a1"}},
		{"bolt", store.MessageFilter{Tenant: "bolt", Waiting: store.WaitSenderRate, Lanes: lanes}, 5,
			[]string{"b8", "b7", "b6", "b5", "b4", "b3", "b2", "b1", "b0"}},
	} {
		if got := walk(tt.f, tt.limit); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	// A recipient narrows it as usual.
	f := store.MessageFilter{Tenant: "acme", Waiting: store.WaitSenderRate, Lanes: lanes, Destination: "96996999602"}
	if got := walk(f, 10); !slices.Equal(got, []string{"w1"}) {
		t.Errorf("acme to 96996999602: %v, want [w1]", got)
	}
}
