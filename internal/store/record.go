package store

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chatq/chatq/internal/jsontime"
)

// Status is where a message stands. See CONTRACT.md: chatq's own phase
// (scheduled, queued, sending, retrying) ends in submitted, dead, expired or
// canceled; after submitted, delivery moves forward only by rank.
type Status string

// The statuses of a job record.
const (
	Scheduled Status = "scheduled"
	Queued    Status = "queued"
	Sending   Status = "sending"
	Retrying  Status = "retrying"
	Submitted Status = "submitted"
	Dead      Status = "dead"
	Expired   Status = "expired"
	Canceled  Status = "canceled"
	Enqueued  Status = "enqueued"
	Sent      Status = "sent"
	Delivered Status = "delivered"
	Read      Status = "read"
	Failed    Status = "failed"
)

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	switch s {
	case Scheduled, Queued, Sending, Retrying, Submitted, Dead, Expired, Canceled,
		Enqueued, Sent, Delivered, Read, Failed:
		return true
	}
	return false
}

// Pending reports whether the message is still in chatq's hands, not yet
// accepted upstream nor given up.
func (s Status) Pending() bool {
	return s == Scheduled || s == Queued || s == Sending || s == Retrying
}

// Final reports whether chatq will do nothing more with the message on its
// own: it was given up, or accepted upstream.
func (s Status) Final() bool { return s != "" && !s.Pending() }

// ErrorInfo is a record's last error.
type ErrorInfo struct {
	Class   string    `json:"class"`
	Code    string    `json:"code"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// MarshalJSON writes the time as every timestamp of chatq's JSON.
func (e ErrorInfo) MarshalJSON() ([]byte, error) {
	type plain ErrorInfo
	return json.Marshal(struct {
		plain
		At jsontime.Time `json:"at"`
	}{plain(e), jsontime.Time(e.At)})
}

// Pricing is the pricing object of a status webhook: whether WhatsApp bills
// the message, and as what (see chatarchitect.Pricing).
type Pricing struct {
	Billable     bool   `json:"billable"`
	PricingModel string `json:"pricing_model"`
	Category     string `json:"category"`
	Type         string `json:"type"`
}

// Message categories: a template's category, lowercased, or CategoryService
// for a free-form message. WhatsApp prices messages by them.
const (
	CategoryMarketing      = "marketing"
	CategoryUtility        = "utility"
	CategoryAuthentication = "authentication"
	CategoryService        = "service"
)

// HistoryEntry is one step of a record's history. Note explains an entry
// that did not change the status (a late or repeated event) or an
// operator's action.
type HistoryEntry struct {
	Status Status    `json:"status"`
	At     time.Time `json:"at"`
	Note   string    `json:"note,omitempty"`
}

// MarshalJSON writes the time as every timestamp of chatq's JSON.
func (e HistoryEntry) MarshalJSON() ([]byte, error) {
	return []byte(historyPrefix(e.Status, e.At, e.Note) + "}"), nil
}

// Record is a message's job record: what was asked, and what became of it.
type Record struct {
	ID                string         `json:"id"`
	Destination       string         `json:"destination"`
	Type              string         `json:"type"`
	Priority          string         `json:"priority"`
	Status            Status         `json:"status"`
	Attempts          int            `json:"attempts"`
	ProviderMessageID *string        `json:"provider_message_id"`
	WhatsAppMessageID *string        `json:"whatsapp_message_id"`
	LastError         *ErrorInfo     `json:"last_error"`
	History           []HistoryEntry `json:"history"`
	BatchID           *string        `json:"batch_id"`
	// Tenant owns the message (DefaultTenant unless a tenant key sent
	// it); Sender is the business number it is sent from, "" when the
	// deployment names none.
	Tenant         string            `json:"tenant"`
	Sender         string            `json:"sender"`
	Metadata       map[string]string `json:"metadata"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	CallbackURL    string            `json:"callback_url,omitempty"`
	SendAt         *time.Time        `json:"send_at,omitempty"`
	ExpiresAt      *time.Time        `json:"expires_at,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`

	// Category is the template's category (marketing, utility,
	// authentication) or "service" for a free-form message; nil for a
	// template whose category chatq did not know at enqueue.
	Category *string `json:"category"`
	// Pricing is the last pricing object a status webhook reported.
	Pricing *Pricing `json:"pricing"`
	// Waiting is the message's current wait, nil when it is not waiting
	// (see Store.Wait).
	Waiting *Waiting `json:"waiting"`
	// Ordered is set when the message keeps its place in its
	// conversation's order (line.go): it is submitted after the messages
	// accepted before it from its sender to its recipient, of its
	// priority.
	Ordered bool `json:"ordered"`

	// Payload is the ChatArchitect payload as it is sent, already validated.
	// It is not part of the record's JSON: bodies stay out of answers, logs
	// and the dashboard.
	Payload json.RawMessage `json:"-"`
	// FallbackTemplate is the template payload to send instead when the
	// recipient's window is closed, if the application gave one.
	FallbackTemplate json.RawMessage `json:"-"`
	// Queue is the asynq queue the message's task lives in.
	Queue string `json:"-"`
	// Fingerprint identifies the request, for idempotency checks.
	Fingerprint string `json:"-"`
	// TaskID is the asynq task that sends the message: the record's id
	// for the first, a new one for each task the sweeper gives it.
	TaskID string `json:"-"`
	// Owner is the worker process that took the message up for its
	// latest send (Begin), while it is sending.
	Owner string `json:"-"`
	// Failures counts the failed attempts, across tasks: the retry budget.
	Failures int `json:"-"`
	// OnWire is set while a send may be on the wire: from its take-up
	// (Store.Begin) until its outcome is recorded.
	OnWire bool `json:"-"`
	// SentAgain is set on the record Begin returns when the send it takes
	// up is a possible duplicate: an earlier send's outcome was never
	// recorded (its worker was lost, or Redis was away).
	SentAgain bool `json:"-"`
	// PairSlot is the send slot the message holds on its recipient's
	// schedule (the pair limit), reserved before it waited; nil when it
	// holds none.
	PairSlot *time.Time `json:"-"`
}

// MarshalJSON writes the record with every timestamp in one form
// (jsontime), whatever the zone and precision it was given or stored in.
func (r Record) MarshalJSON() ([]byte, error) { return json.Marshal(r.jsonView()) }

func (r *Record) jsonView() recordJSON {
	return recordJSON{plainRecord(*r), jsontime.Time(r.CreatedAt), jsontime.Time(r.UpdatedAt), jsontime.Ptr(r.SendAt), jsontime.Ptr(r.ExpiresAt)}
}

// plainRecord is a Record without its MarshalJSON.
type plainRecord Record

// recordJSON is a record's JSON: its own fields, and the times in the one
// form in place of those of the same names (a shallower field wins).
type recordJSON struct {
	plainRecord
	CreatedAt jsontime.Time  `json:"created_at"`
	UpdatedAt jsontime.Time  `json:"updated_at"`
	SendAt    *jsontime.Time `json:"send_at,omitempty"`
	ExpiresAt *jsontime.Time `json:"expires_at,omitempty"`
}

// Hash field names. They are short because millions of records may wait.
const (
	fDest     = "d"
	fType     = "t"
	fPriority = "p"
	fStatus   = "s"
	fAttempts = "a"
	fPID      = "pid"
	fWID      = "wid"
	fError    = "e"
	fHistory  = "h"
	fBatch    = "b"
	fMeta     = "m"
	fCreated  = "c"
	fUpdated  = "u"
	fPayload  = "pl"
	fCallback = "cb"
	fFallback = "fb"
	fIdem     = "ik"
	fFinger   = "fp"
	fSendAt   = "sa"
	fExpires  = "xa"
	fQueue    = "q"
	fTenant   = "tn"
	fSender   = "sn"
	fCategory = "ct"
	fPricing  = "pr"
	// fBillable is set, once, to the category of the first pricing object
	// that says the message is billable: a campaign counts it there.
	fBillable = "bl"
	fTask     = "tid"
	fOwner    = "ow"
	fFailures = "fa"
	fWire     = "wr"
	fWaiting  = "wt"
	fPairSlot = "ps"
	// fExpiry is when the record's keys expire, unix milliseconds by the
	// clock of the process that last set it (transition.lua).
	fExpiry = "xp"
	// fOrdered is set on a record that took its place in its
	// conversation's line.
	fOrdered = "o"
	// fParts counts the parts of a payload kept in the hash in more than
	// one (payloadFields).
	fParts = "pn"
)

// A record keeps its payload in its hash, in parts of at most payloadPart
// bytes: 'pl' the first, 'pl1', 'pl2'... the others, 'pn' their number
// when there are several. Redis keeps a hash in its compact listpack
// encoding only while every value is at most 64 bytes
// (hash-max-listpack-value); one whole payload (about 130 bytes for a
// short text) would cost a record about 500 bytes more, and a key of its
// own about 300 (the key, its expiry, an extra command per change). A
// payload of more than maxPayloadParts parts keeps a key of its own
// (payloadKey), as every payload did before.
const (
	payloadPart     = 64
	maxPayloadParts = 32
)

// payloadInHash reports whether payload p is kept in its record's hash.
func payloadInHash(p []byte) bool { return len(p) <= payloadPart*maxPayloadParts }

// payloadFields appends to f the hash fields that hold payload p.
func payloadFields(f []any, p []byte) []any {
	f, n := appendParts(f, fPayload, p)
	if n > 1 {
		f = append(f, fParts, n)
	}
	return f
}

// appendParts appends to f the fields name, name1, name2... that hold v in
// parts of at most payloadPart bytes (name alone when v fits one), and
// returns their number.
func appendParts(f []any, name string, v []byte) ([]any, int) {
	n := 0
	for i := 0; i < len(v) || i == 0; i += payloadPart {
		part := name
		if n > 0 {
			part += strconv.Itoa(n)
		}
		f = append(f, part, v[i:min(i+payloadPart, len(v))])
		n++
	}
	return f, n
}

// maxValueParts bounds the parts of a callback URL or metadata kept in
// parts (valueFields): a longer one is kept whole.
const maxValueParts = 8

// valueFields appends to f the hash fields that hold v, a callback URL or
// metadata written at creation (transition.lua lays a last error out the
// same way): name alone when v fits a listpack's value
// (payloadPart bytes) or is longer than maxValueParts parts, else name,
// name1, name2... each of at most payloadPart bytes, so that the record
// keeps its listpack (see payloadPart). They are read with the whole hash
// alone (joinValue), never by field.
func valueFields(f []any, name string, v []byte) []any {
	if len(v) > payloadPart*maxValueParts {
		return append(f, name, v)
	}
	f, _ = appendParts(f, name, v)
	return f
}

// joinValue returns the value valueFields kept under name in hash h.
func joinValue(h map[string]string, name string) string {
	v := h[name]
	if _, ok := h[name+"1"]; !ok {
		return v
	}
	var b strings.Builder
	b.WriteString(v)
	for i := 1; ; i++ {
		part, ok := h[name+strconv.Itoa(i)]
		if !ok {
			return b.String()
		}
		b.WriteString(part)
	}
}

// dropParts removes from hash h the parts after the first of the value
// valueFields kept under name.
func dropParts(h map[string]string, name string) {
	for i := 1; ; i++ {
		part := name + strconv.Itoa(i)
		if _, ok := h[part]; !ok {
			return
		}
		delete(h, part)
	}
}

// joinPayload returns the payload kept in hash h ("" when it has a key of
// its own). A record written before payloads were split keeps it whole in
// 'pl', or in its own key.
func joinPayload(h map[string]string) string {
	p := h[fPayload]
	n, _ := strconv.Atoi(h[fParts])
	if n < 2 {
		return p
	}
	var b strings.Builder
	b.WriteString(p)
	for i := 1; i < n; i++ {
		b.WriteString(h[fPayload+strconv.Itoa(i)])
	}
	return b.String()
}

// dropPayload deletes from h the fields that hold a payload.
func dropPayload(h map[string]string) {
	n, _ := strconv.Atoi(h[fParts])
	for i := 1; i < n; i++ {
		delete(h, fPayload+strconv.Itoa(i))
	}
	delete(h, fPayload)
	delete(h, fParts)
}

// fields lays r out as the hash written at creation. The payload is among
// them when it is kept in the hash (payloadInHash).
func (r *Record) fields() []any {
	f := []any{
		fDest, r.Destination,
		fType, r.Type,
		fPriority, r.Priority,
		fStatus, string(r.Status),
		fAttempts, 0,
		fHistory, historyField(r.History, r.CreatedAt),
		fCreated, r.CreatedAt.UnixMilli(),
		fUpdated, r.UpdatedAt.UnixMilli(),
		fQueue, r.Queue,
		"hn", len(r.History),
	}
	if r.BatchID != nil {
		f = append(f, fBatch, *r.BatchID)
	}
	// The default tenant is not written: most records belong to it, and
	// records of before tenants read as its own.
	if r.Tenant != "" && r.Tenant != DefaultTenant {
		f = append(f, fTenant, r.Tenant)
	}
	if r.Sender != "" {
		f = append(f, fSender, r.Sender)
	}
	if len(r.Metadata) > 0 {
		m, _ := json.Marshal(r.Metadata)
		f = valueFields(f, fMeta, m)
	}
	if r.CallbackURL != "" {
		f = valueFields(f, fCallback, []byte(r.CallbackURL))
	}
	if len(r.FallbackTemplate) > 0 {
		f = append(f, fFallback, []byte(r.FallbackTemplate))
	}
	if r.IdempotencyKey != "" {
		f = append(f, fIdem, r.IdempotencyKey, fFinger, r.Fingerprint)
	}
	if r.SendAt != nil {
		f = append(f, fSendAt, r.SendAt.UnixMilli())
	}
	if r.ExpiresAt != nil {
		f = append(f, fExpires, r.ExpiresAt.UnixMilli())
	}
	if r.Category != nil {
		f = append(f, fCategory, *r.Category)
	}
	if r.Ordered {
		f = append(f, fOrdered, 1)
	}
	if r.Waiting != nil {
		w, _ := json.Marshal(r.Waiting)
		f = append(f, fWaiting, w)
	}
	if payloadInHash(r.Payload) {
		f = payloadFields(f, r.Payload)
	}
	return f
}

// historyJSON encodes a history as json.Marshal would, entry by entry as
// transition.lua appends them to a JSON history; by hand, because encoding
// the times through reflection cost a new record more than all its other
// fields together.
func historyJSON(h []HistoryEntry) []byte {
	b := make([]byte, 0, 64*len(h)+2)
	b = append(b, '[')
	for i, e := range h {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, historyPrefix(e.Status, e.At, e.Note)...)
		b = append(b, '}')
	}
	return append(b, ']')
}

// parseRecord builds a record from its hash.
func parseRecord(id string, h map[string]string) (*Record, error) {
	r := &Record{
		ID:             id,
		Destination:    h[fDest],
		Type:           h[fType],
		Priority:       h[fPriority],
		Status:         Status(h[fStatus]),
		Queue:          h[fQueue],
		Payload:        json.RawMessage(joinPayload(h)),
		CallbackURL:    joinValue(h, fCallback),
		Fingerprint:    h[fFinger],
		IdempotencyKey: h[fIdem],
		Tenant:         h[fTenant],
		Sender:         h[fSender],
		TaskID:         h[fTask],
		Owner:          h[fOwner],
		OnWire:         h[fWire] == "1" && h[fStatus] == string(Sending),
		Ordered:        h[fOrdered] == "1",
	}
	if r.Tenant == "" {
		r.Tenant = DefaultTenant
	}
	if r.TaskID == "" {
		r.TaskID = id
	}
	r.Failures, _ = strconv.Atoi(h[fFailures])
	if v := h[fFallback]; v != "" {
		r.FallbackTemplate = json.RawMessage(v)
	}
	r.Attempts, _ = strconv.Atoi(h[fAttempts])
	r.ProviderMessageID = optional(h[fPID])
	r.WhatsAppMessageID = optional(h[fWID])
	r.BatchID = optional(h[fBatch])
	r.Category = optional(h[fCategory])
	r.CreatedAt = millis(h[fCreated])
	r.UpdatedAt = millis(h[fUpdated])
	if v := h[fSendAt]; v != "" {
		t := millis(v)
		r.SendAt = &t
	}
	if v := h[fExpires]; v != "" {
		t := millis(v)
		r.ExpiresAt = &t
	}
	if v := joinValue(h, fError); v != "" {
		r.LastError = new(ErrorInfo)
		if err := json.Unmarshal([]byte(v), r.LastError); err != nil {
			return nil, fmt.Errorf("record %s: last error: %w", id, err)
		}
	}
	if v := h[fHistory]; v != "" {
		c, _ := strconv.ParseInt(h[fCreated], 10, 64)
		hist, err := parseHistory(v, c)
		if err != nil {
			return nil, fmt.Errorf("record %s: history: %w", id, err)
		}
		r.History = hist
	}
	if v := h[fPricing]; v != "" {
		p, err := parsePricing(v)
		if err != nil {
			return nil, fmt.Errorf("record %s: pricing: %w", id, err)
		}
		r.Pricing = p
	}
	if v := h[fWaiting]; v != "" {
		var w struct {
			Reason WaitReason     `json:"reason"`
			Since  jsontime.Time  `json:"since"`
			Until  *jsontime.Time `json:"until"`
		}
		if err := json.Unmarshal([]byte(v), &w); err != nil {
			return nil, fmt.Errorf("record %s: waiting: %w", id, err)
		}
		r.Waiting = &Waiting{Reason: w.Reason, Since: time.Time(w.Since).UTC()}
		if w.Until != nil {
			u := time.Time(*w.Until).UTC()
			r.Waiting.Until = &u
		}
	}
	if v := h[fPairSlot]; v != "" {
		t := millis(v)
		r.PairSlot = &t
	}
	if v := joinValue(h, fMeta); v != "" {
		if err := json.Unmarshal([]byte(v), &r.Metadata); err != nil {
			return nil, fmt.Errorf("record %s: metadata: %w", id, err)
		}
	}
	return r, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func millis(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(n).UTC()
}
