package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/store"
)

// StreamOptions shape the full-stream measurement. Zero fields take the
// defaults named on each.
type StreamOptions struct {
	// Target is the rate, in messages per second, held for Duration first;
	// zero means 2500.
	Target float64 `json:"target"`
	// Duration is how long a rate must hold to count; zero means 60s.
	Duration time.Duration `json:"duration_ns"`
	// ProbeDuration is the length of the shorter runs that look for the
	// highest rate before it is held for Duration; zero means 10s.
	ProbeDuration time.Duration `json:"probe_duration_ns"`
	// Step is the factor between probed rates; zero means 1.25.
	Step float64 `json:"step"`
	// MaxProbes bounds the probes; zero means 4.
	MaxProbes int `json:"max_probes"`
	// MaxLag is the p99 webhook-to-record lag a sustained rate must keep;
	// zero means 1s.
	MaxLag time.Duration `json:"max_lag_ns"`
	// WebhookDelay is the sandbox's delay between a message's webhooks;
	// zero means 50ms.
	WebhookDelay time.Duration `json:"webhook_delay_ns"`
	// Chatq is the chatq binary started as the sandbox, API and worker.
	Chatq string `json:"-"`
	// Concurrency is the worker's; zero means 50.
	Concurrency int `json:"concurrency"`
	// Priority is the messages' priority; empty means bulk, as a campaign
	// is sent.
	Priority enqueue.Priority `json:"priority"`
	// Warmup is how long each run goes at its rate before the window it is
	// judged on opens; zero means 3s.
	Warmup time.Duration `json:"warmup_ns"`
}

func (o *StreamOptions) withDefaults() {
	o.Target = cmpOr(o.Target, 2500)
	o.Duration = cmpOr(o.Duration, 60*time.Second)
	o.ProbeDuration = cmpOr(o.ProbeDuration, 10*time.Second)
	o.Step = cmpOr(o.Step, 1.25)
	o.MaxProbes = cmpOr(o.MaxProbes, 4)
	o.MaxLag = cmpOr(o.MaxLag, time.Second)
	o.WebhookDelay = cmpOr(o.WebhookDelay, 50*time.Millisecond)
	o.Concurrency = cmpOr(o.Concurrency, 50)
	o.Priority = cmpOr(o.Priority, enqueue.Bulk)
	o.Warmup = cmpOr(o.Warmup, 3*time.Second)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// StreamStep is one run of the full stream at a fixed rate.
type StreamStep struct {
	// Rate is the offered rate, in messages per second.
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
	// Messages is how many were enqueued in the window (after the
	// warm-up), Total how many in all.
	Messages int `json:"messages"`
	Total    int `json:"total"`
	// Sent is how many the sandbox accepted in the window, and Backlog how
	// many were still to send when it closed.
	Sent    int `json:"sent"`
	Backlog int `json:"backlog"`
	// Webhooks is how many webhooks (of all messages) chatq answered with
	// a 2xx, Failed how many the sandbox gave up on or dropped.
	Webhooks       int64 `json:"webhooks"`
	WebhooksFailed int64 `json:"webhooks_failed"`
	// Lag is, for a sample of the messages, the time from a webhook's
	// arrival at chatq's HTTP server (from the window's start on) to the
	// first read of the record that shows it.
	Lag Latencies `json:"lag"`
	// Incomplete is how many records (warm-up included) did not end "read"
	// with each of enqueued, sent, delivered and read in their history.
	Incomplete int `json:"incomplete"`
	// Sustained is true when the rate held: the producer kept up, the
	// worker was at most a second behind at the end, every webhook was
	// correlated, and the lag's p99 stayed within the limit.
	Sustained bool `json:"sustained"`
	// Why says what failed when Sustained is false.
	Why string `json:"why,omitempty"`
}

// StreamResult is the full-stream measurement.
type StreamResult struct {
	// AtTarget is the run at the target rate for the full duration.
	AtTarget StreamStep `json:"at_target"`
	// Probes are the shorter runs that looked for the highest rate.
	Probes []StreamStep `json:"probes,omitempty"`
	// Best is the highest rate sustained for the full duration, nil if
	// none was.
	Best *StreamStep `json:"best,omitempty"`
}

// Stream measures the whole stream: messages enqueued at a steady rate,
// sent by a worker, and every webhook of each (enqueued, sent, delivered,
// read) received by chatq's API and correlated with its record. It holds
// the target rate for the full duration, probes higher rates (or lower
// ones, if the target did not hold) in shorter runs, and holds the highest
// probed rate that passed for the full duration.
func Stream(ctx context.Context, env *Env, opts StreamOptions) (StreamResult, error) {
	opts.withDefaults()
	var res StreamResult
	run := func(rate float64, d time.Duration) (StreamStep, error) {
		st, err := streamStep(ctx, env, opts, rate, d)
		if err != nil {
			return st, err
		}
		verdict := "sustained"
		if !st.Sustained {
			verdict = "not sustained: " + st.Why
		}
		env.logf("stream: %.0f msg/s for %s: %d sent, %d webhooks, lag p99 %.1fms (%d samples): %s",
			rate, d, st.Sent, st.Webhooks, ms(st.Lag.P99), st.Lag.Count, verdict)
		return st, nil
	}
	var err error
	if res.AtTarget, err = run(opts.Target, opts.Duration); err != nil {
		return res, err
	}
	up := res.AtTarget.Sustained
	if up {
		best := res.AtTarget
		res.Best = &best
	}
	var passed []float64
	rate := opts.Target
	for range opts.MaxProbes {
		if up {
			rate *= opts.Step
		} else {
			rate /= opts.Step
		}
		p, err := run(math.Round(rate), opts.ProbeDuration)
		if err != nil {
			return res, err
		}
		res.Probes = append(res.Probes, p)
		if p.Sustained {
			passed = append(passed, p.Rate)
		}
		if up != p.Sustained {
			break
		}
	}
	// Hold the best probed rates for the full duration, highest first.
	slices.Sort(passed)
	slices.Reverse(passed)
	for i, r := range passed {
		if i == 2 || (res.Best != nil && r <= res.Best.Rate) {
			break
		}
		st, err := run(r, opts.Duration)
		if err != nil {
			return res, err
		}
		if st.Sustained {
			res.Best = &st
			break
		}
	}
	return res, nil
}

// streamStep runs the stream at rate for window, then waits for what is in
// flight to finish.
func streamStep(ctx context.Context, env *Env, opts StreamOptions, rate float64, window time.Duration) (StreamStep, error) {
	step := StreamStep{Rate: rate, Duration: window}
	if err := env.flush(ctx); err != nil {
		return step, err
	}
	d, err := startDeployment(ctx, env, opts.Chatq, opts.Concurrency, opts.WebhookDelay)
	if err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	defer d.close()
	// The sandbox posts the webhooks to a relay in this process, which
	// notes when the watched ones arrive and passes every one on to the
	// API's receiver.
	tr := newTracker()
	s := newStack(env)
	defer s.close()
	target, err := url.Parse(d.apiURL)
	if err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}
	relayURL, err := s.serve(tr.middleware(proxy))
	if err != nil {
		return step, fmt.Errorf("stream: relay: %w", err)
	}
	if err := d.registerWebhook(ctx, relayURL); err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	client := s.enqueueClient(72, enqueue.Config{})
	st := store.New(s.redis(8), store.Config{})
	if err := d.startWorker(ctx); err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	accepted := func() int {
		stats, err := d.sandboxStats(ctx)
		if err != nil {
			return 0
		}
		return int(stats.Accepted)
	}

	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan error, 1)
	go func() { polled <- tr.poll(pollCtx, st) }()
	var pollErr error
	pollDone := false
	finishPoll := func() error {
		if !pollDone {
			pollDone = true
			stopPoll()
			pollErr = <-polled
		}
		return pollErr
	}
	defer finishPoll()

	// About twenty messages a second are watched for the lag. The window
	// opens after the warm-up, so that starting (connections, Redis's
	// script cache, the first garbage collections) does not count.
	every := max(1, int(rate/20))
	var producedBefore, sentBefore int
	ids, err := produce(ctx, client, tr, rate, opts.Warmup, window, every, opts.Priority, func(produced int) {
		producedBefore, sentBefore = produced, accepted()
		tr.open(time.Now())
	})
	sent := accepted()
	step.Messages, step.Total = len(ids)-producedBefore, len(ids)
	step.Sent, step.Backlog = sent-sentBefore, len(ids)-sent
	if err != nil {
		return step, err
	}

	// Everything in flight gets time to finish: the backlog, then each
	// message's webhooks. The records are read once all is quiet, so that
	// reading them does not slow the last webhooks down.
	achieved := max(float64(step.Sent)/window.Seconds(), 1)
	drain := time.Duration(float64(step.Backlog)/achieved*float64(time.Second)) + 8*opts.WebhookDelay + 30*time.Second
	if err := waitUntil(ctx, drain, func() bool {
		stats, err := d.sandboxStats(ctx)
		return err == nil && int(stats.Accepted) >= len(ids) && stats.WebhooksPending == 0 && tr.settled()
	}); err != nil {
		return step, err
	}
	if err := finishPoll(); err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	recs, err := waitRecords(ctx, st, ids, 5*time.Second, complete)
	var notDone *notDoneError
	switch {
	case errors.As(err, &notDone):
		step.Incomplete = notDone.pending
	case err != nil:
		return step, fmt.Errorf("stream: %w", err)
	}
	for _, r := range recs {
		if r != nil && !correlated(r) {
			step.Incomplete++
		}
	}
	stats, err := d.sandboxStats(ctx)
	if err != nil {
		return step, fmt.Errorf("stream: %w", err)
	}
	step.Webhooks, step.WebhooksFailed = stats.WebhooksSent, stats.WebhooksFailed+stats.WebhooksDropped
	step.Lag = summarize(tr.lags)

	var why []string
	if want := int(rate * window.Seconds()); step.Messages < want*99/100 {
		why = append(why, fmt.Sprintf("the producer enqueued %d of %d", step.Messages, want))
	}
	if step.Backlog > int(rate) {
		why = append(why, fmt.Sprintf("%d messages were still to send at the end (over a second's worth)", step.Backlog))
	}
	if step.Incomplete > 0 || step.WebhooksFailed > 0 {
		why = append(why, fmt.Sprintf("%d records not fully correlated, %d webhooks lost", step.Incomplete, step.WebhooksFailed))
	}
	if step.Lag.Count == 0 {
		why = append(why, "no lag sample")
	} else if step.Lag.P99 > opts.MaxLag {
		why = append(why, fmt.Sprintf("lag p99 %s over %s", step.Lag.P99.Round(time.Millisecond), opts.MaxLag))
	}
	step.Sustained = len(why) == 0
	step.Why = strings.Join(why, "; ")
	return step, nil
}

// produce enqueues messages of priority prio at rate for warmup + d, in a
// batch every 10ms, every every-th of them watched by tr; it calls
// onWindow once warmup has passed, with the number enqueued so far, and
// returns the ids of all.
func produce(ctx context.Context, client *enqueue.Client, tr *tracker, rate float64, warmup, d time.Duration, every int, prio enqueue.Priority, onWindow func(produced int)) ([]string, error) {
	d += warmup
	ids := make([]string, 0, int(rate*d.Seconds())+1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	windowed := false
	for {
		select {
		case <-ctx.Done():
			return ids, ctx.Err()
		case <-tick.C:
		}
		elapsed := time.Since(start)
		if elapsed > d {
			elapsed = d
		}
		if !windowed && elapsed >= warmup {
			windowed = true
			onWindow(len(ids))
		}
		due := int(rate * elapsed.Seconds())
		if due > len(ids) {
			msgs := make([]*enqueue.Message, due-len(ids))
			for j := range msgs {
				i := len(ids) + j
				prefix := plainPrefix
				if i%every == 0 {
					prefix = sampledPrefix
				}
				msgs[j] = textMessage(prefix, i, prio)
			}
			res, err := client.SendBatch(ctx, msgs)
			if err != nil {
				return ids, fmt.Errorf("stream: enqueue: %w", err)
			}
			for j, r := range res {
				if r.Err != nil {
					return ids, fmt.Errorf("stream: enqueue: %w", r.Err)
				}
				if strings.HasPrefix(msgs[j].Destination, sampledPrefix) {
					tr.watch(msgs[j].Destination, r.Record.ID)
				}
				ids = append(ids, r.Record.ID)
			}
		}
		if elapsed == d {
			return ids, nil
		}
	}
}

// deliveryEvents are the webhooks of a message that is read, in order.
var deliveryEvents = [...]store.Status{store.Enqueued, store.Sent, store.Delivered, store.Read}

func complete(r *store.Record) bool { return r.Status == store.Read }

// correlated reports whether each delivery event of r was applied from its
// own webhook (not implied by a later one) exactly once.
func correlated(r *store.Record) bool {
	var n [len(deliveryEvents)]int
	for _, h := range r.History {
		for i, st := range deliveryEvents {
			if h.Status == st && h.Note == "" {
				n[i]++
			}
		}
	}
	for _, c := range n {
		if c != 1 {
			return false
		}
	}
	return true
}

// tracker measures the webhook-to-record lag of watched messages: its
// middleware notes when each of their webhooks reaches chatq's HTTP
// server, and poll notes when a read of the record first shows it. The
// lag is the difference; polling every few milliseconds adds at most that
// much to it.
type tracker struct {
	mu      sync.Mutex
	byDest  map[string]*watched
	pending map[*watched]struct{}
	lags    []time.Duration
	// since is when the window opened: webhooks arriving before are not
	// measured.
	since time.Time
}

type watched struct {
	id      string
	arrived [len(deliveryEvents)]time.Time
	seen    [len(deliveryEvents)]bool
}

func newTracker() *tracker {
	return &tracker{byDest: map[string]*watched{}, pending: map[*watched]struct{}{}}
}

// open starts the window: only webhooks arriving from at on are measured.
func (t *tracker) open(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.since = at
}

func (t *tracker) watch(dest, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.byDest[dest]
	if w == nil {
		w = &watched{}
		t.byDest[dest] = w
	}
	w.id = id
}

// middleware notes the arrival of the watched messages' webhooks before
// chatq's handler sees them. Only their bodies are parsed here.
func (t *tracker) middleware(next http.Handler) http.Handler {
	mark := []byte(`"destination":"` + sampledPrefix)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/webhooks/") {
			now := time.Now()
			body, err := io.ReadAll(r.Body)
			_ = r.Body.Close()
			if err != nil {
				http.Error(w, "unreadable body", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, mark) {
				t.arrived(body, now)
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (t *tracker) arrived(body []byte, at time.Time) {
	hook, err := chatarchitect.ParseWebhook(body)
	if err != nil || hook.Event == nil {
		return
	}
	i := slices.Index(deliveryEvents[:], store.Status(hook.Event.Type))
	if i < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.since.IsZero() || at.Before(t.since) {
		return
	}
	w := t.byDest[hook.Event.Destination]
	if w == nil {
		// The webhook beat SendBatch's return: watch it all the same.
		w = &watched{}
		t.byDest[hook.Event.Destination] = w
	}
	if w.arrived[i].IsZero() {
		w.arrived[i] = at
		t.pending[w] = struct{}{}
	}
}

// settled reports whether every webhook of a watched message that arrived
// was seen in its record.
func (t *tracker) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) == 0
}

// pollInterval is how often poll reads the watched records that have a
// webhook arrived and not yet seen.
const pollInterval = 2 * time.Millisecond

// poll reads the records of watched messages with a webhook waiting to be
// seen, until ctx ends.
func (t *tracker) poll(ctx context.Context, st *store.Store) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var ws []*watched
	var ids []string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		ws, ids = ws[:0], ids[:0]
		t.mu.Lock()
		for w := range t.pending {
			if w.id != "" {
				ws = append(ws, w)
				ids = append(ids, w.id)
			}
		}
		t.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		recs, err := st.GetMany(ctx, ids)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("watch records: %w", err)
		}
		now := time.Now()
		t.mu.Lock()
		for j, r := range recs {
			if r == nil {
				continue
			}
			w, open := ws[j], 0
			for i, status := range deliveryEvents {
				if w.arrived[i].IsZero() || w.seen[i] {
					continue
				}
				if _, ok := historyAt(r, status); ok {
					w.seen[i] = true
					t.lags = append(t.lags, now.Sub(w.arrived[i]))
					continue
				}
				open++
			}
			if open == 0 {
				delete(t.pending, w)
			}
		}
		t.mu.Unlock()
	}
}
