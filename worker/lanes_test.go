package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// TestOneTenantsBulkBacklogDoesNotDelayAnothers is the lanes' reason to
// be: tenant A's 3,000 bulk messages on a sender limited to 20/s are
// queued first, then tenant B's 100 on another sender at 20/s. B's go at
// B's own rate from its first second, not behind A's backlog (which would
// take A's sender two and a half minutes), while A keeps its rate.
func TestOneTenantsBulkBacklogDoesNotDelayAnothers(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.add(t, senders.Spec{Number: senderAcme, AppID: "app-2", AppSecret: "secret-2", Tenant: "acme", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	m.start(t, worker.Config{Concurrency: 50})

	const nA, nB = 3000, 100
	for batch := range nA / 1000 {
		var msgs []*enqueue.Message
		for i := range 1000 {
			msgs = append(msgs, from(senderAcme, "acme", fmt.Sprintf("4477%07d9", batch*1000+i)))
		}
		m.sendAll(t, m.client, msgs)
	}
	var msgs []*enqueue.Message
	for i := range nB {
		msgs = append(msgs, from(senderOther, "beta", fmt.Sprintf("4478%07d9", i)))
	}
	start := time.Now()
	ids := m.sendAll(t, m.client, msgs)
	m.waitAll(t, ids, 20*time.Second, submitted)

	var a, b []time.Time
	for _, l := range sandboxLog(t, m.sandbox) {
		switch {
		case strings.HasPrefix(l.Destination, "4478"):
			b = append(b, l.ReceivedAt)
		case strings.HasPrefix(l.Destination, "4477"):
			a = append(a, l.ReceivedAt)
		}
	}
	slices.SortFunc(b, time.Time.Compare)
	if len(b) != nB {
		t.Fatalf("the sandbox accepted %d of B's messages, want %d", len(b), nB)
	}
	// B's rate over its whole run, from its enqueue to its last
	// acceptance: its first message waited for nothing.
	run := b[len(b)-1].Sub(start)
	bRate := float64(nB) / run.Seconds()
	aDuring := 0
	for _, at := range a {
		if !at.Before(start) && !at.After(b[len(b)-1]) {
			aDuring++
		}
	}
	aRate := float64(aDuring) / run.Seconds()
	t.Logf("B's first after %v, then %.2f/s", b[0].Sub(start), float64(len(b)-1)/b[len(b)-1].Sub(b[0]).Seconds())
	t.Logf("B: %d messages in %v, %.2f/s; A meanwhile: %d, %.2f/s; A's backlog left: %d", nB, run.Round(time.Millisecond), bRate, aDuring, aRate, nA-len(a))
	if bRate < 18 || bRate > 22 {
		t.Errorf("B sent at %.2f/s over its run, want 20/s within 10%%", bRate)
	}
	if aRate < 18 || aRate > 22 {
		t.Errorf("A sent at %.2f/s while B ran, want its own 20/s within 10%%", aRate)
	}
	if len(a) > nA/2 {
		t.Errorf("A's backlog is %d of %d sent: it should still be mostly waiting in its lane", len(a), nA)
	}
}

// TestAnOpenCircuitHoldsItsSendersLaneAlone: a sender whose app is refused
// (401) opens its circuit, and its messages stay in its lane, none handed
// to a worker again, while the other sender's go; reading one shows it
// waiting for circuit_open.
func TestAnOpenCircuitHoldsItsSendersLaneAlone(t *testing.T) {
	t.Parallel()
	m := setupSenders(t)
	m.add(t, senders.Spec{Number: senderBad, AppID: "app-bad", AppSecret: "wrong", Tenant: "acme", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	m.add(t, senders.Spec{Number: senderOther, AppID: "app-2", AppSecret: "secret-2", Tenant: "beta", Overrides: senders.Overrides{RatePerSecond: rate(20), RateBurst: one}})
	cfg := worker.Config{Concurrency: 10}
	// Probes come seldom: the circuit stays open for the test.
	cfg.Flow.ProbeInterval, cfg.Flow.MaxProbeInterval = time.Minute, time.Minute
	cfg.SweepInterval = 100 * time.Millisecond
	m.start(t, cfg)

	var msgs []*enqueue.Message
	for i := range 30 {
		msgs = append(msgs, from(senderBad, "acme", fmt.Sprintf("4471%07d9", i)), from(senderOther, "beta", fmt.Sprintf("4473%07d9", i)))
	}
	ids := m.sendAll(t, m.client, msgs)
	var bad, good []string
	for i, msg := range msgs {
		if msg.Sender == senderBad {
			bad = append(bad, ids[i])
		} else {
			good = append(good, ids[i])
		}
	}
	m.waitAll(t, good, 20*time.Second, submitted)
	// Those of the refused sender handed out before its circuit opened
	// come back to its lane, and there they stay.
	ctx := context.Background()
	poll.Until(t, 10*time.Second, "the refused sender's messages back in its lane", func() (bool, string) {
		recs, err := m.store.GetMany(ctx, bad)
		if err != nil {
			return false, err.Error()
		}
		laned := 0
		for _, r := range recs {
			if at, err := m.store.InLane(ctx, r); err == nil && !at.IsZero() {
				laned++
			}
		}
		return laned == len(bad), fmt.Sprintf("%d of %d in the lane", laned, len(bad))
	})
	for _, l := range sandboxLog(t, m.sandbox) {
		if strings.HasPrefix(l.Destination, "4471") {
			t.Fatalf("the sandbox accepted a message of the refused sender: %+v", l)
		}
	}

	a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook", Senders: m.reg, SenderStates: ratelimit.NewStates(m.rdb, business)}, m.client, m.store, m.log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/messages/"+bad[len(bad)-1], nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec struct {
		Status  store.Status   `json:"status"`
		Waiting *store.Waiting `json:"waiting"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the message: %d, %v", resp.StatusCode, err)
	}
	if rec.Waiting == nil || rec.Waiting.Reason != store.WaitCircuitOpen || rec.Status.Final() {
		t.Errorf("a message in the lane of a sender whose circuit is open reads %s waiting %+v, want waiting for circuit_open", rec.Status, rec.Waiting)
	}
}
