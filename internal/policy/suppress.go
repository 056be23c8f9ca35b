package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// suppressedKey is the suppression list: one hash, destination -> JSON.
// consentKey holds, per destination, the unix milliseconds of the last
// opt-out or opt-in applied to it (a user event, an opt-out learned from a
// failure, an operator's remove), so that an older one arriving late
// changes nothing. Its hash tag is the list's own key name, which puts it
// on the list's cluster slot: one script updates both.
const (
	suppressedKey = "chatq:suppressed"
	consentKey    = "{chatq:suppressed}:consent"
	// defaultTenant is the tenant of the messages sent without a tenant
	// key (tenants.Default: tenants imports enqueue, which imports this
	// package), whose
	// list the keys above hold.
	defaultTenant = "default"
)

// consentScript applies an opt-out or an opt-in of a user to the list, by
// the event's own time, in one atomic step. An event older than the last
// one applied to that destination changes nothing ('stale'). An operator's
// suppression is never replaced nor lifted here ('operator'): only the
// operator's remove lifts it.
//
// KEYS[1] the list, KEYS[2] the consent times
// ARGV[1] destination, ARGV[2] 'out' or 'in', ARGV[3] the event's unix ms,
// ARGV[4] the entry to write for 'out'
var consentScript = redis.NewScript(`
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local at = tonumber(ARGV[3])
if at < last then return 'stale' end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).source == 'operator' then return 'operator' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[2] == 'out' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
elseif cur then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 'applied'`)

// removeScript is the operator's remove: it lifts any entry and records
// its time as the last change, so that no opt-out sent before it brings
// the entry back. It returns 1 when there was an entry.
var removeScript = redis.NewScript(`
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return redis.call('HDEL', KEYS[1], ARGV[1])`)

// Consent says what an opt-out or opt-in did to the list.
type Consent string

// The outcomes of an opt-out or opt-in.
const (
	// ConsentApplied: the list now says what the event said.
	ConsentApplied Consent = "applied"
	// ConsentStale: an event newer than this one was applied already, and
	// stands.
	ConsentStale Consent = "stale"
	// ConsentOperator: an operator suppressed the user, and only the
	// operator's remove lifts that.
	ConsentOperator Consent = "operator"
)

// Suppression sources.
const (
	SourceUserEvent = "user-event" // ChatArchitect's opted-out event
	SourceWebhook   = "webhook"    // a failed delivery event with an opt-out code
	SourceSend      = "send"       // a send refused with an opt-out code
	SourceOperator  = "operator"   // PUT /v1/suppressions, chatq suppressions add
)

// Suppression is a recipient chatq does not message.
type Suppression struct {
	Destination string `json:"destination"`
	// Reason says why, in words.
	Reason string `json:"reason"`
	// Code is the failure code that caused it, if one did.
	Code string `json:"code,omitempty"`
	// Source is one of the Source constants.
	Source string    `json:"source"`
	At     time.Time `json:"at"`
}

// MarshalJSON writes at as every timestamp of chatq's JSON.
func (s Suppression) MarshalJSON() ([]byte, error) {
	type plain Suppression
	return json.Marshal(struct {
		plain
		At jsontime.Time `json:"at"`
	}{plain(s), jsontime.Time(s.At)})
}

// Suppressions is the suppression list in Redis.
type Suppressions struct {
	rdb redis.UniversalClient
	now func() time.Time
	// list and consent are the keys of the tenant's list (see
	// suppressedKey).
	list, consentTimes string
}

// newSuppressions returns the suppression list of tenant: tenant default
// (or "") keeps the list's key of before tenants; another tenant's keys
// carry its name as their hash tag.
func newSuppressions(rdb redis.UniversalClient, now func() time.Time, tenant string) *Suppressions {
	if tenant == "" || tenant == defaultTenant {
		return &Suppressions{rdb: rdb, now: now, list: suppressedKey, consentTimes: consentKey}
	}
	return &Suppressions{rdb: rdb, now: now, list: suppressedKey + ":{" + tenant + "}", consentTimes: suppressedKey + ":{" + tenant + "}:consent"}
}

// Normalize is the form destinations take on the list: without a leading
// "+", as ChatArchitect's webhooks write them.
func Normalize(destination string) string {
	return strings.TrimPrefix(strings.TrimSpace(destination), "+")
}

// Add puts s.Destination on the list, replacing any earlier entry: the
// operator's suppression (SourceOperator), which only Remove lifts. What
// users say goes through OptOut and OptIn, in the order of their own time.
func (l *Suppressions) Add(ctx context.Context, s Suppression) error {
	s, b, err := l.entry(s)
	if err != nil {
		return err
	}
	if err := l.rdb.HSet(ctx, l.list, s.Destination, b).Err(); err != nil {
		return fmt.Errorf("suppress %s: %w", s.Destination, err)
	}
	return nil
}

// OptOut puts s.Destination on the list for what the user said or a
// failure showed at s.At, unless something newer was applied already or an
// operator's suppression stands.
func (l *Suppressions) OptOut(ctx context.Context, s Suppression) (Consent, error) {
	s, b, err := l.entry(s)
	if err != nil {
		return "", err
	}
	return l.consent(ctx, s.Destination, "out", s.At, b)
}

// OptIn takes destination off the list for the user's opt-in at at,
// unless something newer was applied already or an operator suppressed
// them.
func (l *Suppressions) OptIn(ctx context.Context, destination string, at time.Time) (Consent, error) {
	return l.consent(ctx, Normalize(destination), "in", at, nil)
}

func (l *Suppressions) consent(ctx context.Context, dest, kind string, at time.Time, entry []byte) (Consent, error) {
	res, err := consentScript.Run(ctx, l.rdb, []string{l.list, l.consentTimes}, dest, kind, at.UnixMilli(), entry).Text()
	if err != nil {
		return "", fmt.Errorf("apply opt-%s of %s: %w", kind, dest, err)
	}
	return Consent(res), nil
}

// entry normalizes s and encodes it.
func (l *Suppressions) entry(s Suppression) (Suppression, []byte, error) {
	s.Destination = Normalize(s.Destination)
	if s.At.IsZero() {
		s.At = l.now()
	}
	s.At = s.At.UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return s, nil, fmt.Errorf("suppress %s: %w", s.Destination, err)
	}
	return s, b, nil
}

// Remove is the operator's remove: it takes destination off the list,
// whoever put it there, and reports whether it was there. An opt-out sent
// before it and delivered after does not bring it back.
func (l *Suppressions) Remove(ctx context.Context, destination string) (bool, error) {
	n, err := removeScript.Run(ctx, l.rdb, []string{l.list, l.consentTimes}, Normalize(destination), l.now().UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("unsuppress %s: %w", destination, err)
	}
	return n > 0, nil
}

// Get returns destination's entry, or nil when it is not suppressed.
func (l *Suppressions) Get(ctx context.Context, destination string) (*Suppression, error) {
	got, err := l.GetMany(ctx, []string{destination})
	if err != nil {
		return nil, err
	}
	return got[0], nil
}

// GetMany returns the entries of destinations in one round trip, nil for
// those not suppressed.
func (l *Suppressions) GetMany(ctx context.Context, destinations []string) ([]*Suppression, error) {
	pipe := l.rdb.Pipeline()
	got := l.queueMany(ctx, pipe, destinations)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read suppressions: %w", err)
	}
	return got()
}

// queueMany queues on pipe the read of the entries of destinations; the
// returned func gives them once pipe ran, nil for those not suppressed.
func (l *Suppressions) queueMany(ctx context.Context, pipe redis.Pipeliner, destinations []string) func() ([]*Suppression, error) {
	out := make([]*Suppression, len(destinations))
	if len(destinations) == 0 {
		return func() ([]*Suppression, error) { return out, nil }
	}
	fields := make([]string, len(destinations))
	for i, d := range destinations {
		fields[i] = Normalize(d)
	}
	cmd := pipe.HMGet(ctx, l.list, fields...)
	return func() ([]*Suppression, error) {
		vals, err := cmd.Result()
		if err != nil {
			return nil, fmt.Errorf("read suppressions: %w", err)
		}
		for i, v := range vals {
			if out[i], err = parseSuppression(fields[i], v); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// queueGet queues the read of destination's entry on pipe; parse the
// answer with parseSuppression.
func (l *Suppressions) queueGet(ctx context.Context, pipe redis.Pipeliner, destination string) *redis.SliceCmd {
	return pipe.HMGet(ctx, l.list, Normalize(destination))
}

// parseSuppression reads the entry of field (a normalized destination)
// from its HMGET answer: nil when it is not suppressed.
func parseSuppression(field string, v any) (*Suppression, error) {
	s, ok := v.(string)
	if !ok {
		return nil, nil
	}
	out := new(Suppression)
	if err := json.Unmarshal([]byte(s), out); err != nil {
		return nil, fmt.Errorf("read suppression of %s: %w", field, err)
	}
	return out, nil
}

// List returns a page of the list, of about count entries, starting at
// cursor (0 for the first page), and the cursor of the next page (0 after
// the last). Entries come in no particular order.
func (l *Suppressions) List(ctx context.Context, cursor uint64, count int64) ([]Suppression, uint64, error) {
	kv, next, err := l.rdb.HScan(ctx, l.list, cursor, "", count).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list suppressions: %w", err)
	}
	out := make([]Suppression, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		var s Suppression
		if err := json.Unmarshal([]byte(kv[i+1]), &s); err != nil {
			return nil, 0, fmt.Errorf("list suppressions: %s: %w", kv[i], err)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Suppression) int { return strings.Compare(a.Destination, b.Destination) })
	return out, next, nil
}

// ErrNotSuppressed means the destination is not on the suppression list.
var ErrNotSuppressed = errors.New("destination is not suppressed")
