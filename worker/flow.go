package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/store"
)

// FlowConfig tunes flow control: the limits every worker shares through
// Redis, and the circuit breaker. Zero values take the defaults named on
// each field; the zero Limits limit nothing.
type FlowConfig struct {
	// Limits are the sender's limits: rate, pair limit, daily cap.
	Limits ratelimit.Config
	// Window, if set, tells the daily cap which recipients are inside
	// their 24-hour window and do not count; nil counts every recipient.
	Window ratelimit.Window
	// Probe checks, while the circuit breaker is open, whether the
	// upstream accepts the account again: an authenticated call that sends
	// nothing. Nil means the Sender's Templates method when it has one
	// (*chatarchitect.Client has); with neither, only an operator's resume
	// closes the circuit.
	Probe func(ctx context.Context) error
	// Horizon is how far ahead a bulk message may reserve its send slot;
	// zero means 500ms. A sender's feeder hands the workers only the bulk
	// messages whose slots lie within it, so that a transactional message
	// never queues behind more than Horizon of bulk slots; one that finds
	// its slot beyond it after all waits in its sender's lane again.
	Horizon time.Duration
	// MaxSleep is the longest wait a handler sleeps through; a longer one
	// hands the task back to asynq to run when the limit allows. Zero means
	// 1s.
	MaxSleep time.Duration
	// StateRefresh is how often a worker re-reads the circuit breaker's
	// state and the upstream's Retry-After, which it checks before every
	// send; zero means 250ms.
	StateRefresh time.Duration
	// ProbeInterval is the wait before the first probe of an open circuit;
	// it doubles with each failed probe up to MaxProbeInterval. Zero means
	// 1s and 1m.
	ProbeInterval, MaxProbeInterval time.Duration
}

func (c *FlowConfig) withDefaults() {
	if c.Horizon <= 0 {
		c.Horizon = 500 * time.Millisecond
	}
	if c.MaxSleep <= 0 {
		c.MaxSleep = time.Second
	}
	if c.StateRefresh <= 0 {
		c.StateRefresh = 250 * time.Millisecond
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = time.Second
	}
	if c.MaxProbeInterval <= 0 {
		c.MaxProbeInterval = time.Minute
	}
	c.MaxProbeInterval = max(c.MaxProbeInterval, c.ProbeInterval)
}

const (
	// maxReserve bounds how far ahead a transactional message reserves its
	// slot. Only a backlog of transactional messages, or a rate throttled
	// hard, pushes slots that far; beyond it the task is handed back.
	maxReserve = 30 * time.Second
	// probeLease is how long one worker's claim to probe the upstream
	// lasts: longer than any probe's own timeout.
	probeLease = 30 * time.Second
	// trialLease is how long a message's claim to be the half-open
	// circuit's trial send lasts, should its worker die: longer than the
	// wait for its slot and its send.
	trialLease = 30 * time.Second
	// trialWait is how long a message that finds another one on its way as
	// the trial waits in its worker for that trial's outcome, before it is
	// handed back.
	trialWait = 10 * time.Second
	// circuitHold is how long a message held by an open circuit or a
	// pause waits before it looks again. Its wait ends sooner: when the
	// circuit closes or the sender resumes, every worker that sees it
	// releases the waiting messages (flow.released, senderSet.watch), and
	// a half-open circuit releases one, its trial.
	circuitHold = 30 * time.Second
	// laneReturn is how soon a bulk message held back by an open circuit
	// or a pause is handed back to its sender's lane (by the sweeper).
	laneReturn = time.Second
)

// errStopping hands a waiting message back when its worker stops.
var errStopping = errors.New("worker stopping")

// errExpired settles the trial of a message that expired while it waited
// for its slot: it was not sent.
var errExpired = errors.New("expired before its send")

// hold is a message that flow control keeps back. Before its send, it
// waits (Handler.wait): its status unchanged, the record says why and
// until when, and the due index gives it a new task after delay. After a
// failed send, it is recorded as retrying, with a note, and its task is
// handed back to run after delay (Handler.hold).
type hold struct {
	delay time.Duration
	note  string
	// reason is what the message waits for.
	reason store.WaitReason
	// open: the wait's end is unknown (a pause, an open circuit); delay is
	// then when the message looks again.
	open bool
	// pairSlot, if set, is the slot the message holds on its recipient's
	// schedule, which it keeps through the wait.
	pairSlot time.Time
	// err, if set, becomes the record's last_error: the upstream's answer
	// that caused the hold.
	err *store.ErrorInfo
}

// flowState is what a worker caches of the shared state, to check it
// before every send without a round trip.
type flowState struct {
	circuit ratelimit.CircuitState
	// blockedUntil is the end of the upstream's Retry-After, on this
	// process's clock.
	blockedUntil time.Time
}

// flow is one worker's flow control.
type flow struct {
	cfg     FlowConfig
	limiter *ratelimit.Limiter
	circuit *Circuit
	probe   func(ctx context.Context) error
	log     *zap.Logger
	now     func() time.Time

	state atomic.Pointer[flowState]
	// stopped is closed when the worker stops: messages still waiting for
	// a slot are handed back.
	stopped <-chan struct{}
	probing atomic.Bool
	// trialCall is when this worker last unpaused the queues for a
	// half-open circuit still waiting for its trial (unix nanoseconds).
	trialCall atomic.Int64
	wg        sync.WaitGroup
	failing   atomic.Bool
	shutdown  context.CancelFunc
	// metrics counts the waits and the circuit breaker's state; nil counts
	// nothing.
	metrics *metrics.Metrics
	// sender is the business number whose flow this is, as metrics label
	// it.
	sender string
	// global is the deployment's flow, whose circuit an operator's pause
	// opens for every sender; nil when this is it.
	global *flow
	// waits releases the messages that wait for this flow's circuit
	// (Store.Release) once it closes; nil releases nothing. waitKeys are
	// the senders their records name.
	waits    *store.Store
	waitKeys []string
	// held is whether this worker last saw the flow hold every message
	// (its circuit, or the deployment's opened by hand, open).
	held atomic.Bool
}

// release ends the wait of up to n messages (0: all) waiting for reason
// on this flow, for a look now.
func (f *flow) release(ctx context.Context, reason store.WaitReason, n int) {
	if f.waits == nil {
		return
	}
	released, err := f.waits.ReleaseWaits(ctx, f.waitKeys, reason, n)
	switch {
	case err != nil && ctx.Err() == nil:
		f.log.Warn("releasing waiting messages failed; they look again on their own", zap.String("reason", string(reason)), zap.Error(err))
	case released > 0:
		f.log.Info("released waiting messages", zap.String("reason", string(reason)), zap.Int("messages", released))
	}
}

// heldNow reports whether the flow holds every message: its circuit open
// or half-open, or the deployment's opened by hand.
func (f *flow) heldNow() bool {
	if f.global != nil {
		if gs := f.global.state.Load().circuit; gs.Manual && gs.IsOpen() {
			return true
		}
	}
	return f.state.Load().circuit.IsOpen()
}

// circuitGauge sets the metrics of the circuit breaker: the sender's own,
// and the deployment's when this is its flow.
func (f *flow) circuitGauge(open bool) {
	if f.global == nil {
		f.metrics.CircuitOpen(open)
	}
	f.metrics.SenderCircuitOpen(cmp.Or(f.sender, "default"), open)
}

// waited counts a wait of a send for a limit.
func (f *flow) waited(limit string, d time.Duration) {
	if d > 0 {
		f.metrics.LimitWait(limit, d)
	}
}

func newFlow(rdb redis.UniversalClient, cfg FlowConfig, sender Sender, log *zap.Logger) *flow {
	probe := cfg.Probe
	if probe == nil {
		if t, ok := sender.(interface {
			Templates(context.Context) ([]chatarchitect.Template, error)
		}); ok {
			probe = func(ctx context.Context) error {
				_, err := t.Templates(ctx)
				return err
			}
		}
	}
	f := &flow{
		cfg:     cfg,
		limiter: ratelimit.New(rdb, cfg.Limits, cfg.Window),
		circuit: NewCircuit(rdb, log.Named("circuit")),
		probe:   probe,
		log:     log,
		now:     time.Now,
	}
	f.state.Store(&flowState{circuit: ratelimit.CircuitState{State: ratelimit.CircuitClosed}})
	f.stopped = make(chan struct{}) // until start
	return f
}

// start reads the shared state once, then keeps it fresh and probes an
// open circuit until stop.
func (f *flow) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.shutdown = cancel
	f.stopped = ctx.Done()
	f.refresh(ctx)
	f.wg.Add(1)
	go f.run(ctx)
}

// stop hands back the messages still waiting, for a slot or a short hold,
// and ends the background work.
func (f *flow) stop() {
	if f.shutdown != nil {
		f.shutdown()
	}
	f.wg.Wait()
}

func (f *flow) run(ctx context.Context) {
	defer f.wg.Done()
	refresh := time.NewTicker(f.cfg.StateRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			f.refresh(ctx)
		}
	}
}

// refresh re-reads the circuit breaker's state and the sender's
// Retry-After, and starts a probe when one may be due.
func (f *flow) refresh(ctx context.Context) {
	cs, err := f.circuit.State(ctx)
	var ss ratelimit.SenderState
	if err == nil {
		ss, err = f.limiter.State(ctx)
	}
	if err != nil {
		// Logged once per outage: the handlers report the failures that
		// matter, those of their own sends.
		if ctx.Err() == nil && !f.failing.Swap(true) {
			f.log.Warn("reading the flow-control state failed; using the last one", zap.Error(err))
		}
		return
	}
	if f.failing.Swap(false) {
		f.log.Info("reading the flow-control state works again")
	}
	f.state.Store(&flowState{circuit: cs, blockedUntil: f.now().Add(ss.Blocked)})
	f.circuitGauge(cs.IsOpen())
	if held := f.heldNow(); f.held.Swap(held) && !held {
		// Closed: what waited for it goes now, not at its next look.
		f.release(ctx, store.WaitCircuitOpen, 0)
	}
	switch {
	case cs.Manual:
	case cs.State == ratelimit.CircuitOpen:
		f.maybeProbe(ctx)
	case cs.State == ratelimit.CircuitHalfOpen && (cs.Trial == "" || cs.TrialUntil == nil || f.now().After(*cs.TrialUntil)):
		f.callTrial(ctx)
	}
}

// callTrial makes sure that a half-open circuit without a trial on its
// way gets one: the queues are unpaused, and the first message a worker
// takes is the trial. The prober unpaused them already; this covers a
// failure in between, or a trial whose worker died. Once per probe interval
// per worker at most.
func (f *flow) callTrial(ctx context.Context) {
	now := f.now().UnixNano()
	last := f.trialCall.Load()
	if now-last < int64(f.cfg.ProbeInterval) || !f.trialCall.CompareAndSwap(last, now) {
		return
	}
	if err := f.circuit.autoUnpause(); err != nil && ctx.Err() == nil {
		f.log.Warn("unpausing the queues for the half-open circuit's trial failed", zap.Error(err))
	}
	// The messages held back wait without a task: the one that waited
	// longest goes, to be the trial.
	f.release(ctx, store.WaitCircuitOpen, 1)
}

// maybeProbe checks, in the background, whether the upstream accepts the
// account again, when this worker may: one worker probes at a time, with
// backoff between probes.
func (f *flow) maybeProbe(ctx context.Context) {
	if f.probe == nil || !f.probing.CompareAndSwap(false, true) {
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer f.probing.Store(false)
		claimed, err := f.circuit.state.ClaimProbe(ctx, probeLease)
		if err != nil || !claimed {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, probeLease)
		perr := f.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if perr == nil {
			if _, err := f.circuit.halfOpenAfterProbe(ctx); err != nil {
				f.log.Error("half-opening the circuit breaker after a successful probe failed", zap.Error(err))
			}
			f.refresh(ctx)
			return
		}
		next, err := f.circuit.state.ProbeFailed(ctx, f.cfg.ProbeInterval, f.cfg.MaxProbeInterval)
		if err != nil {
			f.log.Warn("scheduling the next probe failed", zap.Error(err))
		}
		f.log.Warn("circuit breaker stays open: ChatArchitect still refuses the account", zap.NamedError("probe_error", perr), zap.Duration("next_probe", next))
	}()
}

// admit is flow control's check before a send: the circuit breaker and the
// limits every worker shares. It reports stop when the task ends here, with
// err for asynq: the message was held back (and handed back), or expired
// while it waited for its slot.
//
// fl is the flow control of the message's sender. claim is what the send
// counts against the daily cap, which a refusal gives back.
func (h *Handler) admit(ctx context.Context, log *zap.Logger, fl *flow, rec *store.Record) (stop bool, claim ratelimit.Claim, err error) {
	hd, claim, err := fl.admit(ctx, rec)
	if errors.Is(err, errStopping) {
		// Handed back as it was: asynq runs the task again, on this worker
		// once it restarts or on another, with nothing recorded.
		return true, claim, &retryError{err: fmt.Errorf("flow control of %s: %w", rec.ID, err), delay: time.Second, rateLimited: true}
	}
	if err != nil {
		return true, claim, fmt.Errorf("flow control of %s: %w", rec.ID, err)
	}
	if hd != nil {
		return true, claim, h.wait(ctx, log, rec, hd)
	}
	if rec.ExpiresAt != nil && !h.now().Before(*rec.ExpiresAt) {
		fl.settle(ctx, log, rec.ID, errExpired) // not sent: no trial
		fl.uncount(ctx, log, claim)
		o, _, err := h.store.Move(ctx, rec.ID, store.Change{Status: store.Expired, Note: "expires_at passed while it waited for its send slot", Task: taskOf(ctx)})
		if err != nil {
			return true, claim, fmt.Errorf("expire %s: %w", rec.ID, err)
		}
		if o == store.Changed {
			h.release(ctx, log, rec)
		}
		log.Info("message expired before it was sent")
		return true, claim, nil
	}
	return false, claim, nil
}

// uncount gives back what a send counted against the daily cap, when it
// reached nobody.
func (f *flow) uncount(ctx context.Context, log *zap.Logger, c ratelimit.Claim) {
	if f == nil || c.Recipient == "" {
		return
	}
	if err := f.limiter.Uncount(context.WithoutCancel(ctx), c); err != nil {
		log.Warn("giving back a recipient's place in the daily count failed", zap.Error(err))
	}
}

// wait records that a message flow control keeps back before its send
// waits, its status unchanged (no history entry, no callback), and ends
// its task: the due index gives it a new one when the wait ends.
func (h *Handler) wait(ctx context.Context, log *zap.Logger, rec *store.Record, hd *hold) error {
	now := h.now()
	due := now.Add(hd.delay)
	w := store.Waiting{Reason: hd.reason, Since: now}
	if rec.Waiting != nil && rec.Waiting.Reason == hd.reason {
		w.Since = rec.Waiting.Since // the same wait goes on
	}
	if !hd.open {
		w.Until = &due
	}
	if hd.open && rec.Priority == string(enqueue.Bulk) {
		// A bulk message goes back to its sender's lane at once, where it
		// waits with the sender's others, costing nothing, until the
		// sender's feeder may hand it out again.
		due = now.Add(laneReturn)
	}
	if rec.ExpiresAt != nil && rec.ExpiresAt.Before(due) {
		// Looked at when it expires, to end it then.
		due = *rec.ExpiresAt
	}
	err := h.store.Wait(ctx, rec, taskOf(ctx), w, due, hd.pairSlot)
	if errors.Is(err, store.ErrRefused) {
		log.Debug("not held: the message moved on meanwhile", zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("record wait of %s: %w", rec.ID, err)
	}
	log.Debug("message waits", zap.String("reason", string(hd.reason)), zap.Duration("for", hd.delay))
	return nil
}

// hold records a message that flow control keeps back after a failed send
// as retrying, with a note, and hands its task back to run after the hold
// without using up its retry budget.
func (h *Handler) hold(ctx context.Context, log *zap.Logger, id string, hd *hold) error {
	due := h.now().Add(hd.delay)
	if _, _, err := h.store.Move(ctx, id, store.Change{Status: store.Retrying, Note: hd.note, Error: hd.err, At: h.now(), Due: due, Task: taskOf(ctx)}); err != nil {
		return fmt.Errorf("record hold of %s: %w", id, err)
	}
	log.Debug("message held back", zap.String("note", hd.note), zap.Duration("for", hd.delay))
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if retried >= maxRetry {
		// asynq archives a task whose retries are used up on any error,
		// whatever IsFailure says: this one ends, and the due index gives
		// the message a new task when it may go.
		return h.store.Defer(ctx, id, due)
	}
	return &retryError{err: fmt.Errorf("hold %s: %s", id, hd.note), delay: wholeSeconds(h.now(), hd.delay), rateLimited: true}
}

// admit holds the message until flow control lets it go. It returns nil
// to send now, a hold to hand the message back, or an error.
func (f *flow) admit(ctx context.Context, rec *store.Record) (*hold, ratelimit.Claim, error) {
	if f == nil {
		return nil, ratelimit.Claim{}, nil
	}
	var claim ratelimit.Claim
	h, err := f.check(ctx, rec, &claim)
	if h != nil || err != nil {
		// Held back after its slot after all: it counts for nobody.
		f.uncount(ctx, f.log, claim)
		claim = ratelimit.Claim{}
	}
	return h, claim, err
}

// check is admit's work. Its order matters: the circuit costs nothing to
// check while it is closed; the pair limit comes before the slot, so that a
// message it holds back takes no slot from the others; the slot is taken
// last, and only a new Retry-After or an open circuit undoes it. A message
// that is the half-open circuit's trial and is held back after all gives
// its turn to the next one.
func (f *flow) check(ctx context.Context, rec *store.Record, claim *ratelimit.Claim) (h *hold, err error) {
	trial, h, err := f.circuitGate(ctx, rec.ID)
	if h != nil || err != nil {
		return h, err
	}
	if trial {
		defer func() {
			if h != nil || err != nil {
				// Not the stopping worker's context: the release must
				// happen.
				if rerr := f.circuit.releaseTrial(context.WithoutCancel(ctx), rec.ID); rerr != nil {
					f.log.Warn("releasing the half-open circuit's trial failed", zap.String("message_id", rec.ID), zap.Error(rerr))
				}
			}
		}()
	}
	// A slot on the recipient's schedule that the message holds already
	// is waited for here; a new one is reserved with the send slot, in one
	// step.
	pair := rec.PairSlot == nil
	if !pair {
		if h, err := f.heldPair(ctx, rec); h != nil || err != nil {
			return h, err
		}
	}
	transactional := rec.Priority != string(enqueue.Bulk)
	for try := 0; ; try++ {
		d, c, err := f.reserve(ctx, rec.Destination, transactional, pair)
		if err != nil {
			return nil, err
		}
		pair = false
		if c.Recipient != "" {
			*claim = c
		}
		if d.Reason == ratelimit.ReasonPair {
			// Its pair slot is too far to sleep for: it waits, keeping it.
			return &hold{delay: d.Wait, reason: store.WaitPairRate, pairSlot: f.now().Add(d.Wait),
				note: "waiting " + roundWait(d.Wait) + " for the per-recipient limit"}, nil
		}
		if !d.Reserved {
			f.waited(string(d.Reason), d.Wait)
			return holdFor(d), nil
		}
		f.waited(string(ratelimit.ReasonRate), d.Wait)
		if err := f.sleep(ctx, d.Wait); err != nil {
			return nil, err
		}
		// What any worker learned while this one waited for its slot still
		// holds the message back: the circuit opened, or the upstream asked
		// for a pause that the slot, reserved before, does not respect.
		if h := f.circuitHold(trial); h != nil {
			return h, nil
		}
		if try > 0 || !f.now().Before(f.state.Load().blockedUntil) {
			return nil, nil
		}
	}
}

// heldPair waits for the slot on its recipient's schedule (the pair limit)
// that the message reserved before it waited. A slot held already may be
// slept for up to heldSlotSleep: a message given its slot by the release
// of the one before it (order.go) comes due that early, so that it goes at
// its slot, not up to a sweep after it; a longer wait is a hold that keeps
// the slot.
func (f *flow) heldPair(ctx context.Context, rec *store.Record) (*hold, error) {
	wait := rec.PairSlot.Sub(f.now())
	if wait <= 0 {
		return nil, nil
	}
	f.waited("pair", wait)
	if wait > f.heldSlotSleep() {
		return &hold{delay: wait, reason: store.WaitPairRate, pairSlot: f.now().Add(wait),
			note: "waiting " + roundWait(wait) + " for the per-recipient limit"}, nil
	}
	return nil, f.sleep(ctx, wait)
}

// heldSlotSleep is the longest wait for a pair slot the message holds
// already that its handler sleeps through: MaxSleep, plus as much again for
// the sweep that hands it its task.
func (f *flow) heldSlotSleep() time.Duration { return 2 * f.cfg.MaxSleep }

// reserve gets the message a send slot from the shared limits, sleeping
// through short holds. A bulk message reserves a slot within the horizon
// only, asking again when a further one enters it: its sender's feeder
// handed it over for a slot that near, so it waits no longer than a
// transactional message would. One whose slot lies further than MaxSleep
// (transactional messages took the slots meanwhile, or a throttle pushed
// them) waits on the due index and goes back to its lane, rather than hold
// a worker.
func (f *flow) reserve(ctx context.Context, recipient string, transactional, pair bool) (ratelimit.Decision, ratelimit.Claim, error) {
	req := ratelimit.Request{Recipient: recipient, MaxWait: maxReserve, MaxHold: f.cfg.MaxSleep, Pair: pair}
	if !transactional {
		req.MaxWait = f.cfg.Horizon
	}
	for {
		d, c, err := f.limiter.Admit(ctx, req)
		if err != nil || d.Reserved {
			return d, c, err
		}
		wait := d.Wait
		if d.Reason == ratelimit.ReasonPair {
			// The pair slot is taken, however far: the send slot is asked
			// for once it comes.
			f.waited("pair", wait)
			if wait > f.cfg.MaxSleep {
				return d, ratelimit.Claim{}, nil
			}
			req.Pair = false
			if err := f.sleep(ctx, wait); err != nil {
				return ratelimit.Decision{}, ratelimit.Claim{}, err
			}
			continue
		}
		if d.Wait > f.cfg.MaxSleep {
			return d, ratelimit.Claim{}, nil
		}
		if d.Reason == ratelimit.ReasonRate {
			// Ask again when the slot enters the horizon.
			wait = max(d.Wait-req.MaxWait, time.Millisecond)
		}
		f.waited(string(d.Reason), wait)
		if err := f.sleep(ctx, wait); err != nil {
			return ratelimit.Decision{}, ratelimit.Claim{}, err
		}
	}
}

// holdFor explains a Decision that reserved nothing.
func holdFor(d ratelimit.Decision) *hold {
	w := roundWait(d.Wait)
	h := &hold{delay: d.Wait}
	switch d.Reason {
	case ratelimit.ReasonBlocked:
		h.reason, h.note = store.WaitThrottled, "waiting "+w+": ChatArchitect asked to slow down (Retry-After)"
	case ratelimit.ReasonRecipient:
		h.reason, h.note = store.WaitPairRate, "waiting "+w+": ChatArchitect refused a message to this recipient as too frequent (131056)"
	case ratelimit.ReasonDaily:
		h.reason, h.note = store.WaitDailyLimit, "waiting "+w+" for the daily limit on unique recipients"
	default:
		h.reason, h.note = store.WaitSenderRate, "waiting "+w+" for the sender's rate limit"
	}
	return h
}

// circuitGate is the circuit breaker's part of admit. A closed circuit
// lets the message go. Otherwise Redis decides: an open circuit holds it;
// a half-open one makes it the trial (the one message sent to see whether
// the upstream accepts the account again), or, when another message is the
// trial, keeps it waiting here for that outcome, up to trialWait.
func (f *flow) circuitGate(ctx context.Context, id string) (trial bool, h *hold, err error) {
	if f.global != nil {
		if gs := f.global.state.Load().circuit; gs.Manual && gs.IsOpen() {
			return false, f.global.circuitHold(false), nil
		}
	}
	cs := f.state.Load().circuit
	if !cs.IsOpen() {
		return false, nil, nil
	}
	if cs.Manual {
		return false, f.circuitHold(false), nil
	}
	deadline := f.now().Add(trialWait)
	for {
		ans, err := f.circuit.state.ClaimTrial(ctx, id, trialLease)
		if err != nil {
			return false, nil, err
		}
		switch ans {
		case ratelimit.TrialClosed:
			f.update(func(s *flowState) { s.circuit = ratelimit.CircuitState{State: ratelimit.CircuitClosed} })
			return false, nil, nil
		case ratelimit.TrialGranted:
			f.update(func(s *flowState) { s.circuit.State = ratelimit.CircuitHalfOpen })
			// One trial: no other message is taken until its outcome.
			if err := f.circuit.autoPause(); err != nil {
				f.log.Warn("pausing the queues behind the half-open circuit's trial failed", zap.Error(err))
			}
			f.log.Info("sending the half-open circuit's trial", zap.String("message_id", id))
			return true, nil, nil
		case ratelimit.TrialBusy:
			if f.now().Before(deadline) {
				if err := f.sleep(ctx, f.cfg.StateRefresh); err != nil {
					return false, nil, err
				}
				continue
			}
		}
		return false, f.circuitHold(false), nil
	}
}

// circuitHold holds every message while the circuit breaker is open or
// half-open, but the trial of a half-open one.
func (f *flow) circuitHold(trial bool) *hold {
	cs := f.state.Load().circuit
	if !cs.IsOpen() || (trial && cs.State == ratelimit.CircuitHalfOpen) {
		return nil
	}
	if cs.State == ratelimit.CircuitHalfOpen {
		// A busy trial's wait ran out, or the state says half-open without
		// the caller being the trial: held like an open circuit.
		cs.State = ratelimit.CircuitOpen
	}
	f.waited("circuit", circuitHold)
	note := "sending paused: the circuit breaker is open"
	if cs.Reason != "" {
		note += " (" + cs.Reason + ")"
	}
	return &hold{delay: circuitHold, note: note, reason: store.WaitCircuitOpen, open: true}
}

// rateLimited answers the upstream's refusal of a send as too many. A
// pair-rate refusal (131056) backs that recipient off; any other lowers the
// whole sender's rate and honours the Retry-After for every worker. marker
// is the code's (chatarchitect.Marker): a spam rate limit (131048) is also
// an alert, the sender's quality being too low for its pace.
func (f *flow) rateLimited(ctx context.Context, log *zap.Logger, recipient string, info store.ErrorInfo, marker chatarchitect.Marker, retryAfter time.Duration) *hold {
	if f != nil {
		retryAfter = min(retryAfter, f.limiter.Config().MaxRetryAfter)
	}
	h := &hold{delay: max(retryAfter, time.Second), note: "rate limited by ChatArchitect", err: &info}
	if f == nil {
		return h
	}
	if info.Code == "131056" {
		wait, err := f.limiter.BackOffRecipient(ctx, recipient)
		if err != nil {
			log.Warn("backing off the recipient failed", zap.Error(err))
			return h
		}
		log.Warn("ChatArchitect refused a message as too frequent for its recipient: recipient backed off", zap.Duration("back_off", wait))
		h.delay, h.note = max(wait, retryAfter), "recipient backed off "+roundWait(wait)+" after a pair-rate refusal (131056)"
		return h
	}
	st, err := f.limiter.Throttle(ctx, retryAfter, ratelimit.Cause{Code: info.Code, Reason: info.Message})
	if err != nil {
		log.Warn("lowering the sender's rate failed", zap.Error(err))
		return h
	}
	f.update(func(s *flowState) { s.blockedUntil = f.now().Add(st.Blocked) })
	switch marker {
	case chatarchitect.MarkerSenderSpam:
		log.Error("quality too low: rate halved", zap.Float64("rate_factor", st.Factor), zap.String("reason", info.Message))
		h.note = fmt.Sprintf("spam rate limit (131048), the sender's quality is too low: its rate halved to %.0f%% for a while", st.Factor*100)
	case chatarchitect.MarkerAccountWide:
		log.Warn("the account's API call limit: the sender backs off", zap.Float64("rate_factor", st.Factor), zap.Duration("retry_after", retryAfter))
		h.note = "the account's API call limit (80007): the sender backs off " + roundWait(retryAfter)
	default:
		log.Warn("ChatArchitect throttled the sender: rate lowered", zap.Float64("rate_factor", st.Factor), zap.Duration("retry_after", retryAfter))
		h.note = fmt.Sprintf("throttled by ChatArchitect: the sender's rate is lowered to %.0f%% for a while", st.Factor*100)
	}
	return h
}

// accountRefused opens the circuit breaker after an account-level refusal.
func (f *flow) accountRefused(ctx context.Context, log *zap.Logger, id string, info store.ErrorInfo) *hold {
	trip := ratelimit.Trip{Reason: info.Message, Code: info.Code, MessageID: id, FirstProbe: f.cfg.ProbeInterval, MaxProbe: f.cfg.MaxProbeInterval}
	opened, err := f.circuit.trip(ctx, trip)
	if err != nil {
		log.Error("opening the circuit breaker failed", zap.Error(err))
	}
	f.update(func(s *flowState) {
		if s.circuit.State != ratelimit.CircuitOpen {
			s.circuit = ratelimit.CircuitState{State: ratelimit.CircuitOpen, Reason: trip.Reason, Code: trip.Code, MessageID: id}
		}
	})
	f.circuitGauge(true)
	note := "sending paused: the circuit breaker is open"
	switch {
	case opened && f.circuit.holdOnly:
		note = "opened the circuit breaker: this sender's messages wait, other senders go on"
	case opened:
		note = "opened the circuit breaker: sending paused for every worker"
	}
	// Taken up again in a second: its admission then makes it wait for the
	// circuit like the others.
	return &hold{delay: time.Second, note: note, err: &info}
}

// settle ends a half-open circuit's trial with the send's outcome: an
// accepted send closes the circuit; an account-level refusal opens it again
// (accountRefused does that); any other outcome tells nothing about the
// account, and the next message is the trial. It costs nothing while the
// circuit is closed.
func (f *flow) settle(ctx context.Context, log *zap.Logger, id string, sendErr error) {
	if f == nil || !f.state.Load().circuit.IsOpen() {
		return
	}
	var apiErr *chatarchitect.APIError
	switch {
	case sendErr == nil:
		closed, err := f.circuit.trialAccepted(ctx)
		if err != nil {
			log.Error("closing the circuit breaker after an accepted send failed", zap.Error(err))
		}
		if closed {
			f.update(func(s *flowState) { s.circuit = ratelimit.CircuitState{State: ratelimit.CircuitClosed} })
			f.circuitGauge(false)
		}
	case errors.As(sendErr, &apiErr) && apiErr.Class == chatarchitect.ClassAccount:
	default:
		if err := f.circuit.releaseTrial(ctx, id); err != nil {
			log.Warn("releasing the half-open circuit's trial failed", zap.Error(err))
		}
	}
}

// update changes the cached state at once, for what this worker learned
// itself.
func (f *flow) update(change func(*flowState)) {
	for {
		old := f.state.Load()
		next := *old
		change(&next)
		if f.state.CompareAndSwap(old, &next) {
			return
		}
	}
}

// sleep waits for d. A message waiting when its worker stops is handed
// back (errStopping), rather than keep the shutdown waiting.
func (f *flow) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-f.stopped:
		return errStopping
	case <-t.C:
		return nil
	}
}

// wholeSeconds stretches a retry delay to the next whole second: asynq
// stores retry times in whole seconds, cut down, and a task must not come
// back before its limit lets it go.
func wholeSeconds(now time.Time, d time.Duration) time.Duration {
	at := now.Add(max(d, time.Millisecond))
	due := at.Truncate(time.Second)
	if due.Before(at) {
		due = due.Add(time.Second)
	}
	return due.Sub(now)
}

// roundWait writes a wait for a history note.
func roundWait(d time.Duration) string {
	if d >= time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}
