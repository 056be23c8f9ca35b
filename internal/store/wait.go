package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// WaitReason says what a waiting message waits for (CONTRACT.md "Waiting
// is not a status").
type WaitReason string

// The reasons a message waits. A wait keeps the message's status: it adds
// no history entry and queues no callback notice.
const (
	WaitSenderRate        WaitReason = "sender_rate"
	WaitPairRate          WaitReason = "pair_rate"
	WaitDailyLimit        WaitReason = "daily_limit"
	WaitCircuitOpen       WaitReason = "circuit_open"
	WaitThrottled         WaitReason = "throttled"
	WaitPaused            WaitReason = "paused"
	WaitConversationOrder WaitReason = "conversation_order"
	WaitMarketingCapped   WaitReason = "marketing_capped"
	WaitTemplatePaused    WaitReason = "template_paused"
)

// WaitReasons lists every reason, in the contract's order.
func WaitReasons() []WaitReason {
	return []WaitReason{WaitSenderRate, WaitPairRate, WaitDailyLimit, WaitCircuitOpen, WaitThrottled,
		WaitPaused, WaitConversationOrder, WaitMarketingCapped, WaitTemplatePaused}
}

// Valid reports whether r is one of the reasons above.
func (r WaitReason) Valid() bool {
	for _, v := range WaitReasons() {
		if r == v {
			return true
		}
	}
	return false
}

// Waiting is a record's current wait: why, since when, and the earliest
// time the message may go (nil when unknown, as for a pause).
type Waiting struct {
	Reason WaitReason `json:"reason"`
	Since  time.Time  `json:"since"`
	Until  *time.Time `json:"until,omitempty"`
}

// MarshalJSON writes the times as every timestamp of chatq's JSON.
func (w Waiting) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Reason WaitReason     `json:"reason"`
		Since  jsontime.Time  `json:"since"`
		Until  *jsontime.Time `json:"until,omitempty"`
	}{w.Reason, jsontime.Time(w.Since), jsontime.Ptr(w.Until)})
}

// waitKey indexes a tenant's messages waiting for reason, scored by the
// wait's start: GET /v1/messages?waiting= reads it. An entry whose record
// no longer waits for that reason is stale, and a listing drops it.
func waitKey(tenant string, reason WaitReason) string {
	if tenant == "" {
		tenant = DefaultTenant
	}
	return "chatq:waiting:" + tenant + ":{" + string(reason) + "}"
}

// senderWaitKey counts, per sender, the messages waiting for reason: the
// chatq_messages_waiting gauge reads its size. Its hash tag is the
// sender's, like the sender's limits.
func senderWaitKey(sender string, reason WaitReason) string {
	if sender == "" {
		sender = "default"
	}
	return "chatq:waiting:{" + sender + "}:" + string(reason)
}

// Wait records that the message of rec, taken up by task (its status
// unchanged: queued, scheduled or retrying), waits for w.Reason: no
// history entry, no callback notice. When due is set, the due index has
// the sweeper give the message a new task then; a message waiting without
// one is released by whatever it waits for. pairSlot, when set, is the
// send slot the message holds on its recipient's schedule, which its next
// take-up uses instead of asking for another. Wait fails with ErrRefused
// when the message moved on meanwhile (canceled, or handed to another
// task).
func (s *Store) Wait(ctx context.Context, rec *Record, task string, w Waiting, due, pairSlot time.Time) error {
	body, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("wait %s: %w", rec.ID, err)
	}
	args := s.scriptArgs("wait", rec.Status, w.Since, string(body), "", "", task)
	if !pairSlot.IsZero() {
		args = append(args, "="+fPairSlot, pairSlot.UnixMilli())
	}
	var cmd *redis.Cmd
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		// Before the wait: a wait must never be without the entry that
		// ends it.
		if !due.IsZero() {
			pipe.ZAdd(ctx, dueKey, redis.Z{Score: float64(due.UnixMilli()), Member: rec.ID})
		}
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(rec.ID), args...)
		if old := rec.Waiting; old != nil && old.Reason != w.Reason {
			pipe.ZRem(ctx, waitKey(rec.Tenant, old.Reason), rec.ID)
			pipe.ZRem(ctx, senderWaitKey(rec.Sender, old.Reason), rec.ID)
		}
		// Written again when the same wait goes on: a message back in its
		// sender's lane meanwhile left the indexes (AddToLanes).
		z := redis.Z{Score: float64(w.Since.UnixMilli()), Member: rec.ID}
		pipe.ZAdd(ctx, waitKey(rec.Tenant, w.Reason), z)
		pipe.ZAdd(ctx, senderWaitKey(rec.Sender, w.Reason), z)
	})
	if err != nil {
		return fmt.Errorf("wait %s: %w", rec.ID, err)
	}
	o, st, _, err := s.outcome(ctx, rec.ID, cmd, "wait "+rec.ID)
	if err != nil {
		return err
	}
	if o != Kept {
		// The index entries written above are stale, and dropped by the
		// next listing.
		return fmt.Errorf("wait %s (%s): %w", rec.ID, st, ErrRefused)
	}
	rec.Waiting = &w
	return nil
}

// unindexWait removes a record whose wait ended from the wait indexes. The
// transition that ended it returned the wait (raw, its JSON) and the
// record's tenant and sender.
func (s *Store) unindexWait(ctx context.Context, id string, raw, tenant, sender any) {
	body, _ := raw.(string)
	if body == "" {
		return
	}
	var w Waiting
	if json.Unmarshal([]byte(body), &w) != nil || !w.Reason.Valid() {
		return
	}
	tn, _ := tenant.(string)
	sn, _ := sender.(string)
	pipe := s.rdb.Pipeline()
	pipe.ZRem(ctx, waitKey(tn, w.Reason), id)
	pipe.ZRem(ctx, senderWaitKey(sn, w.Reason), id)
	// A failure leaves stale entries, which a listing drops: the record
	// itself says it no longer waits.
	_, _ = pipe.Exec(ctx)
}

// peekFields are the fields of a record that decide whether and how it
// may be sent: not its history, metadata or payload.
var peekFields = []string{fStatus, fDest, fType, fPriority, fTenant, fSender, fCategory, fSendAt, fExpires,
	fTask, fWaiting, fPairSlot, fFallback, fCreated, fUpdated, fAttempts, fFailures, fQueue, fBatch, fOrdered}

// lookParts is how many parts of a payload Peek reads (256 bytes): a
// template message's, which names the template checked before its send,
// is seldom longer.
const lookParts = 4

// lookFields are peekFields and the payload's first lookParts parts.
var lookFields = append(slices.Clip(peekFields), fPayload, fParts, fPayload+"1", fPayload+"2", fPayload+"3")

// Peek reads what decides whether and how the message of id may be sent
// (Record without its history and metadata), for a look before the send:
// nil when there is no record. Its payload is there when the record's hash
// keeps it in at most lookParts parts; else Payload reads it.
func (s *Store) Peek(ctx context.Context, id string) (*Record, error) {
	vals, err := s.rdb.HMGet(ctx, recordKey(id), lookFields...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %s: %w", id, err)
	}
	return peeked(id, lookFields, vals)
}

// peeked parses the values an HMGET of fields read of record id: nil when
// there is no record. A payload read in part is left out.
func peeked(id string, fields []string, vals []any) (*Record, error) {
	h := make(map[string]string, len(fields))
	for i, v := range vals {
		if v, ok := v.(string); ok {
			h[fields[i]] = v
		}
	}
	if h[fStatus] == "" {
		return nil, nil
	}
	if n, _ := strconv.Atoi(h[fParts]); n > lookParts {
		dropPayload(h)
	}
	return parseRecord(id, h)
}

// sweepFields are peekFields and what the sweeper needs to tell a lost
// send: its owner, and whether it was on the wire.
var sweepFields = append(slices.Clip(peekFields), fOwner, fWire)

// PeekMany is Peek for many records, in one round trip, with the owner of
// a send and whether it was on the wire (Record.Owner, OnWire), for the
// sweeper; a record that does not exist is nil.
func (s *Store) PeekMany(ctx context.Context, ids []string) ([]*Record, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, recordKey(id), sweepFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read records: %w", err)
	}
	out := make([]*Record, len(ids))
	for i, c := range cmds {
		r, err := peeked(ids[i], sweepFields, c.Val())
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// WaitingCounts returns, for each of senders ("" for the deployment's
// environment sender), how many messages wait for each reason.
func (s *Store) WaitingCounts(ctx context.Context, senders []string) (map[string]map[WaitReason]int64, error) {
	reasons := WaitReasons()
	pipe := s.rdb.Pipeline()
	cmds := make([][]*redis.IntCmd, len(senders))
	for i, sn := range senders {
		cmds[i] = make([]*redis.IntCmd, len(reasons))
		for j, r := range reasons {
			cmds[i][j] = pipe.ZCard(ctx, senderWaitKey(sn, r))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("count waiting messages: %w", err)
	}
	out := make(map[string]map[WaitReason]int64, len(senders))
	for i, sn := range senders {
		m := make(map[WaitReason]int64, len(reasons))
		for j, r := range reasons {
			m[r] = cmds[i][j].Val()
		}
		out[sn] = m
	}
	return out, nil
}

// releaseBatch bounds the waits one Release call ends.
const releaseBatch = 1000

// ReleaseWaits ends, for the messages of senders ("" for records that name
// none) waiting for reason, their wait's look-again time: the due index
// has each given a new task now, in the order they began to wait, when
// what they wait for has ended (a resumed sender, a closed circuit). Up to
// n at most (0: all); it returns how many it released. A message that
// still has to wait waits again, at the cost of one look.
func (s *Store) ReleaseWaits(ctx context.Context, senders []string, reason WaitReason, n int) (int, error) {
	released := 0
	for _, sn := range senders {
		for start := int64(0); n == 0 || released < n; start += releaseBatch {
			stop := start + releaseBatch - 1
			if n > 0 {
				stop = min(stop, start+int64(n-released)-1)
			}
			ids, err := s.rdb.ZRange(ctx, senderWaitKey(sn, reason), start, stop).Result()
			if err != nil {
				return released, fmt.Errorf("release messages waiting for %s: %w", reason, err)
			}
			if len(ids) == 0 {
				break
			}
			now := float64(time.Now().UnixMilli())
			zs := make([]redis.Z, len(ids))
			for i, id := range ids {
				zs[i] = redis.Z{Score: now, Member: id}
			}
			if err := s.rdb.ZAdd(ctx, dueKey, zs...).Err(); err != nil {
				return released, fmt.Errorf("release messages waiting for %s: %w", reason, err)
			}
			released += len(ids)
			if len(ids) < releaseBatch {
				break
			}
		}
	}
	return released, nil
}
