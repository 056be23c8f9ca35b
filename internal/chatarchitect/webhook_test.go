package chatarchitect

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	providerID = "ee4a68a0-1203-4c85-8dc3-49d0b3226a35"
	wamid      = "wamid.HBgLMTU1NTAwMDIyMjIVAgARGBI2QjVDM0ZGRDM1RjY3RjQ0QzQA"
)

// Samples of every webhook shape, after Gupshup's v2 documentation and the
// ChatArchitect overview. The fuzz target starts from them too.
var (
	hookEnqueued = `{"app":"chatq","timestamp":1764064800123,"version":2,"type":"message-event",
		"payload":{"id":"` + providerID + `","type":"enqueued","destination":"15550002222",
		"payload":{"whatsappMessageId":"` + wamid + `","type":"session"}}}`
	hookSent = `{"app":"chatq","timestamp":1764064801000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","gsId":"` + providerID + `","type":"sent","destination":"15550002222",
		"payload":{"ts":1764064800}}}`
	hookDeliveredNoGsID = `{"app":"chatq","timestamp":1764064802000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","type":"delivered","destination":"15550002222","payload":{"ts":"1764064801"}}}`
	hookRead = `{"app":"chatq","timestamp":1764064803000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","gsId":"` + providerID + `","type":"read","destination":"15550002222","payload":{}}}`
	hookFailedNumber = `{"app":"chatq","timestamp":1764064804000,"version":2,"type":"message-event",
		"payload":{"id":"` + providerID + `","type":"failed","destination":"15550002222",
		"payload":{"code":1002,"reason":"Number Does Not Exists On WhatsApp"}}}`
	hookFailedString = `{"app":"chatq","timestamp":1764064805000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","gsId":"` + providerID + `","type":"failed","destination":"15550002222",
		"payload":{"code":"131047","reason":"Re-engagement message"}}}`
	hookShort   = `{"type":"message-event","payload":{"id":"` + providerID + `","type":"delivered"}}`
	hookOptOut  = `{"app":"chatq","timestamp":1764064806000,"version":2,"type":"user-event","payload":{"phone":"15550002222","type":"opted-out"}}`
	hookInbound = `{"app":"chatq","timestamp":1764064807000,"version":2,"type":"message",
		"payload":{"id":"ABEGkYaYVSEEAhAL3SLAWwHKeKrt6s3FKB0c","source":"15550002222","type":"text",
		"payload":{"text":"Hi there"},"sender":{"phone":"15550002222","name":"John","country_code":"1","dial_code":"5550002222"}}}`
	hookDeliveredPricing = `{"app":"chatq","timestamp":1764064802000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","gsId":"` + providerID + `","type":"delivered","destination":"15550002222",
		"payload":{"ts":1764064801},"pricing":{"billable":true,"pricing_model":"PMP","category":"MARKETING","type":"regular"}}}`
	hookSentPricingOutside = `{"app":"chatq","timestamp":1764064801000,"version":2,"type":"message-event",
		"payload":{"id":"` + wamid + `","gsId":"` + providerID + `","type":"sent","destination":"15550002222","payload":{"ts":1764064800}},
		"pricing":{"billable":false,"pricing_model":"PMP","category":"service","type":"free_customer_service"}}`
	hookTemplatePaused = `{"app":"chatq","timestamp":1764064809000,"version":2,"type":"template-event",
		"payload":{"id":"b7a5f6e0-3d2c-4d7e-9a1b-2c3d4e5f6a7b","elementName":"welcome_offer","languageCode":"en_US","status":"paused","reason":"Low quality"}}`
)

func TestParseWebhook(t *testing.T) {
	ms := func(n int64) time.Time { return time.UnixMilli(n).UTC() }
	sec := func(n int64) time.Time { return time.Unix(n, 0).UTC() }
	tests := []struct {
		name string
		body string
		want *Webhook
	}{
		{
			name: "enqueued", body: hookEnqueued,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064800123), Event: &MessageEvent{
				ID: providerID, Type: EventEnqueued, Destination: "15550002222", WhatsAppID: wamid, Timestamp: ms(1764064800123),
			}},
		},
		{
			name: "sent with gsId", body: hookSent,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064801000), Event: &MessageEvent{
				ID: wamid, GsID: providerID, Type: EventSent, Destination: "15550002222", WhatsAppID: wamid, Timestamp: sec(1764064800),
			}},
		},
		{
			name: "delivered after gsId expired, ts as a string", body: hookDeliveredNoGsID,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064802000), Event: &MessageEvent{
				ID: wamid, Type: EventDelivered, Destination: "15550002222", Timestamp: sec(1764064801),
			}},
		},
		{
			name: "read", body: hookRead,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064803000), Event: &MessageEvent{
				ID: wamid, GsID: providerID, Type: EventRead, Destination: "15550002222", WhatsAppID: wamid, Timestamp: ms(1764064803000),
			}},
		},
		{
			name: "failed, code as a number", body: hookFailedNumber,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064804000), Event: &MessageEvent{
				ID: providerID, Type: EventFailed, Destination: "15550002222",
				Code: "1002", Reason: "Number Does Not Exists On WhatsApp", Timestamp: ms(1764064804000),
			}},
		},
		{
			name: "failed, code as a string, WhatsApp id with gsId", body: hookFailedString,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064805000), Event: &MessageEvent{
				ID: wamid, GsID: providerID, Type: EventFailed, Destination: "15550002222", WhatsAppID: wamid,
				Code: "131047", Reason: "Re-engagement message", Timestamp: ms(1764064805000),
			}},
		},
		{
			name: "short form", body: hookShort,
			want: &Webhook{Type: WebhookMessageEvent, Event: &MessageEvent{ID: providerID, Type: EventDelivered}},
		},
		{
			name: "user opted out", body: hookOptOut,
			want: &Webhook{Type: WebhookUserEvent, Timestamp: ms(1764064806000), User: &UserEvent{Phone: "15550002222", Type: "opted-out"}},
		},
		{
			name: "user opted in, phone as a number", body: `{"type":"user-event","payload":{"phone":15550002222,"type":"opted-in"}}`,
			want: &Webhook{Type: WebhookUserEvent, User: &UserEvent{Phone: "15550002222", Type: "opted-in"}},
		},
		{
			name: "inbound text", body: hookInbound,
			want: &Webhook{Type: WebhookMessage, Timestamp: ms(1764064807000), Inbound: &InboundMessage{
				ID: "ABEGkYaYVSEEAhAL3SLAWwHKeKrt6s3FKB0c", Source: "15550002222", Type: "text", Text: "Hi there", SenderName: "John",
			}},
		},
		{
			name: "inbound button reply, sender only",
			body: `{"type":"message","payload":{"id":"m2","type":"button_reply","payload":{"title":"Yes","id":"opt-1"},"sender":{"phone":"15550002222"}}}`,
			want: &Webhook{Type: WebhookMessage, Inbound: &InboundMessage{ID: "m2", Source: "15550002222", Type: "button_reply", Text: "Yes"}},
		},
		{
			name: "inbound image caption",
			body: `{"type":"message","payload":{"id":"m3","source":"15550002222","type":"image","payload":{"url":"https://x/y.jpg","caption":"look"}}}`,
			want: &Webhook{Type: WebhookMessage, Inbound: &InboundMessage{ID: "m3", Source: "15550002222", Type: "image", Text: "look"}},
		},
		{
			name: "unknown type", body: `{"app":"chatq","timestamp":1764064808000,"version":2,"type":"billing-event","payload":{"deductions":{"type":"marketing"}}}`,
			want: &Webhook{Type: "billing-event", Timestamp: ms(1764064808000)},
		},
		{
			name: "message-event without an id", body: `{"type":"message-event","payload":{"type":"delivered"}}`,
			want: &Webhook{Type: WebhookMessageEvent},
		},
		{
			name: "message-event with a string payload", body: `{"type":"message-event","payload":"delivered"}`,
			want: &Webhook{Type: WebhookMessageEvent},
		},
		{
			name: "user-event without a phone", body: `{"type":"user-event","payload":{"type":"opted-in"}}`,
			want: &Webhook{Type: WebhookUserEvent},
		},
		{
			name: "message without a sender", body: `{"type":"message","payload":{"id":"m4","type":"text","payload":{"text":"hi"}}}`,
			want: &Webhook{Type: WebhookMessage},
		},
		{
			name: "fields of unexpected types are left empty",
			body: `{"timestamp":{"x":1},"type":"message-event","payload":{"id":"` + providerID + `","type":"failed","destination":["x"],"payload":{"code":true,"reason":5,"ts":"soon"}}}`,
			want: &Webhook{Type: WebhookMessageEvent, Event: &MessageEvent{ID: providerID, Type: EventFailed}},
		},
		{
			name: "timestamp in seconds, code as a float", body: `{"type":"message-event","timestamp":1764064809,"payload":{"id":"p","type":"failed","payload":{"code":131026.0}}}`,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: sec(1764064809), Event: &MessageEvent{
				ID: "p", Type: EventFailed, Code: "131026", Timestamp: sec(1764064809),
			}},
		},
		{
			name: "delivered with pricing beside its details", body: hookDeliveredPricing,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064802000), Event: &MessageEvent{
				ID: wamid, GsID: providerID, Type: EventDelivered, Destination: "15550002222", WhatsAppID: wamid, Timestamp: sec(1764064801),
				Pricing: &Pricing{Billable: true, PricingModel: "PMP", Category: "marketing", Type: "regular"},
			}},
		},
		{
			name: "sent with pricing beside the envelope's payload", body: hookSentPricingOutside,
			want: &Webhook{Type: WebhookMessageEvent, Timestamp: ms(1764064801000), Event: &MessageEvent{
				ID: wamid, GsID: providerID, Type: EventSent, Destination: "15550002222", WhatsAppID: wamid, Timestamp: sec(1764064800),
				Pricing: &Pricing{PricingModel: "PMP", Category: "service", Type: "free_customer_service"},
			}},
		},
		{
			name: "pricing with Gupshup's older policy field",
			body: `{"type":"message-event","payload":{"id":"p","type":"sent","pricing":{"policy":"CBP","category":"utility"}}}`,
			want: &Webhook{Type: WebhookMessageEvent, Event: &MessageEvent{
				ID: "p", Type: EventSent, Pricing: &Pricing{PricingModel: "CBP", Category: "utility"},
			}},
		},
		{
			name: "pricing that says nothing, or of the wrong types",
			body: `{"type":"message-event","payload":{"id":"p","type":"sent","pricing":{"billable":"yes","category":"not a word!"}}}`,
			want: &Webhook{Type: WebhookMessageEvent, Event: &MessageEvent{ID: "p", Type: EventSent}},
		},
		{
			name: "template paused", body: hookTemplatePaused,
			want: &Webhook{Type: WebhookTemplateEvent, Timestamp: ms(1764064809000), Template: &TemplateEvent{
				ID: "b7a5f6e0-3d2c-4d7e-9a1b-2c3d4e5f6a7b", ElementName: "welcome_offer", LanguageCode: "en_US", Status: "PAUSED", Reason: "Low quality",
			}},
		},
		{
			name: "template event naming no template", body: `{"type":"template-event","payload":{"status":"APPROVED"}}`,
			want: &Webhook{Type: WebhookTemplateEvent},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWebhook([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseWebhook: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Webhook{}, "Raw")); diff != "" {
				t.Errorf("webhook mismatch (-want +got):\n%s", diff)
			}
			if !bytes.Equal(got.Raw, []byte(tt.body)) {
				t.Errorf("Raw = %s, want the body", got.Raw)
			}
		})
	}
}

func TestParseWebhookFailedCodesClassify(t *testing.T) {
	for body, want := range map[string]Class{
		hookFailedNumber: ClassPermanent,
		hookFailedString: ClassPolicy,
	} {
		w, err := ParseWebhook([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := ClassifyCode(w.Event.Code); !ok || got != want {
			t.Errorf("code %q classifies as %q, %v; want %q", w.Event.Code, got, ok, want)
		}
	}
}

func TestParseWebhookRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ``},
		{"blank", "  "},
		{"garbage", "\x00\xff\xfe"},
		{"HTML", `<html><body>hi</body></html>`},
		{"truncated", `{"type":"message-event","payload":{"id":"x"`},
		{"trailing data", `{"type":"message"} {"type":"message"}`},
		{"null", `null`},
		{"array", `[{"type":"message-event"}]`},
		{"string", `"message-event"`},
		{"no type", `{"payload":{"id":"x","type":"delivered"}}`},
		{"empty type", `{"type":"","payload":{}}`},
		{"numeric type", `{"type":7,"payload":{}}`},
		{"type with spaces", `{"type":"message event"}`},
		{"type with a newline", `{"type":"message\nevent"}`},
		{"overlong type", `{"type":"` + string(bytes.Repeat([]byte("a"), maxTypeLen+1)) + `"}`},
	}
	for _, tt := range tests {
		w, err := ParseWebhook([]byte(tt.body))
		if err == nil {
			t.Errorf("%s: ParseWebhook = %+v, want an error", tt.name, w)
			continue
		}
		if !errors.Is(err, ErrInvalidWebhook) {
			t.Errorf("%s: error %v does not wrap ErrInvalidWebhook", tt.name, err)
		}
		if w != nil {
			t.Errorf("%s: webhook %+v returned with an error", tt.name, w)
		}
	}
}

func FuzzParseWebhook(f *testing.F) {
	for _, seed := range []string{
		hookEnqueued, hookSent, hookDeliveredNoGsID, hookRead, hookFailedNumber, hookFailedString,
		hookShort, hookOptOut, hookInbound, hookDeliveredPricing, hookSentPricingOutside, hookTemplatePaused,
		`{"type":"message-event","payload":{"id":1e400,"type":"failed","payload":{"code":-0.0e-5,"ts":99999999999999999999}}}`,
		`{"type":"message","timestamp":"-1","payload":{"sender":{"phone":"\u0000"},"payload":{"text":"\ud800"}}}`,
		`{"type":"x"}`, `{}`, `[]`, `""`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := ParseWebhook(body)
		if err != nil {
			if w != nil {
				t.Fatalf("webhook returned with error %v", err)
			}
			return
		}
		if !validType(w.Type) {
			t.Fatalf("accepted invalid type %q", w.Type)
		}
		set := 0
		if w.Event != nil {
			set++
			if w.Type != WebhookMessageEvent || w.Event.ID == "" || w.Event.Type == "" {
				t.Fatalf("event %+v on a %q webhook", w.Event, w.Type)
			}
		}
		if w.User != nil {
			set++
			if w.Type != WebhookUserEvent || w.User.Phone == "" {
				t.Fatalf("user event %+v on a %q webhook", w.User, w.Type)
			}
		}
		if w.Inbound != nil {
			set++
			if w.Type != WebhookMessage || w.Inbound.Source == "" {
				t.Fatalf("inbound %+v on a %q webhook", w.Inbound, w.Type)
			}
		}
		if w.Template != nil {
			set++
			if w.Type != WebhookTemplateEvent || (w.Template.ElementName == "" && w.Template.ID == "") {
				t.Fatalf("template event %+v on a %q webhook", w.Template, w.Type)
			}
		}
		if w.Event != nil && w.Event.Pricing != nil && (!validType(w.Event.Pricing.Category) && w.Event.Pricing.Category != "") {
			t.Fatalf("pricing category %q is not a word", w.Event.Pricing.Category)
		}
		if set > 1 {
			t.Fatalf("%d of Event, User, Inbound, Template set", set)
		}
	})
}

func BenchmarkParseWebhook(b *testing.B) {
	for _, bb := range []struct{ name, body string }{
		{"sent", hookSent},
		{"failed", hookFailedNumber},
		{"short", hookShort},
		{"inbound", hookInbound},
	} {
		body := []byte(bb.body)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := ParseWebhook(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
