package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// deadKey indexes the dead letters: the ids of dead records, scored by the
// unix milliseconds they died. asynq's archive holds their tasks too, but
// keeps at most 10,000 per queue for 90 days; this index lasts as long as
// the records. It is written by a command of its own after the record's
// script, not inside it, so that the layout works on Redis Cluster; an
// entry whose record is no longer dead is dropped when a listing meets it.
const deadKey = "chatq:dead"

// die moves a record to dead and adds it to the dead letters.
func (s *Store) die(ctx context.Context, id string, c Change) (Outcome, Status, error) {
	at := c.At
	if at.IsZero() {
		at = time.Now()
		c.At = at
	}
	op := "final"
	if c.Unsent {
		op = "withdraw"
	}
	var cmd *redis.Cmd
	// The index write rides in the same round trip. Its failure alone is
	// not reported: the record is dead, and a caller told otherwise would
	// try again and find a dead record, which only an operator's retry
	// revives.
	_ = s.exec(ctx, func(pipe redis.Pipeliner) {
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs(op, c)...)
		pipe.ZAddNX(ctx, deadKey, redis.Z{Score: float64(at.UnixMilli()), Member: id})
		pipe.ZRem(ctx, dueKey, id)
	})
	o, st, _, err := s.outcome(ctx, id, cmd, "move "+id)
	if err != nil {
		return "", "", err
	}
	if o != Changed && st != Dead {
		_ = s.rdb.ZRem(ctx, deadKey, id).Err()
	}
	return o, st, nil
}

// DeadFilter selects dead letters. The zero value selects them all.
type DeadFilter struct {
	// Queue is the asynq queue of the message, or its priority: "bulk"
	// also selects the messages of every bulk shard (bulk-0 ...).
	Queue string
	// Class and Code are those of the last error (last_error.class, code).
	Class, Code string
	// BatchID is the campaign of the message.
	BatchID string
	// DiedAfter and DiedBefore bound when the message died; zero leaves
	// that end open.
	DiedAfter, DiedBefore time.Time
}

func (f DeadFilter) match(r *Record) bool {
	if f.Queue != "" && r.Queue != f.Queue && r.Priority != f.Queue {
		return false
	}
	if f.BatchID != "" && (r.BatchID == nil || *r.BatchID != f.BatchID) {
		return false
	}
	var class, code string
	if r.LastError != nil {
		class, code = r.LastError.Class, r.LastError.Code
	}
	return (f.Class == "" || strings.EqualFold(class, f.Class)) && (f.Code == "" || code == f.Code)
}

func (f DeadFilter) span() span {
	sp := allScores()
	if !f.DiedAfter.IsZero() {
		sp.min = f.DiedAfter.UnixMilli()
	}
	if !f.DiedBefore.IsZero() {
		sp.max = f.DiedBefore.UnixMilli()
	}
	return sp
}

// DeadLetter is a dead record and when it died.
type DeadLetter struct {
	*Record
	DiedAt time.Time `json:"died_at"`
}

// DeadPage is one page of dead letters.
type DeadPage struct {
	DeadLetters []DeadLetter
	// Next is the cursor of the next page; "" on the last page.
	Next string
}

// ListDead lists the dead letters that match f, the most recent death
// first, limit at most (up to MaxPage) from cursor ("" for the first
// page). A page may hold fewer than limit, even none, while Next is set: a
// narrow filter stops after a bounded amount of work. Entries whose record
// expired or is no longer dead are dropped from the index on the way.
func (s *Store) ListDead(ctx context.Context, f DeadFilter, cursor string, limit int) (DeadPage, error) {
	if cursor == "" {
		// Records expire TTL after their creation, so an entry older than
		// that is certainly stale.
		_ = s.rdb.ZRemRangeByScore(ctx, deadKey, "-inf", scoreArg(time.Now().Add(-s.cfg.TTL).UnixMilli())).Err()
	}
	found, next, err := s.page(ctx, deadKey, f.span(), cursor, limit, func(r *Record) verdict {
		switch {
		case r.Status != Dead:
			return drop
		case f.match(r):
			return take
		}
		return skip
	})
	if err != nil {
		return DeadPage{}, fmt.Errorf("list dead letters: %w", err)
	}
	p := DeadPage{DeadLetters: make([]DeadLetter, len(found)), Next: next}
	for i, e := range found {
		p.DeadLetters[i] = DeadLetter{Record: e.rec, DiedAt: time.UnixMilli(e.score).UTC()}
	}
	return p, nil
}

// RetryDead takes dead records back to queued, for an operator's retry, and
// reports each one's outcome: Changed, Refused (not dead: its status is
// the second result) or Missing. The history notes the retry. Each record
// retried leaves the dead letters and joins the due index, so that the
// sweeper enqueues it if the caller does not: the caller must have removed
// any task of the record from asynq's archive first, or the sweeper would
// find the task archived and end the record dead again.
func (s *Store) RetryDead(ctx context.Context, ids []string, at time.Time, note string) ([]Outcome, []Status, error) {
	args := s.transitionArgs("requeue", Change{Status: Queued, At: at, Note: note})
	cmds := make([]*redis.Cmd, len(ids))
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		for i, id := range ids {
			// On the due index before the change, after a grace: a crash
			// in between leaves the message queued and found, not lost.
			pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(time.Now().Add(s.cfg.DueGrace).UnixMilli()), Member: id})
			cmds[i] = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), args...)
			// Retried or not dead (anymore): either way no dead letter.
			pipe.ZRem(ctx, deadKey, id)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("retry dead letters: %w", err)
	}
	outcomes := make([]Outcome, len(ids))
	statuses := make([]Status, len(ids))
	for i, id := range ids {
		o, st, _, err := s.outcome(ctx, id, cmds[i], "retry "+id)
		if err != nil {
			return nil, nil, err
		}
		outcomes[i], statuses[i] = o, st
	}
	return outcomes, statuses, nil
}

// DropDead takes records off the dead letters and notes it in their
// history. The records stay, dead, until they expire: what happened to a
// message can still be read. It reports each one's outcome: Kept (taken
// off), Refused (not dead: its status is the second result, nothing
// noted) or Missing.
func (s *Store) DropDead(ctx context.Context, ids []string, at time.Time, note string) ([]Outcome, []Status, error) {
	sts, err := s.statuses(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("drop dead letters: %w", err)
	}
	outcomes := make([]Outcome, len(ids))
	args := s.transitionArgs("note", Change{Status: Dead, At: at, Note: note})
	cmds := make([]*redis.Cmd, len(ids))
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		for i, id := range ids {
			if sts[i] == Dead {
				cmds[i] = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), args...)
			}
			pipe.ZRem(ctx, deadKey, id)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("drop dead letters: %w", err)
	}
	for i, id := range ids {
		switch {
		case sts[i] == "":
			outcomes[i] = Missing
		case cmds[i] == nil:
			outcomes[i] = Refused
		default:
			o, st, _, err := s.outcome(ctx, id, cmds[i], "drop "+id)
			if err != nil {
				return nil, nil, err
			}
			outcomes[i], sts[i] = o, st
		}
	}
	return outcomes, sts, nil
}
