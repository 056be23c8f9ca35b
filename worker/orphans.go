package worker

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

// maxArchivePages bounds one settle pass: asynq keeps at most 10,000
// archived tasks per queue, 100 pages of 100.
const maxArchivePages = 100

// settleArchived ends, as dead letters, the records whose send task asynq
// archived while the record was still pending. The handler records every
// death it causes, but asynq archives two kinds of task behind its back:
// one whose worker died (or lost Redis) on its last retry, which asynq's
// recoverer archives when the lease expires, and one an operator archived
// from the dashboard. Either way nothing would ever send the message or
// end its record: an archived send task must belong to a dead record. It
// returns how many records it ended.
func settleArchived(ctx context.Context, inspector *asynq.Inspector, st *store.Store, now time.Time) (int, error) {
	queues, err := inspector.Queues()
	if err != nil {
		return 0, fmt.Errorf("list queues: %w", err)
	}
	settled := 0
	for _, q := range queues {
		if !enqueue.IsSendQueue(q) {
			continue
		}
		for page := 1; page <= maxArchivePages; page++ {
			tasks, err := inspector.ListArchivedTasks(q, asynq.PageSize(100), asynq.Page(page))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return settled, fmt.Errorf("list archived tasks of %s: %w", q, err)
			}
			n, err := settlePage(ctx, st, tasks, now)
			settled += n
			if err != nil {
				return settled, err
			}
			if len(tasks) < 100 {
				break
			}
		}
	}
	return settled, nil
}

func settlePage(ctx context.Context, st *store.Store, tasks []*asynq.TaskInfo, now time.Time) (int, error) {
	ids := make([]string, 0, len(tasks))
	reasons := make(map[string]string, len(tasks))
	for _, t := range tasks {
		if t.Type != enqueue.TaskSend {
			continue
		}
		id := string(t.Payload)
		ids = append(ids, id)
		reasons[id] = t.LastErr
	}
	if len(ids) == 0 {
		return 0, nil
	}
	recs, err := st.GetMany(ctx, ids)
	if err != nil {
		return 0, fmt.Errorf("settle archived tasks: %w", err)
	}
	n := 0
	for _, r := range recs {
		if r == nil || !r.Status.Pending() {
			continue
		}
		reason := reasons[r.ID]
		if reason == "" {
			reason = "archived"
		}
		info := store.ErrorInfo{Class: string(chatarchitect.ClassRetryable), Code: "archived",
			Message: "asynq archived the task before its outcome was recorded: " + reason, At: now}
		o, _, err := st.Move(ctx, r.ID, store.Change{Status: store.Dead, Error: &info, At: now,
			Note: "its task was archived while it was " + string(r.Status) + " (a worker lost on its last attempt, or an operator)"})
		if err != nil {
			return n, fmt.Errorf("settle %s: %w", r.ID, err)
		}
		if o == store.Changed {
			n++
		}
	}
	return n, nil
}
