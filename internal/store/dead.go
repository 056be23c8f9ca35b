package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// deadKey indexes a tenant's dead letters: the ids of its dead records,
// scored by the unix milliseconds they died. asynq's archive holds their
// tasks too, but keeps at most 10,000 per queue for 90 days; this index
// lasts as long as the records. It is written by a command of its own after
// the record's script, not inside it, so that the layout works on Redis
// Cluster; an entry whose record is no longer dead is dropped when a
// listing meets it. Each new entry takes out those that died longer than
// the record TTL ago, whose records are gone (a record lives TTL past its
// last change), so the index holds about as many entries as there are dead
// records, listed or not. Each tenant has its own, as it has its own
// batches: DefaultTenant keeps the key of before tenants, which may still
// hold other tenants' entries (a listing moves them to their own).
func deadKey(tenant string) string {
	if tenant == "" || tenant == DefaultTenant {
		return "chatq:dead"
	}
	return "chatq:dead:" + tenant
}

// owners returns the status and the tenant of each record, in one round
// trip: "" and DefaultTenant for the missing. A record's tenant never
// changes, so it says which tenant's dead letters the record is among.
func (s *Store) owners(ctx context.Context, ids []string) ([]Status, []string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, recordKey(id), fStatus, fTenant)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("read statuses: %w", err)
	}
	sts := make([]Status, len(ids))
	tenants := make([]string, len(ids))
	for i, c := range cmds {
		v := c.Val()
		st, _ := v[0].(string)
		tenant, _ := v[1].(string)
		sts[i], tenants[i] = Status(st), cmp.Or(tenant, DefaultTenant)
	}
	return sts, tenants, nil
}

// die moves a record to dead and adds it to its tenant's dead letters.
func (s *Store) die(ctx context.Context, id string, c Change) (Outcome, Status, error) {
	at := c.At
	if at.IsZero() {
		at = time.Now()
		c.At = at
	}
	op := "final"
	_, tenants, err := s.owners(ctx, []string{id})
	if err != nil {
		return "", "", fmt.Errorf("move %s: %w", id, err)
	}
	key := deadKey(tenants[0])
	var cmd *redis.Cmd
	// The index write rides in the same round trip. Its failure alone is
	// not reported: the record is dead, and a caller told otherwise would
	// try again and find a dead record, which only an operator's retry
	// revives.
	_ = s.exec(ctx, func(pipe redis.Pipeliner) {
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs(op, c)...)
		pipe.ZAddNX(ctx, key, redis.Z{Score: float64(at.UnixMilli()), Member: id})
		s.trimDead(ctx, pipe, key)
		pipe.ZRem(ctx, dueKey, id)
	})
	o, st, _, err := s.outcome(ctx, id, cmd, "move "+id)
	if err != nil {
		return "", "", err
	}
	if o != Changed && st != Dead {
		_ = s.rdb.ZRem(ctx, key, id).Err()
	}
	return o, st, nil
}

// trimDead adds to pipe the removal of the dead letters of the index key
// that died longer than the record TTL ago: their records, which live TTL
// past their last change, are gone.
func (s *Store) trimDead(ctx context.Context, pipe redis.Pipeliner, key string) {
	pipe.ZRemRangeByScore(ctx, key, "-inf", "("+scoreArg(time.Now().Add(-s.cfg.TTL).UnixMilli()))
}

// DeadFilter selects dead letters. The zero value selects all those of
// DefaultTenant.
type DeadFilter struct {
	// Tenant owns the dead letters listed: each tenant's are apart. Empty
	// means DefaultTenant.
	Tenant string
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

// MarshalJSON writes the record's fields and died_at, every time in the
// one form of chatq's JSON.
func (d DeadLetter) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		recordJSON
		DiedAt jsontime.Time `json:"died_at"`
	}{d.jsonView(), jsontime.Time(d.DiedAt)})
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
// expired or is no longer dead are dropped from the index on the way, and
// those of another tenant's record move to that tenant's dead letters.
func (s *Store) ListDead(ctx context.Context, f DeadFilter, cursor string, limit int) (DeadPage, error) {
	key := deadKey(f.Tenant)
	if cursor == "" {
		pipe := s.rdb.Pipeline()
		s.trimDead(ctx, pipe, key)
		_, _ = pipe.Exec(ctx)
	}
	found, next, err := s.page(ctx, key, f.span(), cursor, limit, func(r *Record) verdict {
		switch {
		case r.Status != Dead:
			return drop
		case f.match(r):
			return take
		}
		return skip
	}, func(r *Record) (string, time.Time) { return deadKey(r.Tenant), time.Time{} })
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
// retried leaves its tenant's dead letters and joins the due index, so
// that the sweeper enqueues it if the caller does not: the caller must have
// removed any task of the record from asynq's archive first, or the sweeper
// would find the task archived and end the record dead again.
func (s *Store) RetryDead(ctx context.Context, ids []string, at time.Time, note string) ([]Outcome, []Status, error) {
	_, tenants, err := s.owners(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("retry dead letters: %w", err)
	}
	args := s.transitionArgs("requeue", Change{Status: Queued, At: at, Note: note})
	cmds := make([]*redis.Cmd, len(ids))
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		for i, id := range ids {
			// On the due index before the change, after a grace: a crash
			// in between leaves the message queued and found, not lost.
			pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(time.Now().Add(s.cfg.DueGrace).UnixMilli()), Member: id})
			cmds[i] = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), args...)
			// Retried or not dead (anymore): either way no dead letter.
			pipe.ZRem(ctx, deadKey(tenants[i]), id)
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
	sts, tenants, err := s.owners(ctx, ids)
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
			pipe.ZRem(ctx, deadKey(tenants[i]), id)
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
