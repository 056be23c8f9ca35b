package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
)

// Config tunes a Worker. Zero values take the defaults named on each field.
type Config struct {
	// Concurrency is the number of sends in flight; zero means 50.
	Concurrency int
	// Queues maps queue names to weights; nil means transactional=6,
	// bulk=1.
	Queues map[string]int
	// BulkShards is the number of queues bulk messages are spread over
	// (enqueue.Config.BulkShards, CHATQ_BULK_SHARDS); zero or one means the
	// single queue "bulk". It must be the producers' value: a shard no
	// worker listens to is never sent.
	BulkShards int
	// ShutdownTimeout is how long Shutdown waits for sends on the wire;
	// zero means 15s. It must outlast the upstream timeout: asynq re-queues
	// what is unfinished then, and that would be sent twice.
	ShutdownTimeout time.Duration
	// Retry is the retry policy; zero fields mean 8 retries from 2s to
	// 15m with 0.2 jitter.
	Retry Policy
	// RecordTTL is how long a job record is kept after its last change;
	// zero means 720h. It must be the producers' TTL.
	RecordTTL time.Duration
	// SweepInterval is how often the worker that holds the sweeper's lease
	// reads the due index (see recovery.go), and how often the others
	// check whether the lease lapsed; zero means 1s.
	SweepInterval time.Duration
	// Heartbeat is how often the worker writes its heartbeat; zero means
	// 1s. A worker whose heartbeat is three beats old is taken for lost,
	// and its sends are handed to another.
	Heartbeat time.Duration
	// SendLease is how soon after a send is taken up the sweeper checks
	// that its worker lives, and again every SendLease while the send
	// lasts; zero means 3s.
	SendLease time.Duration
	// DueGrace is how long a message whose task is written, or whose retry
	// is due, waits before the sweeper checks that its task exists; zero
	// means 30s.
	DueGrace time.Duration
	// OrderRecheck is how long a message waiting for its turn in its
	// conversation waits before the sweeper checks its line again, up to
	// ten times it as it keeps waiting; zero means 1m (store.Config).
	OrderRecheck time.Duration
	// TaskCheckInterval is how long an idle worker waits before it looks
	// for new work again; zero means 10ms. asynq's own default (1s) would
	// add up to a second to a one-time code sent to an idle worker.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often retries and scheduled messages
	// become due; zero means 1s (asynq's default is 5s).
	DelayedTaskCheckInterval time.Duration
	// Conversation is the conversation policy and the status callbacks
	// (policy.go); nil means neither.
	Conversation *Conversation
	// Flow is flow control: the limits every worker shares through Redis
	// and the circuit breaker (flow.go). The zero value limits nothing.
	// With Senders, its Limits are those of the environment's sender, and
	// the rest applies to every sender.
	Flow FlowConfig
	// Senders, if set, sends each message from its sender, through its
	// app's credentials and with its own flow control (senders.go); nil
	// sends every message through the sender New is given.
	Senders *Senders
	// Metrics, if set, counts sends, retries, dead letters, limit waits
	// and the circuit breaker's state; nil counts nothing.
	Metrics *metrics.Metrics
	// Counter, if set, counts status changes per minute for the console's
	// overview (store.Config.Counter); nil counts nothing.
	Counter store.Counter
	// Now is the clock of the handler and the sweeper of the due index:
	// when a message expires, when its wait ends, what is due. Nil means
	// time.Now; tests give a clock that jumps a day ahead.
	Now func() time.Time
}

func (c *Config) withDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 50
	}
	if len(c.Queues) == 0 {
		c.Queues = map[string]int{string(enqueue.Transactional): 6, string(enqueue.Bulk): 1}
	}
	c.Queues = shardQueues(c.Conversation.queues(c.Queues), c.BulkShards)
	c.Flow.withDefaults()
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.Retry.MaxRetry == 0 && c.Retry.BaseDelay == 0 {
		c.Retry.MaxRetry = 8
	}
	if c.Retry.BaseDelay <= 0 {
		c.Retry.BaseDelay = 2 * time.Second
	}
	if c.Retry.MaxDelay <= 0 {
		c.Retry.MaxDelay = 15 * time.Minute
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.TaskCheckInterval <= 0 {
		c.TaskCheckInterval = 10 * time.Millisecond
	}
	if c.DelayedTaskCheckInterval <= 0 {
		c.DelayedTaskCheckInterval = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// shardQueues replaces the bulk queue's weight with its shards'. asynq
// tries first, on each fetch, a queue drawn at random in proportion to the
// weights, so n shards each at the bulk weight would give bulk n times its
// share, and bulk's weight divided by n would round to the same for the
// usual weight of 1. Instead every other queue's weight is multiplied by
// n, which keeps each share exactly: transactional=6,bulk=1 with 3 shards
// is transactional=18 against 1+1+1. The unsharded "bulk" stays, at the
// bulk weight, so that what was queued before the split is still sent; an
// empty queue takes no share from the others.
func shardQueues(q map[string]int, shards int) map[string]int {
	bulk, ok := q[string(enqueue.Bulk)]
	if shards <= 1 || !ok {
		return q
	}
	out := make(map[string]int, len(q)+shards)
	for name, w := range q {
		out[name] = w * shards
	}
	for _, name := range enqueue.SendQueues(shards) {
		if name != string(enqueue.Transactional) {
			out[name] = bulk
		}
	}
	return out
}

// Worker is one worker process's asynq server plus its part of chatq's
// recovery: its heartbeat, and the sweep of the due index while it holds
// the sweeper's lease.
type Worker struct {
	cfg      Config
	srv      *asynq.Server
	handler  *Handler
	recovery *recovery
	// feeder moves the senders' lanes into asynq's bulk queue (feeder.go).
	feeder *feeder
	log    *zap.Logger
	stop   context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// stopConv stops the conversation's background work (policy.go).
	stopConv func()
	// notifier enqueues status callbacks in the background.
	notifier *callback.Notifier
}

// notifyInFlight bounds the callback tasks a worker enqueues in the
// background at once: about its sends' two status changes each.
const notifyInFlight = 256

// New returns a Worker that takes tasks from rdb and sends them through
// sender.
func New(rdb redis.UniversalClient, cfg Config, sender Sender, log *zap.Logger) *Worker {
	cfg.withDefaults()
	// Status changes of records with a callback URL enqueue their callback,
	// outside the send that made them.
	notifier := callback.NewNotifier(asynq.NewClientFromRedisClient(rdb), log.Named("callback")).Background(notifyInFlight)
	st := store.New(rdb, store.Config{TTL: cfg.RecordTTL, Notifier: notifier, Counter: cfg.Counter, Billed: cfg.Metrics.Billable, SendLease: cfg.SendLease, DueGrace: cfg.DueGrace,
		OrderRecheck: cfg.OrderRecheck})
	id := workerID()
	log = log.With(zap.String("worker", id))
	h := NewHandler(st, sender, cfg.Retry, id, log.Named("send"))
	h.conv, h.now = cfg.Conversation, cfg.Now
	h.flow = newFlow(rdb, cfg.Flow, sender, log.Named("flow"))
	h.metrics, h.flow.metrics, h.unrecorded.metrics = cfg.Metrics, cfg.Metrics, cfg.Metrics
	h.flow.sender = cfg.Flow.Limits.Sender
	h.flow.waits, h.flow.waitKeys = st, []string{""}
	if n := cfg.Flow.Limits.Sender; n != "" {
		h.flow.waitKeys = append(h.flow.waitKeys, n)
	}
	if cfg.Senders != nil && cfg.Senders.Registry != nil {
		h.senders = newSenderSet(cfg.Senders, rdb, st, cfg.Flow, h.flow, sender, log.Named("flow"))
		// Senders share the queues: an open circuit holds its own
		// sender's messages back, and pauses no queue.
		h.flow.circuit.holdOnly = cfg.Senders.Registry.Stored()
	}
	rec := &recovery{
		store:     st,
		client:    enqueue.NewClient(rdb, enqueue.Config{MaxRetry: retryOption(cfg.Retry.MaxRetry), TTL: cfg.RecordTTL}),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		worker:    id,
		interval:  cfg.SweepInterval,
		beat:      cfg.Heartbeat,
		metrics:   cfg.Metrics,
		log:       log.Named("recovery"),
		now:       cfg.Now,
	}
	if cfg.Conversation != nil {
		rec.callbacks = cfg.Conversation.Callbacks
	}
	h.tasks = rec.client
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   cfg.Queues,
		RetryDelayFunc:           h.RetryDelay,
		IsFailure:                IsFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		Logger:                   log.Named("asynq").Sugar(),
		LogLevel:                 asynq.WarnLevel,
	})
	fd := &feeder{store: st, client: rec.client, handler: h, worker: id, horizon: cfg.Flow.Horizon, log: log.Named("feeder")}
	return &Worker{cfg: cfg, srv: srv, handler: h, recovery: rec, feeder: fd, log: log, notifier: notifier}
}

// retryOption maps "no retries" onto enqueue.Config's convention.
func retryOption(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// Start starts taking tasks. It returns once the server runs.
func (w *Worker) Start() error {
	mux := asynq.NewServeMux()
	mux.Handle(enqueue.TaskSend, w.handler)
	w.cfg.Conversation.register(mux)
	w.handler.flow.start()
	if err := w.srv.Start(mux); err != nil {
		w.handler.flow.stop()
		return fmt.Errorf("start worker: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.stop = cancel
	w.wg.Go(func() { w.recovery.heartbeat(ctx) })
	w.wg.Go(func() { w.recovery.lead(ctx) })
	w.wg.Go(func() { w.feeder.run(ctx) })
	w.wg.Go(func() { w.handler.unrecorded.run(ctx) })
	w.stopConv = w.cfg.Conversation.start()
	return nil
}

// ID is the worker process's id: its heartbeat's, and that of the owner
// of the sends it takes up, in its log lines as "worker".
func (w *Worker) ID() string { return w.recovery.worker }

// Shutdown stops taking tasks, lets the sends on the wire finish and
// record their outcome (up to ShutdownTimeout), and returns.
// It must run before the Redis client is closed. A second call does
// nothing.
func (w *Worker) Shutdown() {
	w.once.Do(func() {
		if w.stop == nil {
			w.handler.senders.stop()
			w.srv.Shutdown()
			w.notifier.Wait()
			return
		}
		w.stopConv()
		w.srv.Stop()
		// No new task comes in now: those still waiting for a send slot are
		// handed back, and the sends on the wire finish, while the
		// heartbeat says this worker lives.
		w.handler.flow.stop()
		w.handler.senders.stop()
		w.srv.Shutdown()
		w.stop()
		w.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
		defer cancel()
		w.handler.unrecorded.flush(ctx)
		w.recovery.stop(ctx)
		// The callbacks of the last changes are enqueued.
		w.notifier.Wait()
	})
}
