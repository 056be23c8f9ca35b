package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/ratelimit"
)

// Circuit is the circuit breaker every worker shares. An account-level
// refusal (bad credentials, a blocked number, no balance) would fail every
// message alike, so instead of burning each message's retries it opens the
// circuit: the state goes to Redis, where /readyz and every worker see it,
// and the send queues are paused with asynq, so that no worker fetches
// another message. A worker's successful probe half-opens it: exactly one
// message, the trial, is sent; its acceptance closes the circuit, an
// account-level refusal opens it again with the probe's backoff still
// growing (getHSM may answer while sends fail for balance or payment). An
// operator's Resume closes it whatever its state.
//
// With several senders, an account-level refusal opens the circuit of its
// sender alone (newSenderCircuit) and no queue is paused: the workers' check
// before every send holds that sender's messages back, and every other
// sender keeps sending. An operator's Pause still stops every sender.
type Circuit struct {
	state  *ratelimit.Circuit
	queues *asynq.Inspector
	// holdOnly: an automatic opening pauses no queue (several senders
	// share them); only an operator's Pause does.
	holdOnly bool
	// rdb finds the senders' own circuits, which Resume closes too.
	rdb redis.UniversalClient
	// throttles are the senders a Retry-After holds back, which Resume
	// lifts too.
	throttles *ratelimit.Throttles
	log       *zap.Logger
}

// NewCircuit returns the circuit breaker on rdb.
func NewCircuit(rdb redis.UniversalClient, log *zap.Logger) *Circuit {
	return &Circuit{state: ratelimit.NewCircuit(rdb), queues: asynq.NewInspectorFromRedisClient(rdb),
		throttles: ratelimit.NewThrottles(rdb), rdb: rdb, log: log}
}

// newSenderCircuit returns the circuit breaker of one stored sender, which
// holds that sender's messages back and pauses no queue.
func newSenderCircuit(rdb redis.UniversalClient, number string, log *zap.Logger) *Circuit {
	return &Circuit{state: ratelimit.NewSenderCircuit(rdb, number), queues: asynq.NewInspectorFromRedisClient(rdb),
		holdOnly: true, throttles: ratelimit.NewThrottles(rdb), rdb: rdb, log: log.With(zap.String("sender", number))}
}

// sendQueues are the queues the circuit breaker pauses: those of the
// messages, and no other (callbacks to the application go on). Besides
// transactional and bulk, they are the bulk shards asynq knows, those that
// ever held a task, whatever CHATQ_BULK_SHARDS this process has. asynq
// never forgets a queue, so a resume unpauses every shard a pause paused.
// A shard whose first task comes after a pause is not paused; that task is
// held back by the workers' own check of the circuit before every send.
func (c *Circuit) sendQueues() ([]string, error) {
	qs := enqueue.SendQueues(1)
	known, err := c.queues.Queues()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	for _, q := range known {
		if enqueue.IsSendQueue(q) && !slices.Contains(qs, q) {
			qs = append(qs, q)
		}
	}
	return qs, nil
}

// State returns the circuit breaker's state.
func (c *Circuit) State(ctx context.Context) (ratelimit.CircuitState, error) {
	return c.state.State(ctx)
}

// Throttles returns the senders that the upstream's Retry-After holds back
// now, for /readyz.
func (c *Circuit) Throttles(ctx context.Context) ([]ratelimit.ThrottleState, error) {
	return c.throttles.List(ctx)
}

// Pause stops sending for every worker, by an operator's decision: the
// circuit opens as manual, which no probe closes; Resume does. Messages
// keep being accepted, and wait.
func (c *Circuit) Pause(ctx context.Context, reason string) error {
	if _, err := c.state.Open(ctx, ratelimit.Trip{Reason: reason, Manual: true}); err != nil {
		return err
	}
	if err := c.pauseQueues(); err != nil {
		return err
	}
	c.log.Warn("sending paused by an operator", zap.String("reason", reason))
	return nil
}

// Resume closes the circuit, however it opened, lifts every sender's
// throttle (the upstream's Retry-After and the lowered rate), and restarts
// sending. It reports whether the circuit was open.
func (c *Circuit) Resume(ctx context.Context) (bool, error) {
	// Queues first: a failure in between leaves the circuit open, which a
	// second resume fixes, rather than closed over paused queues.
	if err := c.unpauseQueues(); err != nil {
		return false, err
	}
	closed, err := c.state.Close(ctx, false)
	if err != nil {
		return false, err
	}
	numbers, err := ratelimit.SenderCircuits(ctx, c.rdb)
	if err != nil {
		return closed, err
	}
	for _, n := range numbers {
		if _, err := ratelimit.NewSenderCircuit(c.rdb, n).Close(ctx, false); err != nil {
			return closed, fmt.Errorf("close the circuit of sender %s: %w", n, err)
		}
	}
	held, err := c.throttles.Clear(ctx)
	if err != nil {
		return closed, err
	}
	c.log.Info("sending resumed by an operator", zap.Bool("was_paused", closed), zap.Strings("throttle_lifted", held))
	return closed, nil
}

// trip opens the circuit after an account-level refusal and reports
// whether this call opened it.
func (c *Circuit) trip(ctx context.Context, t ratelimit.Trip) (bool, error) {
	opened, err := c.state.Open(ctx, t)
	if err != nil {
		return false, err
	}
	// Paused even when the circuit was open already: a refusal means that
	// something still sends, so the pause may have been lost.
	if err := c.autoPause(); err != nil {
		return opened, err
	}
	if opened && c.holdOnly {
		c.log.Error("circuit breaker opened: this sender's messages wait until ChatArchitect accepts its app again; other senders go on",
			zap.String("reason", t.Reason), zap.String("code", t.Code), zap.String("message_id", t.MessageID))
	} else if opened {
		c.log.Error("circuit breaker opened: sending paused for every worker until ChatArchitect accepts the account again",
			zap.String("reason", t.Reason), zap.String("code", t.Code), zap.String("message_id", t.MessageID))
	}
	return opened, nil
}

// halfOpenAfterProbe half-opens an automatically opened circuit once a
// probe succeeded, and unpauses the queues so that one message, the trial,
// reaches a worker. It reports whether it half-opened the circuit.
func (c *Circuit) halfOpenAfterProbe(ctx context.Context) (bool, error) {
	half, err := c.state.HalfOpen(ctx)
	if errors.Is(err, ratelimit.ErrManual) {
		// An operator paused sending meanwhile: that pause stands.
		return false, nil
	}
	if err != nil || !half {
		return false, err
	}
	if err := c.autoUnpause(); err != nil {
		return true, err
	}
	c.log.Info("circuit breaker half-open: ChatArchitect answers the probe; one message goes as a trial before sending resumes")
	return true, nil
}

// trialAccepted closes a half-open circuit after an accepted send, and
// restarts sending. It reports whether it closed the circuit.
func (c *Circuit) trialAccepted(ctx context.Context) (bool, error) {
	closed, err := c.state.TrialAccepted(ctx)
	if err != nil || !closed {
		return false, err
	}
	if err := c.autoUnpause(); err != nil {
		return true, err
	}
	c.log.Info("circuit breaker closed: ChatArchitect accepted the trial send, sending resumes")
	return true, nil
}

// releaseTrial lets another message be the trial after message id's trial
// told nothing about the account, and brings it to a worker.
func (c *Circuit) releaseTrial(ctx context.Context, id string) error {
	released, err := c.state.ReleaseTrial(ctx, id)
	if err != nil || !released {
		return err
	}
	return c.autoUnpause()
}

// autoPause pauses the queues for an automatic opening or a trial,
// unless the circuit holds its sender's messages back alone; autoUnpause
// unpauses them.
func (c *Circuit) autoPause() error {
	if c.holdOnly {
		return nil
	}
	return c.pauseQueues()
}

func (c *Circuit) autoUnpause() error {
	if c.holdOnly {
		return nil
	}
	return c.unpauseQueues()
}

// pauseQueues and unpauseQueues are idempotent. asynq answers a repeated
// pause or unpause with an error of its own that has no sentinel, hence the
// match on its text.
func (c *Circuit) pauseQueues() error {
	queues, err := c.sendQueues()
	if err != nil {
		return err
	}
	for _, q := range queues {
		if err := c.queues.PauseQueue(q); err != nil && !strings.Contains(err.Error(), "already paused") {
			return fmt.Errorf("pause queue %s: %w", q, err)
		}
	}
	return nil
}

func (c *Circuit) unpauseQueues() error {
	queues, err := c.sendQueues()
	if err != nil {
		return err
	}
	for _, q := range queues {
		if err := c.queues.UnpauseQueue(q); err != nil && !strings.Contains(err.Error(), "not paused") {
			return fmt.Errorf("unpause queue %s: %w", q, err)
		}
	}
	return nil
}
