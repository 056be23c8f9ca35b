package chatarchitect

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Webhook types chatq acts on. Any other type parses with only Type set.
const (
	WebhookMessageEvent = "message-event"
	WebhookUserEvent    = "user-event"
	WebhookMessage      = "message"
	// WebhookTemplateEvent reports a change of a template's status
	// (approved, paused, disabled, rejected). Its shape is an assumption
	// after Gupshup's; see TemplateEvent.
	WebhookTemplateEvent = "template-event"
)

// Message event types, in the order they normally arrive. They also arrive
// out of order, repeated, or not at all (read, when the user turned read
// receipts off).
const (
	EventEnqueued  = "enqueued"
	EventSent      = "sent"
	EventDelivered = "delivered"
	EventRead      = "read"
	EventFailed    = "failed"
)

// ErrInvalidWebhook is wrapped by every error of ParseWebhook: the body is
// not JSON, or names no usable type. The receiver answers 400 to it.
var ErrInvalidWebhook = errors.New("invalid webhook")

// Webhook is one parsed webhook. Exactly one of Event, User, Inbound and
// Template is set for the types chatq acts on, provided the payload carries
// what is needed to use it; for every other webhook all four are nil.
type Webhook struct {
	// Type is the webhook's type: WebhookMessageEvent, WebhookUserEvent,
	// WebhookMessage or anything else the upstream sends.
	Type string
	// Timestamp is when the upstream emitted the webhook, zero if absent.
	Timestamp time.Time
	// Event is set for a message-event with an id and a type.
	Event *MessageEvent
	// User is set for a user-event with a phone.
	User *UserEvent
	// Inbound is set for a message with a sender.
	Inbound *InboundMessage
	// Template is set for a template-event naming its template.
	Template *TemplateEvent
	// Raw is the body given to ParseWebhook, not a copy: the body must stay
	// unchanged for as long as Raw is used.
	Raw json.RawMessage
}

// MessageEvent is a delivery event for a message chatq sent.
//
// Which id is which depends on the event: for enqueued, and for failed
// without gsId, ID is the provider's messageId (the one Send returned). For
// sent, delivered and read, and for failed with gsId, ID is WhatsApp's id
// and GsID the provider's, which the upstream stops sending after about a
// week. The short form of the overview has neither gsId nor a WhatsApp id,
// so when GsID is empty, ID may be either: correlate it against both.
type MessageEvent struct {
	ID   string
	GsID string
	// Type is one of the Event constants, or another type the upstream
	// sends (it is kept, never rejected).
	Type        string
	Destination string
	// WhatsAppID is WhatsApp's message id when the event tells it: the
	// whatsappMessageId of enqueued, or ID when GsID is set. Empty otherwise.
	WhatsAppID string
	// Code and Reason say why a failed event failed; see ClassifyCode.
	Code   string
	Reason string
	// Timestamp is when the event happened, from the event's own ts, else
	// from the webhook's timestamp; zero if neither came.
	Timestamp time.Time
	// Pricing is what the event says the message costs, nil when it says
	// nothing (status events of sent and delivered messages carry it).
	Pricing *Pricing
}

// Pricing is the pricing object of a status event: whether WhatsApp bills
// the message, and as what. Meta bills per delivered template since
// 1 July 2025 (marketing and authentication always, utility outside the
// 24h window; service messages are free).
//
// Where it comes: Gupshup's v2 events carry it beside the event's details
// ({"payload":{"id",...,"payload":{...},"pricing":{...}}}); chatq also
// takes it beside the envelope's payload. The field names are Meta's
// ("billable", "pricing_model", "category", "type"), with Gupshup's older
// "policy" read as pricing_model. Both are assumptions, to be checked
// against what ChatArchitect forwards.
type Pricing struct {
	Billable bool `json:"billable"`
	// PricingModel is "PMP" (per message) or "CBP" (per conversation).
	PricingModel string `json:"pricing_model"`
	// Category is lowercase: marketing, utility, authentication, service,
	// or another Meta category.
	Category string `json:"category"`
	// Type is "regular", "free_customer_service" or "free_entry_point".
	Type string `json:"type"`
}

// TemplateEvent is a change of one template's status. Its shape is chatq's
// assumption after Gupshup's: {"type":"template-event","payload":{"id",
// "elementName","languageCode","status","reason"}}.
type TemplateEvent struct {
	// ID is the template's id, as getHSM lists it.
	ID           string
	ElementName  string
	LanguageCode string
	// Status is upper case: APPROVED, PAUSED, DISABLED, REJECTED...
	Status string
	// Reason is the upstream's explanation, if any.
	Reason string
}

// UserEvent is a change of the user's consent.
type UserEvent struct {
	Phone string
	// Type is "opted-in", "opted-out" or another type the upstream sends.
	Type string
}

// InboundMessage is a message a user sent to the business number. It opens
// the user's 24-hour window.
type InboundMessage struct {
	ID string
	// Source is the sender's phone number.
	Source string
	// Type is the message type: text, image, button_reply, ...
	Type string
	// Text is the text, a button's title or a media caption, whichever the
	// message has.
	Text       string
	SenderName string
}

// wireWebhook is the union of every webhook shape, decoded in one pass.
// Identifiers are flexStrings because numbers and phone numbers come as JSON
// numbers from some senders.
type wireWebhook struct {
	Type      string       `json:"type"`
	Timestamp flexInt      `json:"timestamp"`
	Payload   wirePayload  `json:"payload"`
	Pricing   *wirePricing `json:"pricing"`
}

type wirePayload struct {
	ID          flexString   `json:"id"`
	GsID        flexString   `json:"gsId"`
	Type        string       `json:"type"`
	Destination flexString   `json:"destination"`
	Phone       flexString   `json:"phone"`
	Source      flexString   `json:"source"`
	Payload     wireInner    `json:"payload"`
	Pricing     *wirePricing `json:"pricing"`
	// Template events.
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Status       string `json:"status"`
	Reason       string `json:"reason"`
	Sender       struct {
		Phone flexString `json:"phone"`
		Name  string     `json:"name"`
	} `json:"sender"`
}

// wireInner is the payload inside the payload: event details for a
// message-event, the content for a message.
type wireInner struct {
	WhatsAppID string     `json:"whatsappMessageId"`
	Code       flexString `json:"code"`
	Reason     string     `json:"reason"`
	TS         flexInt    `json:"ts"`
	Text       string     `json:"text"`
	Title      string     `json:"title"`
	Caption    string     `json:"caption"`
}

// wirePricing is a pricing object as it comes.
type wirePricing struct {
	Billable     json.RawMessage `json:"billable"`
	PricingModel string          `json:"pricing_model"`
	Policy       string          `json:"policy"`
	Category     string          `json:"category"`
	Type         string          `json:"type"`
}

// pricing returns the object as chatq keeps it, nil when it says nothing.
// Values that are not short words are dropped: the category becomes a
// metrics label.
func (w *wirePricing) pricing() *Pricing {
	if w == nil {
		return nil
	}
	p := &Pricing{
		PricingModel: word(cmpOr(w.PricingModel, w.Policy)),
		Category:     strings.ToLower(word(w.Category)),
		Type:         strings.ToLower(word(w.Type)),
	}
	switch string(w.Billable) {
	case "true", `"true"`:
		p.Billable = true
	case "false", `"false"`:
	default:
		if p.PricingModel == "" && p.Category == "" && p.Type == "" {
			return nil
		}
	}
	return p
}

// word returns s if it is a valid type name (see validType), else "".
func word(s string) string {
	if validType(s) {
		return s
	}
	return ""
}

// maxTypeLen bounds a webhook type: it becomes a metrics label.
const maxTypeLen = 64

// ParseWebhook parses a ChatArchitect webhook: Gupshup's v2 envelope
// {"app","timestamp","version":2,"type","payload"} or the overview's short
// form {"type","payload"}. It fails only when body is not JSON or names no
// valid type; values of an unexpected JSON type are left empty, so that an
// event is never refused for a field chatq does not need.
func ParseWebhook(body []byte) (*Webhook, error) {
	var w wireWebhook
	if err := json.Unmarshal(body, &w); err != nil && !isTypeError(err) {
		return nil, fmt.Errorf("parse webhook: %w: %w", ErrInvalidWebhook, err)
	}
	if !validType(w.Type) {
		return nil, fmt.Errorf("parse webhook: %w: missing or invalid type", ErrInvalidWebhook)
	}
	hook := &Webhook{Type: w.Type, Timestamp: unixTime(int64(w.Timestamp)), Raw: body}
	p := &w.Payload
	switch w.Type {
	case WebhookMessageEvent:
		if p.ID == "" || p.Type == "" {
			break
		}
		ev := &MessageEvent{
			ID:          string(p.ID),
			GsID:        string(p.GsID),
			Type:        p.Type,
			Destination: string(p.Destination),
			WhatsAppID:  p.Payload.WhatsAppID,
			Code:        string(p.Payload.Code),
			Reason:      p.Payload.Reason,
			Timestamp:   unixTime(int64(p.Payload.TS)),
		}
		if ev.WhatsAppID == "" && ev.GsID != "" {
			ev.WhatsAppID = ev.ID
		}
		if ev.Timestamp.IsZero() {
			ev.Timestamp = hook.Timestamp
		}
		ev.Pricing = p.Pricing.pricing()
		if ev.Pricing == nil {
			ev.Pricing = w.Pricing.pricing()
		}
		hook.Event = ev
	case WebhookUserEvent:
		if p.Phone == "" {
			break
		}
		hook.User = &UserEvent{Phone: string(p.Phone), Type: p.Type}
	case WebhookMessage:
		source := cmpOr(string(p.Source), string(p.Sender.Phone))
		if source == "" {
			break
		}
		in := &p.Payload
		hook.Inbound = &InboundMessage{
			ID:         string(p.ID),
			Source:     source,
			Type:       p.Type,
			Text:       cmpOr(in.Text, cmpOr(in.Title, in.Caption)),
			SenderName: p.Sender.Name,
		}
	case WebhookTemplateEvent:
		if p.ElementName == "" && p.ID == "" {
			break
		}
		hook.Template = &TemplateEvent{
			ID:           string(p.ID),
			ElementName:  p.ElementName,
			LanguageCode: p.LanguageCode,
			Status:       strings.ToUpper(word(p.Status)),
			Reason:       p.Reason,
		}
	}
	return hook, nil
}

// validType accepts the upstream's type names (lowercase words joined by
// dashes) and anything alike, but not arbitrary text, which would end up in
// logs and metric labels.
func validType(t string) bool {
	if t == "" || len(t) > maxTypeLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// unixTime reads a Unix timestamp in milliseconds (the envelope's timestamp)
// or in seconds (an event's ts). Any value from September 2001 on in
// milliseconds is above 1e12, and no value in seconds reaches it before the
// year 33658, so the magnitude tells which. Zero or negative means absent.
func unixTime(n int64) time.Time {
	switch {
	case n <= 0:
		return time.Time{}
	case n < 1e12:
		return time.Unix(n, 0).UTC()
	default:
		return time.UnixMilli(n).UTC()
	}
}
