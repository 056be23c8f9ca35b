package worker_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// heldFor is how long a record stayed retrying before it was submitted.
func heldFor(tb testing.TB, r *store.Record) time.Duration {
	tb.Helper()
	var retrying, sent time.Time
	for _, h := range r.History {
		switch {
		case h.Status == store.Retrying && retrying.IsZero():
			retrying = h.At
		case h.Status == store.Submitted:
			sent = h.At
		}
	}
	if retrying.IsZero() || sent.IsZero() {
		tb.Fatalf("history without a retry then a submission: %+v", r.History)
	}
	return sent.Sub(retrying)
}

// A number in maintenance (131057) is no failure of the message: even
// without any retry budget it goes a few seconds later.
func TestNumberInMaintenanceIsRetriedWithoutUsingTheRetryBudget(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	b.worker(t, b.ca, worker.Config{Concurrency: 2, Retry: worker.Policy{MaxRetry: 0, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}})
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447700000015", "in maintenance once")})
	r := b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted || r.Status == store.Dead })[0]
	if r.Status != store.Submitted {
		t.Fatalf("status %s, want submitted: %+v", r.Status, r.History)
	}
	if r.Failures != 0 {
		t.Errorf("failures %d, want 0: maintenance is not the message's failure", r.Failures)
	}
	if r.LastError == nil || r.LastError.Code != "131057" || !hasNote(r, "maintenance") {
		t.Errorf("the record does not say the number was in maintenance: %+v %+v", r.LastError, r.History)
	}
	if d := heldFor(t, r); d < 4*time.Second {
		t.Errorf("retried %s after the refusal, want about 5s", d)
	}
}

// WhatsApp's spam rate limit (131048) halves the sender's rate and alerts;
// the message goes later without using its retry budget.
func TestSpamLimitHalvesTheSendersRateAndAlerts(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	core, logs := observer.New(zap.ErrorLevel)
	w := worker.New(b.rdb, worker.Config{Concurrency: 2, Retry: worker.Policy{MaxRetry: 0, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second},
		Flow: limits(ratelimit.Config{Rate: 10})}, b.ca, zap.New(core))
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447700000011", "spam limited once")})
	r := b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted || r.Status == store.Dead })[0]
	if r.Status != store.Submitted || r.Failures != 0 {
		t.Fatalf("status %s with %d failures, want submitted with none: %+v", r.Status, r.Failures, r.History)
	}
	if !hasNote(r, "rate halved to 50%") {
		t.Errorf("the history does not say the rate was halved: %+v", r.History)
	}
	if n := logs.FilterMessage("quality too low: rate halved").FilterField(zap.String("code", "131048")).Len(); n != 1 {
		t.Errorf("%d error lines saying the quality is too low, want 1: %+v", n, logs.All())
	}
}

// The account's API call limit (80007) holds back every message of the
// sender, not only the refused one, for a Retry-After capped by
// MaxRetryAfter (CHATQ_MAX_RETRY_AFTER).
func TestAccountCallLimitBacksOffTheWholeSender(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	b.worker(t, b.ca, worker.Config{Concurrency: 2, Retry: worker.Policy{MaxRetry: 0, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second},
		Flow: limits(ratelimit.Config{Rate: 10, MaxRetryAfter: 3 * time.Second})})
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447700000016", "refused by the account limit once")})
	b.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool { return r.Status == store.Retrying })
	ids = append(ids, b.sendAll(t, b.client, []*enqueue.Message{text("447700000029", "to someone else")})...)
	recs := b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted || r.Status == store.Dead })
	if r := recs[0]; r.Status != store.Submitted || r.Failures != 0 || r.LastError == nil || r.LastError.Code != "80007" || !hasNote(r, "account's API call limit") {
		t.Errorf("the refused message's record: %s with %d failures, %+v %+v", r.Status, r.Failures, r.LastError, r.History)
	}
	if d := heldFor(t, recs[0]); d < 2500*time.Millisecond {
		t.Errorf("the refused message went again %s after the refusal, want the capped 3s", d)
	}
	refused := recs[0].History[len(recs[0].History)-1].At
	for _, h := range recs[0].History {
		if h.Status == store.Retrying {
			refused = h.At
			break
		}
	}
	if at := acceptedAt(t, b.sandbox, "447700000029"); len(at) != 1 || at[0].Sub(refused) < 2500*time.Millisecond {
		t.Errorf("another message of the sender was accepted at %v, the refusal at %v: the sender did not back off for 3s", at, refused)
	}
}

// A country the business may not message (130497) ends the message, as
// before, and from then on enqueue refuses the sender's messages to that
// country; other countries go on.
func TestRefusedCountryIsRefusedAtEnqueueFromThenOn(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	ctx := context.Background()
	checker := policy.New(b.rdb, policy.Config{})
	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Policy: checker}, b.client, b.store, b.log.Named("api"))
	if err != nil {
		t.Fatal(err)
	}
	apiSrv := httptest.NewServer(a)
	t.Cleanup(apiSrv.Close)
	if err := b.ca.RegisterWebhook(ctx, apiSrv.URL+"/webhooks/chatarchitect/hook"); err != nil {
		t.Fatal(err)
	}
	client := enqueue.NewClient(b.rdb, enqueue.Config{MaxRetry: 3, Policy: enqueue.CheckerPolicy(checker)})
	t.Cleanup(func() { client.Close() })
	b.worker(t, b.ca, worker.Config{Concurrency: 2, Conversation: &worker.Conversation{Policy: checker}})

	ids := b.sendAll(t, client, []*enqueue.Message{text("4915100000012", "to a country refused to the business")})
	r := b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Failed || r.Status == store.Dead })[0]
	if r.Status != store.Failed || r.LastError == nil || r.LastError.Code != "130497" {
		t.Fatalf("the refused message: %s %+v", r.Status, r.LastError)
	}
	var refused error
	poll.Until(t, 10*time.Second, "enqueue refuses the country", func() (bool, string) {
		res, err := client.SendBatch(ctx, []*enqueue.Message{text("4915100000099", "another to the same country")})
		if err != nil {
			t.Fatal(err)
		}
		refused = res[0].Err
		return refused != nil, "accepted"
	})
	var pe *enqueue.PolicyError
	if !errors.As(refused, &pe) || pe.Code != policy.CodeCountryRefused || pe.Field != "destination" || !strings.Contains(pe.Reason, "+49 ") {
		t.Errorf("refusal %v, want country_refused naming +49", refused)
	}
	ids = b.sendAll(t, client, []*enqueue.Message{text("447700000099", "to another country")})
	b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status != store.Queued && r.Status != store.Sending })
}
