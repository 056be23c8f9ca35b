package worker

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
)

// sweepBatch is how many due entries one read of the due index takes, and
// sweepRounds how many such reads one sweep makes at most: a backlog is
// worked through over several intervals, never in one long pass.
const (
	sweepBatch  = 500
	sweepRounds = 10
	// sweepParallel bounds the records one sweep looks at at once: each
	// costs a few round trips.
	sweepParallel = 16
	// maxRecheck bounds how long a record whose task waits in asynq is left
	// alone before the sweeper looks again.
	maxRecheck = time.Hour
)

// recovery is chatq's one recovery path, in every worker: the worker's
// heartbeat, and, in the one worker that holds the sweeper's lease, the
// sweep of the due index (store.Store.Due). For each record due, the
// sweeper reads the record and either drops the entry (the message ended),
// looks again later (its task waits in asynq, or its send is on the wire
// of a live worker), hands the message a new task (its task is gone, or
// its worker was lost: no heartbeat), or ends it dead (its task was
// archived behind chatq's back). Pending callback notices are handed a new
// delivery task.
type recovery struct {
	store     *store.Store
	client    *enqueue.Client
	inspector *asynq.Inspector
	// callbacks delivers the notices due; nil leaves them to a worker that
	// has it, by putting them off.
	callbacks *callback.Deliverer
	// worker is this process's id, the key of its heartbeat and the owner
	// of its sends.
	worker   string
	interval time.Duration
	beat     time.Duration
	metrics  *metrics.Metrics
	log      *zap.Logger
	now      func() time.Time
	// failed is when this worker last failed to reach Redis (unix
	// nanoseconds): the other workers may have failed to beat too.
	failed atomic.Int64
}

// workerID names a worker process: its host, its pid and a random part, so
// that a restarted process with the same pid is not taken for the old one.
func workerID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// heartbeatTTL is how long a worker's heartbeat outlives its last beat:
// three beats, so that one late beat does not make a live worker lost.
func (r *recovery) heartbeatTTL() time.Duration { return 3 * r.beat }

// leaseTTL is how long the sweeper's lease outlives its last renewal.
func (r *recovery) leaseTTL() time.Duration { return max(3*r.interval, r.heartbeatTTL()) }

// heartbeat writes the worker's heartbeat every beat until ctx ends.
func (r *recovery) heartbeat(ctx context.Context) {
	t := time.NewTicker(r.beat)
	defer t.Stop()
	failing := false
	for {
		err := r.store.Heartbeat(ctx, r.worker, r.heartbeatTTL())
		if err != nil {
			r.failed.Store(r.now().UnixNano())
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			r.log.Warn("writing the worker's heartbeat failed; its sends may be taken for lost", zap.Error(err))
		case err == nil && failing:
			failing = false
			r.log.Info("writing the worker's heartbeat works again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lead takes the sweeper's lease whenever it lapses, and sweeps while it
// holds it, until ctx ends. The sweeper judges no worker for one heartbeat
// TTL after it last failed to reach Redis: after an outage every heartbeat
// lapsed, and the live workers must beat again first.
func (r *recovery) lead(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	leading, failing := false, false
	for {
		ok, err := r.store.Lead(ctx, r.worker, r.leaseTTL())
		switch {
		case err != nil:
			ok = false
			r.failed.Store(r.now().UnixNano())
		case ok && !leading:
			r.log.Info("this worker sweeps the due index now")
		}
		leading = ok
		if leading && r.now().Sub(time.Unix(0, r.failed.Load())) >= r.heartbeatTTL() {
			_, err = r.sweep(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			r.log.Warn("sweeping the due index failed", zap.Error(err))
		case err == nil && failing:
			failing = false
			r.log.Info("sweeping the due index works again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stop ends the worker's heartbeat and gives the sweeper's lease up, so
// that its sends are not waited for and another worker sweeps at once.
func (r *recovery) stop(ctx context.Context) {
	if err := r.store.Resign(ctx, r.worker); err != nil {
		r.log.Warn("giving the sweeper's lease up", zap.Error(err))
	}
	if err := r.store.StopHeartbeat(ctx, r.worker); err != nil {
		r.log.Warn("ending the worker's heartbeat", zap.Error(err))
	}
}

// sweep works through what is due now, in batches, and returns how many
// entries it looked at.
func (r *recovery) sweep(ctx context.Context) (int, error) {
	seen := 0
	for range sweepRounds {
		entries, err := r.store.Due(ctx, r.now(), sweepBatch)
		if err != nil {
			return seen, err
		}
		seen += len(entries)
		if err := r.settle(ctx, entries); err != nil {
			return seen, err
		}
		if len(entries) < sweepBatch {
			break
		}
	}
	return seen, nil
}

// settle handles one batch of due entries.
func (r *recovery) settle(ctx context.Context, entries []store.DueEntry) error {
	var notices []string
	var sends []store.DueEntry
	for _, e := range entries {
		if e.Notices {
			notices = append(notices, e.ID)
		} else {
			sends = append(sends, e)
		}
	}
	if len(notices) > 0 {
		if r.callbacks == nil {
			if err := r.store.DeferNotices(ctx, r.now(), notices...); err != nil {
				return err
			}
		} else if n, err := r.callbacks.Sweep(ctx, notices); err != nil {
			return err
		} else if n > 0 {
			r.log.Info("status callbacks handed a new task", zap.Int("messages", n))
		}
	}
	if len(sends) == 0 {
		return nil
	}
	ids := make([]string, len(sends))
	for i, e := range sends {
		ids[i] = e.ID
	}
	recs, err := r.store.PeekMany(ctx, ids)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var owners []string
	for _, rec := range recs {
		if rec != nil && rec.Status == store.Sending && rec.Owner != "" {
			owners = append(owners, rec.Owner)
		}
	}
	alive, err := r.store.Alive(ctx, owners)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var (
		mu    sync.Mutex
		ended []store.DueEntry
		first error
		wg    sync.WaitGroup
	)
	now := r.now()
	active := &activeTasks{rdb: r.store.Redis(), cutoff: now}
	if now.Sub(time.Unix(0, r.failed.Load())) >= unrenewed {
		active.cutoff = now.Add(asynqLease - unrenewed)
	}
	// The messages whose wait ended get their new tasks after the looks,
	// one after the other in the index's order: a template's messages
	// released by its approval go out in the order chatq accepted them.
	waited := make([]bool, len(recs))
	queued, err := r.queuedTasks(ctx, recs)
	if err != nil {
		return err
	}
	var later []store.DueEntry
	slots := make(chan struct{}, sweepParallel)
	for i, rec := range recs {
		if rec == nil || !rec.Status.Pending() {
			ended = append(ended, sends[i])
			continue
		}
		if queued[i] {
			// Its task waits in asynq (a backlog, a retry): looked at
			// again the later, the longer it has waited.
			later = append(later, store.DueEntry{ID: rec.ID, At: now.Add(r.recheck(now, rec))})
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			over, err := r.check(ctx, rec, alive, active)
			waited[i] = over
			if err != nil {
				mu.Lock()
				first = cmpErr(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i, over := range waited {
		if !over {
			continue
		}
		if err := r.resend(ctx, recs[i], ""); err != nil {
			first = cmpErr(first, err)
		}
	}
	if err := r.store.PostponeAll(ctx, later...); err != nil {
		return err
	}
	if err := r.store.DropDue(ctx, ended...); err != nil {
		return err
	}
	return first
}

// queuedTasks reports, for each of recs, whether it is a message queued or
// retrying whose task waits in asynq: what most of a sweep is when a
// backlog waits (a campaign's, or one left by a stopped worker). Their
// tasks' states are read in one round trip, one command each, instead of
// one look each (check).
func (r *recovery) queuedTasks(ctx context.Context, recs []*store.Record) ([]bool, error) {
	out := make([]bool, len(recs))
	pipe := r.store.Redis().Pipeline()
	states := make([]*redis.StringCmd, len(recs))
	for i, rec := range recs {
		if rec == nil || rec.Waiting != nil || (rec.Status != store.Queued && rec.Status != store.Retrying && rec.Status != store.Scheduled) {
			continue
		}
		queue := cmp.Or(rec.Queue, enqueue.QueueFor(enqueue.Priority(rec.Priority)))
		// asynq's own hash of the task (as the Inspector reads it).
		states[i] = pipe.HGet(ctx, "asynq:{"+queue+"}:t:"+rec.TaskID, "state")
	}
	if pipe.Len() == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("sweep: read task states: %w", err)
	}
	for i, c := range states {
		if c == nil {
			continue
		}
		switch c.Val() {
		case "pending", "scheduled", "retry":
			out[i] = true
		}
	}
	return out, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// asynq v0.26 gives a task it hands a handler a lease of asynqLease,
// which the handler's server renews every asynqBeat while the handler
// runs (its heartbeater, the same for every server). A lease not renewed
// for unrenewed is held by no handler: its dequeue's answer never reached
// the worker, or the server lost track of the handler. asynq itself acts
// only once the lease lapses, and its recoverer runs once a minute.
const (
	asynqLease = 30 * time.Second
	asynqBeat  = 5 * time.Second
	unrenewed  = 2*asynqBeat + time.Second
)

// activeTasks tells, for one sweep, which active tasks of a queue are
// orphaned: no asynq server renews their lease. asynq's Inspector says
// only whether a lease lapsed, and asynq renews none after that: the
// leases are read from asynq's own sorted set of them.
type activeTasks struct {
	rdb redis.UniversalClient
	// cutoff is the lease deadline below which a task is orphaned: now
	// plus what is left of a lease not renewed for unrenewed, or now
	// alone (a lapsed lease) while the servers may not have renewed
	// theirs since Redis was away.
	cutoff  time.Time
	mu      sync.Mutex
	orphans map[string]map[string]bool // queue -> orphaned task ids
}

func (a *activeTasks) orphaned(ctx context.Context, queue, task string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids, ok := a.orphans[queue]
	if !ok {
		// asynq scores a lease with its deadline in unix seconds.
		stale, err := a.rdb.ZRangeByScore(ctx, "asynq:{"+queue+"}:lease", &redis.ZRangeBy{
			Min: "-inf", Max: "(" + strconv.FormatInt(a.cutoff.Unix(), 10)}).Result()
		if err != nil {
			return false, fmt.Errorf("read the leases of %s: %w", queue, err)
		}
		ids = make(map[string]bool, len(stale))
		for _, id := range stale {
			ids[id] = true
		}
		if a.orphans == nil {
			a.orphans = map[string]map[string]bool{}
		}
		a.orphans[queue] = ids
	}
	return ids[task], nil
}

// check decides what a pending record due on the index needs. waitOver
// reports a message whose wait ended with its task: the caller hands it a
// new one.
func (r *recovery) check(ctx context.Context, rec *store.Record, alive map[string]bool, active *activeTasks) (waitOver bool, err error) {
	now := r.now()
	lease := r.store.SendLease()
	if rec.Waiting != nil && rec.Waiting.Reason == store.WaitConversationOrder {
		// Only the first of its line may have a task.
		if first, err := r.inLine(ctx, rec); err != nil || !first {
			return false, err
		}
	}
	if rec.Status == store.Sending && rec.Owner != "" && !alive[rec.Owner] {
		return false, r.resend(ctx, rec, "its worker was lost")
	}
	queue := rec.Queue
	if queue == "" {
		queue = enqueue.QueueFor(enqueue.Priority(rec.Priority))
	}
	info, err := r.inspector.GetTaskInfo(queue, rec.TaskID)
	if notFound(err) && rec.Priority == string(enqueue.Bulk) {
		laned, lerr := r.laned(ctx, rec)
		switch {
		case lerr != nil:
			return false, lerr
		case laned:
			// Its task is not written yet: its sender's feeder writes
			// it when the sender may send it. Looked at again the later,
			// the longer it has waited.
			return false, r.store.Postpone(ctx, rec.ID, now.Add(r.recheck(now, rec)))
		}
		// The feeder may have written it between the two looks.
		info, err = r.inspector.GetTaskInfo(queue, rec.TaskID)
	}
	switch {
	case notFound(err):
		if rec.Waiting != nil {
			// Its task ended with the wait (Handler.wait), which is over.
			return true, nil
		}
		if rec.Status == store.Sending && now.Sub(rec.UpdatedAt) < 2*lease {
			// Its live worker finished the task but has not recorded the
			// outcome yet (it retries that on its own): look again soon.
			return false, r.store.Postpone(ctx, rec.ID, now.Add(lease))
		}
		return false, r.resend(ctx, rec, "its task is gone")
	case err != nil:
		return false, fmt.Errorf("look up the task of %s: %w", rec.ID, err)
	}
	switch info.State {
	case asynq.TaskStateArchived:
		return false, r.archived(ctx, rec, info)
	case asynq.TaskStateCompleted:
		return false, r.resend(ctx, rec, "its task completed without an outcome")
	case asynq.TaskStateActive:
		orphaned, err := active.orphaned(ctx, queue, rec.TaskID)
		if err != nil {
			return false, err
		}
		if rec.Waiting != nil && !orphaned {
			// The handler that recorded the wait is ending its task.
			return false, r.store.Postpone(ctx, rec.ID, now)
		}
		if orphaned {
			// No asynq server renews its lease (its worker lost Redis for
			// longer, or died, or never got the task, or lost track of
			// its handler): no handler owns it any more, and asynq's
			// recoverer would hand it back only once the lease lapsed,
			// within a minute after.
			return false, r.resend(ctx, rec, "no worker renews its task's lease")
		}
		// On the wire of a live worker.
		return false, r.store.Postpone(ctx, rec.ID, now.Add(lease))
	}
	if rec.Status == store.Sending {
		// asynq handed the task back (its lease lapsed): it takes the
		// message up again when it runs.
		return false, r.store.Postpone(ctx, rec.ID, now.Add(r.store.Grace()))
	}
	// The task waits in asynq (a backlog, a retry): look again the later,
	// the longer it has waited.
	return false, r.store.Postpone(ctx, rec.ID, now.Add(r.recheck(now, rec)))
}

// recheck is how long a record whose task waits (in asynq, or in its
// sender's lane) is left alone: the longer it has waited, the longer.
func (r *recovery) recheck(now time.Time, rec *store.Record) time.Duration {
	return min(max(now.Sub(rec.UpdatedAt), r.store.Grace()), maxRecheck)
}

func notFound(err error) bool {
	return errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)
}

// laned reports whether a bulk record's task waits in its sender's lane,
// not lost: its feeder writes it (see feeder.go).
func (r *recovery) laned(ctx context.Context, rec *store.Record) (bool, error) {
	at, err := r.store.InLane(ctx, rec)
	if err != nil {
		return false, fmt.Errorf("sweep: %w", err)
	}
	return !at.IsZero(), nil
}

// resend hands rec a new task; why says what became of its last one, ""
// when its wait ended, which is no news.
func (r *recovery) resend(ctx context.Context, rec *store.Record, why string) error {
	old, owner := rec.TaskID, rec.Owner
	task, err := r.store.Reassign(ctx, rec)
	if err != nil || task == "" {
		return err // "": the record moved on; the next sweep sees it
	}
	rec.TaskID = task
	if err := r.client.Requeue(ctx, []*store.Record{rec})[0]; err != nil {
		// The record keeps its entry, due now: the next sweep finds the
		// task missing and tries again.
		return fmt.Errorf("enqueue a new task of %s: %w", rec.ID, err)
	}
	// Looked at again as soon as a send's take-up would be: a new task
	// that no handler gets is handed on in seconds, not after a grace.
	if err := r.store.Postpone(ctx, rec.ID, r.now().Add(r.store.SendLease())); err != nil {
		return err
	}
	log := r.log.With(zap.String("message_id", rec.ID), zap.String("task_id", task), zap.String("old_task_id", old), zap.String("status", string(rec.Status)))
	switch {
	case why == "":
		log.Debug("message handed a new task: its wait ended", zap.String("reason", string(rec.Waiting.Reason)))
	case rec.Status == store.Sending:
		log.Warn("message handed a new task: "+why, zap.String("lost_worker", owner), zap.Bool("was_on_the_wire", rec.OnWire))
	default:
		log.Info("message handed a new task: " + why)
	}
	return nil
}

// archived ends, as a dead letter, a pending record whose task asynq
// archived behind the handler's back: its worker died (or lost Redis) on
// its last retry and asynq's recoverer archived it, or an operator
// archived it from the dashboard. Nothing would ever send the message or
// end its record otherwise.
func (r *recovery) archived(ctx context.Context, rec *store.Record, task *asynq.TaskInfo) error {
	reason := task.LastErr
	if reason == "" {
		reason = "archived"
	}
	now := r.now()
	info := store.ErrorInfo{Class: string(chatarchitect.ClassRetryable), Code: "archived",
		Message: "asynq archived the task before its outcome was recorded: " + reason, At: now}
	o, _, err := r.store.Move(ctx, rec.ID, store.Change{Status: store.Dead, Error: &info, At: now,
		Note: "its task was archived while it was " + string(rec.Status) + " (a worker lost on its last attempt, or an operator)"})
	if err != nil {
		return fmt.Errorf("settle archived task of %s: %w", rec.ID, err)
	}
	if o == store.Changed {
		r.metrics.Dead(info.Class, info.Code)
		r.log.Warn("dead-lettered a message whose task asynq archived unrecorded", zap.String("message_id", rec.ID), zap.String("task_id", rec.TaskID))
		if err := r.store.StepOut(ctx, rec); err != nil {
			return fmt.Errorf("release the conversation of %s: %w", rec.ID, err)
		}
	}
	return nil
}
