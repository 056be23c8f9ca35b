// Package deadletter lists, retries and deletes chatq's dead letters: the
// job records that ended dead, together with their tasks in asynq's
// archive. The HTTP API and the chatq dlq command both use it.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/store"
)

// History notes of the operator's actions.
const (
	RetryNote  = "retried by an operator"
	DeleteNote = "removed from the dead letters by an operator"
)

// chunk is how many dead letters one step handles.
const chunk = 200

// Outcome is what became of one dead letter.
type Outcome string

// The outcomes of Retry and Delete.
const (
	// Retried: the record is queued again, with a fresh task and retry
	// budget.
	Retried Outcome = "retried"
	// Deleted: the record left the dead letters, and its task the archive.
	Deleted Outcome = "deleted"
	// NotDead: the record is not dead (retried meanwhile, or never dead).
	NotDead Outcome = "not_dead"
	// NotFound: no record has that id (it expired).
	NotFound Outcome = "not_found"
)

// Result is one dead letter's outcome.
type Result struct {
	ID      string  `json:"id"`
	Outcome Outcome `json:"outcome"`
	// Status is the record's status after, when it has one.
	Status store.Status `json:"status,omitempty"`
}

// Report counts the outcomes of a Retry or Delete.
type Report struct {
	// Done is how many were retried, or deleted.
	Done     int `json:"done"`
	NotDead  int `json:"not_dead"`
	NotFound int `json:"not_found"`
	// Results lists each id's outcome for a call by ids; a call by filter
	// leaves it empty.
	Results []Result `json:"results,omitempty"`
}

func (r *Report) add(res Result, keep bool) {
	switch res.Outcome {
	case Retried, Deleted:
		r.Done++
	case NotDead:
		r.NotDead++
	case NotFound:
		r.NotFound++
	}
	if keep {
		r.Results = append(r.Results, res)
	}
}

// Manager handles dead letters.
type Manager struct {
	store   *store.Store
	client  *enqueue.Client
	archive *asynq.Inspector
	now     func() time.Time
}

// New returns a Manager of st's dead letters. client enqueues the tasks of
// retried ones, with its retry budget; archive reaches asynq's archive. Both
// stay the caller's.
func New(st *store.Store, client *enqueue.Client, archive *asynq.Inspector) *Manager {
	return &Manager{store: st, client: client, archive: archive, now: time.Now}
}

// List returns a page of the dead letters that match f (see
// store.Store.ListDead).
func (m *Manager) List(ctx context.Context, f store.DeadFilter, cursor string, limit int) (store.DeadPage, error) {
	return m.store.ListDead(ctx, f, cursor, limit)
}

// Retry sends dead letters back to their queue: each record goes back to
// queued (keeping its history, which notes the retry) and gets a new task
// with a fresh retry budget, its archived task deleted first. Ids that are
// not dead are reported, not changed.
func (m *Manager) Retry(ctx context.Context, ids []string) (Report, error) {
	var rep Report
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		if err := m.retry(ctx, ids[:n], &rep, true); err != nil {
			return rep, err
		}
		ids = ids[n:]
	}
	return rep, nil
}

// RetryMatching retries every dead letter of f's tenant that matches f, as
// Retry does: after an outage, everything that died during it, in one call.
func (m *Manager) RetryMatching(ctx context.Context, f store.DeadFilter) (Report, error) {
	var rep Report
	return rep, m.each(ctx, f, func(ids []string) error { return m.retry(ctx, ids, &rep, false) })
}

// Delete takes dead letters off the list and deletes their archived
// tasks. The records stay, dead, until they expire (CHATQ_RECORD_TTL), their
// history noting the deletion, so that an application can still read what
// became of its message; they are not retried.
func (m *Manager) Delete(ctx context.Context, ids []string) (Report, error) {
	var rep Report
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		if err := m.delete(ctx, ids[:n], &rep, true); err != nil {
			return rep, err
		}
		ids = ids[n:]
	}
	return rep, nil
}

// DeleteMatching deletes every dead letter of f's tenant that matches f,
// as Delete does.
func (m *Manager) DeleteMatching(ctx context.Context, f store.DeadFilter) (Report, error) {
	var rep Report
	return rep, m.each(ctx, f, func(ids []string) error { return m.delete(ctx, ids, &rep, false) })
}

// each calls do with the ids of the dead letters that match f, a page at a
// time. do takes them off the list, so the listing goes on from where it
// was without missing any.
func (m *Manager) each(ctx context.Context, f store.DeadFilter, do func(ids []string) error) error {
	cursor := ""
	for {
		p, err := m.store.ListDead(ctx, f, cursor, chunk)
		if err != nil {
			return err
		}
		if len(p.DeadLetters) > 0 {
			ids := make([]string, len(p.DeadLetters))
			for i, d := range p.DeadLetters {
				ids[i] = d.ID
			}
			if err := do(ids); err != nil {
				return err
			}
		}
		if p.Next == "" {
			return nil
		}
		cursor = p.Next
	}
}

func (m *Manager) retry(ctx context.Context, ids []string, rep *Report, keep bool) error {
	recs, err := m.store.GetMany(ctx, ids)
	if err != nil {
		return fmt.Errorf("retry dead letters: %w", err)
	}
	results := make([]Result, len(ids))
	var dead []int // indexes of the dead records
	for i, r := range recs {
		results[i].ID = ids[i]
		switch {
		case r == nil:
			results[i].Outcome = NotFound
		case r.Status != store.Dead:
			results[i].Outcome, results[i].Status = NotDead, r.Status
		default:
			dead = append(dead, i)
		}
	}
	if len(dead) > 0 {
		if err := m.requeue(ctx, recs, dead, results); err != nil {
			return err
		}
	}
	for _, res := range results {
		rep.add(res, keep)
	}
	return nil
}

// requeue retries the records at the dead indexes of recs and fills in
// their results.
func (m *Manager) requeue(ctx context.Context, recs []*store.Record, dead []int, results []Result) error {
	// The archived task goes first: while it exists, a new task of the same
	// id cannot be enqueued, and the unsent index's sweeper would take it
	// for the live one.
	ids := make([]string, len(dead))
	for j, i := range dead {
		if err := m.unarchive(recs[i]); err != nil {
			return err
		}
		ids[j] = recs[i].ID
	}
	outcomes, sts, err := m.store.RetryDead(ctx, ids, m.now(), RetryNote)
	if err != nil {
		return err
	}
	var requeued []*store.Record
	for j, i := range dead {
		results[i].Status = sts[j]
		switch outcomes[j] {
		case store.Changed:
			results[i].Outcome = Retried
			requeued = append(requeued, recs[i])
		case store.Missing:
			results[i].Outcome, results[i].Status = NotFound, ""
		default:
			results[i].Outcome = NotDead
		}
	}
	// A task that fails to enqueue is not lost: the record is on the unsent
	// index, which a worker's sweeper enqueues within its interval.
	_ = m.client.Requeue(ctx, requeued)
	return nil
}

func (m *Manager) delete(ctx context.Context, ids []string, rep *Report, keep bool) error {
	recs, err := m.store.GetMany(ctx, ids)
	if err != nil {
		return fmt.Errorf("delete dead letters: %w", err)
	}
	// The archived tasks first: should the rest fail, the dead letters are
	// still listed, and deleting them again finishes the work.
	for _, r := range recs {
		if r != nil && r.Status == store.Dead {
			if err := m.unarchive(r); err != nil {
				return err
			}
		}
	}
	outcomes, sts, err := m.store.DropDead(ctx, ids, m.now(), DeleteNote)
	if err != nil {
		return err
	}
	for i, o := range outcomes {
		res := Result{ID: ids[i], Status: sts[i]}
		switch o {
		case store.Missing:
			res.Outcome, res.Status = NotFound, ""
		case store.Refused:
			res.Outcome = NotDead
		default:
			res.Outcome = Deleted
		}
		rep.add(res, keep)
	}
	return nil
}

// unarchive deletes the record's task from asynq's archive, if it is
// there. A task in any other state is left alone: a dashboard "run" made it
// pending, or it is running, and it retries the record itself.
func (m *Manager) unarchive(r *store.Record) error {
	queue := r.Queue
	if queue == "" {
		queue = enqueue.QueueFor(enqueue.Priority(r.Priority))
	}
	info, err := m.archive.GetTaskInfo(queue, r.TaskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("look up the task of %s: %w", r.ID, err)
	case info.State != asynq.TaskStateArchived:
		return nil
	}
	err = m.archive.DeleteTask(queue, r.TaskID)
	if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return fmt.Errorf("delete the archived task of %s: %w", r.ID, err)
	}
	return nil
}

// Params is a filter of dead letters as people write it: the query
// parameters of GET /v1/dead-letters and the flags of chatq dlq.
type Params struct {
	// Queue is transactional, bulk (every bulk shard) or one bulk shard.
	Queue string `json:"queue,omitempty"`
	// Class and Code are those of the last error.
	Class string `json:"class,omitempty"`
	Code  string `json:"code,omitempty"`
	// BatchID is the campaign.
	BatchID string `json:"batch_id,omitempty"`
	// OlderThan and NewerThan bound how long ago the message died, as Go
	// durations (90s, 10m, 2h).
	OlderThan string `json:"older_than,omitempty"`
	NewerThan string `json:"newer_than,omitempty"`
}

// Empty reports whether p selects every dead letter.
func (p Params) Empty() bool { return p == Params{} }

// Filter checks p and turns it into a store filter, its ages counted back
// from now. A bad value is an *enqueue.ValidationError naming the field by
// its snake_case name.
func (p Params) Filter(now time.Time) (store.DeadFilter, error) {
	f := store.DeadFilter{Queue: p.Queue, Class: p.Class, Code: p.Code, BatchID: p.BatchID}
	if p.Queue != "" && !enqueue.IsSendQueue(p.Queue) {
		return f, &enqueue.ValidationError{Field: "queue", Reason: "must be transactional, bulk or a bulk shard (bulk-0 ...)"}
	}
	switch chatarchitect.Class(p.Class) {
	case "", chatarchitect.ClassRetryable, chatarchitect.ClassPermanent, chatarchitect.ClassRateLimited,
		chatarchitect.ClassPolicy, chatarchitect.ClassAccount, chatarchitect.ClassMarketingCapped, chatarchitect.ClassTemplatePaused:
	default:
		return f, &enqueue.ValidationError{Field: "class", Reason: "must be retryable, permanent, rate_limited, policy, account, marketing_capped or template_paused"}
	}
	for _, a := range []struct {
		field, value string
		set          *time.Time
	}{
		{"older_than", p.OlderThan, &f.DiedBefore},
		{"newer_than", p.NewerThan, &f.DiedAfter},
	} {
		if a.value == "" {
			continue
		}
		d, err := time.ParseDuration(a.value)
		if err != nil || d < 0 {
			return f, &enqueue.ValidationError{Field: a.field, Reason: "must be a duration such as 90s, 10m or 2h"}
		}
		*a.set = now.Add(-d)
	}
	if !f.DiedAfter.IsZero() && !f.DiedBefore.IsZero() && !f.DiedAfter.Before(f.DiedBefore) {
		return f, &enqueue.ValidationError{Field: "newer_than", Reason: "must be longer than older_than, or nothing matches"}
	}
	return f, nil
}
