package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/ratelimit"
)

// TestPaceHandsOverTheSlotsAheadOnce: a feeder is told the sender's slots
// within ahead, each once; the handlers' reservations count only once they
// run further ahead than the horizon; a Retry-After counts none.
func TestPaceHandsOverTheSlotsAheadOnce(t *testing.T) {
	ctx := context.Background()
	l, clock := limiter(t, ratelimit.Config{Rate: 10}, nil)
	const ahead, horizon = 100 * time.Millisecond, 500 * time.Millisecond
	pace := func(want int, why string) {
		t.Helper()
		n, err := l.Pace(ctx, ahead, horizon, 1000)
		if err != nil || n != want {
			t.Fatalf("%s: pace %d, %v; want %d", why, n, err, want)
		}
	}
	pace(3, "a quiet sender at 10/s: the slots from 100ms ago (a late tick's) to 100ms ahead")
	pace(0, "asked again at once")
	clock.Add(100 * time.Millisecond)
	pace(1, "100ms later")
	// The handlers reserve the slots handed over, and a transactional
	// message one more: within the horizon, the feeder goes on.
	for range 4 {
		if d, err := l.Reserve(ctx, ratelimit.Request{Recipient: "4470", MaxWait: time.Second}); err != nil || !d.Reserved {
			t.Fatalf("reserve: %+v, %v", d, err)
		}
	}
	clock.Add(100 * time.Millisecond)
	pace(1, "the handlers' schedule within the horizon")
	// Transactional messages take five seconds of slots: the feeder waits.
	for range 50 {
		if _, err := l.Reserve(ctx, ratelimit.Request{Recipient: "4471", MaxWait: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(100 * time.Millisecond)
	pace(0, "the handlers' schedule seconds ahead")

	free, _ := limiter(t, ratelimit.Config{}, nil)
	if n, err := free.Pace(ctx, ahead, horizon, 1000); err != nil || n != 1000 {
		t.Errorf("no rate limit: pace %d, %v; want the most", n, err)
	}
	held, clock2 := limiter(t, ratelimit.Config{Rate: 10}, nil)
	if _, err := held.Throttle(ctx, 10*time.Second, ratelimit.Cause{Code: "http_429"}); err != nil {
		t.Fatal(err)
	}
	if n, err := held.Pace(ctx, ahead, horizon, 1000); err != nil || n != 0 {
		t.Errorf("under a Retry-After: pace %d, %v; want 0", n, err)
	}
	clock2.Add(11 * time.Second)
	if n, err := held.Pace(ctx, ahead, horizon, 1000); err != nil || n == 0 || n > 2 {
		t.Errorf("after the Retry-After, at half the rate: pace %d, %v; want 1 or 2", n, err)
	}
}
