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
const suppressedKey = "chatq:suppressed"

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
}

// Normalize is the form destinations take on the list: without a leading
// "+", as ChatArchitect's webhooks write them.
func Normalize(destination string) string {
	return strings.TrimPrefix(strings.TrimSpace(destination), "+")
}

// Add puts s.Destination on the list, replacing any earlier entry.
func (l *Suppressions) Add(ctx context.Context, s Suppression) error {
	s.Destination = Normalize(s.Destination)
	if s.At.IsZero() {
		s.At = time.Now()
	}
	s.At = s.At.UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("suppress %s: %w", s.Destination, err)
	}
	if err := l.rdb.HSet(ctx, suppressedKey, s.Destination, b).Err(); err != nil {
		return fmt.Errorf("suppress %s: %w", s.Destination, err)
	}
	return nil
}

// Remove takes destination off the list; it reports whether it was there.
func (l *Suppressions) Remove(ctx context.Context, destination string) (bool, error) {
	n, err := l.rdb.HDel(ctx, suppressedKey, Normalize(destination)).Result()
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
	out := make([]*Suppression, len(destinations))
	if len(destinations) == 0 {
		return out, nil
	}
	fields := make([]string, len(destinations))
	for i, d := range destinations {
		fields[i] = Normalize(d)
	}
	vals, err := l.rdb.HMGet(ctx, suppressedKey, fields...).Result()
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

// queueGet queues the read of destination's entry on pipe; parse the
// answer with parseSuppression.
func queueGet(ctx context.Context, pipe redis.Pipeliner, destination string) *redis.SliceCmd {
	return pipe.HMGet(ctx, suppressedKey, Normalize(destination))
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
	kv, next, err := l.rdb.HScan(ctx, suppressedKey, cursor, "", count).Result()
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
