package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

// The states of many senders are read in one round trip, each as its own
// circuit and throttle make it; the environment's sender has the
// deployment's circuit, and an operator's pause shows on every sender.
// A Redis that lost its scripts meanwhile costs a load, not an error.
func TestStatesOfManySendersInOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	const env = "15550001111"
	numbers := []string{env}
	for i := range 50 {
		numbers = append(numbers, fmt.Sprintf("4915300%05d", i))
	}
	open, half, throttled := numbers[3], numbers[17], numbers[40]
	if _, err := ratelimit.NewSenderCircuit(rdb, open).Open(ctx, ratelimit.Trip{Reason: "account blocked", Code: "131031", FirstProbe: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c := ratelimit.NewSenderCircuit(rdb, half)
	if _, err := c.Open(ctx, ratelimit.Trip{Reason: "account blocked", Code: "131031"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.HalfOpen(ctx); err != nil || !ok {
		t.Fatalf("half-open: %v %v", ok, err)
	}
	lim := ratelimit.New(rdb, ratelimit.Config{Sender: throttled, Rate: 40}, nil)
	if _, err := lim.Throttle(ctx, time.Hour, ratelimit.Cause{Code: "http_429", Reason: "slow down"}); err != nil {
		t.Fatal(err)
	}
	// The deployment's circuit, opened by the environment's sender, is
	// that sender's alone.
	if _, err := ratelimit.NewCircuit(rdb).Open(ctx, ratelimit.Trip{Reason: "Authentication Failed", Code: "http_401", FirstProbe: time.Hour}); err != nil {
		t.Fatal(err)
	}

	states := ratelimit.NewStates(rdb, env)
	// Connections made and the script loaded, as in a process that ran a
	// while.
	if _, err := states.OfAll(ctx, numbers); err != nil {
		t.Fatal(err)
	}
	trips := redistest.CountRoundTrips(rdb)
	want := func(n string) string {
		switch n {
		case env, open:
			return ratelimit.StateCircuitOpen
		case half:
			return ratelimit.StateHalfOpen
		case throttled:
			return ratelimit.StateThrottled
		}
		return ratelimit.StateActive
	}
	for _, flushed := range []bool{false, true} {
		if flushed {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		trips.Take()
		all, err := states.OfAll(ctx, numbers)
		if err != nil {
			t.Fatalf("OfAll (scripts flushed %v): %v", flushed, err)
		}
		// One, and after a flush the script's load and the reads again.
		if n, most := trips.Take(), map[bool]int64{false: 1, true: 3}[flushed]; n > most {
			t.Errorf("OfAll of %d senders (scripts flushed %v) made %d round trips, want %d at most", len(numbers), flushed, n, most)
		}
		if len(all) != len(numbers) {
			t.Fatalf("OfAll answered %d states for %d senders", len(all), len(numbers))
		}
		for i, st := range all {
			if st.State != want(numbers[i]) {
				t.Errorf("sender %s is %+v, want %s", numbers[i], st, want(numbers[i]))
			}
		}
		// The Retry-After is cut to the longest honoured, 5m by default.
		if st := all[40]; st.Until == nil || time.Until(*st.Until) < 4*time.Minute || st.Code != "http_429" || st.Reason != "slow down" {
			t.Errorf("the throttled sender: %+v, want until 5m from now, for http_429", st)
		}
		if st := all[3]; st.Code != "131031" || st.Reason != "account blocked" {
			t.Errorf("the sender of the open circuit: %+v, want its code and reason", st)
		}
	}
	// States says it in GET /v1/senders's words: a half-open circuit is
	// open, nothing holding a sender back is "".
	words, err := states.States(ctx, []string{half, numbers[1], throttled})
	if err != nil || len(words) != 3 || words[0] != ratelimit.StateCircuitOpen || words[1] != "" || words[2] != ratelimit.StateThrottled {
		t.Errorf("States = %q, %v; want circuit_open, \"\", throttled", words, err)
	}

	if _, err := ratelimit.NewCircuit(rdb).Open(ctx, ratelimit.Trip{Reason: "maintenance", Manual: true}); err != nil {
		t.Fatal(err)
	}
	all, err := states.OfAll(ctx, numbers)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range all {
		if st.State != ratelimit.StateCircuitOpen || st.Reason != "maintenance" {
			t.Errorf("paused by hand, sender %s is %+v, want circuit_open for maintenance", numbers[i], st)
		}
	}
	if all, err := states.OfAll(ctx, nil); err != nil || len(all) != 0 {
		t.Errorf("OfAll of no sender = %v, %v", all, err)
	}
}
