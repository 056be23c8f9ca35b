package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// lanesKey lists the senders that ever had a lane, so that the feeders
// find every lane without scanning the keyspace.
const lanesKey = "chatq:lanes"

// LaneOf names the lane of a record's sender: its number, or "default" for
// a record that names none.
func LaneOf(sender string) string { return cmp.Or(sender, "default") }

// SenderOfLane is the sender number of a lane: none for "default".
func SenderOfLane(lane string) string {
	if lane == LaneOf("") {
		return ""
	}
	return lane
}

// laneKey is a sender's lane: the bulk messages of that sender that have
// no asynq task yet, a sorted set of task ids scored by the time the
// message may go (its acceptance, or its send_at), in unix milliseconds.
// Its hash tag is the sender's, like the sender's limits.
func laneKey(lane string) string { return "chatq:lane:{" + lane + "}" }

// feederKey holds the lease of the worker that feeds a sender's lane.
func feederKey(lane string) string { return "chatq:feeder:{" + lane + "}" }

// LaneEntry is one message of a lane.
type LaneEntry struct {
	// Task is the asynq task id the message is to get.
	Task string
	// At is when it may go: its acceptance or its send_at.
	At time.Time
}

// RecordID is the record a lane entry's task belongs to.
func (e LaneEntry) RecordID() string { return RecordOfTask(e.Task) }

// RecordOfTask is the record a send task belongs to: the task id up to
// its first '-' (the first task's id is the record's, the sweeper's are
// <record id>-<n>).
func RecordOfTask(task string) string {
	id, _, _ := strings.Cut(task, "-")
	return id
}

// laneAt is when a record may go, its lane score: its send_at when later
// than its acceptance, else its acceptance, so that a lane keeps the order
// chatq accepted its messages in and a message the sweeper hands a new
// task goes back to its place.
func laneAt(r *Record) time.Time {
	if r.SendAt != nil && r.SendAt.After(r.CreatedAt) {
		return *r.SendAt
	}
	return r.CreatedAt
}

// AddToLanes puts recs (bulk records whose task is to be created) into
// their senders' lanes, under the task id each names (Record.TaskID, or
// its id), in one round trip. An entry already there stays as it is. A
// record that waited (a pause, an open circuit) and goes back to its lane
// leaves the wait indexes: in its lane it waits as the lane's others do,
// as GET /v1/messages/{id} and the waiting gauge count them, and its
// written wait stays on the record only to say since when it waits.
func (s *Store) AddToLanes(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	lanes := map[string][]redis.Z{}
	pipe := s.rdb.Pipeline()
	for _, r := range recs {
		l := LaneOf(r.Sender)
		lanes[l] = append(lanes[l], redis.Z{Score: float64(laneAt(r).UnixMilli()), Member: cmp.Or(r.TaskID, r.ID)})
		if w := r.Waiting; w != nil {
			pipe.ZRem(ctx, waitKey(r.Tenant, w.Reason), r.ID)
			pipe.ZRem(ctx, senderWaitKey(r.Sender, w.Reason), r.ID)
		}
	}
	names := make([]any, 0, len(lanes))
	for l, zs := range lanes {
		pipe.ZAddNX(ctx, laneKey(l), zs...)
		names = append(names, l)
	}
	pipe.SAdd(ctx, lanesKey, names...)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("add to lanes: %w", err)
	}
	return nil
}

// Lanes returns the senders that have (or had) a lane.
func (s *Store) Lanes(ctx context.Context) ([]string, error) {
	l, err := s.rdb.SMembers(ctx, lanesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list lanes: %w", err)
	}
	return l, nil
}

// LaneHead returns up to n entries of a lane that may go at now, the
// earliest first.
func (s *Store) LaneHead(ctx context.Context, lane string, now time.Time, n int64) ([]LaneEntry, error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
		Key: laneKey(lane), ByScore: true, Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10), Count: n,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read lane %s: %w", lane, err)
	}
	out := make([]LaneEntry, len(zs))
	for i, z := range zs {
		m, _ := z.Member.(string)
		out[i] = LaneEntry{Task: m, At: time.UnixMilli(int64(z.Score)).UTC()}
	}
	return out, nil
}

// RemoveFromLane drops entries of a lane: their tasks are written, or
// their messages ended.
func (s *Store) RemoveFromLane(ctx context.Context, lane string, entries []LaneEntry) error {
	if len(entries) == 0 {
		return nil
	}
	members := make([]any, len(entries))
	for i, e := range entries {
		members[i] = e.Task
	}
	if err := s.rdb.ZRem(ctx, laneKey(lane), members...).Err(); err != nil {
		return fmt.Errorf("remove from lane %s: %w", lane, err)
	}
	return nil
}

// InLane returns when the record's current task entered its sender's
// lane as due, or the zero time when it is not in the lane (its task is
// written, or it is not bulk).
func (s *Store) InLane(ctx context.Context, r *Record) (time.Time, error) {
	at, err := s.InLanes(ctx, []*Record{r})
	if err != nil {
		return time.Time{}, err
	}
	return at[0], nil
}

// InLanes is InLane for each of recs, in one round trip.
func (s *Store) InLanes(ctx context.Context, recs []*Record) ([]time.Time, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.FloatCmd, len(recs))
	for i, r := range recs {
		cmds[i] = pipe.ZScore(ctx, laneKey(LaneOf(r.Sender)), cmp.Or(r.TaskID, r.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("look up %d messages in their lanes: %w", len(recs), err)
	}
	out := make([]time.Time, len(recs))
	for i, c := range cmds {
		if c.Err() == nil {
			out[i] = time.UnixMilli(int64(c.Val())).UTC()
		}
	}
	return out, nil
}

// LaneSizes returns, for each lane, how many messages it holds and how
// many of them may go at now (the others are scheduled later), in one
// round trip.
func (s *Store) LaneSizes(ctx context.Context, lanes []string, now time.Time) (size, due map[string]int64, err error) {
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(lanes))
	counts := make([]*redis.IntCmd, len(lanes))
	for i, l := range lanes {
		cards[i] = pipe.ZCard(ctx, laneKey(l))
		counts[i] = pipe.ZCount(ctx, laneKey(l), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("size lanes: %w", err)
	}
	size, due = make(map[string]int64, len(lanes)), make(map[string]int64, len(lanes))
	for i, l := range lanes {
		size[l], due[l] = cards[i].Val(), counts[i].Val()
	}
	return size, due, nil
}

// HoldFeeder takes or renews worker's lease on feeding lane, for ttl, and
// reports whether worker holds it: one feeder per sender across workers.
func (s *Store) HoldFeeder(ctx context.Context, lane, worker string, ttl time.Duration) (bool, error) {
	n, err := leadScript.Run(ctx, s.rdb, []string{feederKey(lane)}, worker, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("lease of the feeder of %s: %w", lane, err)
	}
	return n == 1, nil
}

// ReleaseFeeder gives worker's lease on feeding lane up, if it holds it.
func (s *Store) ReleaseFeeder(ctx context.Context, lane, worker string) error {
	if err := resignScript.Run(ctx, s.rdb, []string{feederKey(lane)}, worker).Err(); err != nil {
		return fmt.Errorf("give the feeder of %s up: %w", lane, err)
	}
	return nil
}

// LaneTask is what the feeder needs of a lane entry's record to write its
// task.
type LaneTask struct {
	LaneEntry
	// Queue is the asynq queue of the record's task.
	Queue string
	// Tenant, Sender, Destination and Type are the record's, which its
	// task names.
	Tenant, Sender, Destination, Type string
	// Live is false when the entry is stale: its record is gone, no
	// longer pending, or has another task since.
	Live bool
}

// LaneTasks reads, in one round trip, the records of lane entries: their
// queue, and whether each entry is still the record's task to write.
func (s *Store) LaneTasks(ctx context.Context, entries []LaneEntry) ([]LaneTask, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(entries))
	for i, e := range entries {
		cmds[i] = pipe.HMGet(ctx, recordKey(e.RecordID()), fStatus, fQueue, fTask, fTenant, fSender, fDest, fType)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read lane records: %w", err)
	}
	out := make([]LaneTask, len(entries))
	for i, e := range entries {
		out[i].LaneEntry = e
		v := cmds[i].Val()
		if len(v) != 7 {
			continue
		}
		st, _ := v[0].(string)
		q, _ := v[1].(string)
		tid, _ := v[2].(string)
		tn, _ := v[3].(string)
		out[i].Sender, _ = v[4].(string)
		out[i].Destination, _ = v[5].(string)
		out[i].Type, _ = v[6].(string)
		out[i].Tenant = cmp.Or(tn, DefaultTenant)
		out[i].Queue = q
		out[i].Live = Status(st).Pending() && cmp.Or(tid, e.RecordID()) == e.Task
	}
	return out, nil
}
