package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A message scheduled beyond the record TTL keeps its record, payload,
// notices, idempotency key and campaign entry until it can be sent: a
// record created with it but due at once is gone first.
func TestScheduledRecordOutlivesTheTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ttl = time.Second
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{TTL: ttl})
	now := time.Now().Truncate(time.Millisecond)
	later := newRecord("later", "96996999601", "bulk", "spring", now)
	sendAt := now.Add(3 * ttl)
	later.SendAt, later.Status = &sendAt, store.Scheduled
	later.IdempotencyKey, later.Fingerprint, later.CallbackURL = "spring-601", "fp", "https://app.example/hook"
	// Too long to be kept in the record's hash: it has a key of its own.
	later.Payload = longPayload(3000)
	// Written after the scheduled one, so that it would expire no earlier.
	now1 := newRecord("now", "96996999602", "bulk", "spring", now)
	createAll(t, st, later, now1)

	poll.Until(t, 20*ttl, "the record due at once expires", func() (bool, string) {
		n, err := rdb.Exists(ctx, "chatq:m:{now}").Result()
		return err == nil && n == 0, fmt.Sprint(n, err)
	})
	for _, key := range []string{"chatq:m:{later}", "chatq:pl:{later}", "chatq:cbq:{later}", "chatq:idem:{spring-601}", "chatq:batch:{spring}"} {
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("%s is gone (%v) before the message's send_at", key, err)
		}
	}
	rec, o, err := st.Begin(ctx, "later", sendAt, store.Owner{})
	if err != nil || o != store.Changed || string(rec.Payload) != string(later.Payload) {
		t.Fatalf("begin at send_at: %s %v, payload %q", o, err, rec.Payload)
	}
}

// Every status change keeps a record (and its payload and notices) for the
// TTL from then on, however long ago it was created.
func TestAChangeKeepsTheRecordForTheTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ttl = time.Second
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{TTL: ttl})
	start := time.Now()
	r := newRecord("busy", "96996999601", "transactional", "", start)
	r.CallbackURL = "https://app.example/hook"
	r.Payload = longPayload(3000)
	createAll(t, st, r)

	// Retried over and over for three TTLs: it never expires in between.
	next := store.Retrying
	poll.Until(t, 20*ttl, "three TTLs of changes", func() (bool, string) {
		o, _, err := st.Move(ctx, "busy", store.Change{Status: next})
		if err != nil || o != store.Changed {
			t.Fatalf("change %s after %s: %s %v", next, time.Since(start), o, err)
		}
		next = map[store.Status]store.Status{store.Retrying: store.Queued, store.Queued: store.Retrying}[next]
		return time.Since(start) > 3*ttl, ""
	})
	for _, key := range []string{"chatq:pl:{busy}", "chatq:cbq:{busy}"} {
		if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("%s is gone (%v) while its record changes", key, err)
		}
	}
}
