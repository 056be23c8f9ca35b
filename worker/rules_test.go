package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// rules is a bundle whose API receives the sandbox's webhooks and whose
// producers and workers know the sandbox's templates, so that each message
// carries its category.
type rules struct {
	*bundle
	checker *policy.Checker
	client  *enqueue.Client
}

func setupRules(tb testing.TB) *rules {
	tb.Helper()
	b := setup(tb, sandbox.Config{}, false)
	ctx := context.Background()
	checker := policy.New(b.rdb, policy.Config{Source: b.ca})
	if _, err := checker.Templates.Sync(ctx); err != nil {
		tb.Fatal(err)
	}
	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Policy: checker}, b.client, b.store, b.log.Named("api"))
	if err != nil {
		tb.Fatal(err)
	}
	apiSrv := httptest.NewServer(a)
	tb.Cleanup(apiSrv.Close)
	if err := b.ca.RegisterWebhook(ctx, apiSrv.URL+"/webhooks/chatarchitect/hook"); err != nil {
		tb.Fatal(err)
	}
	client := enqueue.NewClient(b.rdb, enqueue.Config{MaxRetry: 3, Policy: enqueue.CheckerPolicy(checker)})
	tb.Cleanup(func() { client.Close() })
	return &rules{bundle: b, checker: checker, client: client}
}

func tmpl(dest, name, language string, params ...string) *enqueue.Message {
	return &enqueue.Message{Destination: dest, Priority: enqueue.Transactional,
		Payload: &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: name, LanguageCode: language, Params: params}}}
}

func marketing(dest string) *enqueue.Message {
	return tmpl(dest, "welcome_offer", "en_US", "John", "X1")
}
func utility(dest string) *enqueue.Message {
	return tmpl(dest, "order_update", "en_US", "1234", "shipped")
}
func oneTimeCode(dest string) *enqueue.Message {
	return tmpl(dest, "otp_code", "en", "123456")
}

// setTemplate changes a sandbox template's status, which sends its
// template-event webhook.
func setTemplate(tb testing.TB, sb *sandbox.Server, name, status string) {
	tb.Helper()
	sandboxDo(tb, sb, http.MethodPut, "/sandbox/templates/"+name, `{"status":"`+status+`"}`)
}

// accepted returns the sandbox's accepted messages, in the order it took
// them: destination and template name.
func accepted(tb testing.TB, sb *sandbox.Server) []string {
	tb.Helper()
	type taken struct {
		Destination string `json:"destination"`
		Payload     struct {
			Template struct {
				ElementName string `json:"elementName"`
			} `json:"template"`
		} `json:"payload"`
		ReceivedAt time.Time `json:"received_at"`
	}
	var msgs []taken
	if err := json.Unmarshal(sandboxDo(tb, sb, http.MethodGet, "/sandbox/messages", ""), &msgs); err != nil {
		tb.Fatal(err)
	}
	slices.SortStableFunc(msgs, func(a, b taken) int { return a.ReceivedAt.Compare(b.ReceivedAt) })
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Destination + " " + m.Payload.Template.ElementName
	}
	return out
}

// Meta's marketing cap (131049) at the send: the attempt was real, so the
// message moves to retrying, then waits a day without using its retry
// budget; the recipient's next marketing message waits too, before any
// send, while a one-time code to them goes at once. A day later both
// marketing messages go.
func TestMarketingCapHoldsTheRecipientsMarketingForADay(t *testing.T) {
	t.Parallel()
	r := setupRules(t)
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	r.worker(t, r.ca, worker.Config{Concurrency: 4, Now: clock, Retry: worker.Policy{MaxRetry: 0, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second},
		Conversation: &worker.Conversation{Policy: r.checker}})
	const dest = "447700000017"

	first := r.sendAll(t, r.client, []*enqueue.Message{marketing(dest)})
	capped := r.waitAll(t, first, 20*time.Second, func(rec *store.Record) bool { return rec.Waiting != nil || rec.Status.Final() })[0]
	if capped.Status != store.Retrying || capped.Waiting == nil || capped.Waiting.Reason != store.WaitMarketingCapped || capped.Waiting.Until == nil {
		t.Fatalf("the capped message: %s waiting %+v, want retrying, waiting marketing_capped", capped.Status, capped.Waiting)
	}
	if d := capped.Waiting.Until.Sub(capped.Waiting.Since); d < 24*time.Hour-time.Second {
		t.Errorf("the capped message waits %s, want a day", d)
	}
	if capped.Attempts != 1 || capped.Failures != 0 || capped.LastError == nil || capped.LastError.Code != "131049" || capped.LastError.Class != "marketing_capped" {
		t.Errorf("the capped message: %d attempts, %d failures, last error %+v; want 1, 0, 131049 marketing_capped", capped.Attempts, capped.Failures, capped.LastError)
	}

	// The one-time code goes at once; the next marketing message waits
	// without a send.
	code := r.sendAll(t, r.client, []*enqueue.Message{oneTimeCode(dest)})
	next := r.sendAll(t, r.client, []*enqueue.Message{marketing(dest)})
	if rec := r.waitAll(t, code, 20*time.Second, func(rec *store.Record) bool { return rec.Status.Final() })[0]; rec.Status != store.Submitted && rec.Status.Pending() {
		t.Fatalf("the one-time code: %s", rec.Status)
	}
	// (It may first wait for its turn behind the code: a wait of another kind.)
	held := r.waitAll(t, next, 20*time.Second, func(rec *store.Record) bool {
		return (rec.Waiting != nil && rec.Waiting.Reason == store.WaitMarketingCapped) || rec.Status.Final()
	})[0]
	if held.Status != store.Queued || held.Waiting.Reason != store.WaitMarketingCapped || held.Attempts != 0 ||
		held.Waiting.Until == nil || !held.Waiting.Until.Equal(*capped.Waiting.Until) {
		t.Errorf("the next marketing message: %s, %d attempts, waiting %+v; want queued, none, until %v", held.Status, held.Attempts, held.Waiting, capped.Waiting.Until)
	}
	if got, want := accepted(t, r.sandbox), []string{dest + " otp_code"}; !slices.Equal(got, want) {
		t.Fatalf("the sandbox accepted %v, want %v", got, want)
	}

	// A day later.
	ahead.Store(int64(24*time.Hour + time.Minute))
	recs := r.waitAll(t, append(first, next...), 20*time.Second, func(rec *store.Record) bool { return rec.Status.Final() })
	for _, rec := range recs {
		if rec.Status == store.Dead || rec.Waiting != nil {
			t.Errorf("%s after the cap: %s waiting %+v", rec.ID, rec.Status, rec.Waiting)
		}
	}
	if recs[0].Failures != 0 {
		t.Errorf("the capped message used %d of its retries", recs[0].Failures)
	}
	if got := accepted(t, r.sandbox); len(got) != 3 || got[1] != dest+" welcome_offer" || got[2] != dest+" welcome_offer" {
		t.Errorf("the sandbox accepted %v, want the code then both marketing messages", got)
	}
}

// A capped marketing message steps out of its conversation's line: the
// message accepted after it, to the same recipient at the same priority,
// goes at once rather than a day later.
func TestACappedMessageDoesNotHoldTheConversation(t *testing.T) {
	t.Parallel()
	r := setupRules(t)
	r.worker(t, r.ca, worker.Config{Concurrency: 4, Conversation: &worker.Conversation{Policy: r.checker}})
	const dest = "447700000017"
	ids := r.sendAll(t, r.client, []*enqueue.Message{marketing(dest), utility(dest)})
	recs := r.waitAll(t, ids, 20*time.Second, func(rec *store.Record) bool {
		return rec.Status.Final() || (rec.Waiting != nil && rec.Waiting.Reason == store.WaitMarketingCapped)
	})
	if w := recs[0].Waiting; w == nil || w.Reason != store.WaitMarketingCapped {
		t.Errorf("the marketing message waits %+v, want marketing_capped", w)
	}
	if recs[1].Status != store.Submitted && recs[1].Status.Pending() {
		t.Errorf("the utility message behind it is %s waiting %+v, want it sent", recs[1].Status, recs[1].Waiting)
	}
	if got, want := accepted(t, r.sandbox), []string{dest + " order_update"}; !slices.Equal(got, want) {
		t.Errorf("the sandbox accepted %v, want %v", got, want)
	}
}

// A user in one of Meta's marketing experiments (130472) is never retried:
// the message is dead at once, with no send after the first.
func TestMarketingHoldOutIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	r := setupRules(t)
	r.worker(t, r.ca, worker.Config{Concurrency: 2, Conversation: &worker.Conversation{Policy: r.checker}})
	ids := r.sendAll(t, r.client, []*enqueue.Message{marketing("447700000018"), utility("447700000018")})
	recs := r.waitAll(t, ids, 20*time.Second, func(rec *store.Record) bool { return rec.Status.Final() })
	dead := recs[0]
	if dead.Status != store.Dead || dead.Attempts != 1 || dead.LastError == nil || dead.LastError.Code != "130472" || dead.LastError.Class != "permanent" || dead.Waiting != nil {
		t.Errorf("the held-out message: %s after %d attempts, %+v, waiting %+v; want dead after 1, 130472 permanent", dead.Status, dead.Attempts, dead.LastError, dead.Waiting)
	}
	if recs[1].Status == store.Dead {
		t.Errorf("the utility message to the same user: %s %+v", recs[1].Status, recs[1].LastError)
	}
	if got, want := accepted(t, r.sandbox), []string{"447700000018 order_update"}; !slices.Equal(got, want) {
		t.Errorf("the sandbox accepted %v, want %v", got, want)
	}
}

// A paused template (132015) holds every message of it, without a send,
// until its approval webhook; then its 200 messages go out in the order
// chatq accepted them, within seconds.
func TestPausedTemplateHoldsItsMessagesUntilItsApproval(t *testing.T) {
	t.Parallel()
	r := setupRules(t)
	r.worker(t, r.ca, worker.Config{Concurrency: 1, Conversation: &worker.Conversation{Policy: r.checker}})
	ctx := context.Background()
	setTemplate(t, r.sandbox, "order_update", "PAUSED")
	poll.Until(t, 10*time.Second, "the template paused", func() (bool, string) {
		st, err := r.store.TemplateStateOf(ctx, "", "order_update")
		if err != nil {
			t.Fatal(err)
		}
		return st == store.TemplatePaused, string(st)
	})

	const n = 200
	msgs := make([]*enqueue.Message, n)
	want := make([]string, n)
	for i := range msgs {
		dest := fmt.Sprintf("4477%07d9", i)
		msgs[i], want[i] = utility(dest), dest+" order_update"
	}
	ids := r.sendAll(t, r.client, msgs)
	recs := r.waitAll(t, ids, 30*time.Second, func(rec *store.Record) bool { return rec.Waiting != nil || rec.Status.Final() })
	for _, rec := range recs {
		if rec.Status != store.Queued || rec.Waiting == nil || rec.Waiting.Reason != store.WaitTemplatePaused || rec.Waiting.Until != nil || rec.Attempts != 0 {
			t.Fatalf("%s while paused: %s, %d attempts, waiting %+v; want queued, waiting template_paused without until", rec.ID, rec.Status, rec.Attempts, rec.Waiting)
		}
	}
	if got := accepted(t, r.sandbox); len(got) != 0 {
		t.Fatalf("the sandbox accepted %d messages of the paused template", len(got))
	}

	approved := time.Now()
	setTemplate(t, r.sandbox, "order_update", "APPROVED")
	recs = r.waitAll(t, ids, 20*time.Second, func(rec *store.Record) bool { return rec.Status.Final() })
	last := approved
	for _, rec := range recs {
		if rec.Status == store.Dead || rec.Status == store.Failed {
			t.Fatalf("%s after the approval: %s %+v", rec.ID, rec.Status, rec.LastError)
		}
		for _, h := range rec.History {
			if h.Status == store.Submitted && h.At.After(last) {
				last = h.At
			}
		}
	}
	if took := last.Sub(approved); took > 10*time.Second {
		t.Errorf("the released messages took %s after the approval", took)
	}
	if got := accepted(t, r.sandbox); !slices.Equal(got, want) {
		t.Errorf("the sandbox accepted them out of order: first %v, want %v", got[:min(5, len(got))], want[:5])
	}
}

// A disabled template (132016) ends its waiting messages dead, and the
// messages of it that come later dead at once, none of them sent.
func TestDisabledTemplateEndsItsMessages(t *testing.T) {
	t.Parallel()
	r := setupRules(t)
	r.worker(t, r.ca, worker.Config{Concurrency: 2, Conversation: &worker.Conversation{Policy: r.checker}})
	ctx := context.Background()
	setTemplate(t, r.sandbox, "order_update", "PAUSED")
	poll.Until(t, 10*time.Second, "the template paused", func() (bool, string) {
		st, _ := r.store.TemplateStateOf(ctx, "", "order_update")
		return st == store.TemplatePaused, string(st)
	})
	ids := r.sendAll(t, r.client, []*enqueue.Message{utility("447700100019"), utility("447700100029")})
	r.waitAll(t, ids, 20*time.Second, func(rec *store.Record) bool {
		return rec.Waiting != nil && rec.Waiting.Reason == store.WaitTemplatePaused
	})

	setTemplate(t, r.sandbox, "order_update", "DISABLED")
	poll.Until(t, 10*time.Second, "the template disabled", func() (bool, string) {
		st, _ := r.store.TemplateStateOf(ctx, "", "order_update")
		return st == store.TemplateDisabled, string(st)
	})
	ids = append(ids, r.sendAll(t, r.client, []*enqueue.Message{utility("447700100039")})...)
	for _, rec := range r.waitAll(t, ids, 20*time.Second, func(rec *store.Record) bool { return rec.Status.Final() }) {
		if rec.Status != store.Dead || rec.Attempts != 0 || rec.LastError == nil || rec.LastError.Code != "132016" || rec.LastError.Class != "policy" {
			t.Errorf("%s: %s after %d attempts, %+v; want dead unsent, 132016 policy", rec.ID, rec.Status, rec.Attempts, rec.LastError)
		}
	}
	if got := accepted(t, r.sandbox); len(got) != 0 {
		t.Errorf("the sandbox accepted %v", got)
	}
}
