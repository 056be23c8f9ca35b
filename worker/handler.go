// Package worker sends queued messages: an asynq handler that calls
// ChatArchitect, classifies the outcome, and records it on the job record,
// with exponential backoff for what may succeed later and asynq's archive as
// the dead-letter queue for what will not.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/store"
)

// Sender sends one message upstream and returns the provider's message id.
// *chatarchitect.Client is the real one; its errors are
// *chatarchitect.APIError.
type Sender interface {
	Send(ctx context.Context, destination string, payload json.RawMessage) (string, error)
}

// Policy is the retry policy. The zero value is not usable; Config fills it.
type Policy struct {
	// MaxRetry is the number of attempts after the first.
	MaxRetry int
	// BaseDelay is the first backoff; it doubles each attempt up to
	// MaxDelay.
	BaseDelay, MaxDelay time.Duration
	// Jitter is the +/- fraction of random jitter on each delay.
	Jitter float64
}

// Handler is the asynq handler of enqueue.TaskSend.
type Handler struct {
	store  *store.Store
	sender Sender
	policy Policy
	log    *zap.Logger
	now    func() time.Time
	conv   *Conversation // conversation policy, in policy.go; nil checks nothing
	flow   *flow         // limits and circuit breaker, in flow.go; nil sends at once
	// senders, if set, sends each message from its sender (senders.go);
	// nil sends every message through sender and flow.
	senders *senderSet
	// metrics counts sends, retries and dead letters; nil counts nothing.
	metrics *metrics.Metrics
	// worker is the worker process's id, which owns the sends it takes up
	// (see recovery.go).
	worker string
	// unrecorded keeps the acceptances Redis could not take.
	unrecorded *unrecorded
	// tasks writes the task of the next message of a conversation that
	// gets its turn (order.go); nil leaves that to the sweeper.
	tasks *enqueue.Client
}

// NewHandler returns the send handler of worker process worker (the id
// of its heartbeat: see Worker).
func NewHandler(st *store.Store, sender Sender, policy Policy, worker string, log *zap.Logger) *Handler {
	return &Handler{store: st, sender: sender, policy: policy, log: log, now: time.Now, worker: worker,
		unrecorded: newUnrecorded(st, log)}
}

// maintenanceWait is how long a message waits after its business number
// was found in maintenance (131057), which lasts up to a minute: a few
// tries within it rather than one after it.
const maintenanceWait = 5 * time.Second

// accountLimitWait is how long a sender holds back after the account's API
// call limit (80007), which says no Retry-After of its own; the sender's
// MaxRetryAfter caps it.
const accountLimitWait = time.Minute

// retryError is a failure worth another attempt. Its delay, when set,
// replaces the backoff (a Retry-After); rate limits do not use up the retry
// budget.
type retryError struct {
	err         error
	delay       time.Duration
	rateLimited bool
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// IsFailure tells asynq which errors use up a task's retry budget: all but
// rate limits, which say "later", not "broken".
func IsFailure(err error) bool {
	var re *retryError
	if errors.As(err, &re) && re.rateLimited {
		return false
	}
	return err != nil
}

// RetryDelay is asynq's RetryDelayFunc: the upstream's Retry-After when it
// gave one, else exponential backoff from the policy with jitter.
func (h *Handler) RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	// Other tasks of the worker (status callbacks) choose their own delay.
	var own interface{ RetryDelay() time.Duration }
	if errors.As(err, &own) {
		return own.RetryDelay()
	}
	var re *retryError
	if errors.As(err, &re) && re.delay > 0 {
		return re.delay
	}
	return h.policy.Backoff(n)
}

// Backoff is the delay before retry n+1 (n = retries so far).
func (p Policy) Backoff(n int) time.Duration {
	d := p.BaseDelay
	for i := 0; i < n && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	if p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rand.Float64()-1)))
	}
	return d
}

// ProcessTask sends the message whose job the task's id names. What
// may keep the message back (its expiry, the conversation policy, its
// sender's pause, flow control) is decided before the send is taken up: a
// message held back waits with its status unchanged, and only a real send
// attempt moves it to sending.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	id := enqueue.RecordOf(taskOf(ctx), t.Payload())
	h.metrics.HandlerRun()
	// WithLazy: the fields are encoded only when a line is logged, which a
	// successful send does at debug level alone.
	log := h.log.WithLazy(zap.String("message_id", id))
	if h.unrecorded.has(id) {
		// Accepted upstream already; its record waits for Redis.
		log.Info("task skipped: the message was accepted, its acceptance is being recorded")
		return nil
	}
	rec, err := h.store.Peek(ctx, id)
	if err == nil && rec != nil && rec.Status == store.Dead {
		// A dead letter's task runs again only when an operator runs it
		// from asynq's archive (the dashboard's "run"): that is a retry,
		// with the record's history saying so.
		// Refused: an operator's retry (chatq dlq retry) queued it
		// meanwhile, and this task sends it.
		if err = h.store.Requeue(ctx, id, h.now(), "run again from the dead-letter queue"); err == nil || errors.Is(err, store.ErrRefused) {
			rec, err = h.store.Peek(ctx, id)
		}
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", id, err)
	}
	switch {
	case rec == nil:
		// The record expired or was never written (a producer that died
		// between the record and the task writes the record first, so
		// this is a record past its TTL): nothing to send.
		log.Warn("task without a record dropped")
		return nil
	case !rec.Status.Pending():
		// Already submitted or ended: a redelivered or replaced task sends
		// nothing.
		log.Debug("task skipped", zap.String("status", string(rec.Status)))
		return nil
	}
	if rec.ExpiresAt != nil && !h.now().Before(*rec.ExpiresAt) {
		o, _, err := h.store.Move(ctx, id, store.Change{Status: store.Expired, Note: "expires_at passed before it could be sent", Task: taskOf(ctx)})
		if err != nil {
			return fmt.Errorf("expire %s: %w", id, err)
		}
		if o == store.Changed {
			h.release(ctx, log, rec)
		}
		log.Info("message expired before it was sent")
		return nil
	}
	checks, err := h.look(ctx, rec)
	if err != nil {
		return err
	}
	fallback, stop, err := h.checkPolicy(ctx, log, rec, checks.policy)
	if stop {
		return err
	}
	if rec.Status != store.Sending {
		// A message taken up already was checked then, and cannot wait.
		if stop, err := h.checkOwn(ctx, log, rec, checks); stop {
			return err
		}
	}
	fl, sender, err := h.route(ctx, log, rec)
	if fl == nil && sender == nil {
		return err
	}
	var claim ratelimit.Claim
	if rec.Status != store.Sending {
		// A message taken up already (its task handed back after its
		// worker was lost) was admitted then.
		if stop, claim, err = h.admit(ctx, log, fl, rec); stop { // it may sleep for its send slot
			return err
		}
	}
	owner := store.Owner{Worker: h.worker, Task: taskOf(ctx)}
	outcome, err := h.store.Take(ctx, rec, h.now(), owner)
	if err != nil || outcome != store.Changed {
		// Not sent: the slot it took counts for nobody, and a half-open
		// circuit's trial goes to the next message.
		fl.settle(context.WithoutCancel(ctx), log, id, errExpired)
		fl.uncount(ctx, log, claim)
	}
	if err != nil {
		return fmt.Errorf("begin %s: %w", id, err)
	}
	if outcome != store.Changed {
		// Canceled or ended meanwhile, or being sent by another task.
		log.Debug("task skipped", zap.String("status", string(rec.Status)))
		return nil
	}
	if fallback {
		rec.Payload = rec.FallbackTemplate
	}
	attempt := rec.Attempts
	log = log.WithLazy(zap.Int("attempt", attempt))

	// From here the send may reach ChatArchitect: a worker lost now leaves
	// a possible duplicate, which the record knows of (Begin).
	if rec.SentAgain {
		h.metrics.PossibleDuplicate()
		log.Warn("sending again a message whose previous attempt's outcome was not recorded (worker lost): it may be sent twice", zap.Bool("possible_duplicate", true))
	}
	start := h.now()
	providerID, sendErr := sender.Send(ctx, rec.Destination, rec.Payload)
	took := h.now().Sub(start)
	fl.settle(ctx, log, id, sendErr) // a half-open circuit's trial
	if sendErr != nil && !mayHaveSent(sendErr) {
		fl.uncount(ctx, log, claim) // refused: it reached nobody
	}
	if sendErr == nil {
		h.metrics.SendDuration("submitted", took)
		log.Debug("send attempt", zap.String("outcome", "submitted"), zap.String("provider_message_id", providerID), zap.Duration("took", took))
		h.submit(ctx, log, rec, providerID)
		h.metrics.SenderSent(h.senderLabel(rec))
		return nil
	}
	info := errorInfo(sendErr, h.now())
	h.metrics.SendDuration(info.Class, took)
	log.Debug("send attempt", zap.String("outcome", "failed"), zap.String("class", info.Class), zap.String("code", info.Code), zap.Duration("took", took))
	h.learn(ctx, log, rec, sendErr)
	return h.fail(ctx, log, fl, rec, sendErr)
}

// route returns the flow control and the client of rec's sender. When
// the message goes no further (its sender is paused or unknown), both are
// nil and err is for asynq.
func (h *Handler) route(ctx context.Context, log *zap.Logger, rec *store.Record) (*flow, Sender, error) {
	if h.senders == nil {
		return h.flow, h.sender, nil
	}
	fl, sender, hd, err := h.senders.route(ctx, rec)
	var unknown *errUnknownSender
	switch {
	case hd != nil && rec.Status == store.Sending:
		// Taken up before its sender was paused (its worker lost since):
		// it cannot wait, so asynq runs it again every circuitHold until
		// the sender resumes.
		return nil, nil, &retryError{err: fmt.Errorf("send %s: %s", rec.ID, hd.note), delay: hd.delay, rateLimited: true}
	case hd != nil:
		return nil, nil, h.wait(ctx, log, rec, hd)
	case errors.As(err, &unknown):
		return nil, nil, h.fail(ctx, log, nil, rec, err)
	case err != nil:
		return nil, nil, err // the registry could not be read: the task runs again
	}
	return fl, sender, nil
}

// mayHaveSent reports whether a failed send may have been accepted after
// all.
func mayHaveSent(err error) bool {
	var apiErr *chatarchitect.APIError
	return errors.As(err, &apiErr) && apiErr.Ambiguous
}

// taskOf is the id of the task the handler runs: its changes to the record
// are refused once the sweeper handed the message to another task.
func taskOf(ctx context.Context) string {
	id, _ := asynq.GetTaskID(ctx)
	return id
}

// enqueuedAt is when a message became due: its creation, or its send_at
// when it was scheduled for later.
func enqueuedAt(rec *store.Record) time.Time {
	if rec.SendAt != nil && rec.SendAt.After(rec.CreatedAt) {
		return *rec.SendAt
	}
	return rec.CreatedAt
}

// submit records the acceptance. Failing to record it would send the
// message again, so an acceptance Redis does not take is kept in memory
// and recorded in the background once Redis answers, whatever becomes of
// the task (see unrecorded); the task itself is done.
func (h *Handler) submit(ctx context.Context, log *zap.Logger, rec *store.Record, providerID string) {
	at := h.now()
	// The conversation's turn is handed on in the same round trip.
	next, err := h.store.Accept(context.WithoutCancel(ctx), rec, providerID, at)
	if err == nil {
		h.metrics.Submitted(rec.Priority, h.now().Sub(enqueuedAt(rec)))
		h.turnTo(ctx, log, next)
		return
	}
	h.unrecorded.add(rec.ID, acceptance{providerID: providerID, at: at, priority: rec.Priority, enqueuedAt: enqueuedAt(rec)})
	log.Error("recording an accepted message failed: kept in memory, recorded once Redis answers",
		zap.String("provider_message_id", providerID), zap.Error(err))
}

// fail classifies a send failure, records it and tells asynq what to do.
//
// fl is the flow control of the message's sender, nil when it has none.
func (h *Handler) fail(ctx context.Context, log *zap.Logger, fl *flow, rec *store.Record, sendErr error) error {
	id := rec.ID
	info := errorInfo(sendErr, h.now())
	var apiErr *chatarchitect.APIError
	errors.As(sendErr, &apiErr)
	log = log.With(zap.String("class", info.Class), zap.String("code", info.Code))

	if apiErr != nil && apiErr.Marker == chatarchitect.MarkerNotAFailure {
		// The number is busy for a minute at most: nothing is wrong with
		// the message, so the retry budget stays whole.
		log.Info("business number in maintenance, will retry", zap.String("reason", info.Message), zap.Duration("in", maintenanceWait))
		h.metrics.Retry(info.Class, false)
		h.metrics.SenderRetry(h.senderLabel(rec), info.Class)
		note := "the business number is in maintenance (131057): retried in " + roundWait(maintenanceWait) + ", not counted as a failure"
		return h.hold(ctx, log, id, &hold{delay: maintenanceWait, note: note, err: &info})
	}

	switch chatarchitect.Class(info.Class) {
	case chatarchitect.ClassMarketingCapped, chatarchitect.ClassTemplatePaused:
		return h.refusedOwn(ctx, log, rec, info)
	case chatarchitect.ClassPermanent, chatarchitect.ClassPolicy:
		if apiErr != nil && apiErr.Marker == chatarchitect.MarkerTemplateDisabled {
			// The template's other messages end too, those waiting
			// and those to come, without a send each.
			if name := store.TemplateName(rec.Payload); name != "" {
				if _, err := h.store.SetTemplateState(ctx, rec.Sender, name, store.TemplateDisabled, h.now()); err != nil {
					log.Warn("recording a disabled template", zap.String("template", name), zap.Error(err))
				}
			}
		}
		if err := h.moveDead(ctx, rec, store.Change{Error: &info, Note: "refused by ChatArchitect"}); err != nil {
			return err
		}
		log.Warn("message refused, dead-lettered", zap.String("reason", info.Message))
		return fmt.Errorf("send %s: %w: %w", id, sendErr, asynq.SkipRetry)
	case chatarchitect.ClassRateLimited:
		// Retried without using up the retry budget, once the sender (or
		// that recipient) has slowed down. Flow control logs it.
		var retryAfter time.Duration
		var marker chatarchitect.Marker
		if apiErr != nil {
			retryAfter, marker = apiErr.RetryAfter, apiErr.Marker
		}
		if marker == chatarchitect.MarkerAccountWide {
			// The account's API call limit comes without a Retry-After.
			retryAfter = max(retryAfter, accountLimitWait)
		}
		if fl == nil {
			log.Warn("rate limited by ChatArchitect, will retry", zap.String("reason", info.Message), zap.Duration("retry_after", retryAfter))
		}
		h.metrics.Retry(info.Class, false)
		h.metrics.SenderRetry(h.senderLabel(rec), info.Class)
		return h.hold(ctx, log, id, fl.rateLimited(ctx, log, rec.Destination, info, marker, retryAfter))
	case chatarchitect.ClassAccount:
		// Every message would fail alike: the circuit breaker pauses
		// sending rather than burn each message's retries.
		if fl != nil {
			log.Warn("refused by ChatArchitect for the account: sending paused, the message waits", zap.String("reason", info.Message))
			h.metrics.Retry(info.Class, false)
			h.metrics.SenderRetry(h.senderLabel(rec), info.Class)
			return h.hold(ctx, log, id, fl.accountRefused(ctx, log, id, info))
		}
	}

	ambiguous := apiErr != nil && apiErr.Ambiguous
	// The retry budget is the record's: the failed attempts of every task
	// the message had, and those whose outcome was lost with their worker.
	failures := rec.Failures + 1
	if failures > h.policy.MaxRetry {
		if err := h.moveDead(ctx, rec, store.Change{Error: &info, Note: fmt.Sprintf("gave up after %d attempts", failures)}); err != nil {
			return err
		}
		log.Error("retries exhausted, dead-lettered", zap.String("reason", info.Message))
		return fmt.Errorf("send %s: %w: %w", id, sendErr, asynq.SkipRetry)
	}
	delay := h.policy.Backoff(rec.Failures)
	if apiErr != nil && apiErr.RetryAfter > 0 {
		delay = apiErr.RetryAfter
	}
	if _, _, err := h.store.Move(ctx, id, store.Change{Status: store.Retrying, Error: &info, Failed: true, At: h.now(), Due: h.now().Add(delay), Task: taskOf(ctx)}); err != nil {
		return fmt.Errorf("record retry of %s: %w", id, err)
	}
	h.metrics.Retry(info.Class, ambiguous)
	h.metrics.SenderRetry(h.senderLabel(rec), info.Class)
	if ambiguous {
		// No idempotency key upstream: the retry may send it twice.
		log.Warn("send may have been accepted, will retry: it may be sent twice", zap.Bool("possible_duplicate", true), zap.String("reason", info.Message))
	} else {
		log.Warn("send failed, will retry", zap.String("reason", info.Message))
	}
	return &retryError{err: fmt.Errorf("send %s: %w", id, sendErr), delay: delay}
}

// moveDead ends a message as a dead letter with c's error and note.
func (h *Handler) moveDead(ctx context.Context, rec *store.Record, c store.Change) error {
	c.Status, c.Task = store.Dead, taskOf(ctx)
	o, _, err := h.store.Move(ctx, rec.ID, c)
	if err != nil {
		return fmt.Errorf("record dead letter %s: %w", rec.ID, err)
	}
	if o == store.Changed {
		h.metrics.Dead(c.Error.Class, c.Error.Code)
		h.metrics.SenderDead(h.senderLabel(rec), c.Error.Class)
		h.release(ctx, h.log.With(zap.String("message_id", rec.ID)), rec)
	}
	return nil
}

// senderLabel is the sender of rec as metrics label it: its number, that
// of the environment's sender for a record that names none.
func (h *Handler) senderLabel(rec *store.Record) string {
	switch {
	case rec.Sender != "":
		return rec.Sender
	case h.flow != nil && h.flow.sender != "":
		return h.flow.sender
	}
	return "default"
}

// errorInfo turns a send error into a record's last_error.
func errorInfo(err error, at time.Time) store.ErrorInfo {
	var apiErr *chatarchitect.APIError
	if !errors.As(err, &apiErr) {
		return store.ErrorInfo{Class: string(chatarchitect.ClassRetryable), Message: err.Error(), At: at}
	}
	code := apiErr.Code
	if code == "" && apiErr.StatusCode != 0 {
		code = fmt.Sprintf("http_%d", apiErr.StatusCode)
	}
	msg := apiErr.Reason
	if msg == "" {
		msg = apiErr.Error()
	}
	return store.ErrorInfo{Class: string(apiErr.Class), Code: code, Message: msg, At: at}
}
