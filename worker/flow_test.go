package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

const business = "15550001234"

// sandboxDo runs one request against the sandbox's own routes.
func sandboxDo(tb testing.TB, sb *sandbox.Server, method, target, body string) []byte {
	tb.Helper()
	rec := httptest.NewRecorder()
	sb.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
	if rec.Code != http.StatusOK {
		tb.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// acceptedAt returns when the sandbox accepted each message it logged (to
// dest, or all when dest is empty), in order.
func acceptedAt(tb testing.TB, sb *sandbox.Server, dest string) []time.Time {
	tb.Helper()
	var msgs []struct {
		ReceivedAt time.Time `json:"received_at"`
	}
	if err := json.Unmarshal(sandboxDo(tb, sb, http.MethodGet, "/sandbox/messages?destination="+dest, ""), &msgs); err != nil {
		tb.Fatal(err)
	}
	at := make([]time.Time, len(msgs))
	for i, m := range msgs {
		at[i] = m.ReceivedAt
	}
	slices.SortFunc(at, time.Time.Compare)
	return at
}

// sendAll enqueues msgs and returns their ids.
func (b *bundle) sendAll(tb testing.TB, client *enqueue.Client, msgs []*enqueue.Message) []string {
	tb.Helper()
	res, err := client.SendBatch(context.Background(), msgs)
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, len(res))
	for i, r := range res {
		if r.Err != nil {
			tb.Fatal(r.Err)
		}
		ids[i] = r.Record.ID
	}
	return ids
}

func submitted(r *store.Record) bool { return r.Status == store.Submitted }

func limits(l ratelimit.Config) worker.FlowConfig {
	l.Sender = business
	return worker.FlowConfig{Limits: l}
}

// waitingFor reports whether a record waits for reason, its status
// unchanged.
func waitingFor(r *store.Record, reason store.WaitReason) bool {
	return r.Waiting != nil && r.Waiting.Reason == reason && r.Status.Pending() && r.Status != store.Sending
}

// sendingOnce reports whether a record's history has exactly one sending:
// its waits did not pass through the status.
func sendingOnce(r *store.Record) bool {
	n := 0
	for _, h := range r.History {
		if h.Status == store.Sending {
			n++
		}
	}
	return n == 1
}

// hasNote reports whether a record's history has a note containing s.
func hasNote(r *store.Record, s string) bool {
	for _, h := range r.History {
		if strings.Contains(h.Note, s) {
			return true
		}
	}
	return false
}

func TestWorkersShareTheSenderRateAndKeepTheUpstreamWithinItsLimit(t *testing.T) {
	t.Parallel()
	const n, rate = 400, 20
	b := setup(t, sandbox.Config{Rate: rate}, false)
	cfg := worker.Config{Concurrency: 10, Flow: limits(ratelimit.Config{Rate: rate, Burst: 1})}
	b.worker(t, b.ca, cfg)
	b.worker(t, b.ca, cfg)
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = text(fmt.Sprintf("4470%07d9", i), "rate")
	}
	ids := b.sendAll(t, b.client, msgs)
	b.waitAll(t, ids, 60*time.Second, submitted)

	st := b.sandbox.Stats()
	if st.Throttled != 0 {
		t.Errorf("the sandbox answered %d sends with 429", st.Throttled)
	}
	at := acceptedAt(t, b.sandbox, "")
	if len(at) != n {
		t.Fatalf("the sandbox accepted %d messages, want %d", len(at), n)
	}
	got := float64(n-1) / at[n-1].Sub(at[0]).Seconds()
	t.Logf("%d messages at %.3f/s (limit %d/s), %d throttled", n, got, rate, st.Throttled)
	if got < rate*0.95 || got > rate*1.05 {
		t.Errorf("measured rate %.3f/s, want within 5%% of %d/s", got, rate)
	}
}

func TestPairLimitLetsThreeGoThenSpacesTheRest(t *testing.T) {
	t.Parallel()
	const interval = 1500 * time.Millisecond
	b := setup(t, sandbox.Config{}, false)
	b.worker(t, b.ca, worker.Config{Concurrency: 10, Flow: limits(ratelimit.Config{PairInterval: interval, PairBurst: 3})})
	const dest = "447100000019"
	var msgs []*enqueue.Message
	for i := range 5 {
		msgs = append(msgs, text(dest, fmt.Sprintf("reply %d", i)))
	}
	ids := b.sendAll(t, b.client, msgs)
	recs := b.waitAll(t, ids, 20*time.Second, submitted)

	at := acceptedAt(t, b.sandbox, dest)
	if len(at) != 5 {
		t.Fatalf("the sandbox accepted %d messages to %s, want 5", len(at), dest)
	}
	if d := at[2].Sub(at[0]); d > interval/2 {
		t.Errorf("the first three went over %s, want them back to back", d)
	}
	for i, want := range []time.Duration{interval, 2 * interval} {
		if d := at[3+i].Sub(at[0]); d < want-50*time.Millisecond {
			t.Errorf("send %d went %s after the first, want at least %s", 4+i, d, want)
		}
	}
	// The waits are no status changes: each history has one sending.
	for _, r := range recs {
		if !sendingOnce(r) || r.Attempts != 1 {
			t.Errorf("%s: %d attempts, history %+v; want one sending", r.ID, r.Attempts, r.History)
		}
	}
}

func TestDailyLimitAdmitsExactlyTheLimitOfRecipients(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	b.worker(t, b.ca, worker.Config{Concurrency: 10, Flow: limits(ratelimit.Config{DailyRecipients: 2})})
	first := b.sendAll(t, b.client, []*enqueue.Message{text("447200000019", "a"), text("447200000029", "b")})
	b.waitAll(t, first, 10*time.Second, submitted)
	// A third recipient waits; a second message to an admitted one goes.
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447200000039", "c"), text("447200000019", "a again")})
	recs := b.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool {
		return r.Status == store.Submitted || waitingFor(r, store.WaitDailyLimit)
	})
	if !waitingFor(recs[0], store.WaitDailyLimit) || recs[0].Status != store.Queued || recs[0].Waiting.Until == nil {
		t.Errorf("the third recipient's message is %s waiting %+v, want it queued, held by the daily limit until a time", recs[0].Status, recs[0].Waiting)
	}
	if recs[1].Status != store.Submitted {
		t.Errorf("the second message to an admitted recipient is %s, want submitted", recs[1].Status)
	}
	if got := len(acceptedAt(t, b.sandbox, "447200000039")); got != 0 {
		t.Errorf("the sandbox accepted %d messages to the third recipient", got)
	}
}

// A message that waits longer than it is worth sending ends expired when
// its expires_at passes, not when its wait ends.
func TestAWaitEndsWhenTheMessageExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	b.worker(t, b.ca, worker.Config{Concurrency: 5, Flow: limits(ratelimit.Config{DailyRecipients: 1})})
	b.waitAll(t, b.sendAll(t, b.client, []*enqueue.Message{text("447200000019", "a")}), 10*time.Second, submitted)
	code := text("447200000029", "a code worth two seconds")
	expires := time.Now().Add(2 * time.Second)
	code.ExpiresAt = expires
	ids := b.sendAll(t, b.client, []*enqueue.Message{code})
	b.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool { return waitingFor(r, store.WaitDailyLimit) })
	r := b.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool { return r.Status.Final() })[0]
	if r.Status != store.Expired || r.Attempts != 0 || r.Waiting != nil {
		t.Errorf("the code waiting for the daily limit ends %s after %d attempts, waiting %+v; want expired, 0, no wait", r.Status, r.Attempts, r.Waiting)
	}
}

// readyz returns /readyz's status code and body.
func readyz(tb testing.TB, a http.Handler) (int, map[string]json.RawMessage) {
	tb.Helper()
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		tb.Fatalf("/readyz: %v: %s", err, rec.Body)
	}
	return rec.Code, body
}

func circuitOf(tb testing.TB, body map[string]json.RawMessage) ratelimit.CircuitState {
	tb.Helper()
	var st ratelimit.CircuitState
	if err := json.Unmarshal(body["circuit"], &st); err != nil {
		tb.Fatalf("/readyz circuit %s: %v", body["circuit"], err)
	}
	return st
}

// waitQuiet polls count until it stays the same for quiet, and returns it.
func waitQuiet(tb testing.TB, count func() int64, quiet, timeout time.Duration) int64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	last, since := count(), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			tb.Fatalf("still growing after %s: %d", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
		if n := count(); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

func TestCircuitBreakerStopsEveryWorkerAndResumesAfterAProbe(t *testing.T) {
	t.Parallel()
	const n = 200
	b := setup(t, sandbox.Config{}, false)
	cfg := worker.Config{Concurrency: 5, Flow: limits(ratelimit.Config{Rate: 40, Burst: 1})}
	cfg.Flow.ProbeInterval, cfg.Flow.MaxProbeInterval = 100*time.Millisecond, 500*time.Millisecond
	b.worker(t, b.ca, cfg)
	b.worker(t, b.ca, cfg)
	circuit := worker.NewCircuit(b.rdb, b.log)
	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Circuit: circuit}, b.client, b.store, b.log)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = text(fmt.Sprintf("4473%07d9", i), "circuit")
	}
	ids := b.sendAll(t, b.client, msgs)
	poll.Until(t, 10*time.Second, "sending gets going", func() (bool, string) { return b.sandbox.Stats().Accepted >= 20, "" })

	sandboxDo(t, b.sandbox, http.MethodPut, "/sandbox/config", `{"auth_failure":true}`)
	requests := func() int64 { return b.sandbox.Stats().Requests }
	stopped := waitQuiet(t, requests, time.Second, 5*time.Second)
	// And it stays stopped, probes notwithstanding (they are not sends).
	time.Sleep(1500 * time.Millisecond)
	if got := requests(); got != stopped {
		t.Fatalf("the workers called the sandbox %d more times after the circuit opened", got-stopped)
	}
	refused := stopped - b.sandbox.Stats().Accepted
	t.Logf("%d sends refused with 401 before every worker stopped", refused)

	code, body := readyz(t, a)
	st := circuitOf(t, body)
	if code != http.StatusOK || !st.IsOpen() || st.MessageID == "" || st.Code != "http_401" {
		t.Fatalf("/readyz: %d, circuit %+v", code, st)
	}
	tripped, err := b.store.Get(context.Background(), st.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	if tripped.LastError == nil || tripped.LastError.Class != "account" || !hasNote(tripped, "opened the circuit breaker") || tripped.Status.Final() {
		t.Errorf("the record of the message that opened the circuit: %+v", tripped)
	}
	if info, err := asynq.NewInspectorFromRedisClient(b.rdb).GetQueueInfo("bulk"); err != nil || !info.Paused {
		t.Errorf("queue bulk: %+v, %v; want it paused", info, err)
	}

	sandboxDo(t, b.sandbox, http.MethodPut, "/sandbox/config", `{"auth_failure":false}`)
	b.waitAll(t, ids, 30*time.Second, submitted)
	if _, body := readyz(t, a); circuitOf(t, body).IsOpen() {
		t.Errorf("the circuit is still open after every message went: %s", body["circuit"])
	}
	if st := b.sandbox.Stats(); st.Accepted != n || st.Duplicates != 0 {
		t.Errorf("the sandbox accepted %d messages (%d duplicates), want %d", st.Accepted, st.Duplicates, n)
	}
	for _, r := range b.waitAll(t, ids, time.Second, submitted) {
		if r.Status != store.Submitted {
			t.Errorf("%s is %s", r.ID, r.Status)
		}
	}
}

func TestOperatorPauseHoldsUntilResume(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	cfg := worker.Config{Concurrency: 5}
	cfg.Flow.ProbeInterval, cfg.Flow.MaxProbeInterval = 50*time.Millisecond, 100*time.Millisecond
	b.worker(t, b.ca, cfg)
	circuit := worker.NewCircuit(b.rdb, b.log)
	ctx := context.Background()
	if err := circuit.Pause(ctx, "maintenance"); err != nil {
		t.Fatal(err)
	}
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447400000019", "paused")})
	// The probes, which would close an automatic opening, leave it alone.
	time.Sleep(time.Second)
	if got := b.sandbox.Stats().Requests; got != 0 {
		t.Fatalf("%d sends while paused", got)
	}
	if st, err := circuit.State(ctx); err != nil || !st.IsOpen() || !st.Manual || st.Reason != "maintenance" {
		t.Fatalf("state while paused: %+v, %v", st, err)
	}
	if was, err := circuit.Resume(ctx); err != nil || !was {
		t.Fatalf("Resume = %v, %v", was, err)
	}
	b.waitAll(t, ids, 10*time.Second, submitted)
}

func TestTransactionalMessagesAreNotStarvedByABulkBacklog(t *testing.T) {
	t.Parallel()
	const concurrency, rate, backlog = 20, 50, 2000
	b := setup(t, sandbox.Config{Rate: rate}, false)
	cfg := worker.Config{Concurrency: concurrency, Flow: limits(ratelimit.Config{Rate: rate, Burst: 1})}
	b.worker(t, b.ca, cfg)
	b.worker(t, b.ca, cfg)
	msgs := make([]*enqueue.Message, backlog)
	for i := range msgs {
		msgs[i] = text(fmt.Sprintf("4475%07d9", i), "bulk")
	}
	b.sendAll(t, b.client, msgs)
	poll.Until(t, 10*time.Second, "the backlog gets going", func() (bool, string) { return b.sandbox.Stats().Accepted >= 2*rate, "" })
	bound := time.Duration(concurrency)*time.Second/rate + time.Second
	var worst time.Duration
	for i := range 5 {
		dest := fmt.Sprintf("44760000%03d9", i)
		m := text(dest, "your code is 123456")
		m.Priority = enqueue.Transactional
		start := time.Now()
		if _, err := b.client.Send(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, fmt.Sprintf("transactional message %d is sent", i), func() (bool, string) {
			return len(acceptedAt(t, b.sandbox, dest)) > 0, ""
		})
		worst = max(worst, time.Since(start))
	}
	st := b.sandbox.Stats()
	t.Logf("worst transactional wait %s behind a bulk backlog (bound %s); %d bulk sent meanwhile, %d throttled", worst, bound, st.Accepted-5, st.Throttled)
	if worst > bound {
		t.Errorf("a transactional message waited %s behind the bulk backlog, want at most %s", worst, bound)
	}
	if st.Accepted >= backlog || st.Throttled != 0 {
		t.Errorf("the backlog drained (%d accepted) or the sandbox throttled %d sends", st.Accepted, st.Throttled)
	}
}

func TestHeldMessagesWithoutRetriesLeftAreHandedBackNotArchived(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	// Tasks without any retry: asynq would archive them on any error.
	client := enqueue.NewClient(b.rdb, enqueue.Config{MaxRetry: -1})
	t.Cleanup(func() { client.Close() })
	b.worker(t, b.ca, worker.Config{Concurrency: 5, Flow: limits(ratelimit.Config{Rate: 100, PairInterval: 1500 * time.Millisecond, PairBurst: 1})})
	const dest = "447700000019"
	ids := b.sendAll(t, client, []*enqueue.Message{
		text(dest, "first"), text(dest, "second"),
		// 429 with Retry-After: 1 on its first attempt.
		text("447700010004", "throttled"),
	})
	recs := b.waitAll(t, ids, 15*time.Second, submitted)
	if at := acceptedAt(t, b.sandbox, dest); len(at) != 2 || at[1].Sub(at[0]) < 1450*time.Millisecond {
		t.Errorf("the messages to %s were accepted at %v, want them 1.5s apart (the per-recipient limit)", dest, at)
	}
	if r := recs[2]; r.LastError == nil || r.LastError.Class != "rate_limited" || !hasNote(r, "throttled by ChatArchitect") {
		t.Errorf("the throttled message's record: %+v", r)
	}
	for _, q := range []string{"transactional", "bulk"} {
		archived, err := asynq.NewInspectorFromRedisClient(b.rdb).ListArchivedTasks(q)
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatal(err)
		}
		if len(archived) > 0 {
			t.Errorf("queue %s archived %d tasks", q, len(archived))
		}
	}
}

// TestThrottleShowsInReadyzAndResumeClearsIt is a regression test: one 429
// with a Retry-After of a day stopped the sender for a day, /readyz did not
// tell, and chatq resume did not lift it.
func TestThrottleShowsInReadyzAndResumeClearsIt(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	var refused atomic.Bool
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/whatsappmessage" && refused.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "86400")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"status":"error","message":"Too many requests"}`))
			return
		}
		b.sandbox.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: upstream.URL, AppID: "app", AppSecret: "secret", Source: business, Timeout: 2 * time.Second}, nil)
	b.worker(t, ca, worker.Config{Concurrency: 2, Flow: limits(ratelimit.Config{Rate: 20})})
	circuit := worker.NewCircuit(b.rdb, b.log)
	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Circuit: circuit}, b.client, b.store, b.log)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.sendAll(t, b.client, []*enqueue.Message{text("447800000019", "refused once")})

	type throttle struct {
		Sender string    `json:"sender"`
		Until  time.Time `json:"until"`
		Reason string    `json:"reason"`
		Code   string    `json:"code"`
	}
	var shown []throttle
	poll.Until(t, 10*time.Second, "/readyz shows the throttle", func() (bool, string) {
		_, body := readyz(t, a)
		shown = nil
		if raw, ok := body["throttles"]; ok {
			if err := json.Unmarshal(raw, &shown); err != nil {
				t.Fatalf("/readyz throttles %s: %v", raw, err)
			}
		}
		return len(shown) > 0, fmt.Sprint(body)
	})
	th := shown[0]
	if len(shown) != 1 || th.Sender != business || th.Code != "http_429" || th.Reason == "" {
		t.Errorf("/readyz throttles: %+v", shown)
	}
	if late := th.Until.Sub(start); late < 4*time.Minute || late > 5*time.Minute+10*time.Second {
		t.Errorf("throttled until %s after the send, want the 24h Retry-After capped at 5m", late)
	}

	if _, err := circuit.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, body := readyz(t, a); body["throttles"] != nil {
		t.Errorf("/readyz after resume still shows throttles %s", body["throttles"])
	}
	ids := b.sendAll(t, b.client, []*enqueue.Message{text("447800000029", "after resume")})
	b.waitAll(t, ids, 10*time.Second, submitted)
}

// TestHalfOpenCircuitSendsOneTrialPerProbe is a regression test: getHSM,
// the probe, answers while sends still fail for the account (1003, no
// balance), and the circuit closed on every successful probe, let a burst
// of failing sends go, opened again with its backoff reset, and so on.
// Now a successful probe half-opens it, one message goes as a trial, and
// its refusal opens the circuit again with the probe backoff still growing.
func TestHalfOpenCircuitSendsOneTrialPerProbe(t *testing.T) {
	t.Parallel()
	const n = 40
	b := setup(t, sandbox.Config{}, false)
	var broke atomic.Bool
	broke.Store(true)
	var mu sync.Mutex
	var refusedAt []time.Time
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/whatsappmessage" && broke.Load() {
			mu.Lock()
			refusedAt = append(refusedAt, time.Now())
			mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"status":"error","code":"1003","message":"Insufficient balance"}`))
			return
		}
		b.sandbox.ServeHTTP(w, r) // getHSM answers throughout
	}))
	t.Cleanup(upstream.Close)
	refusals := func(from, to time.Time) []time.Time {
		mu.Lock()
		defer mu.Unlock()
		var out []time.Time
		for _, at := range refusedAt {
			if !at.Before(from) && at.Before(to) {
				out = append(out, at)
			}
		}
		return out
	}
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: upstream.URL, AppID: "app", AppSecret: "secret", Source: business, Timeout: 2 * time.Second}, nil)
	const probe = 250 * time.Millisecond
	cfg := worker.Config{Concurrency: 5, Flow: limits(ratelimit.Config{Rate: 50})}
	cfg.Flow.ProbeInterval, cfg.Flow.MaxProbeInterval = probe, 10*time.Second
	b.worker(t, ca, cfg)
	b.worker(t, ca, cfg)
	circuit := worker.NewCircuit(b.rdb, b.log)
	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Circuit: circuit}, b.client, b.store, b.log)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = text(fmt.Sprintf("4479%07d9", i), "no balance")
	}
	ids := b.sendAll(t, b.client, msgs)
	poll.Until(t, 10*time.Second, "the circuit opens", func() (bool, string) {
		_, body := readyz(t, a)
		return circuitOf(t, body).State == ratelimit.CircuitOpen, string(body["circuit"])
	})

	// A second after opening, the sends that were on the wire are done;
	// over the next six seconds only trials go, one per successful probe,
	// each further from the last.
	start := time.Now().Add(time.Second)
	const window = 6 * time.Second
	time.Sleep(time.Second + window)
	seen := refusals(start, start.Add(window))
	t.Logf("%d sends refused in all; %d in the %s watched, at %v", len(refusals(time.Time{}, time.Now())), len(seen), window, seen)
	if len(seen) < 1 || len(seen) > 4 {
		t.Errorf("the upstream saw %d sends in %s of an open circuit, want one per half-open trial (1 to 4)", len(seen), window)
	}
	for i := 1; i < len(seen); i++ {
		if gap := seen[i].Sub(seen[i-1]); gap < 2*probe {
			t.Errorf("trial sends %d and %d went %s apart, want a probe backoff of at least %s between them", i-1, i, gap, 2*probe)
		}
	}
	_, body := readyz(t, a)
	st := circuitOf(t, body)
	if st.State == ratelimit.CircuitClosed || st.FailedProbes < 2 {
		t.Errorf("/readyz after failed trials: %s; want the circuit open or half-open, its probe backoff kept growing", body["circuit"])
	}

	// The account works again: the next trial closes the circuit, and the
	// backlog drains.
	broke.Store(false)
	recs := b.waitAll(t, ids, 40*time.Second, submitted)
	for _, r := range recs {
		if r.Status != store.Submitted {
			t.Errorf("%s is %s", r.ID, r.Status)
		}
	}
	if _, body := readyz(t, a); circuitOf(t, body).State != ratelimit.CircuitClosed {
		t.Errorf("the circuit after the backlog drained: %s", body["circuit"])
	}
	if st := b.sandbox.Stats(); st.Accepted != n || st.Duplicates != 0 {
		t.Errorf("the sandbox accepted %d messages (%d duplicates), want %d", st.Accepted, st.Duplicates, n)
	}
}
