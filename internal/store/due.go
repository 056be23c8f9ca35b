package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// dueKey is chatq's one recovery index: a sorted set of the records that
// need a task, or a look, at a time, scored with that time in unix
// milliseconds. A record's member is its id (its send: see the
// Config.DueGrace and Config.SendLease fields for when); a record with
// callback notices pending also has a member noticePrefix+id. A stale
// entry is harmless: whoever sweeps the index reads the record and drops
// the entry of one that needs nothing.
const dueKey = "chatq:due"

// noticePrefix marks the due entries of pending callback notices.
const noticePrefix = "cb:"

// heartbeatKey is a worker process's heartbeat: it exists while the worker
// lives (see Heartbeat).
func heartbeatKey(worker string) string { return "chatq:hb:" + worker }

// leaderKey holds the lease of the worker that sweeps the due index.
const leaderKey = "chatq:sweeper"

// Owner is the worker process and asynq task that take a message up for a
// send.
type Owner struct {
	// Worker is the worker process's id, the one of its heartbeat.
	Worker string
	// Task is the asynq task's id.
	Task string
}

// DueEntry is one entry of the due index.
type DueEntry struct {
	// ID is the record's id.
	ID string
	// Notices is set for the entry of the record's pending callback
	// notices, unset for the entry of its send.
	Notices bool
	// At is when the entry is due.
	At time.Time
	// score is the entry's score as read, for a removal that must not undo
	// a newer write.
	score float64
}

func (e DueEntry) member() string {
	if e.Notices {
		return noticePrefix + e.ID
	}
	return e.ID
}

// Due returns up to limit entries of the due index that are due at now,
// the oldest first: one read, whatever the size of the index.
func (s *Store) Due(ctx context.Context, now time.Time, limit int64) ([]DueEntry, error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
		Key: dueKey, ByScore: true, Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10), Count: limit,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read the due index: %w", err)
	}
	out := make([]DueEntry, len(zs))
	for i, z := range zs {
		m, _ := z.Member.(string)
		e := DueEntry{ID: m, At: time.UnixMilli(int64(z.Score)).UTC(), score: z.Score}
		if id, ok := strings.CutPrefix(m, noticePrefix); ok {
			e.ID, e.Notices = id, true
		}
		out[i] = e
	}
	return out, nil
}

// dropScript removes due entries (ARGV: member, score, ...) that still
// have the score they were read with: an entry a send wrote meanwhile
// stays.
var dropScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n`)

// DropDue removes entries that Due returned, unless they were written
// again since.
func (s *Store) DropDue(ctx context.Context, entries ...DueEntry) error {
	if len(entries) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(entries))
	for _, e := range entries {
		args = append(args, e.member(), strconv.FormatFloat(e.score, 'f', -1, 64))
	}
	if err := dropScript.Run(ctx, s.rdb, []string{dueKey}, args...).Err(); err != nil {
		return fmt.Errorf("drop due entries: %w", err)
	}
	return nil
}

// Postpone makes the send entry of record id due at at: the sweeper looks
// again then.
func (s *Store) Postpone(ctx context.Context, id string, at time.Time) error {
	if err := s.rdb.ZAdd(ctx, dueKey, redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err(); err != nil {
		return fmt.Errorf("postpone %s: %w", id, err)
	}
	return nil
}

// PostponeAll is Postpone for many entries (their At), in one command.
func (s *Store) PostponeAll(ctx context.Context, entries ...DueEntry) error {
	if len(entries) == 0 {
		return nil
	}
	zs := make([]redis.Z, len(entries))
	for i, e := range entries {
		zs[i] = redis.Z{Score: float64(e.At.UnixMilli()), Member: e.ID}
	}
	if err := s.rdb.ZAdd(ctx, dueKey, zs...).Err(); err != nil {
		return fmt.Errorf("postpone %d due entries: %w", len(entries), err)
	}
	return nil
}

// Grace is how long after a new task is written (or a retry is due) its
// record waits on the due index before the sweeper looks at it.
func (s *Store) Grace() time.Duration { return s.cfg.DueGrace }

// SendLease is how long after a take-up (Begin) the sweeper checks that
// the send's owner still lives.
func (s *Store) SendLease() time.Duration { return s.cfg.SendLease }

// reassignScript gives a pending record (KEYS[1]) a new task, if its
// current task is still ARGV[1] (ARGV[2] is the record id, the first
// task's id): the task's id is ARGV[2]-<n>, n counting the record's
// tasks. A message taken away from a lost send keeps, as ambiguous, that
// the send may have gone out. It returns the new task's id, or false when
// the record moved on meanwhile.
var reassignScript = redis.NewScript(`
local s = redis.call('HGET', KEYS[1], 's')
if s ~= 'queued' and s ~= 'scheduled' and s ~= 'retrying' and s ~= 'sending' then return false end
if (redis.call('HGET', KEYS[1], 'tid') or ARGV[2]) ~= ARGV[1] then return false end
local t = ARGV[2] .. '-' .. redis.call('HINCRBY', KEYS[1], 'tc', 1)
redis.call('HSET', KEYS[1], 'tid', t)
if s == 'sending' then
  if redis.call('HGET', KEYS[1], 'wr') == '1' then redis.call('HSET', KEYS[1], 'am', 1) end
  redis.call('HDEL', KEYS[1], 'wr', 'ow')
end
return t`)

// Reassign names a new task for record r, whose current task (r.TaskID)
// is gone or whose send's owner is lost, and returns its id for the
// caller to enqueue. The old task, should asynq ever run it again, may
// send the message only while it is not being sent by the new one
// (Begin). It returns "" when the record changed meanwhile.
func (s *Store) Reassign(ctx context.Context, r *Record) (string, error) {
	t, err := reassignScript.Run(ctx, s.rdb, []string{recordKey(r.ID)}, r.TaskID, r.ID).Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reassign %s: %w", r.ID, err)
	}
	return t, nil
}

// Defer hands a message back until at without a task: the sweeper gives
// it a new task then. It is how a message waits whose task cannot, as
// asynq archives a task whose retries are used up on any error.
func (s *Store) Defer(ctx context.Context, id string, at time.Time) error {
	if err := s.rdb.ZAdd(ctx, dueKey, redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err(); err != nil {
		return fmt.Errorf("defer %s: %w", id, err)
	}
	return nil
}

// Heartbeat tells the sweeper that worker lives, for ttl.
func (s *Store) Heartbeat(ctx context.Context, worker string, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, heartbeatKey(worker), 1, ttl).Err(); err != nil {
		return fmt.Errorf("heartbeat of %s: %w", worker, err)
	}
	return nil
}

// StopHeartbeat ends worker's heartbeat at once, when it stops.
func (s *Store) StopHeartbeat(ctx context.Context, worker string) error {
	if err := s.rdb.Del(ctx, heartbeatKey(worker)).Err(); err != nil {
		return fmt.Errorf("end heartbeat of %s: %w", worker, err)
	}
	return nil
}

// Alive reports which of workers have a heartbeat, in one round trip.
func (s *Store) Alive(ctx context.Context, workers []string) (map[string]bool, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(workers))
	for i, w := range workers {
		cmds[i] = pipe.Exists(ctx, heartbeatKey(w))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read heartbeats: %w", err)
	}
	alive := make(map[string]bool, len(workers))
	for i, w := range workers {
		alive[w] = cmds[i].Val() == 1
	}
	return alive, nil
}

var (
	// leadScript renews worker ARGV[1]'s lease for ARGV[2] ms, or takes a
	// lease that lapsed.
	leadScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0`)
	// resignScript gives the lease up if worker ARGV[1] holds it.
	resignScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// Lead takes or renews the lease that makes worker the one sweeper of the
// due index, for ttl, and reports whether worker holds it.
func (s *Store) Lead(ctx context.Context, worker string, ttl time.Duration) (bool, error) {
	n, err := leadScript.Run(ctx, s.rdb, []string{leaderKey}, worker, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("lease of the sweeper: %w", err)
	}
	return n == 1, nil
}

// Resign gives the sweeper's lease up, if worker holds it, so that another
// worker takes over without waiting for it to lapse.
func (s *Store) Resign(ctx context.Context, worker string) error {
	if err := resignScript.Run(ctx, s.rdb, []string{leaderKey}, worker).Err(); err != nil {
		return fmt.Errorf("resign the sweeper's lease: %w", err)
	}
	return nil
}
