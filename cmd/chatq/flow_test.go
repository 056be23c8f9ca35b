package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

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
