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
		if _, err := l.Throttle(ctx, time.Second); err != nil {
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
