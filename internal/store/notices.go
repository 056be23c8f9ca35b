package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Notifier is told that a status change queued a callback notice.
type Notifier interface {
	// Notify is called once the change is stored, with the record's id and
	// the notice's sequence number. It must not block for long. A failure
	// is the notifier's own to handle: the notice stays queued, and the
	// record stays on the due index (Due) until its notices are delivered.
	Notify(ctx context.Context, id string, seq int64)
}

// Notice is one pending status callback of a record: the record as it was
// right after a status change. Notices of a record are delivered in the
// order of their Seq, which is the order of the changes.
type Notice struct {
	// Seq numbers the record's notices from 1.
	Seq int64
	// Record is the record as of the change, without its payloads: what
	// the change wrote, over the record as it is now, with the history it
	// had then. Nil when the record is gone (it expired): no body can be
	// built for the notice any more.
	Record *Record
	// Queued is when the change queued the notice (Redis's clock).
	Queued time.Time
	// raw identifies the notice in its list, for AckNotice.
	raw string
}

// ackScript removes a record's first notice if it is still the given one:
// a slow deliverer whose lock expired must not remove another's notice.
var ackScript = redis.NewScript(`
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) and 1 end
return 0`)

// noticed puts records that just got a notice on the due index, due
// NoticeGrace later, and tells the notifier.
func (s *Store) noticed(ctx context.Context, seq int64, ids ...string) {
	if len(ids) == 0 {
		return
	}
	due := float64(time.Now().Add(s.cfg.NoticeGrace).UnixMilli())
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Score: due, Member: noticePrefix + id}
	}
	// An index write that fails leaves the notice to the notifier alone:
	// the status change itself is stored, and must not be reported as
	// failed.
	_ = s.rdb.ZAddNX(ctx, dueKey, zs...).Err()
	if s.cfg.Notifier == nil {
		return
	}
	for _, id := range ids {
		s.cfg.Notifier.Notify(ctx, id, seq)
	}
}

// NextNotice returns the first pending notice of record id, or nil when
// none is pending.
func (s *Store) NextNotice(ctx context.Context, id string) (*Notice, error) {
	// The record is read with the notice, in one round trip: a notice
	// holds only what its change wrote. The record may have changed
	// since, which the notice's fields and history length undo.
	pipe := s.rdb.Pipeline()
	first := pipe.LIndex(ctx, noticeKey(id), 0)
	rec := pipe.HGetAll(ctx, recordKey(id))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read notice of %s: %w", id, err)
	}
	raw, err := first.Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read notice of %s: %w", id, err)
	}
	return parseNotice(id, raw, rec.Val())
}

// AckNotice removes n, which NextNotice returned, once it is delivered (or
// given up). It reports false when n was no longer the first notice:
// another deliverer removed it already.
func (s *Store) AckNotice(ctx context.Context, id string, n *Notice) (bool, error) {
	k := []string{noticeKey(id)}
	res, err := ackScript.Run(ctx, s.rdb, k, n.raw).Int()
	if err != nil {
		return false, fmt.Errorf("acknowledge notice %d of %s: %w", n.Seq, id, err)
	}
	return res == 1, nil
}

// NoticesDrained takes record id off the due index, unless a notice came in
// meanwhile.
func (s *Store) NoticesDrained(ctx context.Context, id string) error {
	if err := s.rdb.ZRem(ctx, dueKey, noticePrefix+id).Err(); err != nil {
		return fmt.Errorf("index notices of %s: %w", id, err)
	}
	// A notice queued between the last read and the removal above has put
	// the record back already, or is about to; checking after the
	// removal covers the case where its index write came first.
	n, err := s.rdb.LLen(ctx, noticeKey(id)).Result()
	if err != nil {
		return fmt.Errorf("index notices of %s: %w", id, err)
	}
	if n > 0 {
		return s.rdb.ZAdd(ctx, dueKey, redis.Z{Score: float64(time.Now().Add(s.cfg.NoticeGrace).UnixMilli()), Member: noticePrefix + id}).Err()
	}
	return nil
}

// DeferNotices tells the due index that the notices of records ids are
// next tried at until (a delivery failed and is retried then, or a sweep
// handed them a task), so that the sweeper leaves them alone until
// NoticeGrace after.
func (s *Store) DeferNotices(ctx context.Context, until time.Time, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	due := float64(until.Add(s.cfg.NoticeGrace).UnixMilli())
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Score: due, Member: noticePrefix + id}
	}
	if err := s.rdb.ZAddXX(ctx, dueKey, zs...).Err(); err != nil {
		return fmt.Errorf("defer notices of %v: %w", ids, err)
	}
	return nil
}

// parseNotice decodes a notice as transition.lua writes it,
// {"n": seq, "t": unix ms, "c": {fields the change wrote}, "hl": the
// history's length in bytes}, over h, the record's hash as it is now (empty
// when the record is gone). A notice written before notices held only the
// change, {"n", "t", "f": {the whole record hash}}, needs no h: queues may
// hold such notices across an upgrade.
func parseNotice(id, raw string, h map[string]string) (*Notice, error) {
	var w struct {
		// Lua numbers are floats, and some encoders write them so.
		N  float64           `json:"n"`
		T  float64           `json:"t"`
		C  map[string]string `json:"c"`
		HL float64           `json:"hl"`
		F  map[string]string `json:"f"`
	}
	if err := json.Unmarshal([]byte(raw), &w); err != nil {
		return nil, fmt.Errorf("notice of %s: %w", id, err)
	}
	n := &Notice{Seq: int64(w.N), Queued: time.UnixMilli(int64(w.T)).UTC(), raw: raw}
	fields := w.F
	if fields == nil {
		if len(h) == 0 {
			return n, nil
		}
		var err error
		if fields, err = asOf(h, w.C, int(w.HL)); err != nil {
			return nil, fmt.Errorf("notice %d of %s: %w", n.Seq, id, err)
		}
	}
	r, err := parseRecord(id, fields)
	if err != nil {
		return nil, fmt.Errorf("notice %d of %s: %w", n.Seq, id, err)
	}
	n.Record = r
	return n, nil
}

// asOf turns h, a record's hash, into the hash as it was right after a
// change, given the fields the change wrote and the length in bytes of the
// history then; it leaves out the payloads. The history only ever grows at
// its end (historyAsOf).
func asOf(h, change map[string]string, hl int) (map[string]string, error) {
	dropPayload(h)
	delete(h, fFallback)
	// A status change ends the message's wait: a later one is not of it.
	delete(h, fWaiting)
	delete(h, fPairSlot)
	if _, ok := change[fError]; ok {
		// The change's last error comes whole: a later one's parts are
		// not of it.
		dropParts(h, fError)
	}
	for k, v := range change {
		h[k] = v
	}
	hist, ok := historyAsOf(h[fHistory], hl)
	if !ok {
		return nil, fmt.Errorf("history of %d bytes is not a later one of the %d bytes at the change", len(h[fHistory]), hl)
	}
	h[fHistory] = hist
	return h, nil
}
