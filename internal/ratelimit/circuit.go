package ratelimit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// circuitKey holds the circuit breaker's state while it is open or
// half-open; it does not exist while the circuit is closed.
const circuitKey = "chatq:circuit"

// The circuit breaker's states, as CircuitState.State says them.
const (
	CircuitClosed = "closed"
	CircuitOpen   = "open"
	// CircuitHalfOpen: a probe succeeded, and exactly one real send, the
	// trial, may go to find out whether the upstream accepts messages again
	// (getHSM answers while sends still fail for balance or payment).
	CircuitHalfOpen = "half_open"
)

// The answers of ClaimTrial.
const (
	// TrialGranted: the caller's message is the trial; send it.
	TrialGranted = "granted"
	// TrialBusy: another message is the trial; wait for its outcome.
	TrialBusy = "busy"
	// TrialOpen: the circuit is open (or paused by an operator): hold.
	TrialOpen = "open"
	// TrialClosed: the circuit is closed: send.
	TrialClosed = "closed"
)

// The scripts take Redis's clock, shared by every worker, in milliseconds.
const clockMillis = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

var (
	// openScript opens the circuit. A closed circuit opens with its first
	// probe ARGV[5] ms away. A half-open one opens again, its trial having
	// failed (or another send), and keeps its probe count, so that the
	// wait before the next probe keeps doubling: ARGV[5] ms times two for
	// each failure, at most ARGV[6]. An open one stays as it is. An
	// operator's pause makes the circuit manual (the probe leaves it alone)
	// and takes over its reason. Returns 1 opened, 2 opened again, 0 open
	// already.
	openScript = redis.NewScript(clockMillis + `
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'manual', '1', 'reason', ARGV[1], 'state', 'open')
  redis.call('HDEL', KEYS[1], 'trial', 'trial_until')
  return 0
end
if state == 'half_open' then
  local n = redis.call('HINCRBY', KEYS[1], 'probes', 1)
  local delay = math.min(tonumber(ARGV[6]), tonumber(ARGV[5]) * 2 ^ n)
  redis.call('HSET', KEYS[1], 'state', 'open', 'reason', ARGV[1], 'code', ARGV[2], 'message_id', ARGV[3],
    'probe_at', string.format('%.0f', now + delay))
  redis.call('HDEL', KEYS[1], 'trial', 'trial_until', 'lock')
  return 2
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'open', 'reason', ARGV[1], 'code', ARGV[2], 'message_id', ARGV[3], 'manual', ARGV[4],
  'since', string.format('%.0f', now), 'probe_at', string.format('%.0f', now + tonumber(ARGV[5])), 'probes', 0)
return 1`)
	// closeScript closes the circuit. With ARGV[1] = "auto" it leaves a
	// manual pause alone and answers -1; with "trial" it closes only a
	// half-open circuit (a trial send was accepted) and answers 0 otherwise.
	closeScript = redis.NewScript(`
if ARGV[1] == 'auto' and redis.call('HGET', KEYS[1], 'manual') == '1' then return -1 end
if ARGV[1] == 'trial' and redis.call('HGET', KEYS[1], 'state') ~= 'half_open' then return 0 end
return redis.call('DEL', KEYS[1])`)
	// claimProbeScript lets one worker at a time probe an open automatic
	// circuit whose next probe is due, for up to ARGV[1] ms.
	claimProbeScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'manual', 'probe_at', 'lock', 'state')
if not h[2] or h[1] == '1' or h[4] == 'half_open' then return 0 end
` + clockMillis + `
if now < tonumber(h[2]) or (h[3] and now < tonumber(h[3])) then return 0 end
redis.call('HSET', KEYS[1], 'lock', string.format('%.0f', now + tonumber(ARGV[1])))
return 1`)
	// probeFailedScript schedules the next probe: ARGV[1] ms doubled for
	// each failed probe, at most ARGV[2] ms.
	probeFailedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'probes', 1)
local delay = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) * 2 ^ n)
` + clockMillis + `
redis.call('HSET', KEYS[1], 'probe_at', string.format('%.0f', now + delay))
redis.call('HDEL', KEYS[1], 'lock')
return delay`)
	// halfOpenScript half-opens an open automatic circuit after a
	// successful probe; the probe count stays. Returns 1 when it did, -1
	// for an operator's pause, 0 otherwise.
	halfOpenScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'manual', 'state')
if h[1] == '1' then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 or h[2] == 'half_open' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open')
redis.call('HDEL', KEYS[1], 'lock', 'trial', 'trial_until')
return 1`)
	// claimTrialScript makes message ARGV[1] the half-open circuit's one
	// trial send, for up to ARGV[2] ms, unless another message is.
	claimTrialScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'manual', 'trial', 'trial_until')
if redis.call('EXISTS', KEYS[1]) == 0 then return 'closed' end
if h[1] ~= 'half_open' or h[2] == '1' then return 'open' end
` + clockMillis + `
if h[3] and h[3] ~= ARGV[1] and now < tonumber(h[4]) then return 'busy' end
redis.call('HSET', KEYS[1], 'trial', ARGV[1], 'trial_until', string.format('%.0f', now + tonumber(ARGV[2])))
return 'granted'`)
	// releaseTrialScript ends message ARGV[1]'s trial without an answer
	// about the account (the message was not sent, or failed for a reason
	// of its own): the next message may be the trial.
	releaseTrialScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'trial') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'trial', 'trial_until')
return 1`)
)

// CircuitState is the circuit breaker's state, as /readyz shows it.
type CircuitState struct {
	// State is CircuitClosed (sending), CircuitOpen (sending paused) or
	// CircuitHalfOpen (one trial send at a time).
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
	// FailedProbes counts the probes and the trial sends that failed since
	// the circuit opened; the wait before the next probe doubles with each.
	FailedProbes int `json:"failed_probes,omitempty"`
	// Trial is the message sent as the half-open circuit's trial, if one
	// is on its way; TrialUntil is when its claim lapses.
	Trial      string     `json:"trial_message_id,omitempty"`
	TrialUntil *time.Time `json:"-"`
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

// IsOpen reports whether sending is paused: the circuit is open, or
// half-open and lets one trial send through at a time.
func (s CircuitState) IsOpen() bool { return s.State == CircuitOpen || s.State == CircuitHalfOpen }

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
	// MaxProbe caps the wait before the next probe when a half-open
	// circuit opens again: FirstProbe doubled for each failed probe or
	// trial.
	MaxProbe time.Duration
}

// Circuit is the circuit breaker's state in Redis, shared by every worker
// and by the API. It only keeps the state; pausing the queues is the
// worker's part.
type Circuit struct {
	rdb redis.UniversalClient
	key string
	// number is the stored sender whose circuit it is, "" for the
	// deployment's own.
	number string
}

// senderCircuitsKey lists the stored senders whose circuit ever opened,
// so that chatq resume, which knows no sender, closes them all.
const senderCircuitsKey = "chatq:circuit:senders"

// SenderCircuits returns the stored senders whose circuit ever opened.
func SenderCircuits(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	numbers, err := rdb.SMembers(ctx, senderCircuitsKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list the senders' circuits: %w", err)
	}
	return numbers, nil
}

// NewCircuit returns the circuit breaker's state on rdb: the
// deployment's own, which an operator's pause opens for every sender and
// which is the circuit of the sender of the CHATQ_CA_ variables.
func NewCircuit(rdb redis.UniversalClient) *Circuit { return &Circuit{rdb: rdb, key: circuitKey} }

// NewSenderCircuit returns the circuit breaker of one stored sender: an
// account-level refusal of its app opens it for its messages alone. Its
// key's hash tag is the number, as every key of the sender's.
func NewSenderCircuit(rdb redis.UniversalClient, number string) *Circuit {
	return &Circuit{rdb: rdb, key: senderCircuitKey(number), number: number}
}

// senderCircuitKey is the key of a stored sender's circuit breaker.
func senderCircuitKey(number string) string { return circuitKey + ":{" + number + "}" }

// State returns the current state.
func (c *Circuit) State(ctx context.Context) (CircuitState, error) {
	h, err := c.rdb.HGetAll(ctx, c.key).Result()
	if err != nil {
		return CircuitState{}, fmt.Errorf("circuit state: %w", err)
	}
	return circuitStateOf(h), nil
}

// circuitStateOf reads a circuit breaker's hash.
func circuitStateOf(h map[string]string) CircuitState {
	if len(h) == 0 {
		return CircuitState{State: CircuitClosed}
	}
	st := CircuitState{
		State:     cmp.Or(h["state"], CircuitOpen),
		Reason:    h["reason"],
		Code:      h["code"],
		MessageID: h["message_id"],
		Manual:    h["manual"] == "1",
		Since:     millisTime(h["since"]),
	}
	if !st.Manual {
		if st.State == CircuitOpen {
			st.NextProbe = millisTime(h["probe_at"])
		}
		st.FailedProbes, _ = strconv.Atoi(h["probes"])
		st.Trial, st.TrialUntil = h["trial"], millisTime(h["trial_until"])
	}
	return st
}

// Open opens the circuit and reports whether this call opened it, or
// opened a half-open one again (false: it was open already; an operator's
// Trip then makes it manual).
func (c *Circuit) Open(ctx context.Context, t Trip) (bool, error) {
	manual := "0"
	if t.Manual {
		manual = "1"
	}
	if c.number != "" {
		if err := c.rdb.SAdd(ctx, senderCircuitsKey, c.number).Err(); err != nil {
			return false, fmt.Errorf("open the circuit: list the sender: %w", err)
		}
	}
	n, err := openScript.Run(ctx, c.rdb, []string{c.key}, t.Reason, t.Code, t.MessageID, manual,
		t.FirstProbe.Milliseconds(), max(t.MaxProbe, t.FirstProbe).Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("open circuit: %w", err)
	}
	return n > 0, nil
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
	n, err := closeScript.Run(ctx, c.rdb, []string{c.key}, mode).Int()
	if err != nil {
		return false, fmt.Errorf("close circuit: %w", err)
	}
	if n < 0 {
		return false, fmt.Errorf("close circuit: %w", ErrManual)
	}
	return n == 1, nil
}

// HalfOpen half-opens an open automatic circuit after a successful probe,
// keeping its count of failures, and reports whether it did. An operator's
// pause stays, and answers ErrManual.
func (c *Circuit) HalfOpen(ctx context.Context) (bool, error) {
	n, err := halfOpenScript.Run(ctx, c.rdb, []string{c.key}).Int()
	if err != nil {
		return false, fmt.Errorf("half-open circuit: %w", err)
	}
	if n < 0 {
		return false, fmt.Errorf("half-open circuit: %w", ErrManual)
	}
	return n == 1, nil
}

// ClaimTrial asks, for message id about to be sent, what the circuit lets
// it do: TrialClosed (send), TrialOpen (hold), TrialBusy (another message
// is the half-open circuit's trial: wait for its outcome) or TrialGranted
// (this message is the trial, for up to lease).
func (c *Circuit) ClaimTrial(ctx context.Context, id string, lease time.Duration) (string, error) {
	ans, err := claimTrialScript.Run(ctx, c.rdb, []string{c.key}, id, lease.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("claim trial send: %w", err)
	}
	return ans, nil
}

// TrialAccepted closes a half-open circuit: a send was accepted. It
// reports whether it did.
func (c *Circuit) TrialAccepted(ctx context.Context) (bool, error) {
	n, err := closeScript.Run(ctx, c.rdb, []string{c.key}, "trial").Int()
	if err != nil {
		return false, fmt.Errorf("close circuit after a trial: %w", err)
	}
	return n == 1, nil
}

// ReleaseTrial ends message id's trial without an answer about the
// account, so that another message may be the trial, and reports whether
// id was the trial.
func (c *Circuit) ReleaseTrial(ctx context.Context, id string) (bool, error) {
	n, err := releaseTrialScript.Run(ctx, c.rdb, []string{c.key}, id).Int()
	if err != nil {
		return false, fmt.Errorf("release trial send: %w", err)
	}
	return n == 1, nil
}

// ClaimProbe reports whether the caller may probe the upstream now: the
// circuit is open, not by an operator, its next probe is due, and no other
// worker has claimed it within lease.
func (c *Circuit) ClaimProbe(ctx context.Context, lease time.Duration) (bool, error) {
	n, err := claimProbeScript.Run(ctx, c.rdb, []string{c.key}, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("claim probe: %w", err)
	}
	return n == 1, nil
}

// ProbeFailed schedules the next probe, first doubled for each failure and
// at most maxDelay, and returns how long until it.
func (c *Circuit) ProbeFailed(ctx context.Context, first, maxDelay time.Duration) (time.Duration, error) {
	ms, err := probeFailedScript.Run(ctx, c.rdb, []string{c.key}, first.Milliseconds(), maxDelay.Milliseconds()).Int64()
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
