package enqueue

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// Priority picks the asynq queue a message waits in.
type Priority string

// The two priorities. Transactional messages (one-time codes, receipts) are
// served before bulk ones (campaigns) by weighted queues.
const (
	Transactional Priority = "transactional"
	Bulk          Priority = "bulk"
)

// ChannelWhatsApp is the only channel ChatArchitect serves through chatq.
const ChannelWhatsApp = "whatsapp"

// Limits on a message's chatq fields.
const (
	MaxIdempotencyKey = 255
	MaxBatchID        = 128
	MaxMetadataKeys   = 50
	MaxMetadataKey    = 64
	MaxMetadataValue  = 512
)

// Message is one outbound WhatsApp message. Its JSON form is ChatArchitect's
// own POST /whatsappmessage body plus chatq's optional fields, so an
// application that posts to ChatArchitect today can post to chatq unchanged.
type Message struct {
	// Channel is "whatsapp"; empty means "whatsapp".
	Channel string `json:"channel,omitempty"`
	// Destination is the recipient's number: 8 to 15 digits, optional "+".
	Destination string `json:"destination"`
	// Payload is the content (*Text, *Image, ...).
	Payload Payload `json:"payload"`
	// IdempotencyKey makes a retried send safe: the same key and message
	// return the first record; the same key with another message is
	// ErrIdempotencyConflict. Empty means every send is a new message.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Priority is Transactional (the default when empty) or Bulk.
	Priority Priority `json:"priority,omitempty"`
	// SendAt holds the message back until then; zero sends it now.
	SendAt time.Time `json:"send_at,omitzero"`
	// ExpiresAt, if set, is when an unsent message stops being worth
	// sending: it ends "expired" instead.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// CallbackURL, if set, receives a signed POST on every status change.
	CallbackURL string `json:"callback_url,omitempty"`
	// FallbackTemplate is sent instead of a free-form payload when the
	// recipient's 24h window is closed.
	FallbackTemplate *TemplateSpec `json:"fallback_template,omitempty"`
	// BatchID groups the messages of one campaign.
	BatchID string `json:"batch_id,omitempty"`
	// Metadata is the application's own data, returned with the record.
	Metadata map[string]string `json:"metadata,omitempty"`
	// Ordered, when false, takes the message out of its conversation's
	// order: it neither waits for the messages accepted before it from its
	// sender to its recipient, of its priority, nor holds back those after
	// it. Nil means true, but for a message scheduled for later (SendAt),
	// which keeps no place in the order.
	Ordered *bool `json:"ordered,omitempty"`
	// Sender is the business number to send from (one of the tenant's
	// senders); empty lets chatq choose. The library stores it as given:
	// the HTTP API checks it against the key's tenant and chooses one.
	Sender string `json:"sender,omitempty"`
	// Tenant owns the message; empty means store.DefaultTenant. It is
	// never read from JSON: the HTTP API sets it from the caller's key.
	Tenant string `json:"-"`
	// ChosenSender is the sender chatq chose for a message that names
	// none. It is not read from JSON, and not part of what an idempotency
	// key compares: a retry after the tenant's default sender changed is
	// the same message.
	ChosenSender string `json:"-"`
}

// UnmarshalJSON decodes a message strictly: unknown fields and values of the
// wrong JSON type are *ValidationError values naming the field.
func (m *Message) UnmarshalJSON(data []byte) error {
	type plain Message
	var wire struct {
		*plain
		Payload json.RawMessage `json:"payload"`
		// The times are decoded here so that a bad one is reported under
		// its own name: time.Time's errors do not say which field failed.
		SendAt    json.RawMessage `json:"send_at"`
		ExpiresAt json.RawMessage `json:"expires_at"`
	}
	wire.plain = (*plain)(m)
	if err := decodeStrict(data, &wire); err != nil {
		return jsonError("", err)
	}
	if err := decodeTime("send_at", wire.SendAt, &m.SendAt); err != nil {
		return err
	}
	if err := decodeTime("expires_at", wire.ExpiresAt, &m.ExpiresAt); err != nil {
		return err
	}
	m.Payload = nil
	if len(wire.Payload) == 0 || string(wire.Payload) == "null" {
		return nil // Validate reports the missing payload
	}
	p, err := ParsePayload(wire.Payload)
	if err != nil {
		return err
	}
	m.Payload = p
	return nil
}

// decodeTime decodes an RFC 3339 time; absent or null leaves t zero.
func decodeTime(field string, raw json.RawMessage, t *time.Time) error {
	if len(raw) == 0 || string(raw) == "null" {
		*t = time.Time{}
		return nil
	}
	if err := t.UnmarshalJSON(raw); err != nil {
		return &ValidationError{Field: field, Reason: "must be an RFC 3339 time such as \"2026-11-25T10:00:00Z\""}
	}
	return nil
}

// Validate checks the whole message and returns a *ValidationError naming
// the first offending field, or nil. now is the time send_at and expires_at
// are judged against.
func (m *Message) Validate(now time.Time) error {
	if m.Channel != "" && m.Channel != ChannelWhatsApp {
		return &ValidationError{Field: "channel", Reason: fmt.Sprintf("must be %q, not %q", ChannelWhatsApp, m.Channel)}
	}
	if err := ValidateDestination("destination", m.Destination); err != nil {
		return err
	}
	if err := ValidatePayload(m.Payload); err != nil {
		return err
	}
	if m.Sender != "" {
		if err := ValidateDestination("sender", m.Sender); err != nil {
			return err
		}
	}
	switch m.Priority {
	case "", Transactional, Bulk:
	default:
		return &ValidationError{Field: "priority", Reason: fmt.Sprintf("must be %q or %q, not %q", Transactional, Bulk, m.Priority)}
	}
	if err := checkLen("idempotency_key", m.IdempotencyKey, MaxIdempotencyKey); err != nil {
		return err
	}
	if err := checkLen("batch_id", m.BatchID, MaxBatchID); err != nil {
		return err
	}
	if !m.ExpiresAt.IsZero() {
		if !m.ExpiresAt.After(now) {
			return &ValidationError{Field: "expires_at", Reason: "is already past"}
		}
		if !m.SendAt.IsZero() && !m.ExpiresAt.After(m.SendAt) {
			return &ValidationError{Field: "expires_at", Reason: "must be after send_at"}
		}
	}
	if !m.SendAt.IsZero() && m.SendAt.After(now.AddDate(1, 0, 0)) {
		return &ValidationError{Field: "send_at", Reason: "must be within a year"}
	}
	if m.Ordered != nil && *m.Ordered && m.SendAt.After(now) {
		return &ValidationError{Field: "ordered", Reason: "must not be true for a message scheduled for later (send_at): it would hold back every later message to its recipient until then"}
	}
	if m.CallbackURL != "" {
		v := &validator{}
		v.url("callback_url", m.CallbackURL, true)
		if v.err != nil {
			return v.err
		}
	}
	if m.FallbackTemplate != nil {
		if err := ValidateTemplateSpec("fallback_template", m.FallbackTemplate); err != nil {
			return err
		}
	}
	if len(m.Metadata) > MaxMetadataKeys {
		return &ValidationError{Field: "metadata", Reason: fmt.Sprintf("must hold at most %d keys, not %d", MaxMetadataKeys, len(m.Metadata))}
	}
	for k, val := range m.Metadata {
		if k == "" || utf8.RuneCountInString(k) > MaxMetadataKey {
			return &ValidationError{Field: "metadata", Reason: fmt.Sprintf("keys must be 1 to %d characters, not %q", MaxMetadataKey, k)}
		}
		if err := checkLen("metadata."+k, val, MaxMetadataValue); err != nil {
			return err
		}
	}
	return nil
}

func checkLen(field, s string, max int) error {
	if n := utf8.RuneCountInString(s); n > max {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be at most %d characters, not %d", max, n)}
	}
	return nil
}

// DecodeMessage decodes one message from its JSON form. Every failure, from
// broken JSON to a field of the wrong type or an unknown field, is a
// *ValidationError naming the field. It checks the shape only; Validate
// checks the content.
func DecodeMessage(data []byte) (*Message, error) {
	m := new(Message)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, jsonError("", err)
	}
	return m, nil
}
