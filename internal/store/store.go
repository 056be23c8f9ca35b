// Package store keeps chatq's job records in Redis: one hash per message,
// changed only through a Lua script that enforces the status state machine,
// plus the indexes that find a record by idempotency key, provider id or
// WhatsApp id, and the due index of the records that need a task (due.go):
// chatq's one place to recover lost work from.
//
// Every atomic operation touches the keys of one hash tag, so the layout
// works on Redis Cluster: a record lives at chatq:m:{<id>} (its payload in
// it, or at chatq:pl:{<id>} when long), an id mapping at
// chatq:ref:{<provider or WhatsApp id>}.
package store

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// Errors the store returns; callers test them with errors.Is.
var (
	// ErrNotFound means there is no record with that id (or it expired).
	ErrNotFound = errors.New("record not found")
	// ErrIdempotencyConflict means the idempotency key was used before for
	// a different message.
	ErrIdempotencyConflict = errors.New("idempotency key was used for a different message")
	// ErrRefused means the record's current status does not allow the
	// change (cancel after submission, requeue of a live message).
	ErrRefused = errors.New("not allowed in the current status")
)

//go:embed transition.lua
var transitionSource string

var (
	transitionScript = redis.NewScript(transitionSource)
	// createScript writes a new record (KEYS[1], fields from ARGV[3]) and
	// its payload when it has a key of its own (KEYS[3], ARGV[2], empty
	// when the payload is among the fields), both to expire at ARGV[1]
	// (unix ms); a
	// record with a callback URL also gets its first callback notice
	// (KEYS[2]), as transition.lua queues them. It returns {created, notice}.
	createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0} end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'PXAT', ARGV[1]) end
if redis.call('HEXISTS', KEYS[1], 'cb') == 0 then return {1, 0} end
redis.call('HSET', KEYS[1], 'cn', 1)
local names = {'s', 'u', 'e', 'a', 'pid', 'wid', 'pr', 'bl'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
local fields = {}
for i = 1, #names do fields[names[i]] = values[i] or '' end
local t = redis.call('TIME')
redis.call('RPUSH', KEYS[2], cjson.encode({n = 1, t = t[1] * 1000 + math.floor(t[2] / 1000), c = fields,
  hl = redis.call('HSTRLEN', KEYS[1], 'h')}))
redis.call('PEXPIREAT', KEYS[2], ARGV[1])
return {1, 1}`)
)

// Config tunes a Store. The zero value is usable.
type Config struct {
	// TTL is how long a record (and its indexes) is kept after its last
	// change, and after its send_at or expires_at when those are later;
	// zero means 720h.
	TTL time.Duration
	// ParkTTL is how long an event for an unknown id waits for that id to
	// appear; zero means 1h.
	ParkTTL time.Duration
	// Notifier, if set, is told of every callback notice a change queues
	// (see Notices). Nil leaves the notices to whoever sweeps the due index
	// (Due).
	Notifier Notifier
	// RefCache is how many provider and WhatsApp ids the store remembers
	// the record of, in each of two generations, so that a message's later
	// webhooks skip the lookup; zero means 50,000 (a few megabytes), a
	// negative value none.
	RefCache int
	// WaitReplicas, when positive, has Create and MarkEnqueued wait (with
	// Redis's WAIT, up to WaitTimeout) until that many replicas hold what
	// they wrote, so that a failover to a replica does not lose a message
	// its producer was told is stored. A replica slower than WaitTimeout is
	// not waited for further: the write stands, as it would without WAIT
	// (Redis's min-replicas-to-write is the way to refuse writes instead).
	// Zero waits for nothing. It has no effect on Redis Cluster.
	WaitReplicas int
	// WaitTimeout bounds each wait for replicas; zero means 100ms. Keep it
	// well under the client's read timeout (3s by default).
	WaitTimeout time.Duration
	// Counter, if set, is told of every status change the store makes
	// (records created included), for the per-minute counts of the
	// console's overview. Nil counts nothing.
	Counter Counter
	// Billed, if set, counts a message made billable by a status event
	// that a send's acceptance applied: one that arrived before the
	// upstream's answer and waited parked (the webhook's receiver counts
	// those it applies itself from EventResult.Billable), by its pricing
	// category. Nil counts nothing.
	Billed func(category string)
	// ScanBudget is how many index entries one page of a listing looks
	// at, at most, when a filter skips most of them: the page then comes
	// back short, with a cursor to go on from. Zero means 5,000.
	ScanBudget int
	// DueGrace is how long a new record (from its send_at, if later), a
	// retry (from its time) or a new task waits before the sweeper checks
	// that its task exists; zero means 30s. The due index (due.go) finds
	// the records a producer stored but died before their task was
	// written.
	DueGrace time.Duration
	// NoticeGrace is how long a record's pending callback notices wait,
	// undelivered, before the sweeper hands them a new task; zero means
	// 1m.
	NoticeGrace time.Duration
	// SendLease is how soon after a take-up (Begin) the sweeper checks
	// that the send's worker still lives; zero means 3s. A longer send is
	// checked again every SendLease.
	SendLease time.Duration
	// OrderRecheck is how long a message waiting for its turn in its
	// conversation (line.go) waits before the sweeper checks its line,
	// should the release of the message before it be lost; each check
	// waits longer, up to ten times it. Zero means 1m.
	OrderRecheck time.Duration
}

// Counter is told of status changes as they happen. It must not block:
// the store calls it on every change.
type Counter interface {
	StatusChanged(st Status, n int)
}

// Store reads and writes job records.
type Store struct {
	rdb  redis.UniversalClient
	cfg  Config
	refs *refCache
	// cluster is set on Redis Cluster, where a pipeline's commands for
	// different nodes run concurrently: only those of one hash slot keep
	// their order.
	cluster bool
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.TTL <= 0 {
		cfg.TTL = 720 * time.Hour
	}
	if cfg.ParkTTL <= 0 {
		cfg.ParkTTL = time.Hour
	}
	_, cluster := rdb.(*redis.ClusterClient)
	if cluster {
		// WAIT counts the replicas of the server its connection writes to,
		// and one batch's records are spread over every master.
		cfg.WaitReplicas = 0
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 100 * time.Millisecond
	}
	if cfg.ScanBudget <= 0 {
		cfg.ScanBudget = 5000
	}
	if cfg.DueGrace <= 0 {
		cfg.DueGrace = 30 * time.Second
	}
	if cfg.NoticeGrace <= 0 {
		cfg.NoticeGrace = time.Minute
	}
	if cfg.SendLease <= 0 {
		cfg.SendLease = 3 * time.Second
	}
	if cfg.OrderRecheck <= 0 {
		cfg.OrderRecheck = time.Minute
	}
	return &Store{rdb: rdb, cfg: cfg, refs: newRefCache(cfg.RefCache), cluster: cluster}
}

// Redis returns the client the store uses.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

func recordKey(id string) string { return "chatq:m:{" + id + "}" }
func refKey(ref string) string   { return "chatq:ref:{" + ref + "}" }
func parkKey(ref string) string  { return "chatq:park:{" + ref + "}" }

// DefaultTenant owns the messages sent without a tenant key: those of an
// admin key, the library and the command line, and every record written
// before chatq had tenants.
const DefaultTenant = "default"

// idemKey and batchKey are a tenant's own: one tenant's idempotency key or
// campaign name never meets another's. DefaultTenant keeps the keys of
// before tenants; another tenant's name (no colon or brace in it) comes
// before the hash tag.
func idemKey(tenant, key string) string {
	if tenant == "" || tenant == DefaultTenant {
		return "chatq:idem:{" + key + "}"
	}
	return "chatq:idem:" + tenant + ":{" + key + "}"
}

func batchKey(tenant, batch string) string {
	if tenant == "" || tenant == DefaultTenant {
		return "chatq:batch:{" + batch + "}"
	}
	return "chatq:batch:" + tenant + ":{" + batch + "}"
}

// destKey indexes a tenant's records to one recipient, for a search by
// recipient: ids scored by creation time, like a batch's. Each tenant has
// its own, as it has its own batches, so that a tenant's search neither
// meets nor waits for another's messages.
func destKey(tenant, destination string) string {
	d := strings.TrimPrefix(destination, "+")
	if tenant == "" || tenant == DefaultTenant {
		return "chatq:to:{" + d + "}"
	}
	return "chatq:to:" + tenant + ":{" + d + "}"
}

// QueueNewestTo queues on pipe the read of the id of the newest message
// of tenant to destination (its recipient index, destKey): the message
// whose sender chatq chooses for the next that names none, when no
// sender's 24h window with the recipient is open. SenderOf reads its
// sender.
func QueueNewestTo(ctx context.Context, pipe redis.Pipeliner, tenant, destination string) *redis.StringSliceCmd {
	if tenant == "" {
		tenant = DefaultTenant
	}
	return pipe.ZRange(ctx, destKey(tenant, destination), -1, -1)
}

// SenderOf returns the sender of record id, "" when it names none or has
// expired.
func SenderOf(ctx context.Context, rdb redis.Cmdable, id string) (string, error) {
	sn, err := rdb.HGet(ctx, recordKey(id), fSender).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("read the sender of %s: %w", id, err)
	}
	return sn, nil
}

// trimEvery is how often, in messages, a recipient's index drops the
// entries of expired records: each message keeps the index alive a TTL
// longer, so a recipient written to more often than that would keep every
// entry for ever. One message in trimEvery does it, picked by its id, so
// that the trim costs a sixteenth of a command per message and an index
// holds a few entries past the TTL at most (a listing drops those too).
const trimEvery = 16

func trimsIndex(id string) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return h.Sum32()%trimEvery == 0
}

// batchesKey indexes a tenant's campaigns: batch ids scored by the
// creation time of their latest record.
func batchesKey(tenant string) string {
	if tenant == "" || tenant == DefaultTenant {
		return "chatq:batches"
	}
	return "chatq:batches:" + tenant
}

// noticeKey is a record's list of pending callback notices. It shares the
// record's hash tag, so that one script writes both.
func noticeKey(id string) string { return "chatq:cbq:{" + id + "}" }

// payloadKey holds a record's payload when it is too long to be kept in
// the record's hash in parts (payloadInHash), and the payloads of records
// written before payloads were kept so. It shares the record's hash tag.
func payloadKey(id string) string { return "chatq:pl:{" + id + "}" }

// CreateResult is the outcome of creating one record.
type CreateResult struct {
	// Record is the record as stored: the new one, or for a repeated
	// idempotency key the one created first.
	Record *Record
	// Created is false when an earlier record with the same idempotency key
	// and fingerprint was returned instead.
	Created bool
	// Held is set when the record waits for its turn in its conversation
	// (line.go): it must get no task now, the message before it releases
	// it.
	Held bool
	// Err is ErrIdempotencyConflict or a Redis error for this record.
	Err error
}

// Create stores new records (ID, content, Status and History set by the
// caller; a record without an idempotency key must have an id never used
// before) and returns one result per record, in order. Writes are pipelined:
// the whole batch costs two round trips, three when idempotency keys repeat.
// A new record enters the due index, due DueGrace after it is to be sent.
func (s *Store) Create(ctx context.Context, recs []*Record) ([]CreateResult, error) {
	results := make([]CreateResult, len(recs))
	// repeated marks the records whose idempotency key was claimed before:
	// they may be answered by an earlier record.
	repeated := make([]bool, len(recs))
	// Claim idempotency keys first, so a retried batch finds its ids.
	var claims []*redis.StatusCmd
	var claimed []int
	for i, r := range recs {
		if r.IdempotencyKey != "" {
			claimed = append(claimed, i)
		}
	}
	if len(claimed) > 0 {
		pipe := s.rdb.Pipeline()
		for _, i := range claimed {
			claims = append(claims, pipe.SetArgs(ctx, idemKey(recs[i].Tenant, recs[i].IdempotencyKey), recs[i].ID, redis.SetArgs{Mode: "NX", Get: true, ExpireAt: s.life(recs[i])}))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("claim idempotency keys: %w", err)
		}
		for j, i := range claimed {
			prev, err := claims[j].Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				results[i].Err = fmt.Errorf("claim idempotency key: %w", err)
				continue
			}
			// The key is taken: a record of that id is the answer, or, if a
			// crash left the key without its record, this record takes the
			// id.
			recs[i].ID = prev
			repeated[i] = true
		}
	}
	return results, s.writeRecords(ctx, recs, repeated, results)
}

// life returns when a new record's keys expire: TTL after the last moment
// its message may still be sent, so that a message scheduled or allowed to
// wait beyond the TTL still finds its record, plus the slack. Its changes
// extend it further (transition.lua), which the record's 'xp' spares for
// the slack's length.
func (s *Store) life(r *Record) time.Time {
	last := time.Now()
	for _, t := range []*time.Time{&r.CreatedAt, r.SendAt, r.ExpiresAt} {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	return last.Add(s.cfg.TTL + s.slack())
}

// slack is how much longer than the TTL a change makes a record live, so
// that the changes that follow within the slack (a message's take-up,
// submission and webhooks, seconds apart) need not extend it again: an
// eighth of the TTL, an hour at most. It is also the skew between the
// clocks of chatq's processes that the extension tolerates.
func (s *Store) slack() time.Duration {
	return min(s.cfg.TTL/8, time.Hour)
}

// extendAt adds to pipe what makes key live until at least at, never
// shorter than it is set to live already.
func extendAt(ctx context.Context, pipe redis.Pipeliner, key string, at time.Time) {
	// GT alone sets nothing on a key without an expiry, NX nothing on one
	// with an expiry.
	pipe.Do(ctx, "PEXPIREAT", key, at.UnixMilli(), "NX")
	pipe.Do(ctx, "PEXPIREAT", key, at.UnixMilli(), "GT")
}

func (s *Store) writeRecords(ctx context.Context, recs []*Record, repeated []bool, results []CreateResult) error {
	// The lines come first: whether a record waits for its turn is
	// written with it. A record whose write fails after its push leaves an
	// entry that the line drops once it is old (lineGrace).
	held, err := s.joinLines(ctx, recs, repeated, results)
	if err != nil {
		return err
	}
	creates := make([]*redis.Cmd, len(recs))
	plain := make([]bool, len(recs))
	// The indexes take every record of the batch in one command each:
	// a thousand ZADDs cost Redis far more than one of a thousand members.
	// They come first, so that a pipeline cut short leaves index entries
	// without records (the sweeper drops those), never records without
	// entries. A campaign indexes only records that are surely new: one
	// whose idempotency key was claimed before is usually the earlier
	// record, perhaps of another campaign, and joins its batch only once
	// it turns out to be created.
	var due []redis.Z
	// The waits for a turn, by index key.
	waits := map[string][]redis.Z{}
	// Campaigns by batch key; a campaign's index lives as long as its
	// longest-lived record.
	type campaign struct {
		tenant, batch string
		zs            []redis.Z
		life          time.Time
	}
	batches := map[string]*campaign{}
	dests := map[string][]redis.Z{}
	destLife := map[string]time.Time{}
	// Index entries of records older than the TTL name expired records.
	expiredBefore := strconv.FormatInt(time.Now().Add(-s.cfg.TTL).UnixMilli(), 10)
	for i, r := range recs {
		if results[i].Err != nil {
			continue
		}
		at := r.CreatedAt
		if r.SendAt != nil && r.SendAt.After(at) {
			at = *r.SendAt
		}
		z := redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID}
		if held[i] {
			// The sweeper checks its line then, should its release be
			// lost.
			due = append(due, redis.Z{Score: float64(at.Add(s.cfg.OrderRecheck).UnixMilli()), Member: r.ID})
			for _, k := range []string{waitKey(r.Tenant, WaitConversationOrder), senderWaitKey(r.Sender, WaitConversationOrder)} {
				waits[k] = append(waits[k], z)
			}
		} else {
			due = append(due, redis.Z{Score: float64(at.Add(s.cfg.DueGrace).UnixMilli()), Member: r.ID})
		}
		life := s.life(r)
		if r.BatchID != nil && !repeated[i] {
			bk := batchKey(r.Tenant, *r.BatchID)
			c := batches[bk]
			if c == nil {
				c = &campaign{tenant: r.Tenant, batch: *r.BatchID}
				batches[bk] = c
			}
			c.zs = append(c.zs, z)
			if life.After(c.life) {
				c.life = life
			}
		}
		dk := destKey(r.Tenant, r.Destination)
		dests[dk] = append(dests[dk], z)
		if life.After(destLife[dk]) {
			destLife[dk] = life
		}
	}
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		if len(due) > 0 {
			// NX: a repeated idempotency key must not push back the entry
			// of a record being sent.
			pipe.ZAddNX(ctx, dueKey, due...)
		}
		for k, zs := range waits {
			pipe.ZAdd(ctx, k, zs...)
		}
		trimmed := map[string]bool{}
		for bk, c := range batches {
			pipe.ZAdd(ctx, bk, c.zs...)
			extendAt(ctx, pipe, bk, c.life)
			all := batchesKey(c.tenant)
			pipe.ZAdd(ctx, all, redis.Z{Score: c.zs[len(c.zs)-1].Score, Member: c.batch})
			if !trimmed[all] {
				// A campaign with no message for a TTL has no records left.
				pipe.ZRemRangeByScore(ctx, all, "-inf", "("+expiredBefore)
				trimmed[all] = true
			}
		}
		for dk, zs := range dests {
			pipe.ZAdd(ctx, dk, zs...)
			extendAt(ctx, pipe, dk, destLife[dk])
			if trimsIndex(zs[0].Member.(string)) {
				pipe.ZRemRangeByScore(ctx, dk, "-inf", "("+expiredBefore)
			}
		}
		for i, r := range recs {
			if results[i].Err != nil {
				continue
			}
			if r.IdempotencyKey == "" && r.CallbackURL == "" {
				// Without an idempotency key the id is new (enqueue makes
				// one per message), so there is nothing to check, and
				// without a callback URL no notice to queue: plain commands
				// cost Redis less than the script.
				key := recordKey(r.ID)
				life := s.life(r)
				pipe.HSet(ctx, key, append(r.fields(), fExpiry, life.UnixMilli())...)
				pipe.PExpireAt(ctx, key, life)
				if !payloadInHash(r.Payload) {
					pipe.SetArgs(ctx, payloadKey(r.ID), []byte(r.Payload), redis.SetArgs{ExpireAt: life})
				}
				plain[i] = true
			} else {
				life := s.life(r).UnixMilli()
				var own []byte // a payload kept apart from the hash
				if !payloadInHash(r.Payload) {
					own = r.Payload
				}
				args := append([]any{life, own}, r.fields()...)
				args = append(args, fExpiry, life)
				creates[i] = createScript.EvalSha(ctx, pipe, []string{recordKey(r.ID), noticeKey(r.ID), payloadKey(r.ID)}, args...)
			}
		}
		s.waitReplicas(ctx, pipe)
	})
	if err != nil {
		return fmt.Errorf("write records: %w", err)
	}
	var existing []int
	var noticed []string
	// late are the records created under a key claimed before (a crash
	// left the key without its record), not yet in their batch.
	var late []*Record
	// waking are the records written waiting for their turn.
	var waking []*Record
	created := map[Status]int{}
	for i, r := range recs {
		if r.TaskID == "" {
			r.TaskID = r.ID // the first task's
		}
		if held[i] && (plain[i] || creates[i] != nil) {
			waking = append(waking, r)
		}
		if plain[i] {
			results[i] = CreateResult{Record: r, Created: true, Held: held[i]}
			created[r.Status]++
			continue
		}
		if creates[i] == nil {
			continue
		}
		if res, _ := creates[i].Int64Slice(); len(res) == 2 && res[0] == 1 {
			results[i] = CreateResult{Record: r, Created: true, Held: held[i]}
			created[r.Status]++
			if res[1] > 0 {
				noticed = append(noticed, r.ID)
			}
			if repeated[i] && r.BatchID != nil {
				late = append(late, r)
			}
			continue
		}
		existing = append(existing, i)
	}
	s.noticed(ctx, 1, noticed...)
	if err := s.wakeHeld(ctx, waking); err != nil {
		return err
	}
	if len(late) > 0 {
		pipe := s.rdb.Pipeline()
		for _, r := range late {
			bk := batchKey(r.Tenant, *r.BatchID)
			pipe.ZAdd(ctx, bk, redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
			extendAt(ctx, pipe, bk, s.life(r))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("index records: %w", err)
		}
	}
	if s.cfg.Counter != nil {
		for st, n := range created {
			s.cfg.Counter.StatusChanged(st, n)
		}
	}
	if len(existing) == 0 {
		return nil
	}
	// Repeated idempotency keys: the first record answers if it is the same
	// message.
	ids := make([]string, len(existing))
	for j, i := range existing {
		ids[j] = recs[i].ID
	}
	found, err := s.GetMany(ctx, ids)
	if err != nil {
		return err
	}
	for j, i := range existing {
		prev := found[j]
		switch {
		case prev == nil:
			results[i].Err = fmt.Errorf("record %s vanished while its idempotency key was checked: %w", ids[j], ErrNotFound)
		case prev.Fingerprint != recs[i].Fingerprint:
			results[i].Err = ErrIdempotencyConflict
		default:
			w := prev.Waiting
			results[i] = CreateResult{Record: prev, Held: w != nil && w.Reason == WaitConversationOrder}
		}
	}
	// Those answered from an earlier record that has ended need no entry;
	// one that still waits to be sent keeps it: its task may never have
	// been written (the producer died in between), and then the sweeper
	// must find it.
	pipe := s.rdb.Pipeline()
	for _, i := range existing {
		if prev := results[i].Record; prev != nil && !prev.Status.Pending() {
			pipe.ZRem(ctx, dueKey, recs[i].ID)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("index records: %w", err)
	}
	return nil
}

// MarkEnqueued records that the first tasks of records ids are written.
// It matters only with WaitReplicas, and does nothing without: it waits
// until the replicas have the tasks too. The records' entries on the due
// index stay: the sweeper checks then that the tasks still exist.
func (s *Store) MarkEnqueued(ctx context.Context, ids ...string) error {
	if len(ids) == 0 || s.cfg.WaitReplicas <= 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	// The tasks were written before, on other connections; a replica that
	// has this write has them too, as replicas apply writes in order. WAIT
	// needs a write of its own connection: the task id, unless a send took
	// the record up meanwhile.
	for _, id := range ids {
		pipe.HSetNX(ctx, recordKey(id), fTask, id)
	}
	s.waitReplicas(ctx, pipe)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("mark enqueued: %w", err)
	}
	return nil
}

// waitReplicas ends a pipeline of writes with WAIT when the store is to wait
// for replicas. WAIT covers the writes of its own connection, which is why
// it goes in the pipeline, and with them everything the master ran before.
// Its answer, the number of replicas that caught up, is not checked: see
// Config.WaitReplicas.
func (s *Store) waitReplicas(ctx context.Context, pipe redis.Pipeliner) {
	if s.cfg.WaitReplicas > 0 {
		// WAIT with 0 ms would block for good.
		pipe.Do(ctx, "WAIT", s.cfg.WaitReplicas, max(1, s.cfg.WaitTimeout.Milliseconds()))
	}
}

// Get returns the record with that id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	recs, err := s.GetMany(ctx, []string{id})
	if err != nil {
		return nil, fmt.Errorf("get record %s: %w", id, err)
	}
	if recs[0] == nil {
		return nil, fmt.Errorf("get record %s: %w", id, ErrNotFound)
	}
	return recs[0], nil
}

// GetMany returns the records of ids in one round trip, nil for the missing.
func (s *Store) GetMany(ctx context.Context, ids []string) ([]*Record, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	payloads := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, recordKey(id))
		payloads[i] = pipe.Get(ctx, payloadKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("get records: %w", err)
	}
	out := make([]*Record, len(ids))
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		if pl := payloads[i].Val(); pl != "" {
			// A payload of its own key.
			h[fPayload] = pl
			delete(h, fParts)
		}
		r, err := parseRecord(ids[i], h)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// Outcome says what a transition did.
type Outcome string

// Transition outcomes.
const (
	// Changed: the status changed.
	Changed Outcome = "ok"
	// Kept: the status stayed; the history records the event.
	Kept Outcome = "kept"
	// Duplicate: the event had been applied before; nothing changed.
	Duplicate Outcome = "duplicate"
	// Refused: the current status does not allow the change.
	Refused Outcome = "refused"
	// Missing: no such record.
	Missing Outcome = "missing"
)

// Change is one status change to apply to a record.
type Change struct {
	Status Status
	At     time.Time
	// Note is kept in the history entry.
	Note string
	// Error becomes the record's last_error when the change applies.
	Error *ErrorInfo
	// ProviderID and WhatsAppID are remembered if the record has none yet.
	ProviderID, WhatsAppID string
	// Dedupe, if set, makes a second change with the same value a no-op.
	Dedupe string
	// Pricing, on an event, becomes the record's pricing; the first
	// billable one also marks the message billable.
	Pricing *Pricing
	// Failed marks a move to retrying after a failed attempt: it counts
	// towards the retry budget (Record.Failures).
	Failed bool
	// Due is when the next attempt of a message moved back to chatq's own
	// phase is expected (a retry's time); the due index has it looked at
	// a grace after. Zero means At.
	Due time.Time
	// Task, if set, is the task that makes the change: it is refused if
	// the message has been handed to another task meanwhile (its send was
	// taken for lost), so that a late handler does not undo the new
	// task's work.
	Task string
}

func (s *Store) transition(ctx context.Context, rdb redis.Scripter, op, id string, c Change) *redis.Cmd {
	return transitionScript.Run(ctx, rdb, transitionKeys(id), s.transitionArgs(op, c)...)
}

func transitionKeys(id string) []string {
	return []string{recordKey(id), noticeKey(id), payloadKey(id)}
}

func (s *Store) transitionArgs(op string, c Change) []any {
	at := c.At
	if at.IsZero() {
		at = time.Now()
	}
	entry := historyPrefix(c.Status, at, c.Note)
	errJSON := ""
	if c.Error != nil {
		b, _ := json.Marshal(c.Error)
		errJSON = string(b)
	}
	dedupe := ""
	if c.Dedupe != "" {
		dedupe = "x:" + c.Dedupe
	}
	args := s.scriptArgs(op, c.Status, at, entry, dedupe, errJSON, c.Task)
	if c.ProviderID != "" {
		args = append(args, fPID, c.ProviderID)
	}
	if c.WhatsAppID != "" {
		args = append(args, fWID, c.WhatsAppID)
	}
	if c.Pricing != nil {
		args = append(args, fPricing, shortPricing(c.Pricing))
		if c.Pricing.Billable {
			args = append(args, fBillable, billableCategory(c.Pricing))
		}
	}
	return args
}

// scriptArgs is transition.lua's ARGV up to its field/value pairs.
func (s *Store) scriptArgs(op string, st Status, at time.Time, entry, dedupe, errJSON, task string) []any {
	return []any{op, string(st), at.UnixMilli(), entry, dedupe, errJSON, s.cfg.TTL.Milliseconds(), task,
		time.Now().UnixMilli(), s.slack().Milliseconds()}
}

// historyPrefix is a history entry's JSON without its closing brace, so
// that the script can add a note.
func historyPrefix(st Status, at time.Time, note string) string {
	var b strings.Builder
	b.WriteString(`{"status":"`)
	b.WriteString(string(st))
	b.WriteString(`","at":"`)
	b.WriteString(jsontime.Format(at))
	b.WriteByte('"')
	if note != "" {
		n, _ := json.Marshal(note)
		b.WriteString(`,"note":`)
		b.Write(n)
	}
	return b.String()
}

// outcome reads transition.lua's answer for record id, tells the notifier
// of the callback notice it queued, if any, and returns the outcome, the
// status after and the rest of the answer (Begin's record, or billed).
func (s *Store) outcome(ctx context.Context, id string, cmd *redis.Cmd, what string) (Outcome, Status, []any, error) {
	res, err := cmd.Slice()
	if err != nil {
		return "", "", nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(res) < 2 {
		return "", "", nil, fmt.Errorf("%s: unexpected script answer %v", what, res)
	}
	o, _ := res[0].(string)
	st, _ := res[1].(string)
	if Outcome(o) == Changed && s.cfg.Counter != nil {
		s.cfg.Counter.StatusChanged(Status(st), 1)
	}
	var rest []any
	if len(res) > 2 {
		if n, _ := res[2].(int64); n > 0 {
			s.noticed(ctx, n, id)
		}
		rest = res[3:]
	}
	// The wait the change ended, with the record's tenant and sender:
	// begin answers them before its record, the other ops after billed.
	if len(rest) >= 3 {
		if _, begin := rest[0].(string); begin {
			s.unindexWait(ctx, id, rest[0], rest[1], rest[2])
			rest = rest[3:]
		} else if len(rest) >= 4 {
			s.unindexWait(ctx, id, rest[1], rest[2], rest[3])
			rest = rest[:1]
		}
	}
	return Outcome(o), Status(st), rest, nil
}

// Begin marks a message as taken up for a send by its owner (one more
// attempt), a send that follows at once, and returns its record; the due
// index has the sweeper check after SendLease that the owner still lives.
// Everything that may hold the message back is decided before (admission):
// from here a worker lost may have sent it. A record that is no longer
// pending (already submitted, dead, canceled), or being sent by another
// task, comes back with Outcome Refused and nothing written: a redelivered
// task must not send again. The owning task may take its message up again
// (asynq handed it back after its worker was lost): the previous attempt
// counts as failed, and this send is a possible duplicate (the record's
// SentAgain, and a note in its history).
func (s *Store) Begin(ctx context.Context, id string, at time.Time, by Owner) (*Record, Outcome, error) {
	o, st, rest, err := s.begin(ctx, id, at, by, false, false)
	if err != nil {
		return nil, "", err
	}
	if o != Changed {
		return &Record{ID: id, Status: st}, o, nil
	}
	h := make(map[string]string, len(rest)/2)
	for i := 0; i+1 < len(rest); i += 2 {
		k, _ := rest[i].(string)
		v, _ := rest[i+1].(string)
		h[k] = v
	}
	r, err := parseRecord(id, h)
	if r != nil {
		r.SentAgain = h["!again"] == "1"
	}
	return r, o, err
}

// Take is Begin for a send of rec, which Peek read: rec is updated in
// place (status, attempts, failures, owner, SentAgain, and the payload
// unless Peek read it) from what the take-up answers, without the whole
// record read back.
func (s *Store) Take(ctx context.Context, rec *Record, at time.Time, by Owner) (Outcome, error) {
	o, st, rest, err := s.begin(ctx, rec.ID, at, by, true, len(rec.Payload) > 0)
	if err != nil {
		return "", err
	}
	rec.Status = st
	if o != Changed {
		return o, nil
	}
	if len(rest) != 4 {
		return "", fmt.Errorf("take %s: unexpected answer %v", rec.ID, rest)
	}
	again, _ := rest[0].(string)
	attempts, _ := rest[1].(string)
	failures, _ := rest[2].(string)
	body, _ := rest[3].(string)
	rec.SentAgain, rec.OnWire, rec.Owner = again == "1", true, by.Worker
	rec.Attempts, _ = strconv.Atoi(attempts)
	rec.Failures, _ = strconv.Atoi(failures)
	if len(rec.Payload) == 0 {
		rec.Payload = json.RawMessage(body)
	}
	if by.Task != "" {
		rec.TaskID = by.Task
	}
	return o, nil
}

// begin runs the take-up of Begin and Take; lean asks for Take's answer,
// without the payload when the caller knows it (Peek read it: a payload
// never changes).
func (s *Store) begin(ctx context.Context, id string, at time.Time, by Owner, lean, known bool) (Outcome, Status, []any, error) {
	args := s.transitionArgs("begin", Change{Status: Sending, At: at, Task: by.Task})
	args = append(args, "!"+fTask, by.Task, "!"+fOwner, by.Worker)
	if lean {
		args = append(args, "?lean", 1)
	}
	if known {
		args = append(args, "?known", 1)
	}
	var cmd *redis.Cmd
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		// Before the change: a take-up without its entry must not be.
		pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(time.Now().Add(s.cfg.SendLease).UnixMilli()), Member: id})
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), args...)
	})
	if err != nil {
		return "", "", nil, fmt.Errorf("begin %s: %w", id, err)
	}
	return s.outcome(ctx, id, cmd, "begin "+id)
}

// Move applies a change within chatq's own phase (queued, retrying,
// scheduled) or to one of its ends (dead, expired); it is refused once the
// message has left that phase.
func (s *Store) Move(ctx context.Context, id string, c Change) (Outcome, Status, error) {
	op := "own"
	switch c.Status {
	case Dead:
		return s.die(ctx, id, c) // dead.go: also a dead letter
	case Expired:
		op = "final"
	case Queued, Retrying, Scheduled, Sending:
		if c.Failed {
			op = "retry"
		}
	default:
		return "", "", fmt.Errorf("move %s to %s: not an own-phase status", id, c.Status)
	}
	var cmd *redis.Cmd
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		if c.Status == Expired {
			pipe.ZRem(ctx, dueKey, id)
		} else {
			due := c.Due
			if due.IsZero() {
				due = c.At
			}
			if due.IsZero() {
				due = time.Now()
			}
			pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(due.Add(s.cfg.DueGrace).UnixMilli()), Member: id})
		}
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs(op, c)...)
	})
	if err != nil {
		return "", "", fmt.Errorf("move %s: %w", id, err)
	}
	o, st, _, err := s.outcome(ctx, id, cmd, "move "+id)
	return o, st, err
}

// Cancel cancels a message that is still waiting. A message being sent or
// already ended gives ErrRefused with its status.
func (s *Store) Cancel(ctx context.Context, id string, at time.Time) (Status, error) {
	var cmd *redis.Cmd
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs("cancel", Change{Status: Canceled, At: at, Note: "canceled by the application"})...)
	})
	if err != nil {
		return "", fmt.Errorf("cancel %s: %w", id, err)
	}
	o, st, _, err := s.outcome(ctx, id, cmd, "cancel "+id)
	if err != nil {
		return "", err
	}
	if o == Changed {
		// A failure leaves a stale entry, which the sweeper drops.
		_ = s.rdb.ZRem(ctx, dueKey, id).Err()
		// The next message of its conversation goes; should this fail,
		// the sweeper's check of its line lets it go later.
		_ = s.stepOutIDs(ctx, []string{id})
	}
	switch o {
	case Missing:
		return "", fmt.Errorf("cancel %s: %w", id, ErrNotFound)
	case Refused:
		return st, fmt.Errorf("cancel %s (%s): %w", id, st, ErrRefused)
	}
	return st, nil
}

// Requeue takes a dead message back to queued, for an operator's retry;
// the history says so.
func (s *Store) Requeue(ctx context.Context, id string, at time.Time, note string) error {
	_, tenants, err := s.owners(ctx, []string{id})
	if err != nil {
		return fmt.Errorf("requeue %s: %w", id, err)
	}
	var cmd *redis.Cmd
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		// On the due index before the change: the caller writes the task,
		// and should it fail to, the sweeper does.
		pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(time.Now().Add(s.cfg.DueGrace).UnixMilli()), Member: id})
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs("requeue", Change{Status: Queued, At: at, Note: note})...)
	})
	if err != nil {
		return fmt.Errorf("requeue %s: %w", id, err)
	}
	o, st, _, err := s.outcome(ctx, id, cmd, "requeue "+id)
	if err != nil {
		return err
	}
	// No longer a dead letter of its tenant, whatever the outcome
	// (dead.go); a failure leaves the entry for a listing to drop.
	_ = s.rdb.ZRem(ctx, deadKey(tenants[0]), id).Err()
	switch o {
	case Missing:
		return fmt.Errorf("requeue %s: %w", id, ErrNotFound)
	case Refused:
		return fmt.Errorf("requeue %s (%s): %w", id, st, ErrRefused)
	}
	return nil
}

// Note adds an annotation to a record's history, under its current status,
// without changing anything else: what chatq did on its own initiative
// (such as sending a fallback template) stays visible in the record.
func (s *Store) Note(ctx context.Context, id string, at time.Time, note string) error {
	o, _, _, err := s.outcome(ctx, id, s.transition(ctx, s.rdb, "note", id, Change{Status: Queued, At: at, Note: note}), "note "+id)
	if err != nil {
		return err
	}
	if o == Missing {
		return fmt.Errorf("note %s: %w", id, ErrNotFound)
	}
	return nil
}

// Submit records the upstream's acceptance of a message and its provider
// id, then applies any delivery events that arrived before the id was known.
// It is one round trip when no event waits (two on Redis Cluster).
func (s *Store) Submit(ctx context.Context, id, providerID string, at time.Time) (Outcome, error) {
	o, _, err := s.submit(ctx, &Record{ID: id}, providerID, at)
	return o, err
}

// Accept is Submit for a send of rec that also hands its conversation's
// turn on (Release), in the same round trip: it returns the next record of
// rec's line if that waits for its turn. Should the release fail after the
// acceptance is recorded, the error says so and the sweeper's check of the
// line lets the next message go later.
func (s *Store) Accept(ctx context.Context, rec *Record, providerID string, at time.Time) (next *Record, err error) {
	_, next, err = s.submit(ctx, rec, providerID, at)
	return next, err
}

func (s *Store) submit(ctx context.Context, rec *Record, providerID string, at time.Time) (Outcome, *Record, error) {
	id := rec.ID
	var cmd *redis.Cmd
	var parked *redis.StringSliceCmd
	var first *redis.Cmd
	submit := func(pipe redis.Pipeliner) {
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs("submit", Change{Status: Submitted, At: at, ProviderID: providerID})...)
		pipe.ZRem(ctx, dueKey, id)
	}
	// Write the mapping before reading the parking lot: a webhook parks
	// first and reads the mapping after, so one of the two sees the other.
	// Both keys carry the hash tag {providerID}, so on Redis Cluster too
	// they go to one node, on one connection, in this order.
	mapping := func(pipe redis.Pipeliner) {
		pipe.Set(ctx, refKey(providerID), id, s.cfg.TTL)
		parked = pipe.LRange(ctx, parkKey(providerID), 0, -1)
		if rec.Ordered {
			// After the record on one connection: the next message is
			// let go only once this one left chatq's phase.
			first = s.leave(ctx, pipe, rec)
		}
	}
	var err error
	if s.cluster {
		// The record ({id}) and the mapping ({providerID}) usually live on
		// different masters, which a cluster pipeline writes to at the same
		// time: a webhook could then find the mapping and apply "enqueued"
		// to a record still "sending", and the submit would come after it
		// ("accepted again"), with no "submitted" callback. So the mapping
		// waits for the record. A crash between the two round trips leaves
		// a submitted record without its mapping; its webhooks wait parked
		// until ParkTTL, the same as if they had outrun a slow Submit.
		if err = s.exec(ctx, submit); err == nil {
			err = s.exec(ctx, mapping)
		}
	} else {
		err = s.exec(ctx, func(pipe redis.Pipeliner) {
			submit(pipe)
			mapping(pipe)
		})
	}
	if err != nil {
		// Whatever failed, a Submit again finds the acceptance if it was
		// recorded (a duplicate) and writes the rest.
		return "", nil, fmt.Errorf("submit %s: %w", id, err)
	}
	o, _, _, err := s.outcome(ctx, id, cmd, "submit "+id)
	if err != nil {
		return "", nil, err
	}
	if len(parked.Val()) > 0 {
		billable, err := s.drain(ctx, id, parked.Val())
		if billable != "" && s.cfg.Billed != nil {
			s.cfg.Billed(billable)
		}
		if err != nil {
			return o, nil, err
		}
	}
	if first == nil {
		return o, nil, nil
	}
	next, err := s.nextAfter(ctx, rec, first)
	return o, next, err
}

// exec runs the pipeline that build fills. When Redis has lost its script
// cache (a restart), the scripts are loaded and the pipeline runs again:
// the script calls did not run, and everything else in a pipeline built
// here is idempotent.
func (s *Store) exec(ctx context.Context, build func(pipe redis.Pipeliner)) error {
	for try := 0; ; try++ {
		pipe := s.rdb.Pipeline()
		build(pipe)
		cmds, _ := pipe.Exec(ctx)
		var first error
		missing := false
		for _, c := range cmds {
			e := c.Err()
			if e == nil || errors.Is(e, redis.Nil) {
				continue
			}
			if strings.HasPrefix(e.Error(), "NOSCRIPT") {
				missing = true
			}
			if first == nil {
				first = e
			}
		}
		if first == nil {
			return nil
		}
		if !missing || try > 0 {
			return first
		}
		for _, sc := range []*redis.Script{transitionScript, createScript, joinScript, leaveScript, turnScript} {
			if err := sc.Load(ctx, s.rdb).Err(); err != nil {
				return fmt.Errorf("load scripts: %w", err)
			}
		}
	}
}
