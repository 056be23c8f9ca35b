package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/jsontime"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// policyRoutes are the suppression list and template routes, served when
// the server has a policy.
func (s *Server) policyRoutes() []route {
	// The suppression lists (one per tenant: ?tenant=, default without)
	// and the template cache: admin keys alone read and change them.
	return []route{
		{"GET", "/v1/suppressions", guardAdmin, http.HandlerFunc(s.listSuppressions)},
		{"GET", "/v1/suppressions/{destination}", guardAdmin, http.HandlerFunc(s.getSuppression)},
		{"PUT", "/v1/suppressions/{destination}", guardAdmin, http.HandlerFunc(s.putSuppression)},
		{"DELETE", "/v1/suppressions/{destination}", guardAdmin, http.HandlerFunc(s.deleteSuppression)},
		{"GET", "/v1/templates", guardAdmin, http.HandlerFunc(s.listTemplates)},
	}
}

func (s *Server) listSuppressions(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "cursor", "limit", "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	c, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	// The cursor is the suppression hash's scan cursor.
	var cursor uint64
	if c != "" {
		if cursor, err = strconv.ParseUint(c, 10, 64); err != nil {
			writeError(w, listError(store.ErrInvalidCursor), s.log)
			return
		}
	}
	list, err := s.suppressions(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	page, next, err := list.List(r.Context(), cursor, int64(limit))
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var nc string
	if next != 0 {
		nc = strconv.FormatUint(next, 10)
	}
	writeJSON(w, http.StatusOK, struct {
		Suppressions []policy.Suppression `json:"suppressions"`
		NextCursor   *string              `json:"next_cursor"`
	}{nonNil(page), nextCursor(nc)})
}

// destination reads and checks the {destination} of a suppression route.
func destination(r *http.Request) (string, error) {
	d := r.PathValue("destination")
	if err := enqueue.ValidateDestination("destination", d); err != nil {
		return "", err
	}
	return policy.Normalize(d), nil
}

// suppressions is the suppression list a route reads or changes: that of
// ?tenant=, tenant default's without it. Each tenant has one list for all
// its senders.
func (s *Server) suppressions(r *http.Request) (*policy.Suppressions, error) {
	tenant := r.URL.Query().Get("tenant")
	if tenant == "" {
		return s.cfg.Policy.Suppressions, nil
	}
	if err := tenants.Validate("tenant", tenant); err != nil {
		return nil, err
	}
	return s.cfg.Policy.ForTenant(tenant).Suppressions, nil
}

func (s *Server) getSuppression(w http.ResponseWriter, r *http.Request) {
	d, err := destination(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	list, err := s.suppressions(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	sup, err := list.Get(r.Context(), d)
	if err == nil && sup == nil {
		err = policy.ErrNotSuppressed
	}
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, sup)
}

// maxSuppressionBody bounds PUT /v1/suppressions/{destination}'s body.
const maxSuppressionBody = 4 << 10

func (s *Server) putSuppression(w http.ResponseWriter, r *http.Request) {
	d, err := destination(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	list, err := s.suppressions(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var req struct {
		Reason string `json:"reason"`
	}
	// The body is optional: a bare PUT suppresses with a default reason.
	if r.ContentLength != 0 {
		body, err := readBody(w, r, maxSuppressionBody)
		if err != nil {
			writeError(w, err, s.log)
			return
		}
		if len(strings.TrimSpace(string(body))) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(body)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				writeError(w, &enqueue.ValidationError{Field: "body", Reason: `must be {"reason":"..."} or empty: ` + err.Error()}, s.log)
				return
			}
		}
	}
	sup := policy.Suppression{Destination: d, Reason: cmpOr(req.Reason, "suppressed by an operator"), Source: policy.SourceOperator, At: s.now()}
	if err := list.Add(r.Context(), sup); err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("recipient suppressed by an operator", zap.String("destination", d))
	got, err := list.Get(r.Context(), d)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (s *Server) deleteSuppression(w http.ResponseWriter, r *http.Request) {
	d, err := destination(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	list, err := s.suppressions(r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	removed, err := list.Remove(r.Context(), d)
	if err == nil && !removed {
		err = policy.ErrNotSuppressed
	}
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("recipient unsuppressed by an operator", zap.String("destination", d))
	writeJSON(w, http.StatusOK, map[string]any{"destination": d, "suppressed": false})
}

// listTemplates answers a sender's template cache (?sender=, the
// environment's sender without it); ?refresh=true fetches it from
// ChatArchitect first, where this process has credentials.
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	tpl := s.cfg.Policy.Templates
	if sender := r.URL.Query().Get("sender"); sender != "" {
		known := false
		if s.cfg.Senders != nil {
			var err error
			if _, known, err = s.cfg.Senders.Find(r.Context(), sender); err != nil {
				writeError(w, err, s.log)
				return
			}
		}
		if !known {
			writeError(w, &enqueue.ValidationError{Field: "sender", Reason: "names no sender"}, s.log)
			return
		}
		tpl = s.cfg.Policy.ForSender(sender).Templates
	}
	var c *policy.Catalog
	var err error
	if r.URL.Query().Get("refresh") == "true" {
		c, err = tpl.Sync(r.Context())
		if err != nil {
			s.logger(r.Context()).Warn("refreshing templates", zap.Error(err))
			writeError(w, errorf(http.StatusBadGateway, "upstream_error", "the templates could not be fetched from ChatArchitect"), s.log)
			return
		}
	} else if c, err = tpl.Catalog(r.Context()); err != nil {
		writeError(w, err, s.log)
		return
	}
	if c == nil {
		c = &policy.Catalog{Templates: []policy.Template{}}
	}
	out := map[string]any{"templates": c.Templates, "fetched_at": nil}
	if !c.FetchedAt.IsZero() {
		out["fetched_at"] = jsontime.Time(c.FetchedAt)
	}
	writeJSON(w, http.StatusOK, out)
}

// conversation learns from a webhook what it says about its user and
// forwards inbound messages and user events: a failed delivery with an
// opt-out code suppresses the recipient, a closed-window code marks the
// window closed, an inbound message opens it, opted-out and opted-in
// events put the user on the suppression list and take them off. res is
// the delivery event's correlation, if the webhook was one; from is the
// sender whose webhook URL it came to ("" for CHATQ_WEBHOOK_SECRET's
// without a sender of the environment).
func (s *Server) conversation(ctx context.Context, hook *chatarchitect.Webhook, res *store.EventResult, from string) error {
	if s.cfg.Policy == nil && s.cfg.Inbound == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	at := hook.Timestamp
	if now := s.now(); at.IsZero() || at.After(now) {
		at = now
	}
	switch {
	case hook.Event != nil:
		return s.learnFromEvent(ctx, hook.Event, res, at, from)
	case hook.User != nil:
		if s.cfg.Policy != nil {
			applied, err := s.cfg.Policy.UserEvent(ctx, hook.User.Phone, hook.User.Type, at)
			if err != nil {
				return err
			}
			s.logger(ctx).Info("user event", zap.String("type", hook.User.Type), zap.String("destination", hook.User.Phone),
				zap.Time("at", at), zap.String("outcome", string(applied)))
		}
		return s.forward(ctx, &callback.Inbound{Type: callback.InboundUserEvent, Phone: hook.User.Phone, At: at, Event: hook.User.Type, Webhook: hook.Raw})
	case hook.Inbound != nil:
		in := hook.Inbound
		if s.cfg.Policy != nil {
			// The user wrote to the sender whose URL it came to: that
			// sender's window opens, no other's.
			if err := s.cfg.Policy.WindowsOf(from).Opened(ctx, in.Source, at); err != nil {
				return err
			}
		}
		return s.forward(ctx, &callback.Inbound{Type: callback.InboundMessage, Phone: in.Source, At: at, Webhook: hook.Raw,
			Message: &callback.InboundText{ID: in.ID, Type: in.Type, Text: in.Text, SenderName: in.SenderName}})
	}
	return nil
}

func (s *Server) learnFromEvent(ctx context.Context, ev *chatarchitect.MessageEvent, res *store.EventResult, at time.Time, from string) error {
	if s.cfg.Policy == nil || ev.Type != chatarchitect.EventFailed ||
		!(chatarchitect.IsOptOutCode(ev.Code) || chatarchitect.IsWindowClosedCode(ev.Code) || policy.IsCountryRefusedCode(ev.Code) ||
			policy.IsMarketingCapCode(ev.Code)) {
		return nil
	}
	// The opt-out and the marketing cap are the message's tenant's, the
	// closed window and the refused country its sender's (the sender whose URL the event came to, when
	// no record is known).
	dest, tenant, sender := ev.Destination, "", from
	if res != nil && res.RecordID != "" {
		rec, err := s.store.Get(ctx, res.RecordID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if rec != nil {
			dest, tenant, sender = cmp.Or(dest, rec.Destination), rec.Tenant, cmp.Or(rec.Sender, from)
		}
	}
	if !ev.Timestamp.IsZero() && ev.Timestamp.Before(at) {
		at = ev.Timestamp
	}
	learned, err := s.cfg.Policy.ForTenant(tenant).ForSender(sender).LearnFailure(ctx, dest, ev.Code, ev.Reason, policy.SourceWebhook, at)
	if err != nil {
		return err
	}
	if learned != policy.LearnedNothing {
		s.logger(ctx).Info("learned from a failed delivery", zap.String("learned", string(learned)), zap.String("code", ev.Code), zap.String("destination", dest))
	}
	return nil
}

func (s *Server) forward(ctx context.Context, in *callback.Inbound) error {
	if s.cfg.Inbound == nil {
		return nil
	}
	return s.cfg.Inbound.Forward(ctx, in)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
