package senders_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
)

var defaults = senders.Limits{RatePerSecond: 40, RateBurst: 40, PairInterval: 6 * time.Second, PairBurst: 3}

func cipher(tb testing.TB, b byte) *senders.Cipher {
	tb.Helper()
	c, err := senders.NewCipher(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func newRegistry(tb testing.TB, rdb redis.UniversalClient, cfg senders.Config) *senders.Registry {
	tb.Helper()
	cfg.Defaults = defaults
	r := senders.New(rdb, cfg)
	if err := r.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.Stop)
	return r
}

func spec(number, tenant string) senders.Spec {
	return senders.Spec{Number: number, AppID: "app-" + tenant, AppSecret: "secret-of-" + number, Tenant: tenant}
}

func TestAddLookUpAndDefaults(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	r := newRegistry(t, rdb, senders.Config{Cipher: cipher(t, 1)})
	rate := 5.0
	sp := spec("+4915100000001", "acme")
	sp.Overrides.RatePerSecond = &rate
	s, err := r.Add(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	if s.Number != "4915100000001" || s.Portfolio != s.Number || s.AppSecret != "secret-of-+4915100000001" {
		t.Errorf("added %+v: want the number without +, its own portfolio and its secret", s.Number)
	}
	if want := (senders.Limits{RatePerSecond: 5, RateBurst: 5, PairInterval: 6 * time.Second, PairBurst: 3}); s.Limits != want {
		t.Errorf("limits %+v, want %+v: unset ones from the defaults, the burst a second of its own rate", s.Limits, want)
	}
	if !strings.HasPrefix(s.WebhookPath(), "/webhooks/chatarchitect/") || len(s.WebhookSecret) < 32 {
		t.Errorf("webhook path %q: want a long secret of its own", s.WebhookPath())
	}
	if got, ok := r.ByWebhookSecret(s.WebhookSecret); !ok || got.Number != s.Number {
		t.Errorf("ByWebhookSecret: %v %v", got.Number, ok)
	}
	if _, ok := r.ByWebhookSecret(s.WebhookSecret + "x"); ok {
		t.Error("ByWebhookSecret accepts a near miss")
	}
	// The first sender of a tenant is its default until one is marked.
	if d, ok := r.Default("acme"); !ok || d.Number != s.Number {
		t.Errorf("default of acme: %v %v, want %s", d.Number, ok, s.Number)
	}
	sp2 := spec("4915100000002", "acme")
	sp2.Default = true
	if _, err := r.Add(ctx, sp2); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Default("acme"); d.Number != "4915100000002" {
		t.Errorf("default of acme: %s, want the one marked default", d.Number)
	}
	yes := true
	if _, err := r.Update(ctx, "4915100000001", senders.Patch{Default: &yes}); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Default("acme"); d.Number != "4915100000001" {
		t.Errorf("default of acme: %s, want the one marked last", d.Number)
	}
	if s2, _ := r.Lookup("4915100000002"); s2.Default {
		t.Error("marking a new default left the old one marked")
	}
	if _, err := r.Add(ctx, spec("4915100000001", "other")); !errors.Is(err, senders.ErrExists) {
		t.Errorf("adding a number twice: %v, want ErrExists", err)
	}
	if got := len(r.OfApp("app-acme")); got != 2 {
		t.Errorf("OfApp: %d senders, want 2", got)
	}
	if got := r.OfTenant("nobody"); len(got) != 0 {
		t.Errorf("OfTenant of an unknown tenant: %v", got)
	}
}

// The secret is sealed at rest: Redis holds neither it nor the webhook
// secret in clear, and another key cannot open them.
func TestSecretsAreSealed(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	r := newRegistry(t, rdb, senders.Config{Cipher: cipher(t, 1)})
	s, err := r.Add(ctx, spec("4915100000001", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if typ, _ := rdb.Type(ctx, k).Result(); typ != "hash" {
			continue
		}
		for f, v := range rdb.HGetAll(ctx, k).Val() {
			if strings.Contains(v, "secret-of-") || strings.Contains(v, s.WebhookSecret) {
				t.Errorf("%s %s holds a secret in clear", k, f)
			}
		}
	}
	other := senders.New(rdb, senders.Config{Cipher: cipher(t, 2)})
	if err := other.Start(ctx); err == nil || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") {
		t.Errorf("a registry with another key: %v, want a refusal naming CHATQ_SECRETS_KEY", err)
	}
	none := senders.New(rdb, senders.Config{})
	if err := none.Start(ctx); err == nil || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") {
		t.Errorf("a registry without a key, senders stored: %v, want a refusal naming CHATQ_SECRETS_KEY", err)
	}
}

// Without CHATQ_SECRETS_KEY the registry holds the environment's sender
// and refuses to store others.
func TestWithoutKey(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	env := &senders.Sender{Number: "+15550001234", AppID: "app", AppSecret: "sec", WebhookSecret: "whsec"}
	r := newRegistry(t, rdb, senders.Config{Env: env})
	if _, err := r.Add(ctx, spec("4915100000001", "acme")); !errors.Is(err, senders.ErrNoSecretsKey) || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") {
		t.Errorf("Add without a key: %v, want ErrNoSecretsKey naming the variable", err)
	}
	d, ok := r.Default("default")
	if !ok || d.Number != "15550001234" || !d.Env || d.Tenant != "default" || d.Limits != defaults {
		t.Errorf("default of tenant default: %+v %v, want the environment's sender with the default limits", d.Number, ok)
	}
	if _, err := r.Update(ctx, "15550001234", senders.Patch{}); !errors.Is(err, senders.ErrFromEnvironment) {
		t.Errorf("Update of the environment's sender: %v, want ErrFromEnvironment", err)
	}
	if err := r.Remove(ctx, "15550001234"); !errors.Is(err, senders.ErrFromEnvironment) {
		t.Errorf("Remove of the environment's sender: %v, want ErrFromEnvironment", err)
	}
	if err := r.SetWebhookURL(ctx, "15550001234", "https://app.example.com/hook"); err != nil {
		t.Fatal(err)
	}
	if s, _ := r.Lookup("15550001234"); s.WebhookURL != "https://app.example.com/hook" {
		t.Errorf("webhook URL of the environment's sender: %q", s.WebhookURL)
	}
}

// Another process's registry sees a new, changed, paused and removed
// sender within a second, without a restart.
func TestOtherProcessesSeeChanges(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	c := cipher(t, 1)
	admin := newRegistry(t, rdb, senders.Config{Cipher: c})
	worker := newRegistry(t, rdb, senders.Config{Cipher: c})
	see := func(what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		poll.Until(t, 5*time.Second, what, func() (bool, string) { return cond(), "" })
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Logf("%s took %s", what, d)
		}
	}
	if _, err := admin.Add(ctx, spec("4915100000001", "acme")); err != nil {
		t.Fatal(err)
	}
	see("the new sender", func() bool { _, ok := worker.Lookup("4915100000001"); return ok })
	burst := 9
	if _, err := admin.Update(ctx, "4915100000001", senders.Patch{Overrides: senders.Overrides{RateBurst: &burst}}); err != nil {
		t.Fatal(err)
	}
	see("the changed burst", func() bool { s, _ := worker.Lookup("4915100000001"); return s.Limits.RateBurst == 9 })
	if _, err := admin.Update(ctx, "4915100000001", senders.Patch{Reset: []string{"rate_burst"}}); err != nil {
		t.Fatal(err)
	}
	see("the burst back to its default", func() bool { s, _ := worker.Lookup("4915100000001"); return s.Limits.RateBurst == 40 })
	if _, err := admin.SetPaused(ctx, "4915100000001", true); err != nil {
		t.Fatal(err)
	}
	see("the pause", func() bool { s, _ := worker.Lookup("4915100000001"); return s.Paused })
	if err := admin.Remove(ctx, "4915100000001"); err != nil {
		t.Fatal(err)
	}
	see("the removal", func() bool { _, ok := worker.Lookup("4915100000001"); return !ok })
	if err := admin.Remove(ctx, "4915100000001"); !errors.Is(err, senders.ErrNotFound) {
		t.Errorf("removing twice: %v, want ErrNotFound", err)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	r := newRegistry(t, rdb, senders.Config{Cipher: cipher(t, 1)})
	neg, zero := -1, 0.0
	for _, tc := range []struct {
		field string
		edit  func(*senders.Spec)
	}{
		{"number", func(s *senders.Spec) { s.Number = "" }},
		{"number", func(s *senders.Spec) { s.Number = "12ab" }},
		{"app_id", func(s *senders.Spec) { s.AppID = " " }},
		{"app_id", func(s *senders.Spec) { s.AppID = "a:b" }},
		{"app_secret", func(s *senders.Spec) { s.AppSecret = "" }},
		{"tenant", func(s *senders.Spec) { s.Tenant = "" }},
		{"tenant", func(s *senders.Spec) { s.Tenant = "Acme Corp" }},
		{"rate_per_second", func(s *senders.Spec) { s.Overrides.RatePerSecond = &zero }},
		{"pair_burst", func(s *senders.Spec) { s.Overrides.PairBurst = &neg }},
		{"daily_recipient_limit", func(s *senders.Spec) { s.Overrides.DailyRecipientLimit = &neg }},
	} {
		sp := spec("4915100000001", "acme")
		tc.edit(&sp)
		_, err := r.Add(context.Background(), sp)
		var ve *enqueue.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: %v, want a validation error naming it", tc.field, err)
		}
	}
}

func TestChooser(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	r := newRegistry(t, rdb, senders.Config{Cipher: cipher(t, 1)})
	var c senders.Chooser = senders.DefaultChooser{Registry: r}
	if _, err := c.Choose(context.Background(), "acme", "4917600000000"); !errors.Is(err, senders.ErrNoSender) {
		t.Errorf("a tenant without senders: %v, want ErrNoSender", err)
	}
	for i := range 3 {
		if _, err := r.Add(context.Background(), spec(fmt.Sprintf("491510000000%d", i), "acme")); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.Choose(context.Background(), "acme", "4917600000000"); err != nil || s.Tenant != "acme" {
		t.Errorf("Choose: %v %v, want a sender of acme", s.Number, err)
	}
}
