package ratelimit

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The states of a sender as flow control sees it, in the words of
// /readyz and GET /v1/senders.
const (
	StateActive      = "active"
	StateCircuitOpen = "circuit_open"
	StateHalfOpen    = "half_open"
	StateThrottled   = "throttled"
)

// SenderStatus is one sender's flow-control state.
type SenderStatus struct {
	// State is StateActive, StateCircuitOpen, StateHalfOpen or
	// StateThrottled.
	State string `json:"state"`
	// Until is when the upstream's Retry-After ends, while it holds the
	// sender back.
	Until *time.Time `json:"until,omitempty"`
	// Reason is what opened the circuit or throttled the sender.
	Reason string `json:"reason,omitempty"`
	// Code is the upstream's error code of it.
	Code string `json:"code,omitempty"`
}

// States reads the senders' circuit breakers and throttles, for the
// processes that show them (the API) and know no flow of their own.
type States struct {
	rdb redis.UniversalClient
	// env is the number of the sender of the CHATQ_CA_ variables, whose
	// circuit is the deployment's.
	env string
}

// NewStates returns the states kept on rdb; env is the environment's
// sender's number ("" without one).
func NewStates(rdb redis.UniversalClient, env string) *States {
	return &States{rdb: rdb, env: env}
}

// OfAll returns the states of the sender numbers, in their order, read
// in one round trip however many they are. An operator's pause of every
// sender shows as an open circuit of each.
func (s *States) OfAll(ctx context.Context, numbers []string) ([]SenderStatus, error) {
	if len(numbers) == 0 {
		return nil, nil
	}
	var deployment *redis.MapStringStringCmd
	circuits := make([]*redis.MapStringStringCmd, len(numbers))
	states := make([]*redis.Cmd, len(numbers))
	err := readPipelined(ctx, s.rdb, func(pipe redis.Pipeliner) {
		deployment = pipe.HGetAll(ctx, circuitKey)
		for i, n := range numbers {
			if n != s.env {
				circuits[i] = pipe.HGetAll(ctx, senderCircuitKey(n))
			}
			states[i] = queueState(ctx, pipe, keyPrefix(cmp.Or(n, defaultSender))+"sender")
		}
	})
	if err != nil {
		return nil, fmt.Errorf("states of %d senders: %w", len(numbers), err)
	}
	all := circuitStateOf(deployment.Val())
	now := time.Now()
	out := make([]SenderStatus, len(numbers))
	for i, n := range numbers {
		cs := all
		if circuits[i] != nil && !cs.Manual {
			cs = circuitStateOf(circuits[i].Val())
		}
		switch cs.State {
		case CircuitOpen:
			out[i] = SenderStatus{State: StateCircuitOpen, Reason: cs.Reason, Code: cs.Code}
			continue
		case CircuitHalfOpen:
			out[i] = SenderStatus{State: StateHalfOpen, Reason: cs.Reason, Code: cs.Code}
			continue
		}
		st, err := stateAnswer(states[i])
		if err != nil {
			return nil, fmt.Errorf("state of %s: %w", n, err)
		}
		out[i] = SenderStatus{State: StateActive}
		if st.Blocked > 0 {
			until := now.Add(st.Blocked).UTC()
			out[i] = SenderStatus{State: StateThrottled, Until: &until, Reason: st.Reason, Code: st.Code}
		}
	}
	return out, nil
}

// States is OfAll in GET /v1/senders's words: StateCircuitOpen (a
// half-open circuit too), StateThrottled, or "" when nothing holds the
// sender back.
func (s *States) States(ctx context.Context, numbers []string) ([]string, error) {
	all, err := s.OfAll(ctx, numbers)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(all))
	for i, st := range all {
		switch st.State {
		case StateHalfOpen:
			out[i] = StateCircuitOpen
		case StateActive:
		default:
			out[i] = st.State
		}
	}
	return out, nil
}
