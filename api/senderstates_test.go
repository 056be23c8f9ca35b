package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
)

// The routes that show every sender's live state (GET /v1/senders, the
// console's overview in GET /v1/stats, /readyz, and GET /v1/messages
// ?waiting=, which picks the lanes by their senders' states) read the
// states of all their senders at once: a deployment of many senders
// costs Redis a few round trips for each such request, as one of a single
// sender does, where it took three for every sender.
func TestManySendersStatesTakeFewRoundTrips(t *testing.T) {
	f := newDropInFixture(t)
	ctx := context.Background()
	f.srv.cfg.SenderStates = ratelimit.NewStates(f.rdb, "")
	numbers := make([]string, 40)
	for i := range numbers {
		numbers[i] = fmt.Sprintf("49152000%05d", i)
		if _, err := f.reg.Add(ctx, senders.Spec{Number: numbers[i], AppID: sbApp, AppSecret: sbSecret, Tenant: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	open, throttled, paused := numbers[7], numbers[21], numbers[33]
	if _, err := ratelimit.NewSenderCircuit(f.rdb, open).Open(ctx, ratelimit.Trip{Reason: "account blocked", Code: "131031", FirstProbe: time.Hour}); err != nil {
		t.Fatal(err)
	}
	lim := ratelimit.New(f.rdb, ratelimit.Config{Sender: throttled, Rate: 40}, nil)
	if _, err := lim.Throttle(ctx, time.Hour, ratelimit.Cause{Code: "http_429", Reason: "slow down"}); err != nil {
		t.Fatal(err)
	}
	if code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders/"+paused+"/pause", ""); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}
	want := map[string]string{open: StateCircuitOpen, throttled: StateThrottled, paused: StatePaused}
	stateOf := func(n string) string {
		if s, ok := want[n]; ok {
			return s
		}
		return StateActive
	}
	acme := f.createKey(t, "acme")

	trips := redistest.CountRoundTrips(f.rdb)
	counted := func(key, path string) string {
		t.Helper()
		trips.Take()
		code, body := f.call(t, key, http.MethodGet, path, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		// A few for the route itself; three a sender before.
		n := trips.Take()
		t.Logf("GET %s: %d round trips to Redis", path, n)
		if n > 6 {
			t.Errorf("GET %s made %d round trips to Redis for %d senders, want 6 at most", path, n, len(numbers)+3)
		}
		return body
	}
	type state struct{ Number, State string }
	check := func(path string, got []state) {
		t.Helper()
		if len(got) < len(numbers) {
			t.Errorf("GET %s shows %d senders, want at least %d", path, len(got), len(numbers))
		}
		for _, s := range got {
			if _, ours := want[s.Number]; ours || s.Number > numbers[0] {
				if s.State != stateOf(s.Number) {
					t.Errorf("GET %s: sender %s is %q, want %q", path, s.Number, s.State, stateOf(s.Number))
				}
			}
		}
	}
	var list struct{ Senders []state }
	if err := json.Unmarshal([]byte(counted(walkKey, "/v1/senders")), &list); err != nil {
		t.Fatal(err)
	}
	check("/v1/senders", list.Senders)
	var overview struct{ Senders []state }
	if err := json.Unmarshal([]byte(counted(acme, "/v1/stats")), &overview); err != nil {
		t.Fatal(err)
	}
	check("/v1/stats", overview.Senders)
	var ready struct{ Senders []state }
	if err := json.Unmarshal([]byte(counted(walkKey, "/readyz")), &ready); err != nil {
		t.Fatal(err)
	}
	check("/readyz", ready.Senders)
	counted(acme, "/v1/messages?waiting=sender_rate")
}
