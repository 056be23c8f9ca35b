package senders_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
)

// countingHook counts the round trips a client makes.
type countingHook struct{ trips int }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.trips++; return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.trips++; return next(ctx, cmds) }
}

func TestWindowChooser(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	r := newRegistry(t, rdb, senders.Config{Cipher: cipher(t, 1)})
	const a, b, c, solo = "4915100000801", "4915100000802", "4915100000803", "4915100000809"
	for _, n := range []string{a, b, c} {
		sp := spec(n, "acme")
		sp.Default = n == a
		if _, err := r.Add(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Add(ctx, spec(solo, "beta")); err != nil {
		t.Fatal(err)
	}
	checker := policy.New(rdb, policy.Config{})
	counted := srv.Client(t)
	hook := &countingHook{}
	counted.AddHook(hook)
	chooser := senders.WindowChooser{Registry: r, Policy: checker, Redis: counted}
	choose := func(tenant, dest string) string {
		t.Helper()
		x, err := chooser.Choose(ctx, tenant, dest)
		if err != nil {
			t.Fatal(err)
		}
		return x.Number
	}
	const user = "4917000000001"
	now := time.Now()

	if got := choose("acme", user); got != a {
		t.Errorf("nobody wrote or was written to: %s, want the default %s", got, a)
	}
	// The tenant last sent the user a message from c: c, sticky. (Another
	// tenant's later message from b to the user is not acme's.)
	st := store.New(rdb, store.Config{})
	for i, m := range []struct{ id, tenant, sender string }{{"m-a", "acme", a}, {"m-c", "acme", c}, {"m-beta", "beta", b}} {
		at := now.Add(time.Duration(i-3) * time.Minute)
		rec := &store.Record{ID: m.id, Tenant: m.tenant, Sender: m.sender, Destination: user, Type: "text",
			Priority: "transactional", Queue: "transactional", Status: store.Queued, CreatedAt: at, UpdatedAt: at,
			History: []store.HistoryEntry{{Status: store.Queued, At: at}}, Payload: []byte(`{"type":"text","message":"hi"}`)}
		if _, err := st.Create(ctx, []*store.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	if got := choose("acme", user); got != c {
		t.Errorf("last sent from c: %s, want %s", got, c)
	}
	// The user wrote to b, then to a: both windows are open, a's newer.
	if err := checker.ForSender(b).Windows.Opened(ctx, user, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := choose("acme", user); got != b {
		t.Errorf("the user wrote to b: %s, want %s, whose window is open", got, b)
	}
	if err := checker.ForSender(a).Windows.Opened(ctx, user, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := choose("acme", user); got != a {
		t.Errorf("the user wrote to b, then to a: %s, want %s", got, a)
	}
	// Windows that closed count no more: back to the last sender.
	for _, n := range []string{a, b} {
		if err := checker.ForSender(n).Windows.Closed(ctx, user, now); err != nil {
			t.Fatal(err)
		}
	}
	hook.trips = 0
	if got := choose("acme", user); got != c {
		t.Errorf("both windows closed: %s, want the last sender %s", got, c)
	}
	if hook.trips != 2 {
		t.Errorf("a choice among three senders by the last one took %d round trips, want 2", hook.trips)
	}
	// Another tenant's state is not the tenant's; one sender costs nothing.
	hook.trips = 0
	if got := choose("beta", user); got != solo {
		t.Errorf("tenant beta: %s, want its sender %s", got, solo)
	}
	if hook.trips != 0 {
		t.Errorf("a tenant with one sender took %d round trips, want 0", hook.trips)
	}
	if _, err := chooser.Choose(ctx, "nobody", user); err == nil {
		t.Error("a tenant without senders got a sender")
	}
}
