package sandbox

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Stats counts what the sandbox has seen since it started or was last
// reset. The send counters are about POST /whatsappmessage only.
type Stats struct {
	// Requests counts every call to /whatsappmessage, answered or not.
	Requests int64 `json:"requests"`
	// Accepted counts 200 answers: messages in the log.
	Accepted int64 `json:"accepted"`
	// Rejected counts 4xx answers other than 429 (bad credentials, invalid
	// requests, destination 0002).
	Rejected int64 `json:"rejected"`
	// Throttled counts 429 answers.
	Throttled int64 `json:"throttled"`
	// ServerErrors counts 5xx answers.
	ServerErrors int64 `json:"server_errors"`
	// Hung counts requests held until the client gave up (destination 0007).
	Hung int64 `json:"hung"`
	// Duplicates counts accepted messages whose destination and payload
	// had been accepted before.
	Duplicates int64 `json:"duplicates"`
	// WebhooksSent counts webhook POSTs answered with a 2xx.
	WebhooksSent int64 `json:"webhooks_sent"`
	// WebhooksFailed counts webhooks given up after every retry failed.
	WebhooksFailed int64 `json:"webhooks_failed"`
	// WebhooksRetried counts webhook POSTs that failed and were retried.
	WebhooksRetried int64 `json:"webhooks_retried"`
	// WebhooksDropped counts webhooks never sent because the backlog was
	// full.
	WebhooksDropped int64 `json:"webhooks_dropped"`
	// WebhooksDuplicated counts the extra copies scheduled by the
	// duplicate_ratio knob.
	WebhooksDuplicated int64 `json:"webhooks_duplicated"`
	// WebhooksUnrouted counts webhooks not sent because no webhook URL was
	// registered.
	WebhooksUnrouted int64 `json:"webhooks_unrouted"`
	// WebhooksPending counts messages and events whose webhooks are still
	// to be sent.
	WebhooksPending int64 `json:"webhooks_pending"`
}

// stats are the live counters behind Stats.
type stats struct {
	requests, accepted, rejected, throttled, serverErrors, hung, duplicates atomic.Int64

	webhooksSent, webhooksFailed, webhooksRetried, webhooksDropped atomic.Int64
	webhooksDuplicated, webhooksUnrouted                           atomic.Int64
}

func (s *stats) all() []*atomic.Int64 {
	return []*atomic.Int64{
		&s.requests, &s.accepted, &s.rejected, &s.throttled, &s.serverErrors, &s.hung, &s.duplicates,
		&s.webhooksSent, &s.webhooksFailed, &s.webhooksRetried, &s.webhooksDropped,
		&s.webhooksDuplicated, &s.webhooksUnrouted,
	}
}

func (s *stats) reset() {
	for _, c := range s.all() {
		c.Store(0)
	}
}

func (s *stats) snapshot(pending int64) Stats {
	return Stats{
		Requests:           s.requests.Load(),
		Accepted:           s.accepted.Load(),
		Rejected:           s.rejected.Load(),
		Throttled:          s.throttled.Load(),
		ServerErrors:       s.serverErrors.Load(),
		Hung:               s.hung.Load(),
		Duplicates:         s.duplicates.Load(),
		WebhooksSent:       s.webhooksSent.Load(),
		WebhooksFailed:     s.webhooksFailed.Load(),
		WebhooksRetried:    s.webhooksRetried.Load(),
		WebhooksDropped:    s.webhooksDropped.Load(),
		WebhooksDuplicated: s.webhooksDuplicated.Load(),
		WebhooksUnrouted:   s.webhooksUnrouted.Load(),
		WebhooksPending:    pending,
	}
}

// logChunkSize is the size of the byte arenas holding logged destinations
// and payloads.
const logChunkSize = 4 << 20

// messageLog is the append-only log of accepted messages. Benchmarks push
// millions of messages through the sandbox, so it stores them compactly:
// destination and payload bytes are packed into large arenas, and the
// records that point into them hold no Go pointers, which keeps the garbage
// collector from scanning them. Duplicates are found by a 64-bit hash of
// destination and payload, not by keeping copies.
//
// Nothing once appended is ever written again, so a snapshot (the slices as
// they were under the lock) can be read without the lock while appends go
// on.
type messageLog struct {
	seed maphash.Seed

	mu      sync.Mutex
	records []record
	// chunks are allocated at their full length and their headers never
	// change, so that a snapshot may read them while add fills the last
	// one from used on.
	chunks [][]byte
	used   int
	seen   map[uint64]struct{}
	// senders are the (app, source) pairs that sent, each once, which a
	// record points at: a few per sandbox, however many messages.
	senders []origin
	sender  map[origin]uint32
}

// origin is who sent a message: the app of its credentials and the
// source its body named ("" when none).
type origin struct{ app, source string }

// record is one accepted message; its destination and payload are
// chunks[chunk][off : off+size], the first destLen bytes the destination.
type record struct {
	id      uuid.UUID
	at      int64 // unix nanoseconds
	chunk   uint32
	off     uint32
	size    uint32
	destLen uint8
	sender  uint32 // index into messageLog.senders
}

func newMessageLog() *messageLog {
	return &messageLog{seed: maphash.MakeSeed(), seen: make(map[uint64]struct{}), sender: map[origin]uint32{}}
}

// add logs an accepted message and reports whether the same destination and
// payload were logged before. number must be at most 255 bytes (it is a
// validated phone number).
func (l *messageLog) add(id uuid.UUID, at time.Time, app, source, number string, payload []byte) (duplicate bool) {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(number)
	h.WriteByte(0)
	h.Write(payload)
	fp := h.Sum64()
	size := len(number) + len(payload)

	l.mu.Lock()
	defer l.mu.Unlock()
	_, duplicate = l.seen[fp]
	if !duplicate {
		l.seen[fp] = struct{}{}
	}
	from := origin{app, source}
	who, ok := l.sender[from]
	if !ok {
		who = uint32(len(l.senders))
		l.senders = append(l.senders, from)
		l.sender[from] = who
	}
	last := len(l.chunks) - 1
	if last < 0 || len(l.chunks[last])-l.used < size {
		l.chunks = append(l.chunks, make([]byte, max(logChunkSize, size)))
		l.used = 0
		last++
	}
	off := l.used
	copy(l.chunks[last][off:], number)
	copy(l.chunks[last][off+len(number):], payload)
	l.used += size
	l.records = append(l.records, record{
		id:      id,
		at:      at.UnixNano(),
		chunk:   uint32(last),
		off:     uint32(off),
		size:    uint32(size),
		destLen: uint8(len(number)),
		sender:  who,
	})
	return duplicate
}

// snapshot returns the log as it is now; see messageLog.
func (l *messageLog) snapshot() ([]record, [][]byte, []origin) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.records[:len(l.records):len(l.records)], l.chunks[:len(l.chunks):len(l.chunks)], l.senders[:len(l.senders):len(l.senders)]
}

// reset empties the log. Snapshots taken before keep the old arenas alive
// until they are dropped.
func (l *messageLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = nil
	l.chunks = nil
	l.used = 0
	l.seen = make(map[uint64]struct{})
	l.senders = nil
	l.sender = map[origin]uint32{}
}

// entry returns the destination and payload of r.
func entry(chunks [][]byte, r *record) (number, payload []byte) {
	b := chunks[r.chunk][r.off : r.off+r.size]
	return b[:r.destLen], b[r.destLen:]
}

// destShards spreads the per-destination state over this many locks.
const destShards = 64

// window is how long a user's message keeps the 24h customer service window
// open.
const window = 24 * time.Hour

// Opt-out states of a destination.
const (
	optDefault int8 = iota // as the magic number says: out for 0006, in otherwise
	optOut
	optIn
)

// destState is what the sandbox remembers of one destination. Only the
// destinations that need it have one (the magic numbers with attempt
// counters, and users who wrote or opted in or out), so that a benchmark
// over millions of recipients stores nothing per recipient.
type destState struct {
	attempts   uint64
	windowFrom time.Time // when the user last wrote; zero if never
	opt        int8
}

// windowOpen reports whether the user wrote within the last 24 hours.
func (d destState) windowOpen(now time.Time) bool {
	return !d.windowFrom.IsZero() && now.Sub(d.windowFrom) < window
}

// destinations holds destState by phone number (without "+"), sharded so
// that concurrent sends rarely wait on one another.
type destinations struct {
	seed   maphash.Seed
	shards [destShards]destShard
}

type destShard struct {
	mu sync.Mutex
	m  map[string]destState
}

func newDestinations() *destinations {
	d := &destinations{seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].m = make(map[string]destState)
	}
	return d
}

func (d *destinations) shard(number string) *destShard {
	return &d.shards[maphash.String(d.seed, number)%destShards]
}

// get returns the state of number, the zero state if there is none.
func (d *destinations) get(number string) destState {
	sh := d.shard(number)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[number]
}

// update applies fn to the state of number and returns the result.
func (d *destinations) update(number string, fn func(*destState)) destState {
	sh := d.shard(number)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[number]
	fn(&st)
	sh.m[number] = st
	return st
}

// attempt counts one more attempt to number and returns its rank (1 for
// the first).
func (d *destinations) attempt(number string) uint64 {
	return d.update(number, func(st *destState) { st.attempts++ }).attempts
}

func (d *destinations) reset() {
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		sh.m = make(map[string]destState)
		sh.mu.Unlock()
	}
}
