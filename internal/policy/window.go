package policy

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// WindowLength is WhatsApp's customer service window: after a user's
// message, the business may send them anything for this long.
const WindowLength = 24 * time.Hour

// WindowPolicy is how chatq enforces the 24h window (CHATQ_WINDOW_POLICY).
type WindowPolicy string

// The window policies.
const (
	// WindowLearn refuses a free-form message to a recipient whose window
	// chatq knows to be closed: a send failed for it since the user last
	// wrote, or the user's last message is more than 24h old.
	WindowLearn WindowPolicy = "learn"
	// WindowStrict refuses a free-form message unless chatq saw the user
	// write within the last 24h.
	WindowStrict WindowPolicy = "strict"
	// WindowOff never refuses.
	WindowOff WindowPolicy = "off"
)

// Window is what chatq knows of one recipient's 24h window.
type Window struct {
	// LastInbound is when the user last wrote, zero if chatq never saw it.
	LastInbound time.Time `json:"last_inbound,omitzero"`
	// ClosedAt is when a send last failed because the window was closed,
	// zero if none did.
	ClosedAt time.Time `json:"closed_at,omitzero"`
}

// Open reports whether chatq saw the user write within the last 24h, and
// no send failed for a closed window since.
func (w Window) Open(now time.Time) bool {
	return !w.LastInbound.IsZero() && now.Sub(w.LastInbound) < WindowLength && !w.ClosedAt.After(w.LastInbound)
}

// KnownClosed reports whether chatq knows the window to be closed: a send
// failed for it after the user last wrote, or the user's last message is
// more than 24h old.
func (w Window) KnownClosed(now time.Time) bool {
	return w.ClosedAt.After(w.LastInbound) || (!w.LastInbound.IsZero() && now.Sub(w.LastInbound) >= WindowLength)
}

// Allows reports whether the policy lets a free-form message through to a
// recipient with window w. Templates are always let through.
func (p WindowPolicy) Allows(w Window, now time.Time) bool {
	switch p {
	case WindowOff:
		return true
	case WindowStrict:
		return w.Open(now)
	default:
		return !w.KnownClosed(now)
	}
}

// Windows keeps one sender's windows with its recipients in Redis, one
// small hash per recipient (ms of the last inbound message and of the last
// closed-window failure): a user who writes to one business number opens
// that number's window only. The environment's sender keeps the keys of a
// single-sender deployment, chatq:win:{recipient}; another sender's carry
// its number as hash tag, chatq:win:{sender}:recipient.
type Windows struct {
	rdb redis.UniversalClient
	ttl time.Duration
	// sender is the number whose windows these are, "" for the
	// environment's sender.
	sender string
}

func (ws *Windows) key(destination string) string {
	if ws.sender == "" {
		return "chatq:win:{" + Normalize(destination) + "}"
	}
	return "chatq:win:{" + ws.sender + "}:" + Normalize(destination)
}

// markScript sets a time field if it moves it forward: webhooks arrive out
// of order, and an old one must not undo a newer one.
var markScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`)

// Opened records that the user wrote at at: their window is open for 24h
// from then.
func (ws *Windows) Opened(ctx context.Context, destination string, at time.Time) error {
	return ws.mark(ctx, destination, "in", at)
}

// Closed records that a send to the user failed at at because their
// window is closed; it stays closed until they write again.
func (ws *Windows) Closed(ctx context.Context, destination string, at time.Time) error {
	return ws.mark(ctx, destination, "cl", at)
}

func (ws *Windows) mark(ctx context.Context, destination, field string, at time.Time) error {
	if err := markScript.Run(ctx, ws.rdb, []string{ws.key(destination)}, field, at.UnixMilli(), ws.ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("record window of %s: %w", destination, err)
	}
	return nil
}

// Get returns what chatq knows of destination's window.
func (ws *Windows) Get(ctx context.Context, destination string) (Window, error) {
	got, err := ws.GetMany(ctx, []string{destination})
	if err != nil {
		return Window{}, err
	}
	return got[0], nil
}

// GetMany returns the windows of destinations in one round trip.
func (ws *Windows) GetMany(ctx context.Context, destinations []string) ([]Window, error) {
	out := make([]Window, len(destinations))
	if len(destinations) == 0 {
		return out, nil
	}
	pipe := ws.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(destinations))
	for i, d := range destinations {
		cmds[i] = ws.queue(ctx, pipe, d)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read windows: %w", err)
	}
	for i, c := range cmds {
		out[i] = parseWindow(c)
	}
	return out, nil
}

// queue queues the read of destination's window on pipe; parse the
// answer with parseWindow once the pipeline ran.
func (ws *Windows) queue(ctx context.Context, pipe redis.Pipeliner, destination string) *redis.SliceCmd {
	return pipe.HMGet(ctx, ws.key(destination), "in", "cl")
}

// Queue queues the read of destination's window on pipe, so that a caller
// reads several senders' windows, and state of its own, in one round trip;
// the returned func gives the window once the pipeline ran.
func (ws *Windows) Queue(ctx context.Context, pipe redis.Pipeliner, destination string) func() Window {
	c := ws.queue(ctx, pipe, destination)
	return func() Window { return parseWindow(c) }
}

func parseWindow(c *redis.SliceCmd) Window {
	v := c.Val()
	if len(v) != 2 {
		return Window{}
	}
	return Window{LastInbound: msTime(v[0]), ClosedAt: msTime(v[1])}
}

func msTime(v any) time.Time {
	s, ok := v.(string)
	if !ok {
		return time.Time{}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}
