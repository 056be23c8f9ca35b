package sandbox

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// maxBodyBytes bounds every request body.
const maxBodyBytes = 1 << 20

// apiError is a refusal, answered as {"status":"error","message":...} with
// its HTTP status. Its messages follow the provider's wording
// ("Invalid Destination", "Authentication Failed").
type apiError struct {
	code    int
	message string
}

func (e *apiError) Error() string { return e.message }

func badRequest(message string) *apiError {
	return &apiError{code: http.StatusBadRequest, message: message}
}

// answer is the provider's answer body.
type answer struct {
	Status    string         `json:"status"`
	Message   string         `json:"message,omitempty"`
	MessageID string         `json:"messageId,omitempty"`
	ID        string         `json:"id,omitempty"`
	Templates []templateView `json:"templates,omitempty"`
	Template  *templateView  `json:"template,omitempty"`
	// Code is WhatsApp's error code of a refusal that has one.
	Code int `json:"code,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"status":"error","message":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, answer{Status: "error", Message: message})
}

// refuse answers err: an *apiError with its status, a validation error
// with 400 and its text, anything else with 500.
func (s *Server) refuse(w http.ResponseWriter, err error) int {
	var ae *apiError
	var ve *enqueue.ValidationError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.code, ae.message)
		return ae.code
	case errors.As(err, &ve):
		writeError(w, http.StatusBadRequest, ve.Error())
		return http.StatusBadRequest
	}
	s.logger.Error("sandbox request failed", zap.Error(err))
	writeError(w, http.StatusInternalServerError, "Internal Server Error")
	return http.StatusInternalServerError
}

// readJSON decodes the request body, whatever its Content-Type, into dst.
// Unknown fields are ignored unless strict is set.
func readJSON(w http.ResponseWriter, r *http.Request, dst any, strict bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{code: http.StatusRequestEntityTooLarge, message: fmt.Sprintf("Request body is larger than %d bytes", tooBig.Limit)}
		}
		return badRequest("Request body could not be read")
	}
	return decodeJSON(body, dst, strict)
}

func decodeJSON(body []byte, dst any, strict bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("Request body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(dst)
	if err == nil {
		if _, extra := dec.Token(); !errors.Is(extra, io.EOF) {
			return badRequest("Request body is not valid JSON: unexpected data after the JSON value")
		}
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return &enqueue.ValidationError{Field: typeErr.Field, Reason: fmt.Sprintf("must be of JSON type %s, not %s", jsonType(typeErr.Type.Kind().String()), typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return badRequest("Request body is not valid JSON: " + syntaxErr.Error())
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &enqueue.ValidationError{Field: strings.Trim(name, `"`), Reason: "is not a known field"}
	}
	return badRequest("Request body is not valid JSON")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "struct", "map", "ptr":
		return "object"
	}
	return "number"
}

// checkAccount checks the channel and destination that every request
// names.
func checkAccount(channel, destination string) error {
	if channel == "" {
		return &enqueue.ValidationError{Field: "channel", Reason: "is required"}
	}
	if channel != enqueue.ChannelWhatsApp {
		return &enqueue.ValidationError{Field: "channel", Reason: fmt.Sprintf("must be %q, not %q", enqueue.ChannelWhatsApp, channel)}
	}
	return enqueue.ValidateDestination("destination", destination)
}

// pause waits d, unless ctx ends or the server closes first; it reports
// whether the whole wait happened.
func (s *Server) pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.hooks.ctx.Done():
	}
	return false
}

// gate makes an API call wait out the latency knob and checks its Basic
// auth. It answers and returns the status when the call goes no further,
// 0 when it may proceed, with the app whose credentials the call carries.
func (s *Server) gate(w http.ResponseWriter, r *http.Request, k *knobs) (app string, status int) {
	if !s.pause(r.Context(), k.latency) {
		writeError(w, http.StatusServiceUnavailable, "Service Unavailable")
		return "", http.StatusServiceUnavailable
	}
	app, ok := s.authorized(r, k)
	if !ok {
		writeError(w, http.StatusUnauthorized, "Authentication Failed")
		return "", http.StatusUnauthorized
	}
	return app, 0
}

// authorized returns the app whose credentials r carries. The app id is
// a user name, not a secret; the secret is compared in constant time.
func (s *Server) authorized(r *http.Request, k *knobs) (string, bool) {
	if k.authFailure {
		return "", false
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := s.apps[id]
	if !known {
		return id, s.authorize != nil && s.authorize(id, secret)
	}
	if subtle.ConstantTimeCompare([]byte(secret), want) != 1 {
		return "", false
	}
	return id, true
}

// registerRequest is the body of POST /webhook.
type registerRequest struct {
	Channel     string `json:"channel"`
	Destination string `json:"destination"`
	Webhook     string `json:"webhook"`
	// WebhookSeparate is accepted as "true"/"false" or a boolean and has
	// no effect: the sandbox sends every event type to the one URL.
	WebhookSeparate any `json:"webhook_separate"`
}

func (s *Server) handleRegisterWebhook(w http.ResponseWriter, r *http.Request) {
	if _, status := s.gate(w, r, s.knobs.Load()); status != 0 {
		return
	}
	var req registerRequest
	if err := readJSON(w, r, &req, false); err != nil {
		s.refuse(w, err)
		return
	}
	if err := checkAccount(req.Channel, req.Destination); err != nil {
		s.refuse(w, err)
		return
	}
	u, err := url.Parse(req.Webhook)
	switch {
	case req.Webhook == "":
		s.refuse(w, &enqueue.ValidationError{Field: "webhook", Reason: "is required"})
		return
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		s.refuse(w, &enqueue.ValidationError{Field: "webhook", Reason: "must be an http or https URL"})
		return
	}
	target := u.String()
	s.webhookURL.Store(&target)
	// The URL's path holds chatq's webhook secret: log the host only.
	s.logger.Info("webhook registered", zap.String("webhook_host", u.Host))
	writeJSON(w, http.StatusOK, answer{Status: "success", Message: "Webhook registered"})
}

// hsmRequest is the body of POST /getHSM; it may be empty.
type hsmRequest struct {
	Channel     string `json:"channel"`
	Destination string `json:"destination"`
}

func (s *Server) handleGetTemplates(w http.ResponseWriter, r *http.Request) {
	if _, status := s.gate(w, r, s.knobs.Load()); status != 0 {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		s.refuse(w, badRequest("Request body could not be read"))
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		var req hsmRequest
		if err := decodeJSON(body, &req, false); err != nil {
			s.refuse(w, err)
			return
		}
		if err := checkAccount(req.Channel, req.Destination); err != nil {
			s.refuse(w, err)
			return
		}
	}
	now := time.Now()
	views := []templateView{}
	for _, t := range s.templates.all() {
		views = append(views, t.view(now))
	}
	writeJSON(w, http.StatusOK, answer{Status: "success", Templates: views})
}

// submitRequest is the body of POST /submit_template.
type submitRequest struct {
	Channel        string             `json:"channel"`
	Destination    string             `json:"destination"`
	SubmitTemplate *submittedTemplate `json:"submit_template"`
}

func (s *Server) handleSubmitTemplate(w http.ResponseWriter, r *http.Request) {
	if _, status := s.gate(w, r, s.knobs.Load()); status != 0 {
		return
	}
	var req submitRequest
	if err := readJSON(w, r, &req, false); err != nil {
		s.refuse(w, err)
		return
	}
	if err := checkAccount(req.Channel, req.Destination); err != nil {
		s.refuse(w, err)
		return
	}
	if req.SubmitTemplate == nil {
		s.refuse(w, &enqueue.ValidationError{Field: "submit_template", Reason: "is required"})
		return
	}
	params, err := req.SubmitTemplate.validate()
	if err != nil {
		s.refuse(w, err)
		return
	}
	now := time.Now()
	t, err := s.templates.add(req.SubmitTemplate, params, now)
	if err != nil {
		s.refuse(w, err)
		return
	}
	view := t.view(now)
	writeJSON(w, http.StatusOK, answer{Status: "success", Template: &view})
}

// sendRequest is the body of POST /whatsappmessage. Fields other than these
// are ignored, as the provider does; the payload is decoded strictly.
type sendRequest struct {
	Channel     string `json:"channel"`
	Destination string `json:"destination"`
	// Source is Gupshup's business number of the send, which an app of
	// several numbers names; the sandbox logs it.
	Source  string          `json:"source"`
	Payload json.RawMessage `json:"payload"`
}

// send is a valid POST /whatsappmessage.
type send struct {
	number   string // the destination without "+"
	app      string // the app whose credentials sent it
	source   string // the body's "source", without "+"; "" when none
	payload  []byte // compacted JSON
	template bool
	// category is the template's category, lowercased; "" for a free-form
	// message.
	category string
	// templateStatus is the template's status: APPROVED, PAUSED or
	// DISABLED.
	templateStatus string
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	k := s.knobs.Load()
	app, status := s.gate(w, r, k)
	switch status {
	case 0:
	case http.StatusUnauthorized:
		s.stats.rejected.Add(1)
		return
	default:
		s.stats.serverErrors.Add(1)
		return
	}
	if k.limiter != nil && !k.limiter.Allow() {
		s.throttle(w, retryAfter(k))
		return
	}
	if k.errorRatio > 0 && rand.Float64() < k.errorRatio {
		s.serverError(w)
		return
	}
	now := time.Now()
	msg, err := s.parseSend(w, r, now)
	if err != nil {
		s.countRefusal(s.refuse(w, err))
		return
	}
	msg.app = app
	m := magicOf(msg.number)
	if m == magicInvalid {
		s.stats.rejected.Add(1)
		writeError(w, http.StatusBadRequest, "Invalid Destination")
		return
	}
	if m.counted() && s.dests.attempt(msg.number) == 1 {
		switch m {
		case magicServerError:
			s.serverError(w)
		case magicThrottle:
			s.throttle(w, 1)
		case magicHang:
			s.hang(w, r)
		case magicSpamLimit:
			s.spamLimited(w)
		case magicMaintenance:
			s.stats.throttled.Add(1)
			writeJSON(w, http.StatusServiceUnavailable, answer{Status: "error", Message: reasonMaintenance, Code: codeMaintenance})
		case magicAccountLimit:
			s.stats.throttled.Add(1)
			writeJSON(w, http.StatusTooManyRequests, answer{Status: "error", Message: reasonAccountLimit, Code: codeAccountLimit})
		}
		return
	}
	if msg.category == "marketing" && s.refuseMarketing(w, msg, m) {
		return
	}
	s.accept(w, msg, m, k, now)
}

// refuseMarketing refuses a marketing template at the send, as WhatsApp
// may before any webhook: 0017's first one with the marketing cap
// (131049), every one to 0018 as a marketing experiment's hold-out
// (130472). It reports whether it answered.
func (s *Server) refuseMarketing(w http.ResponseWriter, msg send, m magicNumber) bool {
	switch {
	case m == magicCapAtSend && s.dests.attempt(msg.number) == 1:
		s.stats.rejected.Add(1)
		writeJSON(w, http.StatusBadRequest, answer{Status: "error", Message: reasonMarketingCapped, Code: codeMarketingCapped})
	case m == magicHoldOutAtSend:
		s.stats.rejected.Add(1)
		writeJSON(w, http.StatusBadRequest, answer{Status: "error", Message: reasonHoldOut, Code: codeHoldOut})
	default:
		return false
	}
	return true
}

func (s *Server) parseSend(w http.ResponseWriter, r *http.Request, now time.Time) (send, error) {
	var req sendRequest
	if err := readJSON(w, r, &req, false); err != nil {
		return send{}, err
	}
	if err := checkAccount(req.Channel, req.Destination); err != nil {
		return send{}, err
	}
	if len(req.Payload) == 0 || string(req.Payload) == "null" {
		return send{}, &enqueue.ValidationError{Field: "payload", Reason: "is required"}
	}
	p, err := enqueue.ParsePayload(req.Payload)
	if err != nil {
		return send{}, err
	}
	if err := enqueue.ValidatePayload(p); err != nil {
		return send{}, err
	}
	var category, status string
	t, isTemplate := p.(*enqueue.Template)
	if isTemplate {
		if category, status, err = s.templates.checkSend(&t.Template, now); err != nil {
			return send{}, err
		}
	}
	var compact bytes.Buffer
	compact.Grow(len(req.Payload))
	if err := json.Compact(&compact, req.Payload); err != nil {
		return send{}, fmt.Errorf("compact payload: %w", err)
	}
	return send{number: strings.TrimPrefix(req.Destination, "+"), source: strings.TrimPrefix(req.Source, "+"),
		payload: compact.Bytes(), template: isTemplate, category: category, templateStatus: status}, nil
}

func (s *Server) countRefusal(status int) {
	switch {
	case status == http.StatusTooManyRequests:
		s.stats.throttled.Add(1)
	case status >= 500:
		s.stats.serverErrors.Add(1)
	default:
		s.stats.rejected.Add(1)
	}
}

func (s *Server) serverError(w http.ResponseWriter) {
	s.stats.serverErrors.Add(1)
	writeError(w, http.StatusInternalServerError, "Internal Server Error")
}

func (s *Server) throttle(w http.ResponseWriter, seconds int) {
	s.stats.throttled.Add(1)
	w.Header().Set("Retry-After", strconv.Itoa(seconds))
	writeError(w, http.StatusTooManyRequests, "Too Many Requests")
}

// retryAfter is the whole number of seconds, at least 1, until the rate
// limiter has a token again.
func retryAfter(k *knobs) int {
	missing := 1 - k.limiter.Tokens()
	return max(1, int(math.Ceil(missing/k.rate)))
}

// spamLimited refuses a send as WhatsApp's spam rate limit does (131048):
// the sender's quality is too low for its pace.
func (s *Server) spamLimited(w http.ResponseWriter) {
	s.stats.throttled.Add(1)
	writeJSON(w, http.StatusTooManyRequests, answer{Status: "error", Message: reasonSpamLimit, Code: codeSpamLimit})
}

// hang holds the request until the client gives up, like a provider that
// accepted the connection and never answered. It is not logged as accepted.
func (s *Server) hang(w http.ResponseWriter, r *http.Request) {
	s.stats.hung.Add(1)
	select {
	case <-r.Context().Done():
	case <-s.hooks.ctx.Done():
		writeError(w, http.StatusServiceUnavailable, "Service Unavailable")
	}
}

func (s *Server) accept(w http.ResponseWriter, msg send, m magicNumber, k *knobs, now time.Time) {
	id, err := uuid.NewRandom()
	if err != nil {
		s.serverError(w)
		s.logger.Error("new message id", zap.Error(err))
		return
	}
	if s.log.add(id, now, msg.app, msg.source, msg.number, msg.payload) {
		s.stats.duplicates.Add(1)
	}
	s.stats.accepted.Add(1)
	messageID := id.String()
	fate, pricing := s.fate(msg, m, now)
	s.emit(messageEvents(fate, pricing, messageID, newWamid(), msg.number, now, k.webhookDelay), k, k.webhookDelay)
	writeJSON(w, http.StatusOK, answer{Status: "submitted", MessageID: messageID})
}

// emit arranges events (duplicates, reordering) as the knobs say and
// schedules them.
func (s *Server) emit(events []*event, k *knobs, delay time.Duration) {
	if s.webhookURL.Load() == nil {
		s.stats.webhooksUnrouted.Add(int64(len(events)))
		return
	}
	order, copies := arrange(events, k.reorderRatio, k.duplicateRatio)
	s.stats.webhooksDuplicated.Add(int64(copies))
	s.hooks.submit(order, delay)
}

// newWamid returns a random WhatsApp message id, shaped like Meta's.
func newWamid() string {
	var b [30]byte
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := i; j < min(i+8, len(b)); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return "wamid." + base64.StdEncoding.EncodeToString(b[:])
}

// magicNumber is the outcome a destination's last four digits choose.
type magicNumber int

const (
	magicNone           magicNumber = iota
	magicUndeliverable              // 0001
	magicInvalid                    // 0002
	magicServerError                // 0003
	magicThrottle                   // 0004
	magicUnread                     // 0005
	magicOptedOut                   // 0006
	magicHang                       // 0007
	magicWindowClosed               // 0008
	magicMarketingCap               // 0009
	magicHoldOut                    // 0010
	magicSpamLimit                  // 0011
	magicCountryRefused             // 0012
	magicMaintenance                // 0015
	magicAccountLimit               // 0016
	magicCapAtSend                  // 0017
	magicHoldOutAtSend              // 0018
)

func magicOf(number string) magicNumber {
	if len(number) < 4 {
		return magicNone
	}
	switch number[len(number)-4:] {
	case "0001":
		return magicUndeliverable
	case "0002":
		return magicInvalid
	case "0003":
		return magicServerError
	case "0004":
		return magicThrottle
	case "0005":
		return magicUnread
	case "0006":
		return magicOptedOut
	case "0007":
		return magicHang
	case "0008":
		return magicWindowClosed
	case "0009":
		return magicMarketingCap
	case "0010":
		return magicHoldOut
	case "0011":
		return magicSpamLimit
	case "0012":
		return magicCountryRefused
	case "0015":
		return magicMaintenance
	case "0016":
		return magicAccountLimit
	case "0017":
		return magicCapAtSend
	case "0018":
		return magicHoldOutAtSend
	}
	return magicNone
}

// counted reports whether the outcome depends on the attempt's rank.
func (m magicNumber) counted() bool {
	switch m {
	case magicServerError, magicThrottle, magicHang, magicSpamLimit, magicMaintenance, magicAccountLimit:
		return true
	}
	return false
}

// fate is what happens to an accepted message.
type fate int

const (
	fateRead             fate = iota // enqueued, sent, delivered, read
	fateDelivered                    // enqueued, sent, delivered
	fateUndeliverable                // enqueued, failed 131026
	fateOptedOut                     // failed 1012, user-event opted-out
	fateWindowClosed                 // enqueued, failed 131047
	fateMarketingCapped              // enqueued, failed 131049
	fateHoldOut                      // enqueued, failed 130472
	fateCountryRefused               // enqueued, failed 130497
	fateTemplatePaused               // enqueued, failed 132015
	fateTemplateDisabled             // enqueued, failed 132016
)

// fate decides what happens to an accepted message, and the pricing object
// its sent and delivered events carry (nil when it fails).
func (s *Server) fate(msg send, m magicNumber, now time.Time) (fate, *pricing) {
	st := s.dests.get(msg.number)
	marketing := msg.category == "marketing"
	switch {
	case st.opt == optOut || (st.opt == optDefault && m == magicOptedOut):
		return fateOptedOut, nil
	case msg.templateStatus == statusPaused:
		return fateTemplatePaused, nil
	case msg.templateStatus == statusDisabled:
		return fateTemplateDisabled, nil
	case m == magicCountryRefused:
		return fateCountryRefused, nil
	case marketing && (m == magicMarketingCap || strings.HasPrefix(msg.number, "1")):
		// Meta's per-user marketing cap, and since April 2025 every
		// marketing template to a US number.
		return fateMarketingCapped, nil
	case marketing && m == magicHoldOut:
		return fateHoldOut, nil
	}
	windowOpen := st.windowOpen(now)
	switch m {
	case magicUndeliverable:
		return fateUndeliverable, nil
	case magicUnread:
		return fateDelivered, priceOf(msg, windowOpen)
	case magicWindowClosed:
		if !msg.template && !windowOpen {
			return fateWindowClosed, nil
		}
	}
	return fateRead, priceOf(msg, windowOpen)
}

// pricing is the pricing object of sent and delivered events.
type pricing struct {
	Billable     bool   `json:"billable"`
	PricingModel string `json:"pricing_model"`
	Category     string `json:"category"`
	Type         string `json:"type"`
}

// priceOf prices a delivered message as Meta does since 1 July 2025, per
// message: marketing and authentication templates are billed, utility
// templates too unless the user's 24h window is open, and free-form
// messages (only possible inside the window) are free.
func priceOf(msg send, windowOpen bool) *pricing {
	switch {
	case !msg.template:
		return &pricing{PricingModel: "PMP", Category: "service", Type: "free_customer_service"}
	case msg.category == "utility" && windowOpen:
		return &pricing{PricingModel: "PMP", Category: "utility", Type: "free_customer_service"}
	}
	return &pricing{Billable: true, PricingModel: "PMP", Category: msg.category, Type: "regular"}
}

// Failure codes and reasons of failed events and refusals (WhatsApp's and
// Gupshup's).
const (
	codeUndeliverable      = 131026
	reasonUndeliverable    = "Message undeliverable"
	codeOptedOut           = 1012
	reasonOptedOut         = "User has opted out"
	codeWindowClosed       = 131047
	reasonWindowClosed     = "Re-engagement message: more than 24 hours have passed since the customer last replied to this number"
	codeMarketingCapped    = 131049
	reasonMarketingCapped  = "This message was not delivered to maintain healthy ecosystem engagement"
	codeHoldOut            = 130472
	reasonHoldOut          = "User's number is part of an experiment"
	codeSpamLimit          = 131048
	reasonSpamLimit        = "Spam rate limit hit: message failed to send because there are restrictions on how many messages can be sent from this phone number"
	codeCountryRefused     = 130497
	codeMaintenance        = 131057
	reasonMaintenance      = "Business Account is in maintenance mode"
	codeAccountLimit       = 80007
	reasonAccountLimit     = "Rate limit issues: the WhatsApp Business Account has reached its rate limit"
	reasonCountryRefused   = "Business account is restricted from messaging users in this country"
	codeTemplatePaused     = 132015
	reasonTemplatePaused   = "Template is paused due to low quality"
	codeTemplateDisabled   = 132016
	reasonTemplateDisabled = "Template has been paused too many times due to low quality and is now permanently disabled"
)

// messageEvent is the payload of a message-event webhook. A pricing object
// sits beside the event's details, as in Gupshup's v2 events.
type messageEvent struct {
	ID          string   `json:"id"`
	GsID        string   `json:"gsId,omitempty"`
	Type        string   `json:"type"`
	Destination string   `json:"destination"`
	Payload     any      `json:"payload"`
	Pricing     *pricing `json:"pricing,omitempty"`
}

type enqueuedDetail struct {
	WhatsAppMessageID string `json:"whatsappMessageId"`
}

type statusDetail struct {
	TS int64 `json:"ts"` // unix seconds
}

type failureDetail struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// userEvent is the payload of a user-event webhook.
type userEvent struct {
	Phone string `json:"phone"`
	Type  string `json:"type"`
}

// messageEvents returns the webhooks of an accepted message in the order
// they happen, the i-th at now + (i+1)*delay; sent and delivered carry p.
func messageEvents(f fate, p *pricing, messageID, wamid, number string, now time.Time, delay time.Duration) []*event {
	var events []*event
	add := func(kind string, payload func(at time.Time) any) {
		at := now.Add(time.Duration(len(events)+1) * delay)
		events = append(events, &event{kind: kind, at: at, payload: payload(at)})
	}
	enqueued := func(at time.Time) any {
		return &messageEvent{ID: messageID, Type: "enqueued", Destination: number, Payload: enqueuedDetail{WhatsAppMessageID: wamid}}
	}
	status := func(typ string) func(time.Time) any {
		return func(at time.Time) any {
			ev := &messageEvent{ID: wamid, GsID: messageID, Type: typ, Destination: number, Payload: statusDetail{TS: at.Unix()}}
			if typ == "sent" || typ == "delivered" {
				ev.Pricing = p
			}
			return ev
		}
	}
	failed := func(code int, reason string) func(time.Time) any {
		return func(time.Time) any {
			return &messageEvent{ID: messageID, GsID: messageID, Type: "failed", Destination: number, Payload: failureDetail{Code: code, Reason: reason}}
		}
	}
	switch f {
	case fateRead, fateDelivered:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, status("sent"))
		add(kindMessageEvent, status("delivered"))
		if f == fateRead {
			add(kindMessageEvent, status("read"))
		}
	case fateUndeliverable:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeUndeliverable, reasonUndeliverable))
	case fateWindowClosed:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeWindowClosed, reasonWindowClosed))
	case fateMarketingCapped:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeMarketingCapped, reasonMarketingCapped))
	case fateHoldOut:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeHoldOut, reasonHoldOut))
	case fateCountryRefused:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeCountryRefused, reasonCountryRefused))
	case fateTemplatePaused:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeTemplatePaused, reasonTemplatePaused))
	case fateTemplateDisabled:
		add(kindMessageEvent, enqueued)
		add(kindMessageEvent, failed(codeTemplateDisabled, reasonTemplateDisabled))
	case fateOptedOut:
		add(kindMessageEvent, failed(codeOptedOut, reasonOptedOut))
		add(kindUserEvent, func(time.Time) any { return &userEvent{Phone: number, Type: "opted-out"} })
	}
	return events
}
