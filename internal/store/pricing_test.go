package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// TestPricingIsKeptAndCountedOnce follows a campaign's status webhooks:
// the record keeps the last pricing object reported, and the campaign
// counts each message billable once, under the category of its first
// billable pricing, whatever repeats, arrives out of order or waits parked.
// The webhook's receiver counts what its events made billable from their
// results; what a send's acceptance applied from the parking lot, the store
// counts itself (Config.Billed), so that the metric misses none.
func TestPricingIsKeptAndCountedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var billed []string
	st := store.New(redistest.Start(t).Client(t), store.Config{Billed: func(c string) { billed = append(billed, c) }})
	at := time.Now().UTC().Truncate(time.Millisecond)
	var recs []*store.Record
	for i := range 5 {
		r := newRecord(fmt.Sprintf("p%d", i), fmt.Sprintf("4420700010%d", i), "bulk", "pricing", at)
		cat := []string{"marketing", "marketing", "utility", "service", "authentication"}[i]
		r.Category = &cat
		recs = append(recs, r)
	}
	createAll(t, st, recs...)
	for _, r := range recs {
		if _, _, err := st.Begin(ctx, r.ID, at, store.Owner{}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Submit(ctx, r.ID, "pid-"+r.ID, at); err != nil {
			t.Fatal(err)
		}
	}
	marketing := &store.Pricing{Billable: true, PricingModel: "PMP", Category: "marketing", Type: "regular"}
	utility := &store.Pricing{Billable: true, PricingModel: "PMP", Category: "utility", Type: "regular"}
	free := &store.Pricing{Billable: false, PricingModel: "PMP", Category: "service", Type: "free_customer_service"}
	type step struct {
		id      string
		status  store.Status
		pricing *store.Pricing
		billed  string // the Billable the event's result must name
	}
	steps := []step{
		{"p0", store.Sent, marketing, "marketing"},
		{"p0", store.Delivered, marketing, ""},
		{"p0", store.Delivered, marketing, ""}, // a replay
		{"p1", store.Delivered, marketing, "marketing"},
		{"p1", store.Sent, marketing, ""}, // late, out of order
		{"p2", store.Sent, utility, "utility"},
		{"p3", store.Sent, free, ""},
		{"p3", store.Delivered, free, ""},
		{"p4", store.Sent, nil, ""},
	}
	for i, s := range steps {
		key := fmt.Sprintf("%s:%d", s.status, i)
		if i == 2 {
			key = "delivered:1"
		}
		res, err := st.ApplyEvent(ctx, store.Event{ID: "pid-" + s.id, Status: s.status, At: at.Add(time.Duration(i) * time.Second), Key: key, Pricing: s.pricing})
		if err != nil {
			t.Fatal(err)
		}
		if res.Billable != s.billed {
			t.Errorf("step %d (%s %s): billable %q, want %q", i, s.id, s.status, res.Billable, s.billed)
		}
	}
	// An early event waits parked with its pricing, and is counted when it
	// is released.
	late := newRecord("p5", "442070001105", "bulk", "pricing", at)
	createAll(t, st, late)
	if _, _, err := st.Begin(ctx, "p5", at, store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if res, err := st.ApplyEvent(ctx, store.Event{ID: "wamid.p5", GsID: "pid-p5", Status: store.Sent, At: at, Key: "sent:p5", Pricing: utility}); err != nil || res.Correlation != store.Parked {
		t.Fatalf("early event: %+v %v", res, err)
	}
	if len(billed) != 0 {
		t.Fatalf("billed %v before the acceptance: the receiver counts what its events bill", billed)
	}
	if _, err := st.Submit(ctx, "p5", "pid-p5", at); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"utility"}, billed); diff != "" {
		t.Errorf("billed by the acceptance that applied the parked event (-want +got):\n%s", diff)
	}

	got := map[string]*store.Pricing{}
	for _, id := range []string{"p0", "p1", "p2", "p3", "p4", "p5"} {
		r, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got[id] = r.Pricing
	}
	want := map[string]*store.Pricing{"p0": marketing, "p1": marketing, "p2": utility, "p3": free, "p4": nil, "p5": utility}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pricing of the records (-want +got):\n%s", diff)
	}
	r, _ := st.Get(ctx, "p0")
	if r.Category == nil || *r.Category != "marketing" {
		t.Errorf("category %v, want marketing", r.Category)
	}
	c, err := st.BatchCounts(ctx, "pricing")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"marketing": 2, "utility": 2, "authentication": 0}, c.Billable); diff != "" {
		t.Errorf("billable counts (-want +got):\n%s", diff)
	}
	if c.Total != 6 {
		t.Errorf("total %d, want 6", c.Total)
	}
}
