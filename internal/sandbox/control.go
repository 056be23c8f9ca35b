package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatq/chatq/enqueue"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// The /sandbox/ routes: introspection and control, without auth.

// knobsView is the JSON form of the run-time knobs.
type knobsView struct {
	Rate           float64 `json:"rate"`
	ErrorRatio     float64 `json:"error_ratio"`
	Latency        string  `json:"latency"`
	WebhookDelay   string  `json:"webhook_delay"`
	DuplicateRatio float64 `json:"duplicate_ratio"`
	ReorderRatio   float64 `json:"reorder_ratio"`
	AuthFailure    bool    `json:"auth_failure"`
}

func (k *knobs) view() knobsView {
	return knobsView{
		Rate:           k.rate,
		ErrorRatio:     k.errorRatio,
		Latency:        k.latency.String(),
		WebhookDelay:   k.webhookDelay.String(),
		DuplicateRatio: k.duplicateRatio,
		ReorderRatio:   k.reorderRatio,
		AuthFailure:    k.authFailure,
	}
}

// knobsChange is the body of PUT /sandbox/config: absent fields keep their
// value.
type knobsChange struct {
	Rate           *float64 `json:"rate"`
	ErrorRatio     *float64 `json:"error_ratio"`
	Latency        *string  `json:"latency"`
	WebhookDelay   *string  `json:"webhook_delay"`
	DuplicateRatio *float64 `json:"duplicate_ratio"`
	ReorderRatio   *float64 `json:"reorder_ratio"`
	AuthFailure    *bool    `json:"auth_failure"`
}

// apply returns k changed by c, or an error naming the first bad field.
func (c *knobsChange) apply(k knobs) (knobs, error) {
	if c.Rate != nil {
		if err := checkRate("rate", *c.Rate); err != nil {
			return k, badRequest(err.Error())
		}
		if *c.Rate != k.rate {
			k.rate = *c.Rate
			k.limiter = newLimiter(k.rate)
		}
	}
	ratios := []struct {
		name string
		from *float64
		to   *float64
	}{
		{"error_ratio", c.ErrorRatio, &k.errorRatio},
		{"duplicate_ratio", c.DuplicateRatio, &k.duplicateRatio},
		{"reorder_ratio", c.ReorderRatio, &k.reorderRatio},
	}
	for _, r := range ratios {
		if r.from == nil {
			continue
		}
		if err := checkRatio(r.name, *r.from); err != nil {
			return k, badRequest(err.Error())
		}
		*r.to = *r.from
	}
	durations := []struct {
		name string
		from *string
		to   *time.Duration
	}{
		{"latency", c.Latency, &k.latency},
		{"webhook_delay", c.WebhookDelay, &k.webhookDelay},
	}
	for _, d := range durations {
		if d.from == nil {
			continue
		}
		v, err := time.ParseDuration(*d.from)
		if err != nil {
			return k, badRequest(fmt.Sprintf("%s must be a duration such as \"200ms\" or \"1s\", not %q", d.name, *d.from))
		}
		if err := checkDuration(d.name, v); err != nil {
			return k, badRequest(err.Error())
		}
		*d.to = v
	}
	if c.AuthFailure != nil {
		k.authFailure = *c.AuthFailure
	}
	return k, nil
}

func (s *Server) handleGetConfig(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.knobs.Load().view())
}

func (s *Server) handlePutConfig(w http.ResponseWriter, r *http.Request) {
	var change knobsChange
	if err := readJSON(w, r, &change, true); err != nil {
		s.refuse(w, err)
		return
	}
	s.knobsMu.Lock()
	next, err := change.apply(*s.knobs.Load())
	if err == nil {
		s.knobs.Store(&next)
	}
	s.knobsMu.Unlock()
	if err != nil {
		s.refuse(w, err)
		return
	}
	v := next.view()
	s.logger.Info("sandbox knobs changed",
		zap.Float64("rate", v.Rate), zap.Float64("error_ratio", v.ErrorRatio),
		zap.String("latency", v.Latency), zap.String("webhook_delay", v.WebhookDelay),
		zap.Float64("duplicate_ratio", v.DuplicateRatio), zap.Float64("reorder_ratio", v.ReorderRatio),
		zap.Bool("auth_failure", v.AuthFailure))
	writeJSON(w, http.StatusOK, v)
}

// handleMessages streams the log of accepted messages, oldest first,
// optionally only those to ?destination= (with or without "+"). The log can
// hold millions of entries, so it is written as it is read, without
// building the answer in memory and without holding the log's lock.
func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	filter := strings.TrimPrefix(r.URL.Query().Get("destination"), "+")
	records, chunks, origins := s.log.snapshot()
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 0, 1024)
	buf = append(buf, '[')
	first := true
	for i := range records {
		rec := &records[i]
		number, payload := entry(chunks, rec)
		if filter != "" && string(number) != filter {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = append(buf, `{"messageId":"`...)
		buf = append(buf, rec.id.String()...)
		buf = append(buf, `","destination":`...)
		buf = strconv.AppendQuote(buf, string(number))
		from := origins[rec.sender]
		buf = append(buf, `,"app_id":`...)
		buf = appendString(buf, from.app)
		if from.source != "" {
			buf = append(buf, `,"source":`...)
			buf = appendString(buf, from.source)
		}
		buf = append(buf, `,"payload":`...)
		buf = append(buf, payload...)
		buf = append(buf, `,"received_at":"`...)
		buf = time.Unix(0, rec.at).UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, `"}`...)
		if _, err := bw.Write(buf); err != nil {
			return // the client went away
		}
		buf = buf[:0]
	}
	buf = append(buf, ']')
	if _, err := bw.Write(buf); err != nil {
		return
	}
	_ = bw.Flush()
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// inboundRequest is the body of POST /sandbox/inbound: a user writes.
type inboundRequest struct {
	From string `json:"from"`
	Text string `json:"text"`
}

// inboundMessage is the payload of a "message" webhook.
type inboundMessage struct {
	ID      string      `json:"id"`
	Source  string      `json:"source"`
	Type    string      `json:"type"`
	Payload inboundText `json:"payload"`
	Sender  sender      `json:"sender"`
}

type inboundText struct {
	Text string `json:"text"`
}

type sender struct {
	Phone string `json:"phone"`
	Name  string `json:"name"`
}

// handleInbound simulates a user's message: a "message" webhook, and the
// user's 24h window opens.
func (s *Server) handleInbound(w http.ResponseWriter, r *http.Request) {
	var req inboundRequest
	if err := readJSON(w, r, &req, true); err != nil {
		s.refuse(w, err)
		return
	}
	if err := enqueue.ValidateDestination("from", req.From); err != nil {
		s.refuse(w, err)
		return
	}
	if req.Text == "" {
		s.refuse(w, &enqueue.ValidationError{Field: "text", Reason: "is required"})
		return
	}
	if n := utf8.RuneCountInString(req.Text); n > enqueue.MaxTextLength {
		s.refuse(w, &enqueue.ValidationError{Field: "text", Reason: fmt.Sprintf("must be at most %d characters, not %d", enqueue.MaxTextLength, n)})
		return
	}
	number := strings.TrimPrefix(req.From, "+")
	now := time.Now()
	s.dests.update(number, func(st *destState) { st.windowFrom = now })
	id := uuid.NewString()
	s.emit([]*event{{kind: kindMessage, at: now, payload: &inboundMessage{
		ID:      id,
		Source:  number,
		Type:    "text",
		Payload: inboundText{Text: req.Text},
		Sender:  sender{Phone: number, Name: "Sandbox User"},
	}}}, s.knobs.Load(), 0)
	writeJSON(w, http.StatusOK, answer{Status: "success", ID: id})
}

// optRequest is the body of POST /sandbox/optout and /sandbox/optin.
type optRequest struct {
	Phone string `json:"phone"`
}

func (s *Server) handleOptOut(w http.ResponseWriter, r *http.Request) {
	s.handleOpt(w, r, optOut, "opted-out")
}

func (s *Server) handleOptIn(w http.ResponseWriter, r *http.Request) {
	s.handleOpt(w, r, optIn, "opted-in")
}

// handleOpt records a user's opt-out or opt-in, which decides the fate of
// the messages sent to them from now on, and sends the user-event.
func (s *Server) handleOpt(w http.ResponseWriter, r *http.Request, opt int8, eventType string) {
	var req optRequest
	if err := readJSON(w, r, &req, true); err != nil {
		s.refuse(w, err)
		return
	}
	if err := enqueue.ValidateDestination("phone", req.Phone); err != nil {
		s.refuse(w, err)
		return
	}
	number := strings.TrimPrefix(req.Phone, "+")
	s.dests.update(number, func(st *destState) { st.opt = opt })
	s.emit([]*event{{kind: kindUserEvent, at: time.Now(), payload: &userEvent{Phone: number, Type: eventType}}}, s.knobs.Load(), 0)
	writeJSON(w, http.StatusOK, answer{Status: "success"})
}

// templateStatusRequest is the body of PUT /sandbox/templates/{name}.
type templateStatusRequest struct {
	Status string `json:"status"`
	// Reason is the template-event's reason; empty gives a default one.
	Reason string `json:"reason"`
}

// defaultStatusReason is the reason of a status set without one, after
// Meta's wording.
func defaultStatusReason(status string) string {
	switch status {
	case statusPaused:
		return "The template was paused because of low quality: customers blocked or reported it"
	case statusDisabled:
		return "The template was disabled because of low quality after repeated pauses"
	case statusRejected:
		return "The template was rejected in review"
	}
	return ""
}

// templateEvent is the payload of a template-event webhook.
type templateEvent struct {
	ID           string `json:"id"`
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Status       string `json:"status"`
	Reason       string `json:"reason,omitempty"`
}

// handleTemplateStatus sets the status of a template (every language of
// that name), as Meta's quality rating or review would, and sends a
// template-event webhook for each.
func (s *Server) handleTemplateStatus(w http.ResponseWriter, r *http.Request) {
	var req templateStatusRequest
	if err := readJSON(w, r, &req, true); err != nil {
		s.refuse(w, err)
		return
	}
	if err := oneOf("status", req.Status, settableStatuses()); err != nil {
		s.refuse(w, err)
		return
	}
	if n := utf8.RuneCountInString(req.Reason); n > maxTemplateContent {
		s.refuse(w, &enqueue.ValidationError{Field: "reason", Reason: fmt.Sprintf("must be at most %d characters, not %d", maxTemplateContent, n)})
		return
	}
	status := strings.ToUpper(req.Status)
	reason := req.Reason
	if reason == "" {
		reason = defaultStatusReason(status)
	}
	name := r.PathValue("name")
	now := time.Now()
	changed := s.templates.setStatus(name, status, reason, now)
	if len(changed) == 0 {
		s.refuse(w, &apiError{code: http.StatusNotFound, message: "Template not found: " + name})
		return
	}
	views := make([]templateView, len(changed))
	events := make([]*event, len(changed))
	for i, t := range changed {
		views[i] = t.view(now)
		events[i] = &event{kind: kindTemplateEvent, at: now, payload: &templateEvent{
			ID: t.id, ElementName: t.elementName, LanguageCode: t.languageCode, Status: status, Reason: reason,
		}}
	}
	s.emit(events, s.knobs.Load(), 0)
	s.logger.Info("template status set", zap.String("template", name), zap.String("status", status))
	writeJSON(w, http.StatusOK, answer{Status: "success", Templates: views})
}

func (s *Server) handleReset(w http.ResponseWriter, _ *http.Request) {
	s.reset()
	writeJSON(w, http.StatusOK, answer{Status: "success"})
}

// appendString appends s as a JSON string: app ids and sources are what a
// caller sent, not digits alone.
func appendString(buf []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(buf, b...)
}
