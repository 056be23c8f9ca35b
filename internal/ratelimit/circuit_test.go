package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func TestHalfOpenCircuitLetsOneTrialThroughAndKeepsItsBackoff(t *testing.T) {
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
	trip := ratelimit.Trip{Reason: "Insufficient balance", Code: "1003", MessageID: "01J1", FirstProbe: 100 * time.Millisecond, MaxProbe: time.Second}
	if opened, err := c.Open(ctx, trip); err != nil || !opened {
		t.Fatalf("Open = %v, %v", opened, err)
	}
	if ans, err := c.ClaimTrial(ctx, "01J2", time.Minute); err != nil || ans != ratelimit.TrialOpen {
		t.Fatalf("ClaimTrial on an open circuit = %q, %v", ans, err)
	}
	for round, wantWait := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second} {
		if half, err := c.HalfOpen(ctx); err != nil || !half {
			t.Fatalf("round %d: HalfOpen = %v, %v", round, half, err)
		}
		if st := state(); st.State != ratelimit.CircuitHalfOpen || !st.IsOpen() || st.NextProbe != nil {
			t.Fatalf("round %d: half-open state %+v", round, st)
		}
		if ok, err := c.ClaimProbe(ctx, time.Minute); err != nil || ok {
			t.Fatalf("round %d: a half-open circuit let a probe be claimed: %v, %v", round, ok, err)
		}
		// Many workers ask at once: exactly one message is the trial.
		answers := make([]string, 20)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				ans, err := c.ClaimTrial(ctx, fmt.Sprintf("01K%02d", i), time.Minute)
				if err != nil {
					t.Error(err)
				}
				answers[i] = ans
			})
		}
		wg.Wait()
		granted := 0
		for _, a := range answers {
			switch a {
			case ratelimit.TrialGranted:
				granted++
			case ratelimit.TrialBusy:
			default:
				t.Errorf("round %d: ClaimTrial answered %q", round, a)
			}
		}
		if granted != 1 {
			t.Fatalf("round %d: %d messages were granted the trial, want 1: %v", round, granted, answers)
		}
		// The trial fails for the account: open again, the wait before the
		// next probe still doubling.
		before := time.Now()
		if opened, err := c.Open(ctx, trip); err != nil || !opened {
			t.Fatalf("round %d: Open after a failed trial = %v, %v", round, opened, err)
		}
		st := state()
		if st.State != ratelimit.CircuitOpen || st.FailedProbes != round+1 || st.NextProbe == nil || st.Trial != "" {
			t.Fatalf("round %d: state after a failed trial %+v", round, st)
		}
		if wait := st.NextProbe.Sub(before); wait < wantWait-50*time.Millisecond || wait > wantWait+time.Second {
			t.Errorf("round %d: next probe in %s, want %s", round, wait, wantWait)
		}
	}

	// A trial that tells nothing lets the next message be the trial; an
	// accepted one closes the circuit.
	if _, err := c.HalfOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if ans, _ := c.ClaimTrial(ctx, "01T1", time.Minute); ans != ratelimit.TrialGranted {
		t.Fatalf("first claim: %q", ans)
	}
	if released, err := c.ReleaseTrial(ctx, "01T1"); err != nil || !released {
		t.Fatalf("ReleaseTrial = %v, %v", released, err)
	}
	if ans, _ := c.ClaimTrial(ctx, "01T2", time.Minute); ans != ratelimit.TrialGranted {
		t.Fatalf("claim after a release: %q", ans)
	}
	if closed, err := c.TrialAccepted(ctx); err != nil || !closed {
		t.Fatalf("TrialAccepted = %v, %v", closed, err)
	}
	if st := state(); st.State != ratelimit.CircuitClosed {
		t.Fatalf("after an accepted trial: %+v", st)
	}
	if ans, _ := c.ClaimTrial(ctx, "01T3", time.Minute); ans != ratelimit.TrialClosed {
		t.Fatalf("ClaimTrial on a closed circuit: %q", ans)
	}

	// A fresh opening starts the backoff over; an operator's pause over a
	// half-open circuit holds, and resume closes either.
	if _, err := c.Open(ctx, trip); err != nil {
		t.Fatal(err)
	}
	if st := state(); st.FailedProbes != 0 {
		t.Errorf("a fresh opening counts %d failures", st.FailedProbes)
	}
	if _, err := c.HalfOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, ratelimit.Trip{Reason: "maintenance", Manual: true}); err != nil {
		t.Fatal(err)
	}
	if st := state(); st.State != ratelimit.CircuitOpen || !st.Manual {
		t.Errorf("a pause over a half-open circuit: %+v", st)
	}
	if ans, _ := c.ClaimTrial(ctx, "01T4", time.Minute); ans != ratelimit.TrialOpen {
		t.Errorf("ClaimTrial while paused: %q", ans)
	}
	if closed, err := c.TrialAccepted(ctx); err != nil || closed {
		t.Errorf("an accepted send closed an operator's pause: %v, %v", closed, err)
	}
	if _, err := c.HalfOpen(ctx); !errors.Is(err, ratelimit.ErrManual) {
		t.Errorf("HalfOpen on a pause = %v, want ErrManual", err)
	}
	if closed, err := c.Close(ctx, false); err != nil || !closed {
		t.Errorf("resume = %v, %v", closed, err)
	}
}
