package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
)

// accepted is one send the sandbox accepted.
type accepted struct {
	Destination string          `json:"destination"`
	Payload     json.RawMessage `json:"payload"`
	ReceivedAt  time.Time       `json:"received_at"`
}

// sandboxAccepted returns every send the sandbox accepted, in the order it
// accepted them.
func (d *devRun) sandboxAccepted(t *testing.T) []accepted {
	t.Helper()
	resp, err := http.Get(d.sandbox + "/sandbox/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []accepted
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return list
}

// label is the text, or the caption, that tells a test's messages apart.
func label(p json.RawMessage) string {
	var v struct {
		Message string `json:"message"`
		Caption string `json:"caption"`
	}
	_ = json.Unmarshal(p, &v)
	return v.Message + v.Caption
}

// sendBatch posts items to /v1/messages/batch and returns the ids, in order.
func (d *devRun) sendBatch(t *testing.T, items []string) []string {
	t.Helper()
	code, res := d.do(t, "POST", "/v1/messages/batch", `{"messages":[`+strings.Join(items, ",")+`]}`)
	if code != http.StatusOK {
		t.Fatalf("batch: %d %v", code, res)
	}
	var ids []string
	for _, r := range res["results"].([]any) {
		item := r.(map[string]any)
		if e := item["error"]; e != nil {
			t.Fatalf("batch item refused: %v", e)
		}
		ids = append(ids, item["id"].(string))
	}
	return ids
}

// Thirty messages to one recipient, accepted at once, reach ChatArchitect
// in the order chatq accepted them, the three of the pair limit's burst
// back to back and then one per pair interval, as the sandbox's own clock
// says; each in one send attempt and (but for at most one) one handler
// run: the message before each reserved its slot when it was sent.
func TestConversationOrderSpacedByThePairLimit(t *testing.T) {
	const n, interval, dest = 30, 2 * time.Second, "447700931001"
	d := startPolicyDev(t, map[string]string{"CHATQ_RATE_PER_SECOND": "1000", "CHATQ_PAIR_INTERVAL": "2s", "CHATQ_PAIR_BURST": "3"})
	before := sum(scrape(t, d.api+"/metrics"), "chatq_send_handler_runs_total", nil)
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"destination":%q,"payload":{"type":"text","message":"m%02d"},"batch_id":"thirty"}`, dest, i))
	}
	ids := d.sendBatch(t, items)
	poll.Until(t, 3*time.Minute, "thirty messages submitted", func() (bool, string) {
		_, v := d.do(t, "GET", "/v1/batches/thirty", "")
		counts, _ := v["counts"].(map[string]any)
		done := 0
		for _, st := range []string{"submitted", "enqueued", "sent", "delivered", "read"} {
			c, _ := counts[st].(float64)
			done += int(c)
		}
		return done == n, fmt.Sprint(counts)
	})

	sent := d.sandboxAccepted(t)
	if len(sent) != n {
		t.Fatalf("the sandbox accepted %d messages, want %d", len(sent), n)
	}
	for i, m := range sent {
		if got, want := label(m.Payload), fmt.Sprintf("m%02d", i); got != want {
			t.Errorf("send %d was %s, want %s", i, got, want)
		}
		// Each goes a full interval after the one before was accepted.
		if i >= 3 {
			if gap := m.ReceivedAt.Sub(sent[i-1].ReceivedAt); gap < interval {
				t.Errorf("send %d came %s after the one before, want %s", i, gap, interval)
			}
		}
	}
	if d := sent[2].ReceivedAt.Sub(sent[0].ReceivedAt); d > interval/2 {
		t.Errorf("the first three went over %s, want them back to back", d)
	}
	for _, id := range ids {
		_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
		sendings := 0
		for _, h := range rec["history"].([]any) {
			if h.(map[string]any)["status"] == "sending" {
				sendings++
			}
		}
		if sendings != 1 || rec["ordered"] != true {
			t.Errorf("%s: %d sending in its history (ordered %v), want one", id, sendings, rec["ordered"])
		}
	}
	if runs := sum(scrape(t, d.api+"/metrics"), "chatq_send_handler_runs_total", nil) - before; runs > n+1 {
		t.Errorf("the send handler ran %.0f times for %d messages, want at most %d", runs, n, n+1)
	}
}

// A reply of three messages to each of 500 recipients, with ChatArchitect
// failing a fifth of the sends: every message is submitted, and each
// recipient gets its three in the order chatq accepted them, retries and
// all.
func TestConversationOrderSurvivesRetries(t *testing.T) {
	const recipients = 500
	d := startPolicyDev(t, map[string]string{"CHATQ_RATE_PER_SECOND": "1000", "CHATQ_PAIR_INTERVAL": "0",
		"CHATQ_SANDBOX_ERROR_RATIO": "0.2", "CHATQ_RETRY_MAX_DELAY": "1s", "CHATQ_RETRY_MAX": "20",
		// A fifth of the sends fail: each is a warning.
		"CHATQ_LOG_LEVEL": "error"})
	const text, image = `{"type":"text","message":%q}`, `{"type":"image","originalUrl":"https://example.com/a.jpg","previewUrl":"https://example.com/a_s.jpg","caption":%q}`
	var items []string
	flush := func() {
		if len(items) == 0 {
			return
		}
		d.sendBatch(t, items)
		items = items[:0]
	}
	for r := range recipients {
		dest := fmt.Sprintf("4477009%04d5", r)
		for i, p := range []string{text, image, text} {
			payload := fmt.Sprintf(p, fmt.Sprintf("r%03d-%d", r, i))
			items = append(items, fmt.Sprintf(`{"destination":%q,"payload":%s,"batch_id":"replies"}`, dest, payload))
		}
		if len(items) >= 300 {
			flush()
		}
	}
	flush()
	poll.Until(t, 3*time.Minute, "every reply submitted", func() (bool, string) {
		_, v := d.do(t, "GET", "/v1/batches/replies", "")
		counts, _ := v["counts"].(map[string]any)
		done := 0
		for _, st := range []string{"submitted", "enqueued", "sent", "delivered", "read"} {
			c, _ := counts[st].(float64)
			done += int(c)
		}
		return done == 3*recipients, fmt.Sprint(counts)
	})
	got := map[string][]string{}
	for _, m := range d.sandboxAccepted(t) {
		got[m.Destination] = append(got[m.Destination], label(m.Payload))
	}
	if len(got) != recipients {
		t.Errorf("%d recipients got messages, want %d", len(got), recipients)
	}
	for r := range recipients {
		dest := fmt.Sprintf("4477009%04d5", r)
		want := []string{fmt.Sprintf("r%03d-0", r), fmt.Sprintf("r%03d-1", r), fmt.Sprintf("r%03d-2", r)}
		if fmt.Sprint(got[dest]) != fmt.Sprint(want) {
			t.Errorf("%s got %v, want %v", dest, got[dest], want)
		}
	}
}
