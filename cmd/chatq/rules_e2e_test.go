package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/poll"
)

// WhatsApp's 2025-2026 rules end to end, through chatq dev and its
// sandbox: a campaign of marketing and utility templates counts its
// billable messages by category exactly as the sandbox's pricing objects
// said; an authentication template gets its default expiry; a marketing
// template to a +1 number is refused at once.
func TestRulesOf2025EndToEnd(t *testing.T) {
	d := startPolicyDev(t, map[string]string{"CHATQ_RATE_PER_SECOND": "1000", "CHATQ_PAIR_INTERVAL": "0"})

	// A refused +1 marketing template, and an authentication template
	// without expires_at.
	code, body := d.send(t, `{"destination":"+14155550123","payload":{"type":"template","template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John","X1"]}}}`)
	wantRefused(t, code, body, "us_marketing_blocked", "destination", "CHATQ_ALLOW_US_MARKETING")
	code, otp := d.send(t, `{"destination":"447700900123","payload":{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["123456"]}}}`)
	if code != http.StatusAccepted {
		t.Fatalf("otp: %d %v", code, otp)
	}
	created, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(otp["created_at"]))
	expires, err := time.Parse(time.RFC3339Nano, fmt.Sprint(otp["expires_at"]))
	if err != nil || expires.Sub(created) != 10*time.Minute || otp["category"] != "authentication" {
		t.Errorf("authentication template: category %v, created %v, expires %v (%v); want authentication, expiring 10m after", otp["category"], otp["created_at"], otp["expires_at"], err)
	}
	code, text := d.send(t, textTo("447700900124", "hi"))
	if code != http.StatusAccepted || text["category"] != "service" || text["expires_at"] != nil {
		t.Errorf("free-form: %d category %v expires %v; want service, no expiry", code, text["category"], text["expires_at"])
	}

	// The campaign: 1,000 messages, marketing and utility; a few marketing
	// ones to users at their marketing cap (0009), which fail unbilled.
	const batch, campaign = "rules-2025", 1000
	var items []string
	wantBillable := map[string]int{"marketing": 0, "utility": 0, "authentication": 0}
	for i := range campaign {
		dest := fmt.Sprintf("4477%07d", 1000+i)
		payload := `{"type":"template","template":{"elementName":"order_update","languageCode":"en_US","params":["1234","shipped"]}}`
		category := "utility"
		if i%2 == 0 {
			payload = `{"type":"template","template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John","X1"]}}`
			category = "marketing"
		}
		if i%20 == 0 {
			dest = fmt.Sprintf("4478%03d0009", i)
		}
		if !(category == "marketing" && strings.HasSuffix(dest, "0009")) {
			wantBillable[category]++
		}
		items = append(items, fmt.Sprintf(`{"destination":%q,"payload":%s,"batch_id":%q,"priority":"bulk"}`, dest, payload, batch))
	}
	code, res := d.do(t, "POST", "/v1/messages/batch", `{"messages":[`+strings.Join(items, ",")+`]}`)
	if code != http.StatusOK {
		t.Fatalf("batch: %d %v", code, res)
	}
	for _, r := range res["results"].([]any) {
		if e := r.(map[string]any)["error"]; e != nil {
			t.Fatalf("batch item refused: %v", e)
		}
	}

	// Every message ends read (billed as it was delivered) or failed (the
	// capped ones).
	var counts struct {
		Total    int            `json:"total"`
		Counts   map[string]int `json:"counts"`
		Billable map[string]int `json:"billable"`
	}
	poll.Until(t, 120*time.Second, "the campaign read or failed", func() (bool, string) {
		_, v := d.do(t, "GET", "/v1/batches/"+batch, "")
		b, _ := json.Marshal(v)
		counts.Counts, counts.Billable = nil, nil
		if err := json.Unmarshal(b, &counts); err != nil {
			t.Fatal(err)
		}
		return counts.Counts["read"]+counts.Counts["failed"] == campaign, string(b)
	})
	if counts.Counts["failed"] != campaign/20 {
		t.Errorf("%d failed, want the %d capped", counts.Counts["failed"], campaign/20)
	}

	// What the records say: each billable pricing object the sandbox sent,
	// by category, and each record's category.
	code, list := d.do(t, "GET", "/v1/messages?batch_id="+batch+"&limit=1000", "")
	if code != http.StatusOK {
		t.Fatalf("list: %d %v", code, list)
	}
	fromRecords := map[string]int{"marketing": 0, "utility": 0, "authentication": 0}
	for _, m := range list["messages"].([]any) {
		rec := m.(map[string]any)
		p, _ := rec["pricing"].(map[string]any)
		if rec["status"] == "failed" {
			if p != nil || rec["category"] != "marketing" {
				t.Errorf("capped message %v: category %v, pricing %v; want marketing, no pricing", rec["id"], rec["category"], p)
			}
			continue
		}
		if p == nil || p["category"] != rec["category"] || p["billable"] != true || p["type"] != "regular" || p["pricing_model"] != "PMP" {
			t.Errorf("message %v (%v): pricing %v", rec["id"], rec["category"], p)
			continue
		}
		fromRecords[p["category"].(string)]++
	}
	if diff := cmp.Diff(wantBillable, fromRecords); diff != "" {
		t.Errorf("billable pricing objects on the records (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantBillable, counts.Billable); diff != "" {
		t.Errorf("the campaign's billable counts (-want +got):\n%s", diff)
	}

	// The metrics count the campaign's billable messages (and the one-time
	// code's, once it is delivered).
	d.waitStatus(t, fmt.Sprint(otp["id"]), "read")
	want := map[string]float64{"marketing": float64(wantBillable["marketing"]), "utility": float64(wantBillable["utility"]), "authentication": 1}
	poll.Until(t, 10*time.Second, "billable metrics", func() (bool, string) {
		families := scrape(t, d.api+"/metrics")
		got := map[string]float64{}
		for c := range want {
			got[c] = sum(families, "chatq_billable_messages_total", map[string]string{"category": c})
		}
		// No category beyond those.
		if other := sum(families, "chatq_billable_messages_total", nil) - got["marketing"] - got["utility"] - got["authentication"]; other != 0 {
			got["other categories"] = other
		}
		return cmp.Equal(want, got), fmt.Sprintf("%v, want %v", got, want)
	})
}

// A paused template holds its messages in chatq dev as it is wired: the
// sandbox's template-event webhook pauses it for the sender the records
// name, and its approval releases them.
func TestPausedTemplateEndToEnd(t *testing.T) {
	d := startPolicyDev(t, nil)
	put := func(status string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, d.sandbox+"/sandbox/templates/order_update", strings.NewReader(`{"status":"`+status+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: %d", status, resp.StatusCode)
		}
	}
	put("PAUSED")
	body := `{"destination":"447700900777","payload":{"type":"template","template":{"elementName":"order_update","languageCode":"en_US","params":["1234","shipped"]}}}`
	var id string
	poll.Until(t, 10*time.Second, "a message of the paused template waits", func() (bool, string) {
		if id == "" {
			code, rec := d.send(t, body)
			if code != http.StatusAccepted {
				t.Fatalf("send: %d %v", code, rec)
			}
			id = fmt.Sprint(rec["id"])
		}
		_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
		w, _ := rec["waiting"].(map[string]any)
		switch {
		case w != nil && w["reason"] == "template_paused":
			return true, ""
		case rec["status"] != "queued":
			// Sent before the pause reached chatq: try another.
			id = ""
		}
		return false, fmt.Sprint(rec)
	})
	put("APPROVED")
	d.waitStatus(t, id, "read")
}
