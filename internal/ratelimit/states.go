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

// Of returns the state of the sender number. An operator's pause of every
// sender shows as an open circuit of each.
func (s *States) Of(ctx context.Context, number string) (SenderStatus, error) {
	cs, err := NewCircuit(s.rdb).State(ctx)
	if err != nil {
		return SenderStatus{}, fmt.Errorf("state of %s: %w", number, err)
	}
	if number != s.env && !cs.Manual {
		if cs, err = NewSenderCircuit(s.rdb, number).State(ctx); err != nil {
			return SenderStatus{}, fmt.Errorf("state of %s: %w", number, err)
		}
	}
	switch cs.State {
	case CircuitOpen:
		return SenderStatus{State: StateCircuitOpen, Reason: cs.Reason, Code: cs.Code}, nil
	case CircuitHalfOpen:
		return SenderStatus{State: StateHalfOpen, Reason: cs.Reason, Code: cs.Code}, nil
	}
	st, err := senderStateOf(ctx, s.rdb, keyPrefix(cmp.Or(number, defaultSender))+"sender", 0, defaultThrottleRecovery)
	if err != nil {
		return SenderStatus{}, fmt.Errorf("state of %s: %w", number, err)
	}
	if st.Blocked > 0 {
		until := time.Now().Add(st.Blocked).UTC()
		return SenderStatus{State: StateThrottled, Until: &until, Reason: st.Reason, Code: st.Code}, nil
	}
	return SenderStatus{State: StateActive}, nil
}

// State is Of in GET /v1/senders's words: StateCircuitOpen (a half-open
// circuit too), StateThrottled, or "" when nothing holds the sender back.
func (s *States) State(ctx context.Context, number string) (string, error) {
	st, err := s.Of(ctx, number)
	switch {
	case err != nil:
		return "", err
	case st.State == StateHalfOpen:
		return StateCircuitOpen, nil
	case st.State == StateActive:
		return "", nil
	}
	return st.State, nil
}
