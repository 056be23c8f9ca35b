package chatarchitect_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/sandbox"
)

// What a receiver sees of WhatsApp's 2025-2026 rules, as the sandbox plays
// them: each failure classifies with its class and marker, the pricing
// objects of sent and delivered parse, and so do template-event webhooks.
func TestReceiverRulesOf2025(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{})
	ctx := context.Background()
	marketing := &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "welcome_offer", LanguageCode: "en_US", Params: []string{"John", "X1"}}}
	utility := &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "order_update", LanguageCode: "en_US", Params: []string{"1234", "shipped"}}}
	billed := func(category string) *chatarchitect.Pricing {
		return &chatarchitect.Pricing{Billable: true, PricingModel: "PMP", Category: category, Type: "regular"}
	}
	type outcome struct {
		Failure chatarchitect.CodeInfo // of the failed event, if any
		Code    string
		Pricing *chatarchitect.Pricing // of sent and delivered
	}
	tests := []struct {
		name        string
		destination string
		payload     enqueue.Payload
		want        outcome
	}{
		{"marketing capped 0009", "4915558880009", marketing, outcome{Code: "131049", Failure: chatarchitect.CodeInfo{Class: chatarchitect.ClassMarketingCapped}}},
		{"utility to 0009", "4915558880009", utility, outcome{Pricing: billed("utility")}},
		{"hold-out 0010", "4915558880010", marketing, outcome{Code: "130472", Failure: chatarchitect.CodeInfo{Class: chatarchitect.ClassPermanent, Marker: chatarchitect.MarkerHoldOut}}},
		{"country refused 0012", "4915558880012", utility, outcome{Code: "130497", Failure: chatarchitect.CodeInfo{Class: chatarchitect.ClassPermanent, Marker: chatarchitect.MarkerCountryRefused}}},
		{"marketing to +1", "14155550123", marketing, outcome{Code: "131049", Failure: chatarchitect.CodeInfo{Class: chatarchitect.ClassMarketingCapped}}},
		{"marketing elsewhere", "4915558881234", marketing, outcome{Pricing: billed("marketing")}},
		{"free-form", "4915558881235", &enqueue.Text{Message: "hi"}, outcome{Pricing: &chatarchitect.Pricing{PricingModel: "PMP", Category: "service", Type: "free_customer_service"}}},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		id, err := env.client.Send(ctx, tt.destination, marshal(t, tt.payload))
		if err != nil {
			t.Fatalf("%s: Send: %v", tt.name, err)
		}
		ids[i] = id
	}
	for i, tt := range tests {
		n := 4
		if tt.want.Code != "" {
			n = 2
		}
		hooks := env.hooks.waitUntil(t, fmt.Sprintf("%d events of %s", n, tt.name), hasEvents(ids[i], n))
		var got outcome
		for _, ev := range eventsOf(hooks, ids[i]) {
			switch ev.Type {
			case chatarchitect.EventFailed:
				got.Code = ev.Code
				got.Failure, _ = chatarchitect.LookupCode(ev.Code)
			case chatarchitect.EventSent, chatarchitect.EventDelivered:
				if got.Pricing == nil {
					got.Pricing = ev.Pricing
				} else if diff := cmp.Diff(got.Pricing, ev.Pricing); diff != "" {
					t.Errorf("%s: delivered's pricing differs from sent's:\n%s", tt.name, diff)
				}
			default:
				if ev.Pricing != nil {
					t.Errorf("%s: %s event with pricing %+v", tt.name, ev.Type, ev.Pricing)
				}
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}

	env.control(t, http.MethodPut, "/sandbox/templates/welcome_offer", `{"status":"PAUSED","reason":"Low quality"}`)
	hooks := env.hooks.waitUntil(t, "a template-event", func(hooks []*chatarchitect.Webhook) bool {
		for _, h := range hooks {
			if h.Template != nil {
				return true
			}
		}
		return false
	})
	var events []chatarchitect.TemplateEvent
	for _, h := range hooks {
		if h.Template != nil {
			events = append(events, *h.Template)
		}
	}
	templates, err := env.client.Templates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, tpl := range templates {
		if tpl.ElementName == "welcome_offer" {
			id = tpl.ID
			if tpl.Status != "PAUSED" {
				t.Errorf("getHSM status %q, want PAUSED", tpl.Status)
			}
		}
	}
	want := []chatarchitect.TemplateEvent{{ID: id, ElementName: "welcome_offer", LanguageCode: "en_US", Status: "PAUSED", Reason: "Low quality"}}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("template events (-want +got):\n%s", diff)
	}
	paused, err := env.client.Send(ctx, "4915558881236", marshal(t, marketing))
	if err != nil {
		t.Fatal(err)
	}
	hooks = env.hooks.waitUntil(t, "the paused template's failure", hasEvents(paused, 2))
	if evs := eventsOf(hooks, paused); evs[1].Code != "132015" {
		t.Errorf("a paused template's send failed with %q, want 132015", evs[1].Code)
	} else if info, _ := chatarchitect.LookupCode(evs[1].Code); info.Class != chatarchitect.ClassTemplatePaused {
		t.Errorf("132015 classifies as %+v", info)
	}
}
