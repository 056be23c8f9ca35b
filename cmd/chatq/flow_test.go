package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

func TestPauseHoldsEverySendUntilResume(t *testing.T) {
	srv := redistest.Start(t)
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": srv.URL()})
	command := func(args ...string) ratelimit.CircuitState {
		t.Helper()
		var out, errOut bytes.Buffer
		p := &program{stdout: &out, stderr: &errOut}
		if err := p.run(context.Background(), args); err != nil {
			t.Fatalf("chatq %v: %v\n%s", args, err, errOut.String())
		}
		var st ratelimit.CircuitState
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("chatq %v printed %q: %v", args, out.String(), err)
		}
		return st
	}

	if st := command("pause", "--reason", "maintenance window"); !st.IsOpen() || !st.Manual || st.Reason != "maintenance window" {
		t.Fatalf("chatq pause: state %+v", st)
	}
	code, ready := d.do(t, "GET", "/readyz", "")
	circuit, _ := ready["circuit"].(map[string]any)
	if code != http.StatusOK || circuit["state"] != "open" || circuit["reason"] != "maintenance window" {
		t.Fatalf("/readyz while paused: %d %v", code, ready)
	}

	code, rec := d.do(t, "POST", "/v1/messages", `{"destination":"442070099999","payload":{"type":"text","message":"after the pause"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST while paused: %d %v", code, rec)
	}
	id := rec["id"].(string)
	// Nothing takes it while sending is paused, probes or not: watched
	// over 1.5 s, more than a hundred of the idle worker's polls.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		if _, got := d.do(t, "GET", "/v1/messages/"+id, ""); got["status"] != "queued" {
			t.Fatalf("a message sent during the pause is %v, want queued", got["status"])
		}
	}

	if st := command("resume"); st.IsOpen() {
		t.Fatalf("chatq resume: state %+v", st)
	}
	poll.Until(t, 15*time.Second, "the message read after resume", func() (bool, string) {
		_, got := d.do(t, "GET", "/v1/messages/"+id, "")
		return got["status"] == "read", fmt.Sprint(got["status"])
	})
	if _, ready := d.do(t, "GET", "/readyz", ""); ready["circuit"].(map[string]any)["state"] != "closed" {
		t.Errorf("/readyz after resume: %v", ready)
	}
}

// TestDefaultBurstKeepsEveryWindowWithinTheRate is a regression test: the
// burst defaulted to the rate, so after a quiet spell twice the rate could
// leave within one second, and an interval rounded down to the microsecond
// let one slot too many into a second.
func TestDefaultBurstKeepsEveryWindowWithinTheRate(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	for _, rate := range []int{3, 7, 40} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			t.Setenv("CHATQ_RATE_PER_SECOND", fmt.Sprint(rate))
			if v, ok := os.LookupEnv("CHATQ_RATE_BURST"); ok {
				t.Setenv("CHATQ_RATE_BURST", v) // restored after
				os.Unsetenv("CHATQ_RATE_BURST")
			}
			t.Setenv("CHATQ_CA_SOURCE", fmt.Sprintf("1555000%04d", rate))
			cfg, err := config.Load(config.Default())
			if err != nil {
				t.Fatal(err)
			}
			start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			limits := flowConfig(cfg, nil).Limits
			limits.Now = func() time.Time { return start }
			l := ratelimit.New(rdb, limits, nil)
			// 3R messages asking at once, after a quiet spell: each slot is
			// the time its message leaves.
			slots := make([]time.Time, 3*rate)
			for i := range slots {
				d, err := l.Reserve(context.Background(), ratelimit.Request{Recipient: fmt.Sprint(i), MaxWait: time.Hour, MaxHold: time.Second})
				if err != nil || !d.Reserved {
					t.Fatalf("Reserve %d = %+v, %v", i, d, err)
				}
				slots[i] = start.Add(d.Wait)
			}
			// Slots come in order; the densest one-second windows start at
			// a slot.
			for i := range slots {
				n := 0
				for _, s := range slots[i:] {
					if s.Sub(slots[i]) < time.Second {
						n++
					}
				}
				if n > rate {
					t.Fatalf("%d messages leave within the second from %s, want at most %d", n, slots[i].Sub(start), rate)
				}
			}
			if last := slots[len(slots)-1].Sub(start); last > 3*time.Second {
				t.Errorf("the %d messages took %s, want them at the full rate", len(slots), last)
			}
		})
	}
}

// TestResumeLiftsAThrottle: chatq resume is how an operator overrules a
// 429's Retry-After, as it overrules an open circuit.
func TestResumeLiftsAThrottle(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	t.Setenv("CHATQ_REDIS_URL", srv.URL())
	t.Setenv("CHATQ_LOG_LEVEL", "warn")
	ctx := context.Background()
	l := ratelimit.New(rdb, ratelimit.Config{Sender: "15550001234", Rate: 10}, nil)
	if _, err := l.Throttle(ctx, time.Hour, ratelimit.Cause{Code: "http_429", Reason: "Too Many Requests"}); err != nil {
		t.Fatal(err)
	}
	throttles := ratelimit.NewThrottles(rdb)
	if list, err := throttles.List(ctx); err != nil || len(list) != 1 || list[0].Sender != "15550001234" || list[0].Code != "http_429" {
		t.Fatalf("throttles before resume: %+v, %v", list, err)
	}
	var out, errOut bytes.Buffer
	if err := (&program{stdout: &out, stderr: &errOut}).run(ctx, []string{"resume"}); err != nil {
		t.Fatalf("chatq resume: %v\n%s", err, errOut.String())
	}
	if list, err := throttles.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("throttles after chatq resume: %+v, %v", list, err)
	}
	if st, err := l.State(ctx); err != nil || st.Blocked != 0 || st.Factor != 1 {
		t.Errorf("the sender after chatq resume: %+v, %v; want neither held nor slowed", st, err)
	}
	if d, err := l.Reserve(ctx, ratelimit.Request{Recipient: "1", MaxWait: time.Second, MaxHold: time.Second}); err != nil || !d.Reserved || d.Wait != 0 {
		t.Errorf("a send after chatq resume: %+v, %v; want it to go at once", d, err)
	}
}
