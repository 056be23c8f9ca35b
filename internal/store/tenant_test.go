package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A batch id and an idempotency key are a tenant's own: two tenants using
// the same ones neither see nor touch each other's messages.
func TestTenantsHaveTheirOwnBatchesAndKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := store.New(redistest.Start(t).Client(t), store.Config{})
	at := time.Now().UTC().Truncate(time.Millisecond)
	of := func(id, tenant string) *store.Record {
		r := newRecord(id, "442070000", "bulk", "spring", at)
		r.Tenant, r.Sender, r.IdempotencyKey, r.Fingerprint = tenant, "4915100000001", "order-1", id
		return r
	}
	createAll(t, st, of("a1", "acme"), of("b1", "bolt"), newRecord("d1", "442070000", "bulk", "spring", at))

	for tenant, want := range map[string][]string{"acme": {"a1"}, "bolt": {"b1"}, "": {"d1"}, store.DefaultTenant: {"d1"}} {
		if diff := cmp.Diff(want, allMessages(t, st, store.MessageFilter{Tenant: tenant, BatchID: "spring"}, 10)); diff != "" {
			t.Errorf("batch spring of %q (-want +got):\n%s", tenant, diff)
		}
	}
	if c, err := st.BatchCountsOf(ctx, "acme", "spring"); err != nil || c.Total != 1 {
		t.Errorf("counts of acme's batch: %d %v, want 1", c.Total, err)
	}
	if canceled, _, err := st.CancelBatchOf(ctx, "acme", "spring", time.Now()); err != nil || canceled != 1 {
		t.Errorf("cancel acme's batch: %d %v, want 1", canceled, err)
	}
	for id, want := range map[string]store.Status{"a1": store.Canceled, "b1": store.Queued, "d1": store.Queued} {
		if r, err := st.Get(ctx, id); err != nil || r.Status != want {
			t.Errorf("%s after acme's cancel: %v %v, want %s", id, r.Status, err, want)
		}
	}
	r, err := st.Get(ctx, "b1")
	if err != nil || r.Tenant != "bolt" || r.Sender != "4915100000001" {
		t.Errorf("b1: tenant %q sender %q %v", r.Tenant, r.Sender, err)
	}
	if r, _ := st.Get(ctx, "d1"); r.Tenant != store.DefaultTenant {
		t.Errorf("a record without a tenant reads as tenant %q, want %q", r.Tenant, store.DefaultTenant)
	}

	// The same key again within one tenant is the same message.
	res, err := st.Create(ctx, []*store.Record{of("a2", "acme")})
	if err != nil || !errors.Is(res[0].Err, store.ErrIdempotencyConflict) {
		t.Errorf("acme's key with another message: %+v %v, want a conflict with acme's own", res, err)
	}

	// Dead letters filter by tenant.
	kill(t, st, "b1", "permanent", "1001", at)
	kill(t, st, "d1", "permanent", "1001", at)
	p, err := st.ListDead(ctx, store.DeadFilter{Tenant: "bolt"}, "", 10)
	if err != nil || len(p.DeadLetters) != 1 || p.DeadLetters[0].ID != "b1" {
		t.Errorf("bolt's dead letters: %+v %v, want b1 alone", p.DeadLetters, err)
	}
}
