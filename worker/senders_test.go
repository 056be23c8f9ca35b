package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// The senders of these tests: two apps on one sandbox. App "app" is the
// environment's (business); "app-2" has two numbers of two tenants, so
// its sends name their source; "app-bad" is refused (wrong secret).
const (
	senderBad   = "15550002001" // tenant acme, app-bad
	senderAcme  = "15550002002" // tenant acme, app-2
	senderOther = "15550002003" // tenant beta, app-2
)

// multi is a bundle whose worker sends from a registry of stored senders.
type multi struct {
	*bundle
	reg   *senders.Registry
	sbURL string
}

func setupSenders(tb testing.TB) *multi {
	tb.Helper()
	b := setup(tb, sandbox.Config{Apps: map[string]string{"app-2": "secret-2", "app-bad": "secret-bad"}}, false)
	srv := httptest.NewServer(b.sandbox)
	tb.Cleanup(srv.Close)
	c, err := senders.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	reg := senders.New(b.rdb, senders.Config{Cipher: c, Interval: 100 * time.Millisecond,
		Env: &senders.Sender{Number: business, AppID: "app", AppSecret: "secret"}})
	if err := reg.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(reg.Stop)
	return &multi{bundle: b, reg: reg, sbURL: srv.URL}
}

func (m *multi) add(tb testing.TB, sp senders.Spec) {
	tb.Helper()
	if _, err := m.reg.Add(context.Background(), sp); err != nil {
		tb.Fatal(err)
	}
}

func (m *multi) start(tb testing.TB, cfg worker.Config) {
	tb.Helper()
	cfg.Senders = &worker.Senders{Registry: m.reg, Upstream: chatarchitect.Config{BaseURL: m.sbURL, Timeout: 2 * time.Second}}
	cfg.Flow.Limits.Sender = business
	m.worker(tb, m.ca, cfg)
}

func from(sender, tenant, dest string) *enqueue.Message {
	msg := text(dest, "from "+sender)
	msg.Sender, msg.Tenant = sender, tenant
	return msg
}

// logged is a message as the sandbox logged it.
type logged struct {
	Destination string    `json:"destination"`
	AppID       string    `json:"app_id"`
	Source      string    `json:"source"`
	ReceivedAt  time.Time `json:"received_at"`
}

func sandboxLog(tb testing.TB, sb *sandbox.Server) []logged {
	tb.Helper()
	var out []logged
	if err := json.Unmarshal(sandboxDo(tb, sb, http.MethodGet, "/sandbox/messages", ""), &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// rateOf measures the rate of the messages the sandbox logged that match,
// from its own timestamps.
func rateOf(tb testing.TB, log []logged, match func(logged) bool) (float64, int) {
	tb.Helper()
	var at []time.Time
	for _, l := range log {
		if match(l) {
			at = append(at, l.ReceivedAt)
		}
	}
	slices.SortFunc(at, time.Time.Compare)
	if len(at) < 2 {
		return 0, len(at)
	}
	return float64(len(at)-1) / at[len(at)-1].Sub(at[0]).Seconds(), len(at)
}

func rate(r float64) *float64 { return &r }

// one is a burst of 1: a rate measured from the first send is the rate.
var one = func() *int { n := 1; return &n }()

func TestOneSendersRefusedAppHoldsItsMessagesAloneWhileTheOthersSendAtTheirRate(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.add(t, senders.Spec{Number: senderBad, AppID: "app-bad", AppSecret: "wrong", Tenant: "acme", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	m.add(t, senders.Spec{Number: senderAcme, AppID: "app-2", AppSecret: "secret-2", Tenant: "acme", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta", Overrides: senders.Overrides{RatePerSecond: rate(10), RateBurst: one}})
	cfg := worker.Config{Concurrency: 50, Metrics: metrics.New(nil)}
	cfg.Flow.ProbeInterval, cfg.Flow.MaxProbeInterval = 100*time.Millisecond, 200*time.Millisecond
	m.start(t, cfg)

	const nAcme, nOther, nBad = 120, 60, 30
	var msgs []*enqueue.Message
	for i := range max(nAcme, nOther, nBad) {
		if i < nBad {
			msgs = append(msgs, from(senderBad, "acme", fmt.Sprintf("4471%07d9", i)))
		}
		if i < nAcme {
			msgs = append(msgs, from(senderAcme, "acme", fmt.Sprintf("4472%07d9", i)))
		}
		if i < nOther {
			msgs = append(msgs, from(senderOther, "beta", fmt.Sprintf("4473%07d9", i)))
		}
	}
	ids := m.sendAll(t, m.client, msgs)
	var good, bad []string
	for i, msg := range msgs {
		if msg.Sender == senderBad {
			bad = append(bad, ids[i])
		} else {
			good = append(good, ids[i])
		}
	}
	m.waitAll(t, good, 60*time.Second, submitted)

	log := sandboxLog(t, m.sandbox)
	for _, c := range []struct {
		sender string
		n      int
		rate   float64
	}{{senderAcme, nAcme, 20}, {senderOther, nOther, 10}} {
		got, n := rateOf(t, log, func(l logged) bool { return l.Source == c.sender })
		t.Logf("sender %s: %d messages at %.3f/s (its rate %.0f/s)", c.sender, n, got, c.rate)
		if n != c.n || got < c.rate*0.95 || got > c.rate*1.05 {
			t.Errorf("sender %s: %d messages at %.3f/s, want %d at %.0f/s within 5%%", c.sender, n, got, c.n, c.rate)
		}
	}
	for _, l := range log {
		if l.AppID != "app-2" || l.Source == "" {
			t.Errorf("logged %+v: want every message sent by app-2 with its source", l)
			break
		}
	}
	// The refused app's messages wait, not dead: its circuit is open, and
	// no queue is paused for it.
	tripped := 0
	for _, r := range m.waitAll(t, bad, 10*time.Second, func(r *store.Record) bool { return r.Status == store.Retrying || r.Status == store.Queued }) {
		if r.Status.Final() {
			t.Errorf("%s of the refused sender is %s", r.ID, r.Status)
		}
		if hasNote(r, "opened the circuit breaker: this sender's messages wait") {
			tripped++
		}
	}
	if tripped != 1 {
		t.Errorf("%d messages of the refused sender say they opened its circuit, want 1", tripped)
	}
	st, err := ratelimit.NewSenderCircuit(m.rdb, senderBad).State(context.Background())
	if err != nil || !st.IsOpen() || st.Code != "http_401" {
		t.Errorf("the refused sender's circuit: %+v, %v; want it open by the 401", st, err)
	}
	numbers := []string{senderBad, senderAcme, business}
	sts, err := ratelimit.NewStates(m.rdb, business).OfAll(context.Background(), numbers)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{ratelimit.StateCircuitOpen, ratelimit.StateActive, ratelimit.StateActive} {
		if sts[i].State != want {
			t.Errorf("the state of %s: %+v; want %s", numbers[i], sts[i], want)
		}
	}
	if st, err := ratelimit.NewCircuit(m.rdb).State(context.Background()); err != nil || st.IsOpen() {
		t.Errorf("the deployment's circuit: %+v, %v; want it closed", st, err)
	}
	served := httptest.NewRecorder()
	cfg.Metrics.Handler().ServeHTTP(served, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range []string{
		`chatq_sender_messages_sent_total{sender="` + senderAcme + `"} 120`,
		`chatq_sender_messages_sent_total{sender="` + senderOther + `"} 60`,
		`chatq_sender_circuit_open{sender="` + senderBad + `"} 1`,
	} {
		if !strings.Contains(served.Body.String(), line+"\n") {
			t.Errorf("/metrics has no line %s", line)
		}
	}
	for _, q := range []string{"bulk", "transactional"} {
		if info, err := asynq.NewInspectorFromRedisClient(m.rdb).GetQueueInfo(q); err == nil && info.Paused {
			t.Errorf("queue %s is paused", q)
		}
	}
}

func TestSendersOfAPortfolioShareItsLowestDailyLimit(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	limit := func(n int) *int { return &n }
	m.add(t, senders.Spec{Number: senderAcme, AppID: "app-2", AppSecret: "secret-2", Tenant: "acme", Portfolio: "shared",
		Overrides: senders.Overrides{DailyRecipientLimit: limit(8)}})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta", Portfolio: "shared",
		Overrides: senders.Overrides{DailyRecipientLimit: limit(5)}})
	m.start(t, worker.Config{Concurrency: 10})

	var msgs []*enqueue.Message
	for i := range 6 {
		msgs = append(msgs, from(senderAcme, "acme", fmt.Sprintf("4474%07d9", i)), from(senderOther, "beta", fmt.Sprintf("4475%07d9", i)))
	}
	ids := m.sendAll(t, m.client, msgs)
	var recs []*store.Record
	poll.Until(t, 20*time.Second, "the portfolio's five recipients sent, the others waiting for the daily limit", func() (bool, string) {
		var err error
		if recs, err = m.store.GetMany(context.Background(), ids); err != nil {
			t.Fatal(err)
		}
		sent, waiting := 0, 0
		for _, r := range recs {
			switch {
			case r.Status == store.Submitted:
				sent++
			case waitingFor(r, store.WaitDailyLimit):
				waiting++
			}
		}
		return sent == 5 && waiting == 7, fmt.Sprintf("%d sent, %d waiting for the daily limit", sent, waiting)
	})
	if st := m.sandbox.Stats(); st.Accepted != 5 {
		t.Errorf("the sandbox accepted %d messages, want the portfolio's limit of 5", st.Accepted)
	}
}

func TestASenderAddedWhileWorkersRunSendsWithinSeconds(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.start(t, worker.Config{Concurrency: 5})
	// The worker runs, and knows the environment's sender alone.
	ids := m.sendAll(t, m.client, []*enqueue.Message{from("", "", "447600000019")})
	m.waitAll(t, ids, 10*time.Second, submitted)

	added := time.Now()
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta"})
	ids = m.sendAll(t, m.client, []*enqueue.Message{from(senderOther, "beta", "447600000029")})
	m.waitAll(t, ids, 5*time.Second, submitted)
	t.Logf("sent %s after the sender was added", time.Since(added).Round(time.Millisecond))
	log := sandboxLog(t, m.sandbox)
	if len(log) != 2 || log[0].AppID != "app" || log[0].Source != "" || log[1].AppID != "app-2" || log[1].Source != "" {
		t.Errorf("the sandbox logged %+v; want the first from app, the second from app-2, each of one number without a source", log)
	}
}

// A sender added by another process (the API) is one the worker's
// registry does not know until it reloads: a message that comes first
// sends at once rather than failing for an unknown sender.
func TestAMessageOfASenderAnotherProcessAddedSendsBeforeTheWorkerReloads(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	// The worker's registry is its own, and reloads on its own once an
	// hour: only the message makes it look.
	c, err := senders.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	own := senders.New(m.rdb, senders.Config{Cipher: c, Interval: time.Hour,
		Env: &senders.Sender{Number: business, AppID: "app", AppSecret: "secret"}})
	if err := own.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Stop)
	cfg := worker.Config{Concurrency: 5}
	cfg.Senders = &worker.Senders{Registry: own, Upstream: chatarchitect.Config{BaseURL: m.sbURL, Timeout: 2 * time.Second}}
	cfg.Flow.Limits.Sender = business
	m.worker(t, m.ca, cfg)

	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta"})
	ids := m.sendAll(t, m.client, []*enqueue.Message{from(senderOther, "beta", "447600000039")})
	rec := m.waitAll(t, ids, 10*time.Second, submitted)[0]
	for _, h := range rec.History {
		if h.Status != store.Queued && h.Status != store.Sending && h.Status != store.Submitted {
			t.Errorf("the message went through %s (%s) before it was sent: %+v", h.Status, h.Note, rec.History)
		}
	}
}

func TestAPausedSenderHoldsItsMessagesUntilResumed(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.add(t, senders.Spec{Number: senderAcme, AppID: "app-2", AppSecret: "secret-2", Tenant: "acme", Paused: true})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta"})
	m.start(t, worker.Config{Concurrency: 5})

	held := m.sendAll(t, m.client, []*enqueue.Message{from(senderAcme, "acme", "447700000019")})
	sent := m.sendAll(t, m.client, []*enqueue.Message{from(senderOther, "beta", "447700000029")})
	m.waitAll(t, sent, 10*time.Second, submitted)
	// A paused sender's bulk messages stay in its lane: its feeder moves
	// nothing, while the other sender's went.
	rec := m.waitAll(t, held, time.Second, func(r *store.Record) bool { return r.Status == store.Queued })[0]
	if at, err := m.store.InLane(context.Background(), rec); err != nil || at.IsZero() {
		t.Fatalf("the paused sender's message is not in its lane (%v): %+v", err, rec)
	}
	if _, err := m.reg.SetPaused(context.Background(), senderAcme, false); err != nil {
		t.Fatal(err)
	}
	m.waitAll(t, held, 10*time.Second, submitted)
}

func TestEachTenantsSuppressionsApplyToItsSendersAlone(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.add(t, senders.Spec{Number: senderAcme, AppID: "app-2", AppSecret: "secret-2", Tenant: "acme"})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta"})
	checker := policy.New(m.rdb, policy.Config{Window: policy.WindowOff})
	const dest = "447800000019"
	if err := checker.ForTenant("beta").Suppressions.Add(context.Background(), policy.Suppression{Destination: dest, Reason: "opted out of beta", Source: policy.SourceOperator, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	m.start(t, worker.Config{Concurrency: 5, Conversation: &worker.Conversation{Policy: checker}})

	ids := m.sendAll(t, m.client, []*enqueue.Message{from(senderAcme, "acme", dest), from(senderOther, "beta", dest), from("", "", dest)})
	recs := m.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool { return r.Status.Final() || r.Status == store.Submitted })
	if recs[0].Status != store.Submitted || recs[2].Status != store.Submitted {
		t.Errorf("acme's and default's messages: %s, %s; want both sent: beta's list is not theirs", recs[0].Status, recs[2].Status)
	}
	if recs[1].Status != store.Dead || recs[1].LastError == nil || recs[1].LastError.Code != policy.CodeSuppressed {
		t.Errorf("beta's message: %s %+v; want it dead as suppressed", recs[1].Status, recs[1].LastError)
	}
	if got := len(sandboxLog(t, m.sandbox)); got != 2 {
		t.Errorf("the sandbox accepted %d messages, want 2", got)
	}
}
