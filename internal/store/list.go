package store

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// ErrInvalidCursor means a listing's cursor is not one an earlier page
// returned.
var ErrInvalidCursor = errors.New("invalid cursor")

// ErrBatchRequired means a listing of messages named neither a batch nor a
// recipient: chatq keeps no index of all messages.
var ErrBatchRequired = errors.New("a batch id or a destination is required")

// Listing bounds.
const (
	// MaxPage is the largest page a listing returns.
	MaxPage = 1000
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
	hide                // not this listing's to show, nor to name in a cursor
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

// source is one sorted set a listing reads: an index of records, or a
// sender's lane, whose members are task ids (RecordOfTask) and which a
// listing never changes: it is the feeder's.
type source struct {
	key  string
	sp   span
	lane bool
}

// sourced is an entry of one of a listing's sources.
type sourced struct {
	redis.Z
	src int
}

func (z sourced) member() string {
	m, _ := z.Member.(string)
	return m
}

// entriesOf returns up to n entries of srcs after pos, newest first across
// all of them, ties in descending order of member as within one index;
// more reports whether they may hold further ones. The sources are read in
// one round trip (another for one whose first entries were all handed out
// before: a long run of ties).
func (s *Store) entriesOf(ctx context.Context, srcs []source, pos *position, n int) ([]sourced, bool, error) {
	if len(srcs) == 1 {
		zs, more, err := s.entries(ctx, srcs[0].key, srcs[0].sp, pos, n)
		out := make([]sourced, len(zs))
		for i, z := range zs {
			out[i] = sourced{Z: z}
		}
		return out, more, err
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(srcs))
	for i, src := range srcs {
		top := src.sp.max
		if pos != nil && pos.score < top {
			top = pos.score
		}
		cmds[i] = pipe.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: src.key, Start: scoreArg(top), Stop: scoreArg(src.sp.min), ByScore: true, Rev: true, Count: int64(n),
		})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, fmt.Errorf("read indexes: %w", err)
	}
	var all []sourced
	more := false
	for i, c := range cmds {
		got := c.Val()
		fresh := 0
		for _, z := range got {
			id, _ := z.Member.(string)
			if pos != nil && int64(z.Score) == pos.score && id >= pos.id {
				continue
			}
			all = append(all, sourced{Z: z, src: i})
			fresh++
		}
		if fresh > 0 || len(got) < n {
			more = more || len(got) == n
			continue
		}
		zs, m, err := s.entries(ctx, srcs[i].key, srcs[i].sp, pos, n)
		if err != nil {
			return nil, false, err
		}
		for _, z := range zs {
			all = append(all, sourced{Z: z, src: i})
		}
		more = more || m
	}
	slices.SortFunc(all, func(a, b sourced) int {
		return cmp.Or(cmp.Compare(b.Score, a.Score), strings.Compare(b.member(), a.member()))
	})
	if len(all) > n {
		all, more = all[:n], true
	}
	return all, more, nil
}

// page lists the index key newest first from cursor (see pageOf).
func (s *Store) page(ctx context.Context, key string, sp span, cursor string, limit int, judge func(*Record) verdict, home homeFunc) ([]entry, string, error) {
	return s.pageOf(ctx, []source{{key: key, sp: sp}}, cursor, limit, func(r *Record, _ source, _ string) verdict { return judge(r) }, home)
}

// lowest is a member below every record and task id: a position (score,
// lowest) is past every entry of its score.
const lowest = "!"

// pageOf lists srcs newest first from cursor, keeping what judge takes,
// until it has limit records or has looked at Config.ScanBudget entries.
// It removes the entries judge drops from an index, and those whose record
// has expired; an entry whose record belongs in another index (home, if
// not nil, names it for the records judge does not drop) moves there. The
// cursor it returns goes on from there; "" means the sources are done.
//
// The cursor is the position of the last entry the page left in its
// index, never of one it removed, moved or hid: those may be another
// tenant's (an index of before tenants holds every tenant's entries, a
// lane every message of its sender, whoever its tenant was), and a cursor
// would hand out their ids and times. A page that removed all it looked at
// goes on from where it started, which skips them now that they are gone;
// one that ends on hidden entries reads on to the end of their millisecond
// and goes on from after it, naming no entry.
func (s *Store) pageOf(ctx context.Context, srcs []source, cursor string, limit int, judge func(r *Record, src source, member string) verdict, home homeFunc) ([]entry, string, error) {
	pos, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	limit = min(max(limit, 1), MaxPage)
	chunk := min(max(limit, 100), batchChunk, s.cfg.ScanBudget)
	var out []entry
	// at is where the scan is; last the position of the last entry kept;
	// hidden, if set, that of the hidden entry the scan ended on.
	at, last := pos, pos
	var hidden *position
	taken := map[string]bool{}
	for scanned := 0; ; {
		// Past the budget, the scan goes on only through the millisecond
		// of the hidden entry it ended on.
		over := scanned >= s.cfg.ScanBudget
		if over && hidden == nil {
			break
		}
		zs, more, err := s.entriesOf(ctx, srcs, at, chunk)
		if err != nil {
			return nil, "", err
		}
		cut := false
		if over {
			if i := slices.IndexFunc(zs, func(z sourced) bool { return int64(z.Score) != hidden.score }); i >= 0 {
				zs, cut = zs[:i], true
			}
		}
		if len(zs) == 0 {
			if over {
				break
			}
			return out, "", nil
		}
		ids := make([]string, len(zs))
		for i, z := range zs {
			ids[i] = z.member()
			if srcs[z.src].lane {
				ids[i] = RecordOfTask(ids[i])
			}
		}
		recs, err := s.GetMany(ctx, ids)
		if err != nil {
			return nil, "", err
		}
		gone := map[int][]any{}
		moves := map[string][]redis.Z{}
		lives := map[string]time.Time{}
		full := false
		for i, r := range recs {
			z, src := zs[i], srcs[zs[i].src]
			at = &position{score: int64(z.Score), id: z.member()}
			v := drop
			if r != nil {
				v = judge(r, src, z.member())
			}
			if v != drop && home != nil {
				if h, until := home(r); h != src.key {
					moves[h] = append(moves[h], z.Z)
					if until.After(lives[h]) {
						lives[h] = until
					}
					v = drop
				}
			}
			if v == drop && src.lane {
				v = hide
			}
			if v == take && taken[r.ID] {
				// A message met in two sources (its wait written as it
				// leaves its lane) is listed once on a page.
				v = skip
			}
			switch v {
			case take:
				taken[r.ID] = true
				out = append(out, entry{rec: r, score: at.score})
				last, hidden = at, nil
			case skip:
				last, hidden = at, nil
			case hide:
				hidden = at
			case drop:
				gone[z.src] = append(gone[z.src], z.member())
			}
			if len(out) == limit {
				more = more || i < len(recs)-1
				full = true
				break
			}
		}
		for i, g := range gone {
			if err := s.rehome(ctx, srcs[i].key, g, moves, lives); err != nil {
				return nil, "", err
			}
		}
		if !more && !cut {
			return out, "", nil
		}
		if full || cut {
			break
		}
		scanned += len(zs)
	}
	switch {
	case hidden != nil:
		return out, position{score: hidden.score, id: lowest}.cursor(), nil
	case last == nil:
		return out, topPosition().cursor(), nil
	}
	return out, last.cursor(), nil
}

// homeFunc names the index a record's entry belongs in, and until when
// that index must live at least for it (zero for an index that does not
// expire).
type homeFunc func(*Record) (key string, until time.Time)

// topPosition is the position before every entry: the cursor of a first
// page that removed all it looked at.
func topPosition() position { return position{score: math.MaxInt64, id: "-"} }

// rehome removes the entries gone from the index key, after adding those
// of moves to the indexes they belong to (those named in lives to live
// until at least then). A page's cursor skips them only once they are
// gone, so a failure is the listing's.
func (s *Store) rehome(ctx context.Context, key string, gone []any, moves map[string][]redis.Z, lives map[string]time.Time) error {
	if len(gone) == 0 {
		return nil
	}
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		for h, zs := range moves {
			// NX: an entry there already is the more recent one.
			pipe.ZAddNX(ctx, h, zs...)
			if until, ok := lives[h]; ok {
				extendAt(ctx, pipe, h, until)
			}
		}
		pipe.ZRem(ctx, key, gone...)
	})
	if err != nil {
		return fmt.Errorf("tidy index %s: %w", key, err)
	}
	return nil
}

// MessageFilter selects the records of a listing.
type MessageFilter struct {
	// Tenant owns the records listed: a batch id is a tenant's own, so two
	// tenants' campaigns of one name are two, and a tenant's listing of a
	// recipient reads that tenant's index of the recipient alone. Empty
	// means DefaultTenant.
	Tenant string
	// BatchID is the campaign whose records are listed. It or Destination
	// is required.
	BatchID string
	// Destination, if set, keeps the records to that number (a leading +
	// does not matter); without BatchID, the recipient's records are
	// listed.
	Destination string
	// Statuses, if set, keeps the records in one of them.
	Statuses []Status
	// Waiting, if set, lists the tenant's messages waiting for that reason,
	// by the start of their wait, newest first; BatchID and Destination
	// then narrow it.
	Waiting WaitReason
	// Lanes, with Waiting, names the senders' lanes (LaneOf) whose
	// messages wait for that reason now, as their sender's state says
	// (sender_rate, paused, circuit_open, throttled): the bulk messages of
	// the tenant that may go but have no task yet are listed with the
	// waits written on records, by the time they may go. Their records
	// carry no wait; the caller shows theirs.
	Lanes []string
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

// ListMessages lists the records of a batch, or of a recipient, that match
// f, newest first, limit at most (up to MaxPage) from cursor ("" for the
// first page). A page may hold fewer than limit records, even none, while
// Next is set: a narrow filter stops after a bounded amount of work. A
// recipient's listing moves the entries of another tenant's records that
// it meets to that tenant's index of the recipient.
func (s *Store) ListMessages(ctx context.Context, f MessageFilter, cursor string, limit int) (MessagePage, error) {
	var key, what string
	var judge func(*Record) verdict
	var home homeFunc
	switch {
	case f.Waiting != "":
		key, what = waitKey(f.Tenant, f.Waiting), "waiting for "+string(f.Waiting)
		judge = func(r *Record) verdict {
			if r.Waiting == nil || r.Waiting.Reason != f.Waiting || r.Tenant != cmp.Or(f.Tenant, DefaultTenant) {
				// The wait ended (or changed reason): a stale entry.
				return drop
			}
			if f.match(r) && (f.BatchID == "" || (r.BatchID != nil && *r.BatchID == f.BatchID)) {
				return take
			}
			return skip
		}
	case f.BatchID != "":
		key, what = batchKey(f.Tenant, f.BatchID), "batch "+f.BatchID
		judge = func(r *Record) verdict {
			if r.BatchID == nil || *r.BatchID != f.BatchID {
				// An entry that names another campaign's record is stale.
				return drop
			}
			if f.match(r) {
				return take
			}
			return skip
		}
	case f.Destination != "":
		key, what = destKey(f.Tenant, f.Destination), "recipient "+f.Destination
		judge = func(r *Record) verdict {
			if f.match(r) {
				return take
			}
			return skip
		}
		// The index of DefaultTenant's recipient is that of before
		// tenants, which may hold any tenant's entries.
		home = func(r *Record) (string, time.Time) { return destKey(r.Tenant, r.Destination), s.life(r) }
	default:
		return MessagePage{}, ErrBatchRequired
	}
	srcs := []source{{key: key, sp: allScores()}}
	if f.Waiting != "" {
		// A lane's messages that may go now wait as their sender does;
		// those due later are scheduled, not waiting.
		due := span{min: math.MinInt64, max: time.Now().UnixMilli()}
		for _, l := range f.Lanes {
			srcs = append(srcs, source{key: laneKey(l), sp: due, lane: true})
		}
	}
	found, next, err := s.pageOf(ctx, srcs, cursor, limit, func(r *Record, src source, member string) verdict {
		if !src.lane {
			return judge(r)
		}
		switch {
		case r.Tenant != cmp.Or(f.Tenant, DefaultTenant):
			// A lane holds its sender's messages, whoever their tenant
			// was when they were accepted.
			return hide
		case !r.Status.Pending() || r.Status == Sending || cmp.Or(r.TaskID, r.ID) != member:
			// Its task is written, or it ended: the feeder drops the entry.
			return skip
		case f.match(r) && (f.BatchID == "" || (r.BatchID != nil && *r.BatchID == f.BatchID)):
			return take
		}
		return skip
	}, home)
	if err != nil {
		return MessagePage{}, fmt.Errorf("list messages of %s: %w", what, err)
	}
	p := MessagePage{Records: make([]*Record, len(found)), Next: next}
	for i, e := range found {
		p.Records[i] = e.rec
	}
	return p, nil
}

// eachOfBatch calls f with the ids of a tenant's batch's records, their
// statuses and the category each was counted billable under ("" if none),
// oldest first, a chunk at a time. Records created meanwhile come last, so
// none is missed. The status is "" for a record that has expired or is not
// of that batch: an index entry never acts on another campaign's message.
func (s *Store) eachOfBatch(ctx context.Context, tenant, batch string, f func(ids []string, sts []Status, billable []string) error) error {
	key := batchKey(tenant, batch)
	for start := int64(0); ; start += batchChunk {
		ids, err := s.rdb.ZRange(ctx, key, start, start+batchChunk-1).Result()
		if err != nil {
			return fmt.Errorf("read batch %s: %w", batch, err)
		}
		if len(ids) == 0 {
			return nil
		}
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, recordKey(id), fStatus, fBatch, fBillable)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("read batch %s: %w", batch, err)
		}
		sts := make([]Status, len(ids))
		billable := make([]string, len(ids))
		for i, c := range cmds {
			v := c.Val()
			if b, _ := v[1].(string); b == batch {
				st, _ := v[0].(string)
				bl, _ := v[2].(string)
				sts[i], billable[i] = Status(st), bl
			}
		}
		if err := f(ids, sts, billable); err != nil {
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

// BatchCounts counts the records of a batch of DefaultTenant (see
// BatchCountsOf).
func (s *Store) BatchCounts(ctx context.Context, batch string) (Counts, error) {
	return s.BatchCountsOf(ctx, DefaultTenant, batch)
}

// BatchCountsOf counts the records of a tenant's batch by status and the
// billable ones by category. A batch nobody knows has a total of 0.
func (s *Store) BatchCountsOf(ctx context.Context, tenant, batch string) (Counts, error) {
	all := allStatuses()
	c := Counts{
		Status:   make(map[Status]int, len(all)),
		Billable: map[string]int{CategoryMarketing: 0, CategoryUtility: 0, CategoryAuthentication: 0},
	}
	for _, st := range all {
		c.Status[st] = 0
	}
	err := s.eachOfBatch(ctx, tenant, batch, func(_ []string, sts []Status, billable []string) error {
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

// CancelBatch cancels what still waits of a batch of DefaultTenant (see
// CancelBatchOf).
func (s *Store) CancelBatch(ctx context.Context, batch string, at time.Time) (canceled, tooLate int, err error) {
	return s.CancelBatchOf(ctx, DefaultTenant, batch, at)
}

// CancelBatchOf cancels every message of a tenant's batch that is still
// waiting (scheduled, queued or retrying), as Cancel does one. It returns
// how many it canceled, and how many were too late: being sent, sent, or
// ended before (expired records are not counted).
func (s *Store) CancelBatchOf(ctx context.Context, tenant, batch string, at time.Time) (canceled, tooLate int, err error) {
	args := s.transitionArgs("cancel", Change{Status: Canceled, At: at, Note: "canceled with its batch by the application"})
	err = s.eachOfBatch(ctx, tenant, batch, func(ids []string, sts []Status, _ []string) error {
		// Only the waiting are worth a script call.
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
		var ended []string
		for i, id := range waiting {
			o, _, _, err := s.outcome(ctx, id, cmds[i], "cancel "+id)
			if err != nil {
				return err
			}
			switch o {
			case Changed:
				canceled++
				ended = append(ended, id)
			case Refused:
				tooLate++
			}
		}
		// The next messages of their conversations go; should this fail,
		// the sweeper's checks of their lines let them go later.
		_ = s.stepOutIDs(ctx, ended)
		return nil
	})
	if err != nil {
		return canceled, tooLate, fmt.Errorf("cancel batch %s: %w", batch, err)
	}
	return canceled, tooLate, nil
}

// Batch is an entry of the campaign listing.
type Batch struct {
	ID string `json:"batch_id"`
	// LastCreatedAt is when its latest message was accepted.
	LastCreatedAt time.Time `json:"last_created_at"`
}

// MarshalJSON writes LastCreatedAt as every timestamp of chatq's JSON.
func (b Batch) MarshalJSON() ([]byte, error) {
	type plain Batch
	return json.Marshal(struct {
		plain
		LastCreatedAt jsontime.Time `json:"last_created_at"`
	}{plain(b), jsontime.Time(b.LastCreatedAt)})
}

// BatchPage is one page of the campaign listing.
type BatchPage struct {
	Batches []Batch
	// Next is the cursor of the next page; "" on the last page.
	Next string
}

// ListBatches lists a tenant's campaigns, the one with the latest message
// first, limit at most from cursor ("" for the first page). Campaigns whose
// records have all expired leave the listing as it meets them.
func (s *Store) ListBatches(ctx context.Context, tenant, cursor string, limit int) (BatchPage, error) {
	pos, err := parseCursor(cursor)
	if err != nil {
		return BatchPage{}, err
	}
	limit = min(max(limit, 1), MaxPage)
	var p BatchPage
	for scanned := 0; scanned < s.cfg.ScanBudget; {
		zs, more, err := s.entries(ctx, batchesKey(tenant), allScores(), pos, limit)
		if err != nil {
			return BatchPage{}, fmt.Errorf("list batches: %w", err)
		}
		if len(zs) == 0 {
			return p, nil
		}
		pipe := s.rdb.Pipeline()
		exists := make([]*redis.IntCmd, len(zs))
		for i, z := range zs {
			id, _ := z.Member.(string)
			exists[i] = pipe.Exists(ctx, batchKey(tenant, id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return BatchPage{}, fmt.Errorf("list batches: %w", err)
		}
		var stale []any
		for i, z := range zs {
			id, _ := z.Member.(string)
			pos = &position{score: int64(z.Score), id: id}
			if exists[i].Val() == 0 {
				stale = append(stale, id)
				continue
			}
			p.Batches = append(p.Batches, Batch{ID: id, LastCreatedAt: time.UnixMilli(int64(z.Score)).UTC()})
			if len(p.Batches) == limit {
				more = more || i < len(zs)-1
				break
			}
		}
		if len(stale) > 0 {
			// A failure leaves the entries for the next listing to drop.
			_ = s.rdb.ZRem(ctx, batchesKey(tenant), stale...).Err()
		}
		if !more {
			return p, nil
		}
		if len(p.Batches) == limit {
			break
		}
		scanned += len(zs)
	}
	p.Next = pos.cursor()
	return p, nil
}
