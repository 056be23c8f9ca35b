package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/ratelimit"
)

// TestRecoveringRateDoesNotPushSlotsAway is a regression test: the burst
// tolerance was counted in slots of the throttled rate, so as the rate
// climbed back its tolerance shrank and the schedule that a throttle had
// set moved into the future. A sender idle past its Retry-After was then
// held for seconds, and storms of 429s (each lowering the rate again)
// stalled sending almost entirely.
func TestRecoveringRateDoesNotPushSlotsAway(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{Rate: 100, Burst: 100, ThrottleRecovery: time.Minute}, nil)
	ctx := context.Background()
	// Four storms a little over a second apart take the rate to its floor.
	for range 4 {
		if _, err := l.Throttle(ctx, time.Second, ratelimit.Cause{}); err != nil {
			t.Fatal(err)
		}
		c.Add(1100 * time.Millisecond)
	}
	// Five quiet seconds later the Retry-After is long past, the rate is
	// climbing back, and nothing was sent since: the next send goes now.
	run(t, l, c, []step{
		{advance: 5 * time.Second, recipient: "1", want: reserved(0)},
	}, approx)
}

// TestRetryAfterIsCappedAtMinutes is a regression test: one 429 whose
// Retry-After said a day held every worker of the sender back for a day.
func TestRetryAfterIsCappedAtMinutes(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  time.Duration
		want time.Duration
	}{
		{"default", 0, ratelimit.DefaultMaxRetryAfter},
		{"configured", 30 * time.Second, 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := limiter(t, ratelimit.Config{Rate: 10, MaxRetryAfter: tc.max}, nil)
			st, err := l.Throttle(context.Background(), 24*time.Hour, ratelimit.Cause{})
			if err != nil {
				t.Fatal(err)
			}
			if st.Blocked != tc.want {
				t.Errorf("a Retry-After of 24h blocks the sender for %s, want %s", st.Blocked, tc.want)
			}
			run(t, l, c, []step{
				{advance: tc.want, recipient: "1", want: reserved(0)},
			}, approx)
		})
	}
}
