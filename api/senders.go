package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/jsontime"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/senders"
)

// Sender states (CONTRACT.md). active and paused come from the registry;
// circuit_open and throttled from flow control, through SenderStates.
const (
	StateActive      = "active"
	StatePaused      = "paused"
	StateCircuitOpen = "circuit_open"
	StateThrottled   = "throttled"
)

// SenderStates reports what flow control knows of senders that are not
// paused: for each number, in their order, StateCircuitOpen,
// StateThrottled, or "" when nothing holds it. A route that shows many
// senders asks for them all at once (ratelimit.States reads them in one
// round trip).
type SenderStates interface {
	States(ctx context.Context, numbers []string) ([]string, error)
}

// SenderStatuses is what /readyz shows of each sender, when the
// SenderStates hook is one too (ratelimit.States is): its state with the
// end of a throttle and the reason.
type SenderStatuses interface {
	OfAll(ctx context.Context, numbers []string) ([]ratelimit.SenderStatus, error)
}

// senderReady is a sender in /readyz's body.
type senderReady struct {
	Number string         `json:"number"`
	Tenant string         `json:"tenant"`
	State  string         `json:"state"`
	Until  *jsontime.Time `json:"until,omitempty"`
	Reason string         `json:"reason,omitempty"`
	Code   string         `json:"code,omitempty"`
}

// senderReadiness lists every sender's state for /readyz; nil when the
// server has no registry or no statuses.
func (s *Server) senderReadiness(ctx context.Context) []senderReady {
	st, ok := s.cfg.SenderStates.(SenderStatuses)
	if s.cfg.Senders == nil || !ok {
		return nil
	}
	all := s.cfg.Senders.All()
	var live []string
	for _, x := range all {
		if !x.Paused {
			live = append(live, x.Number)
		}
	}
	statuses, err := st.OfAll(ctx, live)
	if err != nil {
		s.logger(ctx).Warn("reading the senders' states", zap.Error(err))
	}
	out := []senderReady{}
	for _, x := range all {
		status := ratelimit.SenderStatus{State: StatePaused}
		switch {
		case x.Paused:
		case err != nil:
			status = ratelimit.SenderStatus{State: "unknown"}
		default:
			status, statuses = statuses[0], statuses[1:]
		}
		out = append(out, senderReady{Number: x.Number, Tenant: x.Tenant, State: status.State, Until: jsontime.Ptr(status.Until),
			Reason: status.Reason, Code: status.Code})
	}
	return out
}

// maxSenderBody bounds the body of POST and PATCH /v1/senders.
const maxSenderBody = 16 << 10

// senderRoutes are the sender registry's routes: senders are the
// deployment's, so admin keys alone manage them.
func (s *Server) senderRoutes() []route {
	return []route{
		{"POST", "/v1/senders", guardAdmin, http.HandlerFunc(s.addSender)},
		{"GET", "/v1/senders", guardAdmin, http.HandlerFunc(s.listSenders)},
		{"GET", "/v1/senders/{number}", guardAdmin, http.HandlerFunc(s.getSender)},
		{"PATCH", "/v1/senders/{number}", guardAdmin, http.HandlerFunc(s.updateSender)},
		{"DELETE", "/v1/senders/{number}", guardAdmin, http.HandlerFunc(s.removeSender)},
		{"POST", "/v1/senders/{number}/pause", guardAdmin, http.HandlerFunc(s.pauseSender)},
		{"POST", "/v1/senders/{number}/resume", guardAdmin, http.HandlerFunc(s.resumeSender)},
	}
}

// SenderView is a sender as the API shows it, and as chatq senders --json
// prints it: never its app secret.
type SenderView struct {
	Number              string         `json:"number"`
	AppID               string         `json:"app_id"`
	Tenant              string         `json:"tenant"`
	Portfolio           string         `json:"portfolio"`
	RatePerSecond       float64        `json:"rate_per_second"`
	RateBurst           int            `json:"rate_burst"`
	PairInterval        string         `json:"pair_interval"`
	PairBurst           int            `json:"pair_burst"`
	DailyRecipientLimit int            `json:"daily_recipient_limit"`
	Default             bool           `json:"default"`
	Paused              bool           `json:"paused"`
	State               string         `json:"state"`
	WebhookPath         string         `json:"webhook_path"`
	WebhookURL          *string        `json:"webhook_url"`
	Source              string         `json:"source"`
	CreatedAt           *jsontime.Time `json:"created_at"`
	UpdatedAt           *jsontime.Time `json:"updated_at"`
}

// ViewSender returns x as the API shows it, before flow control's view of
// it: envWebhookSecret is CHATQ_WEBHOOK_SECRET, whose URL is the
// environment's sender's webhook.
func ViewSender(x senders.Sender, envWebhookSecret string) SenderView {
	v := SenderView{
		Number: x.Number, AppID: x.AppID, Tenant: x.Tenant, Portfolio: x.Portfolio,
		RatePerSecond: x.Limits.RatePerSecond, RateBurst: x.Limits.RateBurst, PairInterval: x.Limits.PairInterval.String(),
		PairBurst: x.Limits.PairBurst, DailyRecipientLimit: x.Limits.DailyRecipientLimit,
		Default: x.Default, Paused: x.Paused, State: StateActive, WebhookPath: x.WebhookPath(), Source: "api",
	}
	if x.WebhookURL != "" {
		v.WebhookURL = &x.WebhookURL
	}
	if x.Env {
		// The environment's sender: the webhook URL of CHATQ_WEBHOOK_SECRET.
		v.Source = "environment"
	} else {
		v.CreatedAt, v.UpdatedAt = jsontime.Ptr(&x.CreatedAt), jsontime.Ptr(&x.UpdatedAt)
	}
	if x.Env && envWebhookSecret != "" {
		v.WebhookPath = "/webhooks/chatarchitect/" + envWebhookSecret
	}
	if x.Paused {
		v.State = StatePaused
	}
	return v
}

func (s *Server) view(ctx context.Context, x senders.Sender) SenderView {
	return s.views(ctx, []senders.Sender{x})[0]
}

// views returns xs as the API shows them, with flow control's view of
// those not paused, read at once. A sender whose state cannot be read
// shows as its registry has it.
func (s *Server) views(ctx context.Context, xs []senders.Sender) []SenderView {
	out := make([]SenderView, len(xs))
	var live []int
	var numbers []string
	for i, x := range xs {
		out[i] = ViewSender(x, s.cfg.WebhookSecret)
		if !x.Paused {
			live = append(live, i)
			numbers = append(numbers, x.Number)
		}
	}
	if s.cfg.SenderStates == nil || len(numbers) == 0 {
		return out
	}
	states, err := s.cfg.SenderStates.States(ctx, numbers)
	if err != nil {
		s.logger(ctx).Warn("reading the senders' states", zap.Int("senders", len(numbers)), zap.Error(err))
		return out
	}
	for j, i := range live {
		if states[j] != "" {
			out[i].State = states[j]
		}
	}
	return out
}

// senderBody is POST /v1/senders's body; PATCH takes the same fields but
// number, each optional, and null resets a limit to its default.
type senderBody struct {
	Number              string   `json:"number"`
	AppID               string   `json:"app_id"`
	AppSecret           string   `json:"app_secret"`
	Tenant              string   `json:"tenant"`
	Portfolio           string   `json:"portfolio"`
	RatePerSecond       *float64 `json:"rate_per_second"`
	RateBurst           *int     `json:"rate_burst"`
	PairInterval        *string  `json:"pair_interval"`
	PairBurst           *int     `json:"pair_burst"`
	DailyRecipientLimit *int     `json:"daily_recipient_limit"`
	Default             bool     `json:"default"`
	Paused              bool     `json:"paused"`
}

// decodeObject decodes one JSON object strictly into v: an unknown field,
// a value of the wrong type or trailing data is a *ValidationError naming
// the field.
func decodeObject(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return &enqueue.ValidationError{Field: typeErr.Field, Reason: "must be " + kindOf(typeErr.Type.Kind()) + ", not " + typeErr.Value}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return &enqueue.ValidationError{Field: strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), Reason: "is not a known field"}
		}
		return &enqueue.ValidationError{Field: "body", Reason: "must be one JSON object: " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &enqueue.ValidationError{Field: "body", Reason: "must be one JSON object: unexpected data after it"}
	}
	return nil
}

// kindOf names a JSON kind as a user writes it.
func kindOf(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Float64:
		return "a number"
	}
	return "an object"
}

// parseInterval reads pair_interval: a Go duration such as "6s".
func parseInterval(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, &enqueue.ValidationError{Field: "pair_interval", Reason: "must be a duration such as \"6s\" or \"0s\" (off)"}
	}
	return d, nil
}

func (s *Server) addSender(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxSenderBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var b senderBody
	if err := decodeObject(body, &b); err != nil {
		writeError(w, err, s.log)
		return
	}
	sp := senders.Spec{Number: b.Number, AppID: b.AppID, AppSecret: b.AppSecret, Tenant: b.Tenant, Portfolio: b.Portfolio,
		Default: b.Default, Paused: b.Paused, Overrides: senders.Overrides{
			RatePerSecond: b.RatePerSecond, RateBurst: b.RateBurst, PairBurst: b.PairBurst, DailyRecipientLimit: b.DailyRecipientLimit}}
	if b.PairInterval != nil {
		d, err := parseInterval(*b.PairInterval)
		if err != nil {
			writeError(w, err, s.log)
			return
		}
		sp.Overrides.PairInterval = &d
	}
	x, err := s.cfg.Senders.Add(r.Context(), sp)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("sender added", zap.String("sender", x.Number), zap.String("tenant", x.Tenant))
	writeJSON(w, http.StatusCreated, s.view(r.Context(), x))
}

func (s *Server) listSenders(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	all := s.cfg.Senders.All()
	if t := q.Get("tenant"); t != "" {
		all = s.cfg.Senders.OfTenant(t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"senders": s.views(r.Context(), all)})
}

// sender finds the sender of the route's {number}.
func (s *Server) sender(r *http.Request) (senders.Sender, error) {
	x, ok, err := s.cfg.Senders.Find(r.Context(), r.PathValue("number"))
	if err != nil {
		return x, err
	}
	if !ok {
		return x, senders.ErrNotFound
	}
	return x, nil
}

func (s *Server) getSender(w http.ResponseWriter, r *http.Request) {
	x, err := s.sender(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, s.view(r.Context(), x))
}

func (s *Server) updateSender(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxSenderBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var fields map[string]json.RawMessage
	if err := decodeObject(body, &fields); err != nil {
		writeError(w, err, s.log)
		return
	}
	p, err := patchOf(fields)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	x, err := s.cfg.Senders.Update(r.Context(), r.PathValue("number"), p)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("sender changed", zap.String("sender", x.Number), zap.String("tenant", x.Tenant))
	writeJSON(w, http.StatusOK, s.view(r.Context(), x))
}

// patchOf reads PATCH /v1/senders/{number}'s fields.
func patchOf(fields map[string]json.RawMessage) (senders.Patch, error) {
	var p senders.Patch
	for name, raw := range fields {
		null := string(raw) == "null"
		var err error
		switch name {
		case "number":
			return p, &enqueue.ValidationError{Field: name, Reason: "cannot change: remove the sender and add the new number"}
		case "paused":
			return p, &enqueue.ValidationError{Field: name, Reason: "changes with POST /v1/senders/{number}/pause and /resume"}
		case "app_id", "app_secret", "tenant", "portfolio":
			var v string
			if err = json.Unmarshal(raw, &v); err != nil || null {
				return p, &enqueue.ValidationError{Field: name, Reason: "must be a string"}
			}
			*map[string]**string{"app_id": &p.AppID, "app_secret": &p.AppSecret, "tenant": &p.Tenant, "portfolio": &p.Portfolio}[name] = &v
		case "default":
			var v bool
			if err = json.Unmarshal(raw, &v); err != nil || null {
				return p, &enqueue.ValidationError{Field: name, Reason: "must be true or false"}
			}
			p.Default = &v
		case "rate_per_second", "rate_burst", "pair_interval", "pair_burst", "daily_recipient_limit":
			if null {
				p.Reset = append(p.Reset, name)
				continue
			}
			if err := setLimit(&p.Overrides, name, raw); err != nil {
				return p, err
			}
		default:
			return p, &enqueue.ValidationError{Field: name, Reason: "is not a known field"}
		}
	}
	return p, nil
}

// setLimit reads one limit of a PATCH body into o.
func setLimit(o *senders.Overrides, name string, raw json.RawMessage) error {
	if name == "rate_per_second" {
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil {
			return &enqueue.ValidationError{Field: name, Reason: "must be a number, or null for the default"}
		}
		o.RatePerSecond = &v
		return nil
	}
	if name == "pair_interval" {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return &enqueue.ValidationError{Field: name, Reason: "must be a duration such as \"6s\", or null for the default"}
		}
		d, err := parseInterval(v)
		if err != nil {
			return err
		}
		o.PairInterval = &d
		return nil
	}
	var v int
	if err := json.Unmarshal(raw, &v); err != nil {
		return &enqueue.ValidationError{Field: name, Reason: "must be a whole number, or null for the default"}
	}
	switch name {
	case "rate_burst":
		o.RateBurst = &v
	case "pair_burst":
		o.PairBurst = &v
	case "daily_recipient_limit":
		o.DailyRecipientLimit = &v
	}
	return nil
}

func (s *Server) removeSender(w http.ResponseWriter, r *http.Request) {
	number := senders.Normalize(r.PathValue("number"))
	if err := s.cfg.Senders.Remove(r.Context(), number); err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("sender removed", zap.String("sender", number))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) pauseSender(w http.ResponseWriter, r *http.Request)  { s.setPaused(w, r, true) }
func (s *Server) resumeSender(w http.ResponseWriter, r *http.Request) { s.setPaused(w, r, false) }

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	x, err := s.cfg.Senders.SetPaused(r.Context(), r.PathValue("number"), paused)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("sender paused or resumed", zap.String("sender", x.Number), zap.Bool("paused", paused))
	writeJSON(w, http.StatusOK, s.view(r.Context(), x))
}
