// Package callback delivers chatq's outgoing webhooks: status callbacks (a
// signed POST of the job record to the message's callback_url on every
// status change) and the forwarding of inbound messages and opt-in/out
// events to CHATQ_INBOUND_URL.
//
// Both go through asynq tasks in a queue of their own (Queue), delivered at
// least once with retries that start within seconds. A status change
// writes its notice into a per-message list in the same Lua script as the
// change itself (see store.Notice); a task per notice then drains that list
// in order, under a short per-message lock, and removes a notice only once
// the receiver answered 2xx. So notices arrive in status order, and none is
// lost when a process dies between the change and the enqueue: the store's
// due index and Deliverer.Sweep catch those. Task payloads carry ids only,
// never a message body.
package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
)

// Queue is the asynq queue of callback and forwarding tasks.
const Queue = "callbacks"

// DefaultWeight is the weight Queue gets in a worker whose queue weights
// do not name it. Callbacks are short POSTs; a modest weight keeps them
// flowing during a large campaign without slowing the sends much.
const DefaultWeight = 2

// Task types.
const (
	// TaskStatus delivers the pending status notices of one message. Its
	// payload is statusTask: the message id and the notice's number.
	TaskStatus = "callback:status"
	// TaskInbound forwards one inbound event. Its payload is the event's
	// key in Redis: the inbound text is a message body and stays out of
	// task payloads.
	TaskInbound = "callback:inbound"
)

// MaxRetry is the number of retries of a callback task. With backoff from
// one second up to MaxDelay, the attempts span about ten hours; the
// sweeper keeps trying after that, until GiveUpAfter.
const MaxRetry = 30

// statusTask is the payload of TaskStatus.
type statusTask struct {
	ID  string `json:"id"`
	Seq int64  `json:"seq,omitempty"`
	// Sweep marks a task of Deliverer.Sweep: it tries once and never
	// fails, so that its task id can be reused by the next sweep.
	Sweep bool `json:"sweep,omitempty"`
}

// Notifier enqueues a delivery task for each status notice; it implements
// store.Notifier. It is safe for concurrent use.
type Notifier struct {
	q   *asynq.Client
	log *zap.Logger
	// slots, when set, bound the enqueues running in the background
	// (Background); wg counts them.
	slots chan struct{}
	wg    sync.WaitGroup
}

// NewNotifier returns a Notifier that enqueues through q, which stays the
// caller's. A nil log discards the log.
func NewNotifier(q *asynq.Client, log *zap.Logger) *Notifier {
	if log == nil {
		log = zap.NewNop()
	}
	return &Notifier{q: q, log: log}
}

// Background makes Notify return at once, its task enqueued by a goroutine
// of its own, up to inFlight at a time (beyond that, Notify enqueues before
// it returns): a status change made in a send (taken up, submitted) does
// not wait for its callback's task. A task lost with the process costs
// nothing but time: its notice is stored with the change, and the sweeper
// delivers it. Wait waits for those in flight. It returns n.
func (n *Notifier) Background(inFlight int) *Notifier {
	n.slots = make(chan struct{}, inFlight)
	return n
}

// Wait waits until the enqueues running in the background are done.
func (n *Notifier) Wait() { n.wg.Wait() }

// Notify enqueues the task of notice seq of message id. A failure is
// logged and otherwise left to the sweeper: the notice is stored already.
func (n *Notifier) Notify(ctx context.Context, id string, seq int64) {
	if n.slots != nil {
		select {
		case n.slots <- struct{}{}:
			n.wg.Add(1)
			go func() {
				defer func() {
					<-n.slots
					n.wg.Done()
				}()
				n.enqueue(context.WithoutCancel(ctx), id, seq)
			}()
			return
		default:
		}
	}
	n.enqueue(ctx, id, seq)
}

func (n *Notifier) enqueue(ctx context.Context, id string, seq int64) {
	b, _ := json.Marshal(statusTask{ID: id, Seq: seq})
	_, err := n.q.EnqueueContext(ctx, asynq.NewTask(TaskStatus, b),
		asynq.Queue(Queue), asynq.MaxRetry(MaxRetry), asynq.TaskID(statusTaskID(id, seq)))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		n.log.Warn("enqueueing a status callback failed; the sweeper will deliver it",
			zap.String("message_id", id), zap.Int64("notice", seq), zap.Error(err))
	}
}

func statusTaskID(id string, seq int64) string {
	return "cb:" + id + ":" + strconv.FormatInt(seq, 10)
}

// retryError is a failed delivery: asynq retries it after delay (see
// RetryDelay).
type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// RetryDelay is how long asynq waits before the next attempt. The worker's
// RetryDelayFunc honours it for any error that has this method.
func (e *retryError) RetryDelay() time.Duration { return e.delay }

// MaxDelay caps the backoff between two attempts of a callback.
const MaxDelay = 30 * time.Minute

// backoff is the delay after n failed attempts: 1s, 2s, 4s... up to
// MaxDelay, so that a receiver back after a short hiccup gets its
// callbacks within seconds.
func backoff(n int) time.Duration {
	d := time.Second
	for i := 0; i < n && d < MaxDelay; i++ {
		d *= 2
	}
	return min(d, MaxDelay)
}

// retryLater wraps a delivery failure for asynq, honouring the receiver's
// Retry-After when it asks for no more than MaxDelay.
func retryLater(ctx context.Context, err error, retryAfter time.Duration) error {
	n, _ := asynq.GetRetryCount(ctx)
	d := backoff(n)
	if retryAfter > 0 && retryAfter <= MaxDelay {
		d = retryAfter
	}
	return &retryError{err: err, delay: d}
}

// deliveryError is a receiver that did not answer 2xx.
type deliveryError struct {
	status     int
	retryAfter time.Duration
}

func (e *deliveryError) Error() string { return fmt.Sprintf("receiver answered %d", e.status) }
