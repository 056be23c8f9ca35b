package store_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

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

// members lists a sorted set's members, lowest score first.
func members(tb testing.TB, rdb redis.UniversalClient, key string) []string {
	tb.Helper()
	ids, err := rdb.ZRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// A tenant's recipients and dead letters are indexed apart from every
// other tenant's, tenant default's under the keys of before tenants: a
// tenant's listing reads its own index alone, and a retry or a deletion
// takes the dead letter off its tenant's index.
func TestTenantsHaveTheirOwnIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{ScanBudget: 2, TTL: time.Hour})
	at := time.Now().UTC().Truncate(time.Millisecond)
	of := func(id, tenant string, created time.Time) *store.Record {
		r := newRecord(id, "+442070000", "bulk", "", created)
		r.Tenant = tenant
		return r
	}
	recs := []*store.Record{of("a1", "acme", at.Add(-time.Minute)), newRecord("d1", "442070000", "bulk", "", at.Add(-time.Minute))}
	var bolts []string
	for i := range 6 {
		id := fmt.Sprintf("b%d", i)
		recs = append(recs, of(id, "bolt", at.Add(time.Duration(i)*time.Second)))
		bolts = append(bolts, id)
	}
	createAll(t, st, recs...)
	for key, want := range map[string][]string{
		"chatq:to:{442070000}":      {"d1"},
		"chatq:to:acme:{442070000}": {"a1"},
		"chatq:to:bolt:{442070000}": bolts,
	} {
		if diff := cmp.Diff(want, members(t, rdb, key)); diff != "" {
			t.Errorf("recipient index %s (-want +got):\n%s", key, diff)
		}
	}
	for tenant, want := range map[string][]string{"acme": {"a1"}, "": {"d1"}, store.DefaultTenant: {"d1"}} {
		p, err := st.ListMessages(ctx, store.MessageFilter{Tenant: tenant, Destination: "442070000"}, "", 1)
		if err != nil || p.Next != "" {
			t.Errorf("%q's recipient: next %q %v, want one page", tenant, p.Next, err)
		}
		var got []string
		for _, r := range p.Records {
			got = append(got, r.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%q's recipient (-want +got):\n%s", tenant, diff)
		}
	}

	// An acme dead letter that died before the TTL is dropped as another
	// is written, as tenant default's are.
	if err := rdb.ZAdd(ctx, "chatq:dead:acme", redis.Z{Score: float64(at.Add(-2 * time.Hour).UnixMilli()), Member: "ghost"}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		kill(t, st, r.ID, "permanent", "1001", at)
	}
	for key, want := range map[string][]string{"chatq:dead": {"d1"}, "chatq:dead:acme": {"a1"}, "chatq:dead:bolt": bolts} {
		if diff := cmp.Diff(want, members(t, rdb, key)); diff != "" {
			t.Errorf("dead letters %s (-want +got):\n%s", key, diff)
		}
	}
	if diff := cmp.Diff([]string{"a1"}, allDead(t, st, store.DeadFilter{Tenant: "acme"}, 1)); diff != "" {
		t.Errorf("acme's dead letters (-want +got):\n%s", diff)
	}

	// Each way out of the dead letters leaves acme's index empty.
	for _, leave := range []struct {
		how string
		do  func() error
	}{
		{"a run from the archive", func() error { return st.Requeue(ctx, "a1", at, "run again from the dead-letter queue") }},
		{"a retry", func() error { _, _, err := st.RetryDead(ctx, []string{"a1"}, at, "retried by an operator"); return err }},
		{"a deletion", func() error {
			_, _, err := st.DropDead(ctx, []string{"a1"}, at, "removed from the dead letters by an operator")
			return err
		}},
	} {
		if leave.how != "a run from the archive" {
			kill(t, st, "a1", "permanent", "1001", at)
		}
		if err := leave.do(); err != nil {
			t.Fatalf("%s: %v", leave.how, err)
		}
		if got := members(t, rdb, "chatq:dead:acme"); len(got) != 0 {
			t.Errorf("acme's dead letters after %s: %v, want none", leave.how, got)
		}
	}
}

// The indexes of before tenants (chatq:to:{number}, chatq:dead) hold every
// tenant's entries: tenant default's listing neither shows another
// tenant's nor hands out a cursor that names one, even when they exhaust
// its scan budget, and moves them to their tenant's index, where that
// tenant's listing finds them.
func TestIndexesOfBeforeTenantsMoveToTheirTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{ScanBudget: 2})
	at := time.Now().UTC().Truncate(time.Millisecond)
	recs := []*store.Record{newRecord("d1", "442070000", "bulk", "", at.Add(-time.Hour))}
	var acme []string // newest first
	for i := range 7 {
		r := newRecord(fmt.Sprintf("a%d", i), "442070000", "bulk", "", at.Add(time.Duration(i)*time.Second))
		r.Tenant = "acme"
		recs = append(recs, r)
		acme = append([]string{r.ID}, acme...)
	}
	createAll(t, st, recs...)
	for _, r := range recs {
		kill(t, st, r.ID, "permanent", "1001", r.CreatedAt)
	}
	// Lay the indexes out as before tenants: acme's entries in the shared
	// keys.
	for _, k := range [][2]string{{"chatq:to:acme:{442070000}", "chatq:to:{442070000}"}, {"chatq:dead:acme", "chatq:dead"}} {
		zs, err := rdb.ZRangeWithScores(ctx, k[0], 0, -1).Result()
		if err != nil || len(zs) != len(acme) {
			t.Fatalf("%s: %v %v", k[0], zs, err)
		}
		if err := rdb.ZAdd(ctx, k[1], zs...).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Del(ctx, k[0]).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// secret reports the first of acme's ids a cursor holds.
	secret := func(cursor string) string {
		raw, _ := base64.RawURLEncoding.DecodeString(cursor)
		for _, id := range acme {
			if strings.Contains(cursor, id) || strings.Contains(string(raw), id) {
				return id
			}
		}
		return ""
	}
	var got []string
	for cursor, pages := "", 0; pages == 0 || cursor != ""; pages++ {
		if pages > 20 {
			t.Fatal("tenant default's recipient listing does not end")
		}
		p, err := st.ListMessages(ctx, store.MessageFilter{Destination: "442070000"}, cursor, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			got = append(got, r.ID)
		}
		if id := secret(p.Next); id != "" {
			t.Fatalf("tenant default's recipient listing hands out a cursor holding acme's %s", id)
		}
		cursor = p.Next
	}
	if diff := cmp.Diff([]string{"d1"}, got); diff != "" {
		t.Errorf("tenant default's recipient (-want +got):\n%s", diff)
	}
	got = nil
	for cursor, pages := "", 0; pages == 0 || cursor != ""; pages++ {
		if pages > 20 {
			t.Fatal("tenant default's dead letters do not end")
		}
		p, err := st.ListDead(ctx, store.DeadFilter{}, cursor, 1)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, deadIDs(p)...)
		if id := secret(p.Next); id != "" {
			t.Fatalf("tenant default's dead letters hand out a cursor holding acme's %s", id)
		}
		cursor = p.Next
	}
	if diff := cmp.Diff([]string{"d1"}, got); diff != "" {
		t.Errorf("tenant default's dead letters (-want +got):\n%s", diff)
	}

	// acme's entries are in acme's indexes now, its recipient's index to
	// expire with its records.
	for _, key := range []string{"chatq:to:{442070000}", "chatq:dead"} {
		if diff := cmp.Diff([]string{"d1"}, members(t, rdb, key)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", key, diff)
		}
	}
	if diff := cmp.Diff(acme, allMessages(t, st, store.MessageFilter{Tenant: "acme", Destination: "442070000"}, 3)); diff != "" {
		t.Errorf("acme's recipient (-want +got):\n%s", diff)
	}
	if ttl := rdb.PTTL(ctx, "chatq:to:acme:{442070000}").Val(); ttl <= 0 {
		t.Errorf("acme's recipient index lives for ever (PTTL %v)", ttl)
	}
	if diff := cmp.Diff(acme, allDead(t, st, store.DeadFilter{Tenant: "acme"}, 3)); diff != "" {
		t.Errorf("acme's dead letters (-want +got):\n%s", diff)
	}
}
