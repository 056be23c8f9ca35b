package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// circuitKey holds the circuit breaker's state while it is open; it does
// not exist while the circuit is closed.
const circuitKey = "chatq:circuit"

// The circuit breaker's states, as CircuitState.State says them.
const (
	CircuitClosed = "closed"
	CircuitOpen   = "open"
)

var (
	// openScript opens the circuit unless it is open already; an
	// operator's pause makes an open circuit manual (the probe leaves it
	// alone) and takes over its reason.
	openScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'manual', '1', 'reason', ARGV[1]) end
  return 0
end
redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'code', ARGV[2], 'message_id', ARGV[3], 'manual', ARGV[4],
  'since', string.format('%.0f', now), 'probe_at', string.format('%.0f', now + tonumber(ARGV[5])), 'probes', 0)
return 1`)
	// closeScript closes the circuit; with ARGV[1] = "auto" it leaves a
	// manual pause alone and answers -1.
	closeScript = redis.NewScript(`
if ARGV[1] == 'auto' and redis.call('HGET', KEYS[1], 'manual') == '1' then return -1 end
return redis.call('DEL', KEYS[1])`)
	// claimProbeScript lets one worker at a time probe an open automatic
	// circuit whose next probe is due, for up to ARGV[1] ms.
	claimProbeScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'manual', 'probe_at', 'lock')
if not h[2] or h[1] == '1' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(h[2]) or (h[3] and now < tonumber(h[3])) then return 0 end
redis.call('HSET', KEYS[1], 'lock', string.format('%.0f', now + tonumber(ARGV[1])))
return 1`)
	// probeFailedScript schedules the next probe: ARGV[1] ms doubled for
	// each failed probe, at most ARGV[2] ms.
	probeFailedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'probes', 1)
local delay = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) * 2 ^ n)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'probe_at', string.format('%.0f', now + delay))
redis.call('HDEL', KEYS[1], 'lock')
return delay`)
)

// CircuitState is the circuit breaker's state, as /readyz shows it.
type CircuitState struct {
	// State is CircuitClosed (sending) or CircuitOpen (sending paused).
	State string `json:"state"`
	// Reason says why the circuit opened: the upstream's answer, or the
	// operator's words.
	Reason string `json:"reason,omitempty"`
	// Code is the upstream's error code ("http_401", "131031").
	Code string `json:"code,omitempty"`
	// MessageID is the message whose send opened the circuit.
	MessageID string `json:"message_id,omitempty"`
	// Manual is true when an operator paused sending: only a resume
	// closes the circuit then.
	Manual bool `json:"manual,omitempty"`
	// Since is when the circuit opened.
	Since *time.Time `json:"since,omitempty"`
	// NextProbe is when a worker will next check whether the upstream
	// accepts the account again (automatic openings only).
	NextProbe *time.Time `json:"next_probe,omitempty"`
	// FailedProbes counts the probes that failed since the circuit opened.
	FailedProbes int `json:"failed_probes,omitempty"`
}

// MarshalJSON writes the times as every timestamp of chatq's JSON.
func (s CircuitState) MarshalJSON() ([]byte, error) {
	type plain CircuitState
	return json.Marshal(struct {
		plain
		Since     *jsontime.Time `json:"since,omitempty"`
		NextProbe *jsontime.Time `json:"next_probe,omitempty"`
	}{plain(s), jsontime.Ptr(s.Since), jsontime.Ptr(s.NextProbe)})
}

// IsOpen reports whether sending is paused.
func (s CircuitState) IsOpen() bool { return s.State == CircuitOpen }

// Trip is what opens the circuit.
type Trip struct {
	// Reason says why, for the logs, /readyz and the operator.
	Reason string
	// Code is the upstream's error code, if any.
	Code string
	// MessageID is the message whose send failed, if any.
	MessageID string
	// Manual marks an operator's pause.
	Manual bool
	// FirstProbe is how long after opening the first probe is due.
	FirstProbe time.Duration
}

// Circuit is the circuit breaker's state in Redis, shared by every worker
// and by the API. It only keeps the state; pausing the queues is the
// worker's part.
type Circuit struct {
	rdb redis.UniversalClient
}

// NewCircuit returns the circuit breaker's state on rdb.
func NewCircuit(rdb redis.UniversalClient) *Circuit { return &Circuit{rdb: rdb} }

// State returns the current state.
func (c *Circuit) State(ctx context.Context) (CircuitState, error) {
	h, err := c.rdb.HGetAll(ctx, circuitKey).Result()
	if err != nil {
		return CircuitState{}, fmt.Errorf("circuit state: %w", err)
	}
	if len(h) == 0 {
		return CircuitState{State: CircuitClosed}, nil
	}
	st := CircuitState{
		State:     CircuitOpen,
		Reason:    h["reason"],
		Code:      h["code"],
		MessageID: h["message_id"],
		Manual:    h["manual"] == "1",
		Since:     millisTime(h["since"]),
	}
	if !st.Manual {
		st.NextProbe = millisTime(h["probe_at"])
		st.FailedProbes, _ = strconv.Atoi(h["probes"])
	}
	return st, nil
}

// Open opens the circuit and reports whether this call opened it (false:
// it was open already; an operator's Trip then makes it manual).
func (c *Circuit) Open(ctx context.Context, t Trip) (bool, error) {
	manual := "0"
	if t.Manual {
		manual = "1"
	}
	n, err := openScript.Run(ctx, c.rdb, []string{circuitKey}, t.Reason, t.Code, t.MessageID, manual, t.FirstProbe.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("open circuit: %w", err)
	}
	return n == 1, nil
}

// ErrManual is Close's answer to a probe that would close a circuit an
// operator opened.
var ErrManual = errors.New("the circuit was opened by an operator")

// Close closes the circuit and reports whether it was open. With auto set
// (a successful probe) it leaves an operator's pause open and returns
// ErrManual.
func (c *Circuit) Close(ctx context.Context, auto bool) (bool, error) {
	mode := "any"
	if auto {
		mode = "auto"
	}
	n, err := closeScript.Run(ctx, c.rdb, []string{circuitKey}, mode).Int()
	if err != nil {
		return false, fmt.Errorf("close circuit: %w", err)
	}
	if n < 0 {
		return false, fmt.Errorf("close circuit: %w", ErrManual)
	}
	return n == 1, nil
}

// ClaimProbe reports whether the caller may probe the upstream now: the
// circuit is open, not by an operator, its next probe is due, and no other
// worker has claimed it within lease.
func (c *Circuit) ClaimProbe(ctx context.Context, lease time.Duration) (bool, error) {
	n, err := claimProbeScript.Run(ctx, c.rdb, []string{circuitKey}, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("claim probe: %w", err)
	}
	return n == 1, nil
}

// ProbeFailed schedules the next probe, first doubled for each failure and
// at most maxDelay, and returns how long until it.
func (c *Circuit) ProbeFailed(ctx context.Context, first, maxDelay time.Duration) (time.Duration, error) {
	ms, err := probeFailedScript.Run(ctx, c.rdb, []string{circuitKey}, first.Milliseconds(), maxDelay.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("schedule probe: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func millisTime(s string) *time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}
