package api

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/senders"
)

// The drop-in ChatArchitect endpoints: ChatArchitect's own routes and
// bodies, with Basic auth = a sender's app_id:app_secret, so that an
// application that talks to ChatArchitect switches to chatq by changing
// its base URL alone. Answers are ChatArchitect's: {"status":...}.

// maxDropInBody bounds the bodies of /getHSM, /submit_template and
// /webhook; /whatsappmessage takes MaxMessageBody.
const maxDropInBody = 64 << 10

// dropInRoutes are the drop-in routes, each behind the Basic credentials of
// a sender's app (guardApp).
func (s *Server) dropInRoutes() []route {
	return []route{
		{"POST", "/whatsappmessage", guardApp, withApp(s.dropInSend)},
		{"POST", "/getHSM", guardApp, withApp(s.dropInTemplates)},
		{"POST", "/submit_template", guardApp, withApp(s.dropInSubmit)},
		{"POST", "/webhook", guardApp, withApp(s.dropInWebhook)},
	}
}

// caError answers as ChatArchitect does when it refuses a request.
func caError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"status": "error", "message": message})
}

// caFail answers err, as toError maps it, in ChatArchitect's shape.
func (s *Server) caFail(w http.ResponseWriter, err error) {
	e := toError(err, requestLog(w, s.log))
	caError(w, e.Status, e.Message)
}

// appHandler is a drop-in route's handler, given the senders of the app
// whose credentials the request carried.
type appHandler func(w http.ResponseWriter, r *http.Request, app []senders.Sender)

// appKey is the context key of the senders of the app whose credentials
// the request carried.
type appKey struct{}

// withApp hands an appHandler the senders app put in the request's context.
func withApp(h appHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app, _ := r.Context().Value(appKey{}).([]senders.Sender)
		h(w, r, app)
	})
}

// app lets a request through with the Basic credentials of a sender's
// ChatArchitect app, the secret compared in constant time with each of the
// app's senders'; the request's context holds those senders (withApp).
func (s *Server) app(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		var app []senders.Sender
		if ok && id != "" && secret != "" {
			for _, x := range s.cfg.Senders.OfApp(id) {
				if subtle.ConstantTimeCompare([]byte(secret), []byte(x.AppSecret)) == 1 {
					app = append(app, x)
				}
			}
		}
		if len(app) == 0 {
			w.Header().Set("WWW-Authenticate", `Basic realm="chatq", charset="UTF-8"`)
			caError(w, http.StatusUnauthorized, "Authentication Failed: Basic auth with a sender's app_id and app_secret is required")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), appKey{}, app)))
	})
}

// pick returns the app's sender of number; without a number, the app's only
// sender, or its tenant's default among them.
func pick(app []senders.Sender, field, number string) (senders.Sender, error) {
	if number != "" {
		for _, x := range app {
			if x.Number == senders.Normalize(number) {
				return x, nil
			}
		}
		return senders.Sender{}, &enqueue.ValidationError{Field: field, Reason: "is not a number of this app's senders"}
	}
	if len(app) == 1 {
		return app[0], nil
	}
	for _, x := range app {
		if x.Default {
			return x, nil
		}
	}
	return senders.Sender{}, &enqueue.ValidationError{Field: field, Reason: "is required: this app has several senders"}
}

// readDropIn reads a drop-in body, answering ChatArchitect's way when it
// cannot.
func (s *Server) readDropIn(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := readBody(w, r, limit)
	if err != nil {
		s.caFail(w, err)
		return nil, false
	}
	return body, true
}

func (s *Server) dropInSend(w http.ResponseWriter, r *http.Request, app []senders.Sender) {
	body, ok := s.readDropIn(w, r, MaxMessageBody)
	if !ok {
		return
	}
	// Gupshup's "source" names the sender when an app has several; it is
	// not a field of chatq's message.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		caError(w, http.StatusBadRequest, "the body must be one JSON object")
		return
	}
	var source string
	if raw, ok := fields["source"]; ok {
		if err := json.Unmarshal(raw, &source); err != nil {
			caError(w, http.StatusBadRequest, "source must be a string: the sender's number")
			return
		}
		delete(fields, "source")
		body, _ = json.Marshal(fields)
	}
	m, err := enqueue.DecodeMessage(body)
	if err != nil {
		s.caFail(w, err)
		return
	}
	x, err := pick(app, "source", cmp.Or(source, m.Sender))
	if err != nil {
		s.caFail(w, err)
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" && m.IdempotencyKey == "" {
		m.IdempotencyKey = key
	}
	m.Tenant, m.Sender = x.Tenant, x.Number
	res, err := s.client.SendBatch(r.Context(), []*enqueue.Message{m})
	if err == nil {
		err = res[0].Err
	}
	if err != nil {
		s.caFail(w, err)
		return
	}
	if res[0].Created {
		s.cfg.Metrics.Enqueued(res[0].Record.Priority)
	}
	// A struct, not a map: the keys in ChatArchitect's order, for clients
	// that print or compare the answer as text.
	writeJSON(w, http.StatusOK, struct {
		Status    string `json:"status"`
		MessageID string `json:"messageId"`
	}{"submitted", res[0].Record.ID})
}

// upstreamOf is a ChatArchitect client with the sender's credentials.
func (s *Server) upstreamOf(x senders.Sender) *chatarchitect.Client {
	return chatarchitect.New(chatarchitect.Config{
		BaseURL: s.cfg.Upstream.BaseURL, AppID: x.AppID, AppSecret: x.AppSecret, Source: x.Number, Timeout: s.cfg.Upstream.Timeout,
	}, s.upstream)
}

// upstreamFail answers a failed pass-through: ChatArchitect's refusal of
// the request as a 400 with its reason, anything else (unreachable, 5xx,
// refused credentials, throttled) as a 502.
func (s *Server) upstreamFail(w http.ResponseWriter, x senders.Sender, err error) {
	var ae *chatarchitect.APIError
	if errors.As(err, &ae) && ae.StatusCode >= 400 && ae.StatusCode < 500 &&
		ae.StatusCode != http.StatusUnauthorized && ae.StatusCode != http.StatusForbidden && ae.StatusCode != http.StatusTooManyRequests {
		caError(w, http.StatusBadRequest, ae.Reason)
		return
	}
	requestLog(w, s.log).Warn("drop-in pass-through to ChatArchitect failed", zap.String("sender", x.Number), zap.Error(err))
	caError(w, http.StatusBadGateway, "ChatArchitect did not answer this request for chatq; try again")
}

// accountRequest is the part of a /getHSM, /submit_template or /webhook
// body that names the business number.
type accountRequest struct {
	Channel     string `json:"channel"`
	Destination string `json:"destination"`
}

func (a *accountRequest) account() *accountRequest { return a }

// readAccount reads the body of an account route (/getHSM,
// /submit_template, /webhook) into req, a struct that embeds
// accountRequest, checks its channel and returns the app's sender its
// destination names. On failure it has answered, and ok is false.
func (s *Server) readAccount(w http.ResponseWriter, r *http.Request, app []senders.Sender, req interface{ account() *accountRequest }) (x senders.Sender, ok bool) {
	body, ok := s.readDropIn(w, r, maxDropInBody)
	if !ok {
		return x, false
	}
	if err := decodeObject(body, req); err != nil {
		s.caFail(w, err)
		return x, false
	}
	a := req.account()
	if a.Channel != "" && a.Channel != enqueue.ChannelWhatsApp {
		s.caFail(w, &enqueue.ValidationError{Field: "channel", Reason: "must be \"whatsapp\""})
		return x, false
	}
	x, err := pick(app, "destination", a.Destination)
	if err != nil {
		s.caFail(w, err)
		return x, false
	}
	return x, true
}

func (s *Server) dropInTemplates(w http.ResponseWriter, r *http.Request, app []senders.Sender) {
	var req struct {
		accountRequest
		GetHSM any `json:"getHSM"`
	}
	x, ok := s.readAccount(w, r, app, &req)
	if !ok {
		return
	}
	list, err := s.upstreamOf(x).Templates(r.Context())
	if err != nil {
		s.upstreamFail(w, x, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "templates": nonNil(list)})
}

func (s *Server) dropInSubmit(w http.ResponseWriter, r *http.Request, app []senders.Sender) {
	var req struct {
		accountRequest
		Submit *chatarchitect.TemplateSubmission `json:"submit_template"`
	}
	x, ok := s.readAccount(w, r, app, &req)
	if !ok {
		return
	}
	if req.Submit == nil {
		s.caFail(w, &enqueue.ValidationError{Field: "submit_template", Reason: "is required"})
		return
	}
	t, err := s.upstreamOf(x).SubmitTemplate(r.Context(), *req.Submit)
	if err != nil {
		s.upstreamFail(w, x, err)
		return
	}
	s.logger(r.Context()).Info("template submitted through the drop-in route", zap.String("sender", x.Number), zap.String("template", t.ElementName))
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "template": t})
}

func (s *Server) dropInWebhook(w http.ResponseWriter, r *http.Request, app []senders.Sender) {
	var req struct {
		accountRequest
		Webhook  string `json:"webhook"`
		Separate any    `json:"webhook_separate"`
	}
	x, ok := s.readAccount(w, r, app, &req)
	if !ok {
		return
	}
	u, err := url.Parse(req.Webhook)
	switch {
	case req.Webhook == "":
		s.caFail(w, &enqueue.ValidationError{Field: "webhook", Reason: "is required"})
		return
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(req.Webhook) > 2048:
		s.caFail(w, &enqueue.ValidationError{Field: "webhook", Reason: "must be an http or https URL of at most 2048 characters"})
		return
	}
	if host := u.Hostname(); !s.cfg.AllowPrivateWebhooks && privateHost(host) {
		s.caFail(w, &enqueue.ValidationError{Field: "webhook", Reason: "is refused: " + host +
			" is not a public address, and chatq forwards webhooks to public addresses only (CHATQ_CALLBACK_ALLOW_PRIVATE allows private ones)"})
		return
	}
	if err := s.cfg.Senders.SetWebhookURL(r.Context(), x.Number, u.String()); err != nil {
		s.caFail(w, err)
		return
	}
	// The URL may carry the application's own secret: the host alone is
	// logged.
	s.logger(r.Context()).Info("application webhook stored", zap.String("sender", x.Number), zap.String("webhook_host", u.Host))
	writeJSON(w, http.StatusOK, map[string]string{"status": "success", "message": "Webhook registered"})
}

// privateHost reports whether host is localhost or a literal address that
// is not public. A name is not looked up here: each delivery checks the
// address it connects to.
func privateHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && !callback.IsPublic(ip)
}
