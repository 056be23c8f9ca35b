// Package enqueue is chatq's producer library: applications build messages
// with its payload types and hand them to a Client, which validates them,
// stores a job record in Redis and enqueues an asynq task that a chatq
// worker sends (a bulk message's task is written by its sender's feeder:
// see lane.go).
//
// The same types and validation serve chatq's HTTP API, its workers and its
// ChatArchitect sandbox.
package enqueue

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/store"
)

// TaskSend is the asynq task type of a message send. Its payload is empty:
// the task's id names the record (RecordOf). asynq keeps a task's message
// (type, id, queue, retries, timeout) in a hash that Redis holds in its
// compact encoding only while every value is at most 64 bytes; with
// nothing more than that, a queued message's task takes about 230 bytes
// of Redis, where one that also named its recipient took about 470. The
// body stays in the record, out of the dashboard.
const TaskSend = "message:send"

// RecordOf returns the id of the record a TaskSend task sends: its task
// id up to the first '-' (the first task's id is the record's, the
// sweeper's are <record id>-<n>). A task written by an earlier chatq
// names its record in its payload, alone or followed by a line each of
// its route, and is read by that.
func RecordOf(taskID string, payload []byte) string {
	if len(payload) > 0 {
		id, _, _ := strings.Cut(string(payload), "\n")
		return id
	}
	return store.RecordOfTask(taskID)
}

// Record is a message's job record, as the HTTP API returns it.
type Record = store.Record

// Status is a record's status.
type Status = store.Status

// Errors of Send and SendBatch, for errors.Is.
var (
	// ErrIdempotencyConflict: the idempotency key was used before for a
	// different message.
	ErrIdempotencyConflict = store.ErrIdempotencyConflict
	// ErrNotFound: no record has that id.
	ErrNotFound = store.ErrNotFound
)

// DefaultAuthTTL is Meta's default time to live of an authentication
// template, and chatq's default expiry of one sent without expires_at.
const DefaultAuthTTL = 10 * time.Minute

// Config tunes a Client. The zero value is usable.
type Config struct {
	// MaxRetry is the number of attempts after the first for retryable
	// errors (CHATQ_RETRY_MAX); zero means 8, a negative value none.
	MaxRetry int
	// TTL is how long a job record is kept after its last change, and after
	// its SendAt or ExpiresAt when later (CHATQ_RECORD_TTL); zero means
	// 720h.
	TTL time.Duration
	// Concurrency bounds the asynq enqueues a batch runs at once; zero
	// means 128. They share round trips (see taskRedis), so more at once
	// make fuller pipelines, not more connections.
	Concurrency int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Policy, if set, checks every valid message against the conversation
	// rules before it is stored (see NewPolicy); nil checks nothing more.
	// chatq's own (NewPolicy) also gives each template message's record the
	// template's category.
	Policy Policy
	// AuthTTL is how long after its acceptance an authentication template
	// sent without ExpiresAt stays worth sending (CHATQ_AUTH_TTL); zero
	// means 10m. It needs chatq's own Policy, which knows the categories.
	AuthTTL time.Duration
	// BulkShards spreads bulk messages over that many asynq queues (see
	// BulkQueue; CHATQ_BULK_SHARDS); zero or one means the single queue
	// "bulk". Every producer and worker must use the same value.
	BulkShards int
	// WaitReplicas, when positive, makes Send and SendBatch wait, up to
	// WaitTimeout (zero means 100ms), until that many Redis replicas hold
	// the new records and tasks, so that a failover does not lose what was
	// acknowledged (CHATQ_REDIS_WAIT_REPLICAS). It has no effect on Redis
	// Cluster.
	WaitReplicas int
	WaitTimeout  time.Duration
	// Counter, if set, counts the records created, per minute and status,
	// for the console's overview (store.Config.Counter).
	Counter store.Counter
}

// Client enqueues messages. It is safe for concurrent use.
type Client struct {
	cfg   Config
	store *store.Store
	queue *asynq.Client
	// bulk are the bulk shards' queues, none when bulk is one queue.
	bulk []string
}

// NewClient returns a Client that stores records and tasks through rdb.
// Close releases nothing of rdb, which stays the caller's.
func NewClient(rdb redis.UniversalClient, cfg Config) *Client {
	switch {
	case cfg.MaxRetry == 0:
		cfg.MaxRetry = 8
	case cfg.MaxRetry < 0:
		cfg.MaxRetry = 0
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 128
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AuthTTL <= 0 {
		cfg.AuthTTL = DefaultAuthTTL
	}
	queue := asynq.NewClientFromRedisClient(taskRedis(rdb))
	return &Client{
		cfg: cfg,
		// Records with a callback URL get their first status callback
		// ("queued") enqueued here, at once.
		store: store.New(rdb, store.Config{TTL: cfg.TTL, Notifier: callback.NewNotifier(queue, nil),
			WaitReplicas: cfg.WaitReplicas, WaitTimeout: cfg.WaitTimeout, Counter: cfg.Counter}),
		queue: queue,
		bulk:  BulkQueues(cfg.BulkShards),
	}
}

// taskRedis returns the connection the client's asynq enqueues go through.
// asynq writes one task per call, one round trip each; on a plain, Sentinel
// or Cluster client they go through go-redis's autopipeliner instead, so the
// concurrent enqueues of a batch (and of concurrent Sends) share round
// trips: Redis reads and answers them a pipeline at a time, which halves the
// Redis CPU a task costs. A lone call still goes out at once. A pipeline cut
// short by a broken connection may be sent again; every task chatq writes
// has its own id, so a repeated enqueue is refused as a conflict, which
// enqueue treats as done, and one that comes after the task ran finds its
// record no longer waiting, so the worker sends nothing. Any other client
// is used as it is.
func taskRedis(rdb redis.UniversalClient) redis.UniversalClient {
	var ap *redis.AutoPipeliner
	var err error
	switch c := rdb.(type) {
	case *redis.Client:
		ap, err = c.AutoPipeline()
	case *redis.ClusterClient:
		ap, err = c.AutoPipeline()
	default:
		return rdb
	}
	if err != nil {
		// Only a closed client refuses, and then every call fails anyway.
		return rdb
	}
	return ap
}

// Close releases the client. It holds nothing of its own: its asynq client
// works on rdb, which stays the caller's (and which asynq refuses to close
// through a client it did not open), so Close always succeeds.
func (c *Client) Close() error { return nil }

// Send validates m, stores its record and enqueues it. The record comes back
// with its id and status ("queued", or "scheduled" for a later SendAt). A
// repeated idempotency key returns the first record; with a different
// message it is ErrIdempotencyConflict. Bad input is a *ValidationError.
func (c *Client) Send(ctx context.Context, m *Message) (*Record, error) {
	res, err := c.SendBatch(ctx, []*Message{m})
	if err != nil {
		return nil, err
	}
	return res[0].Record, res[0].Err
}

// Result is the outcome of one message of a batch.
type Result struct {
	// Record is the stored record, nil when Err is set.
	Record *Record
	// Created is false when an earlier record with the same idempotency key
	// answered.
	Created bool
	// Err is a *ValidationError, ErrIdempotencyConflict or a failure to
	// store or enqueue this message.
	Err error
}

// Check validates each message and checks it against the conversation
// policy, as SendBatch does, but stores and enqueues nothing: one error
// per message, in order, nil for one SendBatch would take. The error is
// for failures of the whole check (Redis unreachable). A message that
// passes may still be answered from an earlier record by its idempotency
// key when it is sent.
func (c *Client) Check(ctx context.Context, msgs []*Message) ([]error, error) {
	now := c.cfg.Now().UTC().Truncate(time.Millisecond)
	results := make([]Result, len(msgs))
	recs := make([]*store.Record, 0, len(msgs))
	index := make([]int, 0, len(msgs))
	for i, m := range msgs {
		r, err := c.newRecord(m, now)
		if err != nil {
			results[i].Err = err
			continue
		}
		recs = append(recs, r)
		index = append(index, i)
	}
	if _, _, err := c.checkPolicy(ctx, msgs, recs, index, results); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	errs := make([]error, len(msgs))
	for i, r := range results {
		errs[i] = r.Err
	}
	return errs, nil
}

// SendBatch sends each message on its own and returns one result per
// message, in order; an invalid message does not stop the others. The error
// is for failures of the whole batch (Redis unreachable). Records are
// written in one pipelined round trip and tasks enqueued concurrently, so a
// batch costs far less than as many Send calls.
func (c *Client) SendBatch(ctx context.Context, msgs []*Message) ([]Result, error) {
	// Records keep milliseconds: the record Send returns must read the same
	// as the one Get returns later.
	now := c.cfg.Now().UTC().Truncate(time.Millisecond)
	results := make([]Result, len(msgs))
	recs := make([]*store.Record, 0, len(msgs))
	index := make([]int, 0, len(msgs))
	for i, m := range msgs {
		r, err := c.newRecord(m, now)
		if err != nil {
			results[i].Err = err
			continue
		}
		recs = append(recs, r)
		index = append(index, i)
	}
	recs, index, err := c.checkPolicy(ctx, msgs, recs, index, results)
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	if len(recs) == 0 {
		return results, nil
	}
	created, err := c.store.Create(ctx, recs)
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	var fresh []*store.Record
	var freshIndex []int
	for j, cr := range created {
		i := index[j]
		results[i] = Result{Record: cr.Record, Created: cr.Created, Err: cr.Err}
		// A repeated idempotency key whose record still waits in the queue
		// gets its task written again: if the first attempt died between
		// the record and the task, this retry is what sends it. The task id
		// is the record id, so an existing task makes it a no-op. A message
		// that waits for its turn in its conversation gets none: the one
		// before it releases it.
		if cr.Err == nil && !cr.Held && (cr.Created || cr.Record.Status == store.Queued || cr.Record.Status == store.Scheduled) {
			fresh = append(fresh, cr.Record)
			freshIndex = append(freshIndex, i)
		}
	}
	errs := c.enqueueAll(ctx, fresh)
	var done []string
	for j, err := range errs {
		if err != nil {
			// The record is on the due index: the sweeper enqueues it
			// later, so the message is not lost, but the caller learns
			// that it is not queued yet.
			results[freshIndex[j]] = Result{Err: fmt.Errorf("enqueue %s: %w", fresh[j].ID, err)}
			continue
		}
		done = append(done, fresh[j].ID)
	}
	if err := c.store.MarkEnqueued(ctx, done...); err != nil {
		// Harmless: the records and tasks are written, only a replica's
		// copy may lag.
		return results, nil
	}
	return results, nil
}

// enqueueAll gives recs their tasks: every task chatq creates goes
// through it. A bulk record enters its sender's lane, all of them in one
// round trip, for its sender's feeder to write its task (see lane.go); the
// others' asynq tasks are written at once, with bounded concurrency.
func (c *Client) enqueueAll(ctx context.Context, recs []*store.Record) []error {
	errs := make([]error, len(recs))
	var bulk []*store.Record
	var bulkIndex, direct []int
	for i, r := range recs {
		if laned(r) {
			bulk = append(bulk, r)
			bulkIndex = append(bulkIndex, i)
		} else {
			direct = append(direct, i)
		}
	}
	if err := c.store.AddToLanes(ctx, bulk); err != nil {
		for _, i := range bulkIndex {
			errs[i] = err
		}
	}
	c.each(direct, func(i int) { errs[i] = c.enqueue(ctx, recs[i]) })
	return errs
}

// each runs do for every index of idx, Concurrency at a time at most:
// the task writes share round trips (see taskRedis), so more at once make
// fuller pipelines, not more connections.
func (c *Client) each(idx []int, do func(i int)) {
	if len(idx) == 1 {
		do(idx[0])
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(c.cfg.Concurrency, len(idx)) {
		wg.Go(func() {
			for i := range next {
				do(i)
			}
		})
	}
	for _, i := range idx {
		next <- i
	}
	close(next)
	wg.Wait()
}

// enqueue creates the asynq task of r. The first task's id is the record
// id, so a second enqueue of the same record is a no-op while the task
// exists; a task the sweeper adds has an id of its own (Record.TaskID).
func (c *Client) enqueue(ctx context.Context, r *store.Record) error {
	queue := r.Queue
	if queue == "" {
		queue = QueueFor(Priority(r.Priority))
	}
	opts := []asynq.Option{asynq.TaskID(cmp.Or(r.TaskID, r.ID)), asynq.Queue(queue), asynq.MaxRetry(c.cfg.MaxRetry)}
	if r.SendAt != nil && r.SendAt.After(c.cfg.Now()) {
		opts = append(opts, asynq.ProcessAt(*r.SendAt))
	}
	_, err := c.queue.EnqueueContext(ctx, asynq.NewTask(TaskSend, nil), opts...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// QueueFor returns the asynq queue of a priority when the bulk queue is
// not sharded; BulkQueue names the shards.
func QueueFor(p Priority) string {
	if p == Bulk {
		return string(Bulk)
	}
	return string(Transactional)
}

// queueFor returns the asynq queue of a message.
func (c *Client) queueFor(p Priority, destination string) string {
	if p == Bulk && len(c.bulk) > 0 {
		return bulkQueueOf(destination, c.bulk)
	}
	return QueueFor(p)
}

// newRecord validates m and lays out its record.
func (c *Client) newRecord(m *Message, now time.Time) (*store.Record, error) {
	if m == nil {
		return nil, &ValidationError{Field: "", Reason: "message is required"}
	}
	if err := m.Validate(now); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	prio := m.Priority
	if prio == "" {
		prio = Transactional
	}
	status := store.Queued
	r := &store.Record{
		ID:             ulid.Make().String(),
		Destination:    m.Destination,
		Type:           m.Payload.Type(),
		Priority:       string(prio),
		Metadata:       m.Metadata,
		Tenant:         cmp.Or(m.Tenant, store.DefaultTenant),
		Sender:         strings.TrimPrefix(cmp.Or(m.Sender, m.ChosenSender), "+"),
		IdempotencyKey: m.IdempotencyKey,
		CallbackURL:    m.CallbackURL,
		CreatedAt:      now,
		UpdatedAt:      now,
		Payload:        payload,
		Queue:          c.queueFor(prio, m.Destination),
	}
	if m.BatchID != "" {
		b := m.BatchID
		r.BatchID = &b
	}
	if !m.SendAt.IsZero() && m.SendAt.After(now) {
		t := m.SendAt.UTC().Truncate(time.Millisecond)
		r.SendAt = &t
		status = store.Scheduled
	}
	// A message keeps its place in its conversation's order unless it
	// opts out, or is scheduled for later: the order of its line is that
	// of acceptance, and a later send_at would hold back every message
	// after it.
	r.Ordered = (m.Ordered == nil || *m.Ordered) && r.SendAt == nil
	if !m.ExpiresAt.IsZero() {
		t := m.ExpiresAt.UTC().Truncate(time.Millisecond)
		r.ExpiresAt = &t
	}
	if m.FallbackTemplate != nil {
		fb, err := json.Marshal(&Template{Template: *m.FallbackTemplate})
		if err != nil {
			return nil, fmt.Errorf("encode fallback template: %w", err)
		}
		r.FallbackTemplate = fb
	}
	if m.IdempotencyKey != "" {
		r.Fingerprint = fingerprint(m)
	}
	if _, ok := m.Payload.(*Template); !ok {
		service := store.CategoryService
		r.Category = &service
	}
	r.Status = status
	r.History = []store.HistoryEntry{{Status: status, At: now}}
	return r, nil
}

// fingerprint identifies what a message asks for, so that a repeated
// idempotency key can tell a retry from a different message.
func fingerprint(m *Message) string {
	plain := *m
	plain.IdempotencyKey = ""
	b, _ := json.Marshal(&plain)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Get returns the record of a message, or ErrNotFound.
func (c *Client) Get(ctx context.Context, id string) (*Record, error) {
	return c.store.Get(ctx, id)
}

// Requeue enqueues the task (Record.TaskID) of records that need one
// again: dead letters an operator retries (whose task must have left
// asynq's archive first), and messages the sweeper hands a new task. A
// task that still exists is left as it is. It returns one error per
// record; a record whose enqueue failed stays on the due index, for the
// sweeper to enqueue.
func (c *Client) Requeue(ctx context.Context, recs []*Record) []error {
	errs := c.enqueueAll(ctx, recs)
	var done []string
	for i, err := range errs {
		if err == nil {
			done = append(done, recs[i].ID)
		}
	}
	// A failure is harmless: the sweeper finds the tasks exist.
	_ = c.store.MarkEnqueued(ctx, done...)
	return errs
}
