package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// A conversation's line keeps its messages in the order chatq accepted
// them (CONTRACT.md "Conversation order"), per sender, recipient and
// priority: its first message (a string key, the line's head) and a Redis
// list of record ids behind it. A conversation of one message at a time,
// the most common by far, costs one small string (a list costs a queued
// message about 110 bytes more). An ordered record joins its line when it
// is created; only the first in line has a task, the others wait
// (WaitConversationOrder) without one. When the first leaves chatq's phase
// (submitted, dead, expired, canceled) it leaves the line, and the next gets
// its turn: from the worker that recorded the outcome (Release, Turn), or
// through the due index (StepOut). A record waiting for its turn also has a
// due entry some time later, which has the sweeper check its line (First):
// a release lost with its worker costs that delay, never a stuck message.

// lineKeys are the keys of the line of rec's conversation: its head, and
// the list behind it. The first in line is the head when it is set, else
// the first of the list (a line written before lines had a head is a list
// alone, its first message first). Their hash tag is the sender's and the
// recipient's, apart from the record's: they are written by commands of
// their own.
func lineKeys(rec *Record) []string {
	sender := rec.Sender
	if sender == "" {
		sender = "default"
	}
	tag := "{" + sender + ":" + strings.TrimPrefix(rec.Destination, "+") + "}:" + rec.Priority
	return []string{"chatq:lh:" + tag, "chatq:line:" + tag}
}

// lineGrace is how long a line entry whose record does not exist is taken
// for a record being created (its producer pushes the entry, then writes
// the record): an older one is a producer's that died in between, and is
// dropped.
const lineGrace = 30 * time.Second

// maxSkipped bounds the entries of ended messages one look at a line drops:
// the next look drops the rest.
const maxSkipped = 100

// A line's head holds the first message's id, followed by a "+" once a
// message joined the list behind it: a head that leaves a line without
// one deletes it and is done, without looking at the list.

// joinScript puts ARGV[1] in the line of head KEYS[1] and list KEYS[2]:
// as its head when the line is empty, else at the end of the list, and
// makes the line live until ARGV[2] (unix ms) at least. With ARGV[3] set
// (a repeated idempotency key: a producer may have died after the join,
// and its retry creates the record) an id in the line already stays where
// it is. It returns the id's place in the line, 0 for first.
var joinScript = redis.NewScript(`
local h = redis.call('GET', KEYS[1])
local first = h and string.gsub(h, '%+$', '')
if first == ARGV[1] then return 0 end
if not h and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
  return 0
end
local at = ARGV[3] == '1' and redis.call('LPOS', KEYS[2], ARGV[1])
if not at then at = redis.call('RPUSH', KEYS[2], ARGV[1]) - 1 end
redis.call('PEXPIREAT', KEYS[2], ARGV[2], 'NX')
redis.call('PEXPIREAT', KEYS[2], ARGV[2], 'GT')
if h then
  if h == first then redis.call('SET', KEYS[1], first .. '+', 'KEEPTTL') end
  redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'GT')
  at = at + 1
end
return at`)

// leaveScript takes ARGV[1] out of the line of head KEYS[1] and list
// KEYS[2], and returns the line's first id after it (false for an empty
// line). A head that is another's is put back to live until ARGV[2]
// (unix ms): the rare case of a message leaving from behind the head.
var leaveScript = redis.NewScript(`
local h = redis.call('GETDEL', KEYS[1])
if h == ARGV[1] then return false end
if h ~= ARGV[1] .. '+' then
  redis.call('LREM', KEYS[2], 1, ARGV[1])
  if h then
    redis.call('SET', KEYS[1], h, 'PXAT', ARGV[2])
    return (string.gsub(h, '%+$', ''))
  end
end
return redis.call('LINDEX', KEYS[2], 0)`)

// joinLines pushes the ordered records of a batch being created to their
// lines, in the batch's order, and returns those that are not first in
// their line: they are written waiting for their turn. A record whose
// idempotency key was claimed before joins only if it does not exist (a
// replay never pushes twice).
func (s *Store) joinLines(ctx context.Context, recs []*Record, repeated []bool, results []CreateResult) ([]bool, error) {
	held := make([]bool, len(recs))
	var ordered []int
	var again []int
	for i, r := range recs {
		if results[i].Err != nil || !r.Ordered {
			continue
		}
		ordered = append(ordered, i)
		if repeated[i] {
			again = append(again, i)
		}
	}
	if len(ordered) == 0 {
		return held, nil
	}
	exists := map[int]bool{}
	if len(again) > 0 {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(again))
		for j, i := range again {
			cmds[j] = pipe.Exists(ctx, recordKey(recs[i].ID))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("join lines: %w", err)
		}
		for j, i := range again {
			exists[i] = cmds[j].Val() == 1
		}
	}
	joins := make(map[int]*redis.Cmd, len(ordered))
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		for _, i := range ordered {
			r := recs[i]
			if exists[i] {
				continue // answered by the existing record
			}
			again := ""
			if repeated[i] {
				again = "1"
			}
			joins[i] = joinScript.EvalSha(ctx, pipe, lineKeys(r), r.ID, s.life(r).UnixMilli(), again)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("join lines: %w", err)
	}
	for i, c := range joins {
		n, err := c.Int64()
		if err != nil {
			return nil, fmt.Errorf("join line of %s: %w", recs[i].ID, err)
		}
		held[i] = n > 0
	}
	for i, r := range recs {
		if held[i] {
			r.Waiting = &Waiting{Reason: WaitConversationOrder, Since: r.CreatedAt}
		}
	}
	return held, nil
}

// wakeHeld looks, after the records of held were written waiting for their
// turn, whether one of them is first in its line already: the message
// before it was released between its push and its write, when its record
// did not exist yet. That one gets a due entry now.
func (s *Store) wakeHeld(ctx context.Context, held []*Record) error {
	if len(held) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	heads := make([]func() string, len(held))
	for i, r := range held {
		heads[i] = queueFirst(ctx, pipe, r)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read lines: %w", err)
	}
	for i, r := range held {
		if heads[i]() == r.ID {
			if err := s.Postpone(ctx, r.ID, time.Now()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Release takes rec, which left chatq's phase, out of its line, and
// returns the next record of the line if it waits for its turn (nil when
// none does: the line is empty, or its first message is on its way). The
// caller gives it its turn (Turn); entries of messages that ended are
// dropped on the way.
func (s *Store) Release(ctx context.Context, rec *Record) (*Record, error) {
	if !rec.Ordered {
		return nil, nil
	}
	// One round trip in the common case: a line left empty (a campaign's
	// one message to each recipient).
	var first *redis.Cmd
	if err := s.exec(ctx, func(pipe redis.Pipeliner) { first = s.leave(ctx, pipe, rec) }); err != nil {
		return nil, fmt.Errorf("release %s: %w", rec.ID, err)
	}
	return s.nextAfter(ctx, rec, first)
}

// leave queues on pipe rec's leaving its line; the answer is the line's
// first entry after it, for nextAfter.
func (s *Store) leave(ctx context.Context, pipe redis.Pipeliner, rec *Record) *redis.Cmd {
	return leaveScript.EvalSha(ctx, pipe, lineKeys(rec), rec.ID, s.life(rec).UnixMilli())
}

// nextAfter returns the record that waits for its turn first in rec's
// line, which rec left (leave, whose answer is first), nil if none.
func (s *Store) nextAfter(ctx context.Context, rec *Record, first *redis.Cmd) (*Record, error) {
	if errors.Is(first.Err(), redis.Nil) {
		return nil, nil
	}
	next, err := s.head(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", rec.ID, err)
	}
	return next, nil
}

// StepOut takes rec out of its line and has the next record of the line,
// if it waits for its turn, given its task by the sweeper at once. It is
// for a message that waits for a reason of its own kind (a marketing cap,
// a paused template), which must not hold back the messages behind it,
// and for a message ended outside a worker (canceled, or settled by the
// sweeper). A message that stepped out goes, when its wait ends, without
// waiting for the others.
func (s *Store) StepOut(ctx context.Context, rec *Record) error {
	next, err := s.Release(ctx, rec)
	if err != nil || next == nil {
		return err
	}
	return s.Postpone(ctx, next.ID, time.Now())
}

// stepOutIDs is StepOut for records known by id alone (canceled ones).
func (s *Store) stepOutIDs(ctx context.Context, ids []string) error {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, recordKey(id), fOrdered, fDest, fSender, fPriority)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read lines: %w", err)
	}
	for i, c := range cmds {
		v := c.Val()
		if o, _ := v[0].(string); o != "1" {
			continue
		}
		rec := &Record{ID: ids[i], Ordered: true}
		rec.Destination, _ = v[1].(string)
		rec.Sender, _ = v[2].(string)
		rec.Priority, _ = v[3].(string)
		if err := s.StepOut(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// queueFirst queues on pipe the read of the first id of rec's line; the
// function it returns gives it ("" for an empty line) once pipe ran.
func queueFirst(ctx context.Context, pipe redis.Pipeliner, rec *Record) func() string {
	keys := lineKeys(rec)
	head := pipe.Get(ctx, keys[0])
	first := pipe.LIndex(ctx, keys[1], 0)
	return func() string {
		if h := head.Val(); h != "" {
			return strings.TrimSuffix(h, "+")
		}
		return first.Val()
	}
}

// head returns the first record of rec's line if it waits for its turn,
// dropping the entries of messages that ended (or were never written) on
// the way.
func (s *Store) head(ctx context.Context, of *Record) (*Record, error) {
	keys := lineKeys(of)
	life := s.life(of).UnixMilli()
	for range maxSkipped {
		pipe := s.rdb.Pipeline()
		first := queueFirst(ctx, pipe, of)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read line: %w", err)
		}
		id := first()
		if id == "" {
			return nil, nil
		}
		rec, err := s.Peek(ctx, id)
		if err != nil {
			return nil, err
		}
		switch {
		case rec == nil && creating(id):
			// Its producer wakes it once it is written (wakeHeld).
			return nil, nil
		case rec != nil && rec.Status.Pending():
			if rec.Waiting != nil && rec.Waiting.Reason == WaitConversationOrder {
				return rec, nil
			}
			return nil, nil // on its way
		}
		if err := leaveScript.Run(ctx, s.rdb, keys, id, life).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("drop %s from its line: %w", id, err)
		}
	}
	return nil, nil
}

// creating reports whether the record of a line entry without one may be
// being written: its id (a ULID) is younger than lineGrace.
func creating(id string) bool {
	u, err := ulid.Parse(id)
	return err == nil && time.Since(ulid.Time(u.Time())) < lineGrace
}

// First reports whether rec, waiting for its turn, has it: it is first in
// its line once the entries of ended messages are dropped, or in no line
// at all. Otherwise next is the first record of its line when that one
// waits for its turn (its release was lost), nil when it is on its way.
func (s *Store) First(ctx context.Context, rec *Record) (first bool, next *Record, err error) {
	next, err = s.head(ctx, rec)
	if err != nil {
		return false, nil, fmt.Errorf("line of %s: %w", rec.ID, err)
	}
	if next != nil && next.ID == rec.ID {
		return true, nil, nil
	}
	_, err = s.rdb.LPos(ctx, lineKeys(rec)[1], rec.ID, redis.LPosArgs{}).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("line of %s: %w", rec.ID, err)
	}
	return false, next, nil
}

// turnScript ends the wait for its turn of a pending record (KEYS[1]):
// it waits for ARGV[2] (a wait's JSON) instead, and has a new task,
// ARGV[1]-<n>, whose id it returns. It returns false when the record no
// longer waits for its turn: another gave it already, or it ended.
var turnScript = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 's')
if s ~= 'queued' and s ~= 'scheduled' and s ~= 'retrying' then return false end
local wt = redis.call('HGET', KEYS[1], 'wt')
if not wt or not string.find(wt, '"reason":"conversation_order"', 1, true) then return false end
local t = ARGV[1] .. '-' .. redis.call('HINCRBY', KEYS[1], 'tc', 1)
redis.call('HSET', KEYS[1], 'tid', t, 'wt', ARGV[2])
return t`)

// Turn claims the turn of rec, which waits for it: from now on it waits
// for w instead (its pair slot, which the caller reserves next and records
// with Wait), with a new task whose id it returns, and a due entry at due,
// for the sweeper to hand it on should the caller be lost. It returns ""
// when the turn was given already, or the message ended: one turn, one
// reservation.
func (s *Store) Turn(ctx context.Context, rec *Record, w Waiting, due time.Time) (string, error) {
	body, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("turn of %s: %w", rec.ID, err)
	}
	var cmd *redis.Cmd
	z := redis.Z{Score: float64(w.Since.UnixMilli()), Member: rec.ID}
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(due.UnixMilli()), Member: rec.ID})
		cmd = turnScript.EvalSha(ctx, pipe, []string{recordKey(rec.ID)}, rec.ID, string(body))
		// Whatever the answer, the record no longer waits for its turn:
		// this one or another ended that wait. An entry for w written in
		// vain is dropped by the next listing.
		pipe.ZRem(ctx, waitKey(rec.Tenant, WaitConversationOrder), rec.ID)
		pipe.ZRem(ctx, senderWaitKey(rec.Sender, WaitConversationOrder), rec.ID)
		pipe.ZAdd(ctx, waitKey(rec.Tenant, w.Reason), z)
		pipe.ZAdd(ctx, senderWaitKey(rec.Sender, w.Reason), z)
	})
	if err != nil {
		return "", fmt.Errorf("turn of %s: %w", rec.ID, err)
	}
	task, err := cmd.Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("turn of %s: %w", rec.ID, err)
	}
	rec.TaskID, rec.Waiting = task, &w
	return task, nil
}

// OrderRecheck is how long after it starts waiting for its turn a message
// has the sweeper check its line.
func (s *Store) OrderRecheck() time.Duration { return s.cfg.OrderRecheck }
