package sandbox_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The magic destinations of WhatsApp's 2025-2026 rules, and the US
// marketing refusal: marketing templates fail where the rule says, every
// other message goes through.
func TestMarketingRules(t *testing.T) {
	t.Parallel()
	full := []string{"enqueued", "sent", "delivered", "read"}
	marketing := templ("welcome_offer", "en_US", "John", "X1")
	utility := templ("order_update", "en_US", "1234", "shipped")
	auth := templ("otp_code", "en", "123456")
	tests := []struct {
		name    string
		number  string
		payload map[string]any
		events  []string
	}{
		{"0009 marketing capped", "4915100000009", marketing, []string{"enqueued", "failed 131049"}},
		{"0009 utility goes on", "4915100000009", utility, full},
		{"0009 authentication goes on", "4915100000009", auth, full},
		{"0009 free-form goes on", "4915100000009", text("hi"), full},
		{"0010 marketing hold-out", "4915100000010", marketing, []string{"enqueued", "failed 130472"}},
		{"0010 authentication goes on", "4915100000010", auth, full},
		{"0012 country refused", "4915100000012", text("hi"), []string{"enqueued", "failed 130497"}},
		{"0012 country refused, templates too", "4915100000012", utility, []string{"enqueued", "failed 130497"}},
		{"+1 marketing refused", "14155550123", marketing, []string{"enqueued", "failed 131049"}},
		{"+1 utility goes on", "14155550123", utility, full},
		{"+1 authentication goes on", "+14155550123", auth, full},
		{"other marketing goes on", "4915112345678", marketing, full},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, fast())
			id := e.mustSend(t, tt.number, tt.payload)
			e.idle(t)
			if diff := cmp.Diff(tt.events, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

// 0011 is WhatsApp's spam rate limit: the first attempt is refused with
// 429 and code 131048, the next is accepted.
func TestMagicSpamLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	status, body := e.call(t, http.MethodPost, "/whatsappmessage", map[string]any{
		"channel": "whatsapp", "destination": "4915100000011", "payload": text("hi"),
	})
	got := decode[struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		Code    int    `json:"code"`
	}](t, body)
	if status != http.StatusTooManyRequests || got.Status != "error" || got.Code != 131048 || got.Message == "" {
		t.Errorf("first attempt: %d %s; want 429 with code 131048", status, body)
	}
	id := e.mustSend(t, "4915100000011", text("hi"))
	e.idle(t)
	if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st := e.stats(t); st.Throttled != 1 || st.Accepted != 1 {
		t.Errorf("stats %+v: want 1 throttled, 1 accepted", st)
	}
}

// 0017 and 0018 refuse marketing templates at the send, before any
// webhook: 0017 its first with the marketing cap (131049), 0018 every one
// as a marketing experiment's hold-out (130472). Other messages to them go
// through.
func TestMagicMarketingRefusalsAtTheSend(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	marketing := templ("welcome_offer", "en_US", "John", "X1")
	refused := func(number string, code int) {
		t.Helper()
		status, body := e.call(t, http.MethodPost, "/whatsappmessage", map[string]any{
			"channel": "whatsapp", "destination": number, "payload": marketing,
		})
		got := decode[struct {
			Status string `json:"status"`
			Code   int    `json:"code"`
		}](t, body)
		if status != http.StatusBadRequest || got.Status != "error" || got.Code != code {
			t.Errorf("marketing to %s: %d %s; want 400 with code %d", number, status, body, code)
		}
	}
	refused("4915100000017", 131049)
	refused("4915100000018", 130472)
	refused("4915100000018", 130472)
	ids := []string{
		e.mustSend(t, "4915100000017", marketing),
		e.mustSend(t, "4915100000018", templ("otp_code", "en", "123456")),
		e.mustSend(t, "4915100000018", text("hi")),
	}
	e.idle(t)
	for _, id := range ids {
		if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
			t.Errorf("events of %s (-want +got):\n%s", id, diff)
		}
	}
	if st := e.stats(t); st.Rejected != 3 || st.Accepted != 3 {
		t.Errorf("stats %+v: want 3 rejected, 3 accepted", st)
	}
}

// Sent and delivered events carry a pricing object by the template's
// category; free-form messages, and utility templates inside the user's
// window, are free.
func TestPricing(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const windowOpen = "4915100007777"
	if status, body := e.call(t, http.MethodPost, "/sandbox/inbound", map[string]string{"from": windowOpen, "text": "hi"}); status != http.StatusOK {
		t.Fatalf("inbound: %d %s", status, body)
	}
	billed := func(category string) *pricing {
		return &pricing{Billable: true, PricingModel: "PMP", Category: category, Type: "regular"}
	}
	tests := []struct {
		name    string
		number  string
		payload map[string]any
		want    *pricing
	}{
		{"marketing", "4915100001111", templ("welcome_offer", "en_US", "John", "X1"), billed("marketing")},
		{"utility", "4915100002222", templ("order_update", "en_US", "1234", "shipped"), billed("utility")},
		{"authentication", "4915100003333", templ("otp_code", "en", "123456"), billed("authentication")},
		{"free-form", windowOpen, text("hello"), &pricing{PricingModel: "PMP", Category: "service", Type: "free_customer_service"}},
		{"utility inside the window", windowOpen, templ("order_update", "en_US", "1234", "shipped"), &pricing{PricingModel: "PMP", Category: "utility", Type: "free_customer_service"}},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		ids[i] = e.mustSend(t, tt.number, tt.payload)
	}
	e.idle(t)
	for i, tt := range tests {
		got := map[string]*pricing{}
		for _, h := range e.hooks.about(t, ids[i], "") {
			ev := h.event(t)
			got[ev.Type] = ev.Pricing
		}
		want := map[string]*pricing{"enqueued": nil, "sent": tt.want, "delivered": tt.want, "read": nil}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: pricing by event (-want +got):\n%s", tt.name, diff)
		}
	}
}

// PUT /sandbox/templates/{name} sets a template's status as Meta's quality
// rating would, sends its template-event webhook, and decides the fate of
// its sends: paused fails with 132015, disabled with 132016, rejected is
// refused, approved goes through again.
func TestTemplateStatus(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	offer := templ("welcome_offer", "en_US", "John", "X1")
	steps := []struct {
		status string
		send   int      // the answer to a send
		events []string // its webhooks
	}{
		{"PAUSED", http.StatusOK, []string{"enqueued", "failed 132015"}},
		{"paused", http.StatusOK, []string{"enqueued", "failed 132015"}},
		{"DISABLED", http.StatusOK, []string{"enqueued", "failed 132016"}},
		{"REJECTED", http.StatusBadRequest, nil},
		{"APPROVED", http.StatusOK, []string{"enqueued", "sent", "delivered", "read"}},
	}
	for i, step := range steps {
		status, body := e.call(t, http.MethodPut, "/sandbox/templates/welcome_offer", map[string]string{"status": step.status})
		a := decode[answer](t, body)
		if status != http.StatusOK || len(a.Templates) != 1 || a.Templates[0].Status != strings.ToUpper(step.status) {
			t.Fatalf("set %s: %d %s", step.status, status, body)
		}
		e.idle(t)
		var got []templateEvent
		for _, h := range e.hooks.all() {
			if h.Type == "template-event" {
				got = append(got, decode[templateEvent](t, h.Payload))
			}
		}
		if len(got) != i+1 {
			t.Fatalf("template events after %d changes: %+v", i+1, got)
		}
		last := got[i]
		if last.ID != a.Templates[0].ID || last.ElementName != "welcome_offer" || last.LanguageCode != "en_US" || last.Status != strings.ToUpper(step.status) ||
			(last.Status != "APPROVED" && last.Reason == "") {
			t.Errorf("template event %+v after setting %s", last, step.status)
		}
		if hsm := e.templateStatus(t, "welcome_offer"); hsm != strings.ToUpper(step.status) {
			t.Errorf("getHSM says %s after setting %s", hsm, step.status)
		}
		sendStatus, sent := e.send(t, "4915112345678", offer)
		if sendStatus != step.send {
			t.Fatalf("send after %s: %d %+v, want %d", step.status, sendStatus, sent, step.send)
		}
		if sendStatus != http.StatusOK {
			continue
		}
		e.idle(t)
		if diff := cmp.Diff(step.events, summaries(t, e.hooks.about(t, sent.MessageID, ""))); diff != "" {
			t.Errorf("events of a send after %s (-want +got):\n%s", step.status, diff)
		}
	}

	for _, bad := range []struct {
		path, body string
		status     int
		message    string
	}{
		{"/sandbox/templates/welcome_offer", `{"status":"GONE"}`, http.StatusBadRequest, `status must be one of APPROVED, PAUSED, DISABLED, REJECTED, not "GONE"`},
		{"/sandbox/templates/welcome_offer", `{}`, http.StatusBadRequest, "status is required"},
		{"/sandbox/templates/welcome_offer", `{"status":"PAUSED","colour":"red"}`, http.StatusBadRequest, "colour is not a known field"},
		{"/sandbox/templates/no_such_template", `{"status":"PAUSED"}`, http.StatusNotFound, "Template not found: no_such_template"},
	} {
		status, body := e.call(t, http.MethodPut, bad.path, bad.body)
		if a := decode[answer](t, body); status != bad.status || a.Message != bad.message {
			t.Errorf("PUT %s %s: %d %q; want %d %q", bad.path, bad.body, status, a.Message, bad.status, bad.message)
		}
	}
}

// templateEvent is the payload of a template-event webhook.
type templateEvent struct {
	ID           string `json:"id"`
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Status       string `json:"status"`
	Reason       string `json:"reason"`
}

// templateStatus returns the status getHSM lists for a template name.
func (e *env) templateStatus(tb testing.TB, name string) string {
	tb.Helper()
	status, body := e.call(tb, http.MethodPost, "/getHSM", map[string]string{"channel": "whatsapp", "destination": business})
	if status != http.StatusOK {
		tb.Fatalf("getHSM: %d %s", status, body)
	}
	for _, t := range decode[answer](tb, body).Templates {
		if t.ElementName == name {
			return t.Status
		}
	}
	return ""
}
