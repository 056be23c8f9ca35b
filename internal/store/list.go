package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrInvalidCursor means a listing's cursor is not one an earlier page
// returned.
var ErrInvalidCursor = errors.New("invalid cursor")

// ErrBatchRequired means a listing of messages named no batch: chatq keeps
// no index of all messages, nor one per recipient, which would cost every
// message memory.
var ErrBatchRequired = errors.New("a batch id is required")

// Listing bounds.
const (
	// MaxPage is the largest page a listing returns.
	MaxPage = 1000
	// scanBudget is how many index entries one page looks at, at most,
	// when a filter skips most of them: the page then comes back short,
	// with a cursor to go on from.
	scanBudget = 5000
	// batchChunk is how many records a batch-wide operation reads or
	// changes per round trip.
	batchChunk = 500
)

// position is a place in an index listed newest first: the score and the
// member of the last entry handed out. Members that share a score are
// listed in descending order, so a position is exact even among ties.
type position struct {
	score int64
	id    string
}

func (p position) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.score, 10) + ":" + p.id))
}

// parseCursor reads a cursor; "" is the start of a listing (nil).
func parseCursor(c string) (*position, error) {
	if c == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, ErrInvalidCursor
	}
	score, id, ok := strings.Cut(string(raw), ":")
	n, err := strconv.ParseInt(score, 10, 64)
	if !ok || err != nil || id == "" {
		return nil, ErrInvalidCursor
	}
	return &position{score: n, id: id}, nil
}

// span bounds the scores of a listing, both ends included.
type span struct{ min, max int64 }

func allScores() span { return span{min: math.MinInt64, max: math.MaxInt64} }

func scoreArg(n int64) string {
	switch n {
	case math.MinInt64:
		return "-inf"
	case math.MaxInt64:
		return "+inf"
	}
	return strconv.FormatInt(n, 10)
}

// verdict is what a listing does with one index entry.
type verdict int

const (
	skip verdict = iota // not wanted here
	take                // on the page
	drop                // stale: removed from the index
)

// entry is a record found through an index, with its score there.
type entry struct {
	rec   *Record
	score int64
}

// entries returns up to n entries of the sorted set key after pos, newest
// first, within sp; more reports whether the index may hold further ones.
func (s *Store) entries(ctx context.Context, key string, sp span, pos *position, n int) (zs []redis.Z, more bool, err error) {
	top := sp.max
	if pos != nil && pos.score < top {
		top = pos.score
	}
	for offset := 0; ; {
		got, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: key, Start: scoreArg(top), Stop: scoreArg(sp.min), ByScore: true, Rev: true,
			Offset: int64(offset), Count: int64(n),
		}).Result()
		if err != nil {
			return nil, false, fmt.Errorf("read index %s: %w", key, err)
		}
		for _, z := range got {
			id, _ := z.Member.(string)
			// Entries of the position's own score up to the position itself
			// were handed out before.
			if pos != nil && int64(z.Score) == pos.score && id >= pos.id {
				continue
			}
			zs = append(zs, z)
		}
		if len(zs) > 0 || len(got) < n {
			return zs, len(got) == n, nil
		}
		offset += len(got)
	}
}

// page lists the index key newest first from cursor, keeping what judge
// takes, until it has limit records or has looked at scanBudget entries.
// It removes the entries judge drops, and those whose record has expired.
// The cursor it returns goes on from there; "" means the index is done.
func (s *Store) page(ctx context.Context, key string, sp span, cursor string, limit int, judge func(*Record) verdict) ([]entry, string, error) {
	pos, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	limit = min(max(limit, 1), MaxPage)
	chunk := min(max(limit, 100), batchChunk)
	var out []entry
	for scanned := 0; scanned < scanBudget; {
		zs, more, err := s.entries(ctx, key, sp, pos, chunk)
		if err != nil {
			return nil, "", err
		}
		if len(zs) == 0 {
			return out, "", nil
		}
		ids := make([]string, len(zs))
		for i, z := range zs {
			ids[i], _ = z.Member.(string)
		}
		recs, err := s.GetMany(ctx, ids)
		if err != nil {
			return nil, "", err
		}
		var stale []any
		full := false
		for i, r := range recs {
			pos = &position{score: int64(zs[i].Score), id: ids[i]}
			v := drop
			if r != nil {
				v = judge(r)
			}
			switch v {
			case take:
				out = append(out, entry{rec: r, score: pos.score})
			case drop:
				stale = append(stale, ids[i])
			}
			if len(out) == limit {
				more = more || i < len(recs)-1
				full = true
				break
			}
		}
		if len(stale) > 0 {
			// A failure leaves the entries for the next listing to drop.
			_ = s.rdb.ZRem(ctx, key, stale...).Err()
		}
		if !more {
			return out, "", nil
		}
		if full {
			break
		}
		scanned += len(zs)
	}
	return out, pos.cursor(), nil
}

// MessageFilter selects the records of a listing.
type MessageFilter struct {
	// BatchID is the campaign whose records are listed; it is required.
	BatchID string
	// Destination, if set, keeps the records to that number (a leading +
	// does not matter).
	Destination string
	// Statuses, if set, keeps the records in one of them.
	Statuses []Status
}

func (f MessageFilter) match(r *Record) bool {
	if f.Destination != "" && strings.TrimPrefix(r.Destination, "+") != strings.TrimPrefix(f.Destination, "+") {
		return false
	}
	if len(f.Statuses) == 0 {
		return true
	}
	for _, st := range f.Statuses {
		if r.Status == st {
			return true
		}
	}
	return false
}

// MessagePage is one page of a listing of messages.
type MessagePage struct {
	Records []*Record
	// Next is the cursor of the next page; "" on the last page.
	Next string
}

// ListMessages lists the records of a batch that match f, newest first,
// limit at most (up to MaxPage) from cursor ("" for the first page). A
// page may hold fewer than limit records, even none, while Next is set:
// a narrow filter stops after a bounded amount of work.
func (s *Store) ListMessages(ctx context.Context, f MessageFilter, cursor string, limit int) (MessagePage, error) {
	if f.BatchID == "" {
		return MessagePage{}, ErrBatchRequired
	}
	found, next, err := s.page(ctx, batchKey(f.BatchID), allScores(), cursor, limit, func(r *Record) verdict {
		if f.match(r) {
			return take
		}
		return skip
	})
	if err != nil {
		return MessagePage{}, fmt.Errorf("list messages of batch %s: %w", f.BatchID, err)
	}
	p := MessagePage{Records: make([]*Record, len(found)), Next: next}
	for i, e := range found {
		p.Records[i] = e.rec
	}
	return p, nil
}

// statuses returns the status of each record, "" for the missing, in one
// round trip.
func (s *Store) statuses(ctx context.Context, ids []string) ([]Status, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(ctx, recordKey(id), fStatus)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read statuses: %w", err)
	}
	out := make([]Status, len(ids))
	for i, c := range cmds {
		out[i] = Status(c.Val())
	}
	return out, nil
}

// countFields returns the status of each record, "" for the missing, and
// the category it was counted billable under, "" if none, in one round trip.
func (s *Store) countFields(ctx context.Context, ids []string) ([]Status, []string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, recordKey(id), fStatus, fBillable)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read statuses: %w", err)
	}
	sts := make([]Status, len(ids))
	billable := make([]string, len(ids))
	for i, c := range cmds {
		v := c.Val()
		if len(v) == 2 {
			st, _ := v[0].(string)
			bl, _ := v[1].(string)
			sts[i], billable[i] = Status(st), bl
		}
	}
	return sts, billable, nil
}

// eachOfBatch calls f with the ids of a batch's records, oldest first, a
// chunk at a time. Records created meanwhile come last, so none is missed.
func (s *Store) eachOfBatch(ctx context.Context, batch string, f func(ids []string) error) error {
	key := batchKey(batch)
	for start := int64(0); ; start += batchChunk {
		ids, err := s.rdb.ZRange(ctx, key, start, start+batchChunk-1).Result()
		if err != nil {
			return fmt.Errorf("read batch %s: %w", batch, err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := f(ids); err != nil {
			return err
		}
		if len(ids) < batchChunk {
			return nil
		}
	}
}

// Counts is what the records of a campaign add up to.
type Counts struct {
	// Status counts the records by status; every status is in it, zero or
	// not.
	Status map[Status]int
	// Total is the number of records, those expired left out.
	Total int
	// Billable counts the records a status webhook reported billable, each
	// once, by the category of its first billable pricing object:
	// marketing, utility and authentication are always in it, zero or not.
	Billable map[string]int
}

// BatchCounts counts the records of a batch by status and the billable ones
// by category. A batch nobody knows has a total of 0.
func (s *Store) BatchCounts(ctx context.Context, batch string) (Counts, error) {
	all := allStatuses()
	c := Counts{
		Status:   make(map[Status]int, len(all)),
		Billable: map[string]int{CategoryMarketing: 0, CategoryUtility: 0, CategoryAuthentication: 0},
	}
	for _, st := range all {
		c.Status[st] = 0
	}
	err := s.eachOfBatch(ctx, batch, func(ids []string) error {
		sts, billable, err := s.countFields(ctx, ids)
		if err != nil {
			return err
		}
		for i, st := range sts {
			if st.Valid() {
				c.Status[st]++
				c.Total++
				if billable[i] != "" {
					c.Billable[billable[i]]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return Counts{}, fmt.Errorf("count batch %s: %w", batch, err)
	}
	return c, nil
}

// allStatuses lists every status, for counts that show them all.
func allStatuses() []Status {
	return []Status{Scheduled, Queued, Sending, Retrying, Submitted, Dead, Expired, Canceled,
		Enqueued, Sent, Delivered, Read, Failed}
}

// CancelBatch cancels every message of a batch that is still waiting
// (scheduled, queued or retrying), as Cancel does one. It returns how many
// it canceled, and how many were too late: being sent, sent, or ended
// before (expired records are not counted).
func (s *Store) CancelBatch(ctx context.Context, batch string, at time.Time) (canceled, tooLate int, err error) {
	args := s.transitionArgs("cancel", Change{Status: Canceled, At: at, Note: "canceled with its batch by the application"})
	err = s.eachOfBatch(ctx, batch, func(ids []string) error {
		// Only the waiting are worth a script call.
		sts, err := s.statuses(ctx, ids)
		if err != nil {
			return err
		}
		var waiting []string
		for i, st := range sts {
			switch st {
			case "":
			case Scheduled, Queued, Retrying:
				waiting = append(waiting, ids[i])
			default:
				tooLate++
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		cmds := make([]*redis.Cmd, len(waiting))
		if err := s.exec(ctx, func(pipe redis.Pipeliner) {
			for i, id := range waiting {
				cmds[i] = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), args...)
			}
		}); err != nil {
			return fmt.Errorf("cancel: %w", err)
		}
		for i, id := range waiting {
			o, _, _, err := s.outcome(ctx, id, cmds[i], "cancel "+id)
			if err != nil {
				return err
			}
			switch o {
			case Changed:
				canceled++
			case Refused:
				tooLate++
			}
		}
		return nil
	})
	if err != nil {
		return canceled, tooLate, fmt.Errorf("cancel batch %s: %w", batch, err)
	}
	return canceled, tooLate, nil
}
