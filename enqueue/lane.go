package enqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/internal/store"
)

// Lanes. A bulk message gets no asynq task when it is accepted (or handed
// a new task by the sweeper, or retried by an operator): it enters its
// sender's lane (store.AddToLanes), and that sender's feeder, in a worker,
// moves into asynq's bulk queue only what the sender may send next
// (MoveLane). asynq's queues are first in, first out and fixed when a
// server starts, so one sender's backlog there would delay every other
// sender's bulk messages behind it; in lanes, each sender's backlog waits
// on its own. Transactional messages go straight to asynq.

// laned reports whether a record's task goes through its sender's lane.
func laned(r *store.Record) bool { return r.Priority == string(Bulk) }

// MoveLane writes the asynq tasks of up to n messages of a sender's lane
// that may go now, the earliest first, and takes them out of the lane. An
// entry whose message ended, or has another task since, is dropped
// without a task. It returns the number of tasks written; an entry whose
// task could not be written stays for the next call.
func (c *Client) MoveLane(ctx context.Context, lane string, n int) (int, error) {
	entries, err := c.store.LaneHead(ctx, lane, c.cfg.Now(), int64(n))
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	tasks, err := c.store.LaneTasks(ctx, entries)
	if err != nil {
		return 0, fmt.Errorf("move lane %s: %w", lane, err)
	}
	errs := make([]error, len(tasks))
	var live []int
	for i, t := range tasks {
		if t.Live {
			live = append(live, i)
		}
	}
	c.each(live, func(i int) { errs[i] = c.writeTask(ctx, tasks[i]) })
	var done []store.LaneEntry
	moved := 0
	var first error
	for i, t := range tasks {
		switch {
		case errs[i] != nil:
			first = cmp.Or(first, errs[i])
			continue
		case t.Live:
			moved++
		}
		done = append(done, t.LaneEntry)
	}
	// The tasks come first: an entry left behind by a failure here is
	// written again next time, which asynq refuses as a conflict while the
	// task exists, and whose handler finds the message moved on after.
	if err := c.store.RemoveFromLane(ctx, lane, done); err != nil {
		return moved, fmt.Errorf("move lane %s: %w", lane, err)
	}
	if first != nil {
		return moved, fmt.Errorf("move lane %s: %w", lane, first)
	}
	return moved, nil
}

// writeTask writes the asynq task of a lane entry.
func (c *Client) writeTask(ctx context.Context, t store.LaneTask) error {
	queue := cmp.Or(t.Queue, string(Bulk))
	_, err := c.queue.EnqueueContext(ctx, asynq.NewTask(TaskSend, nil),
		asynq.TaskID(t.Task), asynq.Queue(queue), asynq.MaxRetry(c.cfg.MaxRetry))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue %s: %w", t.Task, err)
	}
	return nil
}
