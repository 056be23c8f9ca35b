package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/jsontime"
)

// ThrottleState is a sender that the upstream's Retry-After holds back, as
// /readyz shows it.
type ThrottleState struct {
	// Sender is the business number.
	Sender string `json:"sender"`
	// Until is when the Retry-After ends, at most CHATQ_MAX_RETRY_AFTER
	// after the refusal.
	Until time.Time `json:"until"`
	// Code and Reason are the upstream's answer that throttled it.
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// RateFactor is the share of its rate the sender may use once the
	// Retry-After has passed; it climbs back to 1.
	RateFactor float64 `json:"rate_factor"`
}

// MarshalJSON writes Until as every timestamp of chatq's JSON.
func (t ThrottleState) MarshalJSON() ([]byte, error) {
	type plain ThrottleState
	return json.Marshal(struct {
		plain
		Until jsontime.Time `json:"until"`
	}{plain(t), jsontime.Time(t.Until)})
}

// Throttles are the throttles of every sender, for the processes that
// know no sender of their own: the API's /readyz and chatq resume.
type Throttles struct {
	rdb redis.UniversalClient
}

// NewThrottles returns the throttles kept on rdb.
func NewThrottles(rdb redis.UniversalClient) *Throttles { return &Throttles{rdb: rdb} }

// List returns the senders that a Retry-After holds back now.
func (t *Throttles) List(ctx context.Context) ([]ThrottleState, error) {
	senders, err := t.rdb.SMembers(ctx, sendersKey).Result()
	if err != nil {
		return nil, fmt.Errorf("list throttles: %w", err)
	}
	states := make([]*redis.Cmd, len(senders))
	err = readPipelined(ctx, t.rdb, func(pipe redis.Pipeliner) {
		for i, s := range senders {
			states[i] = queueState(ctx, pipe, keyPrefix(s)+"sender")
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list throttles: %w", err)
	}
	now := time.Now()
	var out []ThrottleState
	for i, s := range senders {
		st, err := stateAnswer(states[i])
		if err != nil {
			return nil, fmt.Errorf("list throttles: %s: %w", s, err)
		}
		if st.Blocked <= 0 {
			continue
		}
		out = append(out, ThrottleState{Sender: s, Until: now.Add(st.Blocked).UTC(), Code: st.Code, Reason: st.Reason, RateFactor: st.Factor})
	}
	return out, nil
}

// Clear lifts every sender's throttle: the Retry-After, the lowered rate
// and the schedule pushed past them. It returns the senders a Retry-After
// held back.
func (t *Throttles) Clear(ctx context.Context) ([]string, error) {
	senders, err := t.rdb.SMembers(ctx, sendersKey).Result()
	if err != nil {
		return nil, fmt.Errorf("clear throttles: %w", err)
	}
	var held []string
	for _, s := range senders {
		n, err := unthrottleScript.Run(ctx, t.rdb, []string{keyPrefix(s) + "sender"}, 0).Int()
		if err != nil {
			return held, fmt.Errorf("clear throttle of %s: %w", s, err)
		}
		if n == 1 {
			held = append(held, s)
		}
	}
	return held, nil
}
