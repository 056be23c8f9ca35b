package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

func TestCircuitOpensOnceAndProbesOneAtATime(t *testing.T) {
	c := ratelimit.NewCircuit(redistest.Start(t).Client(t))
	ctx := context.Background()
	state := func() ratelimit.CircuitState {
		t.Helper()
		st, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := state(); st.IsOpen() || st.State != ratelimit.CircuitClosed {
		t.Fatalf("a new circuit is %+v", st)
	}

	trip := ratelimit.Trip{Reason: "Authentication Failed", Code: "http_401", MessageID: "01J1", FirstProbe: 0}
	if opened, err := c.Open(ctx, trip); err != nil || !opened {
		t.Fatalf("Open = %v, %v; want it to open", opened, err)
	}
	second := ratelimit.Trip{Reason: "other", Code: "131031", MessageID: "01J2"}
	if opened, err := c.Open(ctx, second); err != nil || opened {
		t.Fatalf("a second Open = %v, %v; want it open already", opened, err)
	}
	st := state()
	want := ratelimit.CircuitState{State: ratelimit.CircuitOpen, Reason: "Authentication Failed", Code: "http_401", MessageID: "01J1"}
	if diff := cmp.Diff(want, st, cmpopts.IgnoreFields(ratelimit.CircuitState{}, "Since", "NextProbe")); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if st.Since == nil || st.NextProbe == nil || time.Since(*st.Since) > time.Minute {
		t.Errorf("since %v, next probe %v", st.Since, st.NextProbe)
	}

	// One worker probes at a time.
	claim := func() bool {
		t.Helper()
		ok, err := c.ClaimProbe(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim() {
		t.Fatal("the first probe could not be claimed")
	}
	if claim() {
		t.Fatal("a second worker claimed the probe too")
	}
	next, err := c.ProbeFailed(ctx, 50*time.Millisecond, time.Second)
	if err != nil || next != 100*time.Millisecond {
		t.Fatalf("ProbeFailed = %s, %v; want 100ms", next, err)
	}
	if claim() {
		t.Fatal("the next probe was claimed before it was due")
	}
	poll.Until(t, 5*time.Second, "the next probe comes due", func() (bool, string) { return claim(), "" })
	if st := state(); st.FailedProbes != 1 {
		t.Errorf("failed probes = %d, want 1", st.FailedProbes)
	}
	for _, want := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second} {
		if next, err := c.ProbeFailed(ctx, 50*time.Millisecond, time.Second); err != nil || next != want {
			t.Errorf("ProbeFailed = %s, %v; want %s", next, err, want)
		}
	}

	if closed, err := c.Close(ctx, true); err != nil || !closed {
		t.Fatalf("Close after a probe = %v, %v", closed, err)
	}
	if st := state(); st.IsOpen() {
		t.Errorf("closed circuit is %+v", st)
	}
	if closed, err := c.Close(ctx, false); err != nil || closed {
		t.Errorf("closing a closed circuit = %v, %v", closed, err)
	}
}

func TestManualPauseIsLeftToTheOperator(t *testing.T) {
	c := ratelimit.NewCircuit(redistest.Start(t).Client(t))
	ctx := context.Background()
	if _, err := c.Open(ctx, ratelimit.Trip{Reason: "Authentication Failed", Code: "http_401", MessageID: "01J1"}); err != nil {
		t.Fatal(err)
	}
	// An operator's pause over an automatic opening makes it manual.
	if opened, err := c.Open(ctx, ratelimit.Trip{Reason: "maintenance", Manual: true}); err != nil || opened {
		t.Fatalf("Open = %v, %v", opened, err)
	}
	st, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Manual || st.Reason != "maintenance" || st.MessageID != "01J1" || st.NextProbe != nil {
		t.Errorf("state after a manual pause: %+v", st)
	}
	if ok, err := c.ClaimProbe(ctx, time.Minute); err != nil || ok {
		t.Errorf("ClaimProbe on a manual pause = %v, %v", ok, err)
	}
	if closed, err := c.Close(ctx, true); !errors.Is(err, ratelimit.ErrManual) || closed {
		t.Errorf("a probe's Close = %v, %v; want ErrManual", closed, err)
	}
	if closed, err := c.Close(ctx, false); err != nil || !closed {
		t.Errorf("the operator's Close = %v, %v", closed, err)
	}
}
