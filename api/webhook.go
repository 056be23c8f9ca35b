package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/store"
)

// webhookSecret reports whether secret opens the webhook route: the
// CHATQ_WEBHOOK_SECRET, or a stored sender's own secret (its webhook_path);
// and the number of the sender whose URL it is ("" when
// CHATQ_WEBHOOK_SECRET defines no sender). Events are correlated by
// ChatArchitect's message ids, whichever sender's URL they arrive at. A
// secret the registry lacks may be a sender's added through another
// process since this one's last reload: the registry refreshes first.
func (s *Server) webhookSecret(ctx context.Context, secret string) (string, bool, error) {
	env := subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.WebhookSecret)) == 1
	if s.cfg.Senders == nil {
		return "", env, nil
	}
	// The registry knows the environment's sender by CHATQ_WEBHOOK_SECRET
	// too, when CHATQ_CA_SOURCE defines one.
	x, ok := s.cfg.Senders.ByWebhookSecret(secret)
	if !ok && !env {
		if err := s.cfg.Senders.Refresh(ctx); err != nil {
			return "", false, err
		}
		x, ok = s.cfg.Senders.ByWebhookSecret(secret)
	}
	return x.Number, ok || env, nil
}

// webhook receives ChatArchitect's webhooks. Only the secret in the URL
// proves where they come from (nothing signs them), so a wrong secret looks
// like any unknown route. A delivery event is correlated with its record
// before the answer, which takes a millisecond or two: answering 200 only
// once the event is stored means a Redis outage makes the provider retry
// rather than lose the event.
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	from, ok, err := s.webhookSecret(r.Context(), r.PathValue("secret"))
	if err != nil {
		// Unread, the event is not lost: the provider sends it again.
		writeError(w, err, s.log)
		return
	}
	if !ok {
		writeError(w, errNotFound, s.log)
		return
	}
	body, err := readWebhookBody(w, r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	hook, err := chatarchitect.ParseWebhook(body)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, "invalid_request", "unparsable webhook: "+err.Error()), s.log)
		return
	}
	label, correlation := webhookLabel(hook), "ignored"
	var applied *store.EventResult
	if hook.Event != nil {
		ev, ok := toEvent(hook, s.now())
		if ok {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			res, err := s.store.ApplyEvent(ctx, ev)
			if err != nil {
				writeError(w, err, s.log)
				return
			}
			correlation, applied = string(res.Correlation), &res
			if res.Outcome == store.Changed && ev.Status == store.Failed {
				s.cfg.Metrics.DeliveryFailed(ev.Error.Class, ev.Error.Code)
			}
			if res.Billable != "" {
				s.cfg.Metrics.Billable(res.Billable)
			}
			if res.Template != "" {
				s.logger(r.Context()).Info("template status learned from a failed message", zap.String("template", res.Template),
					zap.String("status", string(ev.Template)), zap.String("code", ev.Error.Code), zap.String("message_id", res.RecordID))
			}
			s.logger(r.Context()).Debug("webhook event", zap.String("type", hook.Event.Type), zap.String("correlation", correlation),
				zap.String("message_id", res.RecordID), zap.String("status", string(res.Status)))
		}
	}
	if hook.Template != nil {
		if err := s.templateEvent(r.Context(), hook.Template, from); err != nil {
			writeError(w, err, s.log)
			return
		}
	}
	if err := s.conversation(r.Context(), hook, applied, from); err != nil {
		writeError(w, err, s.log)
		return
	}
	if err := s.relay(r.Context(), hook, applied, from); err != nil {
		writeError(w, err, s.log)
		return
	}
	s.cfg.Metrics.WebhookEvent(label, correlation)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, webhookOK)
}

// templateEvent records a template's new status for the sender whose URL
// the webhook came to: a pause holds the template's messages, an approval
// releases them at once, in the order chatq accepted them, and a disabled
// or rejected template ends them.
func (s *Server) templateEvent(ctx context.Context, ev *chatarchitect.TemplateEvent, from string) error {
	st, ok := store.TemplateStateFor(ev.Status)
	if !ok || ev.ElementName == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	released, err := s.store.SetTemplateState(ctx, from, ev.ElementName, st, s.now())
	if err != nil {
		return err
	}
	s.logger(ctx).Info("template status", zap.String("template", ev.ElementName), zap.String("language", ev.LanguageCode),
		zap.String("status", ev.Status), zap.String("sender", from), zap.Int("released", released))
	return nil
}

// relay hands the webhook on to the application of its sender, when one
// registered a webhook URL through the drop-in POST /webhook: a delivery
// event goes to the application of the message's sender (found when it is
// forwarded: the event may be parked), an inbound message or user event to
// the application of the sender whose URL it came to (from).
func (s *Server) relay(ctx context.Context, hook *chatarchitect.Webhook, applied *store.EventResult, from string) error {
	if s.cfg.Relay == nil || s.cfg.Senders == nil {
		return nil
	}
	switch {
	case hook.Event != nil:
		if !s.appWebhooks() {
			return nil
		}
		record := ""
		if applied != nil {
			record = applied.RecordID
		}
		return s.cfg.Relay.Event(ctx, record, hook.Event.ID, hook.Event.GsID, from, hook.Raw)
	case hook.User != nil, hook.Inbound != nil:
		if x, ok := s.cfg.Senders.Lookup(from); !ok || x.WebhookURL == "" {
			return nil
		}
		return s.cfg.Relay.Inbound(ctx, from, hook.Raw)
	}
	return nil
}

// appWebhooks reports whether any sender's application registered a
// webhook URL: without one, nothing is relayed and webhooks cost nothing
// more.
func (s *Server) appWebhooks() bool {
	for _, x := range s.cfg.Senders.All() {
		if x.WebhookURL != "" {
			return true
		}
	}
	return false
}

// webhookOK is the answer to every webhook taken, written as it is: the
// receiver answers thousands a second.
const webhookOK = `{"status":"ok"}` + "\n"

func readWebhookBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	// ChatArchitect's Content-Type is not to be trusted; the body is JSON.
	r.Header.Set("Content-Type", "application/json")
	body, err := readBody(w, r, maxWebhookBody)
	if errors.Is(err, errNotJSON) {
		return nil, errorf(http.StatusBadRequest, "invalid_request", "unreadable webhook")
	}
	return body, err
}

// toEvent turns a message-event webhook into a store event; ok is false for
// event types that do not change a record.
func toEvent(h *chatarchitect.Webhook, now time.Time) (store.Event, bool) {
	me := h.Event
	st := store.Status(me.Type)
	switch st {
	case store.Enqueued, store.Sent, store.Delivered, store.Read, store.Failed:
	default:
		return store.Event{}, false
	}
	at := me.Timestamp
	if at.IsZero() {
		at = h.Timestamp
	}
	key := me.Type
	if !at.IsZero() {
		key += ":" + strconv.FormatInt(at.UnixMilli(), 10)
	} else {
		at = now
	}
	ev := store.Event{ID: me.ID, GsID: me.GsID, Status: st, At: at, Key: key}
	if st == store.Enqueued {
		ev.WhatsAppID = me.WhatsAppID
	}
	if p := me.Pricing; p != nil {
		ev.Pricing = &store.Pricing{Billable: p.Billable, PricingModel: p.PricingModel, Category: p.Category, Type: p.Type}
	}
	if st == store.Failed {
		class, ok := chatarchitect.ClassifyCode(me.Code)
		if !ok {
			class = chatarchitect.ClassPermanent
		}
		ev.Error = &store.ErrorInfo{Class: string(class), Code: me.Code, Message: me.Reason, At: at}
		switch info, _ := chatarchitect.LookupCode(me.Code); {
		case info.Class == chatarchitect.ClassTemplatePaused:
			ev.Template = store.TemplatePaused
		case info.Marker == chatarchitect.MarkerTemplateDisabled:
			ev.Template = store.TemplateDisabled
		}
	}
	return ev, true
}

// webhookLabel names a webhook for the metrics from a fixed set, so that
// whatever arrives cannot blow up the label space.
func webhookLabel(h *chatarchitect.Webhook) string {
	switch h.Type {
	case chatarchitect.WebhookMessage, chatarchitect.WebhookUserEvent, chatarchitect.WebhookTemplateEvent:
		return h.Type
	case chatarchitect.WebhookMessageEvent:
		if h.Event != nil {
			switch h.Event.Type {
			case chatarchitect.EventEnqueued, chatarchitect.EventSent, chatarchitect.EventDelivered, chatarchitect.EventRead, chatarchitect.EventFailed:
				return h.Type + "." + h.Event.Type
			}
		}
		return h.Type + ".other"
	}
	return "other"
}
