// Package api is chatq's HTTP API: messages in, records out, and the
// receiver of ChatArchitect's delivery webhooks.
package api

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/deadletter"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// Body limits (CONTRACT.md).
const (
	MaxMessageBody = 256 << 10
	MaxBatchBody   = 16 << 20
	MaxBatchSize   = 1000
	maxWebhookBody = 1 << 20
)

// Config configures a Server.
type Config struct {
	// APIKeys are the accepted bearer keys; at least one is required.
	APIKeys []string
	// WebhookSecret is the last segment of the webhook URL.
	WebhookSecret string
	// Dashboard, if set, is served at /monitoring/ behind HTTP Basic auth
	// whose password is one of APIKeys (any user name): the asynq
	// dashboard, built with its root path at /monitoring.
	Dashboard http.Handler
	// Metrics, if set, is counted into and served at /metrics.
	Metrics *metrics.Metrics
	// Policy, if set, serves /v1/suppressions and /v1/templates, and
	// learns from webhooks who opted out and whose window is open.
	Policy *policy.Checker
	// Inbound, if set, forwards inbound messages and user events
	// (CHATQ_INBOUND_URL).
	Inbound *callback.Forwarder
	// Relay, if set with Senders, forwards the webhooks of senders whose
	// application registered a webhook URL (the drop-in POST /webhook), in
	// ChatArchitect's own format (webhook.go).
	Relay *callback.Relay
	// AllowPrivateWebhooks accepts application webhook URLs (the drop-in
	// POST /webhook) on loopback and private addresses
	// (CHATQ_CALLBACK_ALLOW_PRIVATE); the relay refuses to deliver there
	// otherwise, so they are refused when registered.
	AllowPrivateWebhooks bool
	// Circuit, if set, tells /readyz's body whether sending is paused by
	// the circuit breaker and, when it is also a Throttles (worker.Circuit
	// is), which senders the upstream's Retry-After holds back.
	Circuit Circuit
	// Console, if set, is served at /console/ (internal/console).
	Console http.Handler
	// Senders, if set, serves /v1/senders and the drop-in ChatArchitect
	// routes, checks the sender a message names, and opens each sender's
	// own webhook URL (senders.go, dropin.go).
	Senders *senders.Registry
	// Chooser picks the sender of a message that names none; nil means
	// senders.WindowChooser with Policy (the sender whose window with the
	// recipient is open, else the last one, else the default), and
	// without Policy the tenant's default sender.
	Chooser senders.Chooser
	// SenderStates, if set, reports a sender's live state beyond active
	// and paused (circuit_open, throttled), as flow control knows it.
	SenderStates SenderStates
	// Keys, if set, serves /v1/keys and lets tenant keys in: each sees its
	// own tenant's messages only (keys.go).
	Keys *tenants.Keys
	// Upstream is where the drop-in /getHSM and /submit_template go, with
	// the sender's own credentials (CHATQ_CA_BASE_URL, CHATQ_CA_TIMEOUT).
	Upstream chatarchitect.Config
}

// Circuit reports the circuit breaker's state (worker.Circuit does).
type Circuit interface {
	State(ctx context.Context) (ratelimit.CircuitState, error)
}

// Throttles reports the senders that the upstream's Retry-After holds back
// (worker.Circuit does).
type Throttles interface {
	Throttles(ctx context.Context) ([]ratelimit.ThrottleState, error)
}

// Server serves the API.
type Server struct {
	cfg    Config
	client *enqueue.Client
	store  *store.Store
	rdb    redis.UniversalClient
	log    *zap.Logger
	mux    *http.ServeMux
	dead   *deadletter.Manager // operations.go
	now    func() time.Time
	// upstream calls ChatArchitect for the drop-in routes (dropin.go).
	upstream *http.Client
	// openapiDoc is GET /openapi.json's body, converted once.
	openapiDoc []byte
}

// New returns the API server.
func New(cfg Config, client *enqueue.Client, st *store.Store, log *zap.Logger) (*Server, error) {
	if len(cfg.APIKeys) == 0 {
		return nil, errors.New("api: at least one API key is required")
	}
	if cfg.WebhookSecret == "" {
		return nil, errors.New("api: a webhook secret is required")
	}
	s := &Server{cfg: cfg, client: client, store: st, rdb: st.Redis(), log: log, mux: http.NewServeMux(), now: time.Now}
	s.dead = deadletter.New(st, client, asynq.NewInspectorFromRedisClient(s.rdb))
	switch {
	case cfg.Senders == nil || cfg.Chooser != nil:
	case cfg.Policy != nil:
		s.cfg.Chooser = senders.WindowChooser{Registry: cfg.Senders, Policy: cfg.Policy, Redis: s.rdb}
	default:
		s.cfg.Chooser = senders.DefaultChooser{Registry: cfg.Senders}
	}
	timeout := cmp.Or(cfg.Upstream.Timeout, chatarchitect.DefaultTimeout)
	s.upstream = &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	doc, err := openapiJSON()
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.openapiDoc = doc
	s.routes()
	return s, nil
}

// guardKind is who may call a route.
type guardKind int

const (
	// guardNone: anyone (the webhook route checks its own secret).
	guardNone guardKind = iota
	// guardBearer: Authorization: Bearer <API key>, an admin's or a
	// tenant's.
	guardBearer
	// guardAdmin: Authorization: Bearer <admin key>; a tenant key is
	// answered 403.
	guardAdmin
	// guardBasic: HTTP Basic auth with an admin key as the password
	// (browsers).
	guardBasic
	// guardApp: HTTP Basic auth with a sender's ChatArchitect app_id and
	// app_secret (the drop-in routes), refused in ChatArchitect's shape.
	guardApp
)

// route is one route of the API. The mux and the test that holds the
// OpenAPI document to the server both read routeTable, so a route cannot be
// served without being documented.
type route struct {
	// method is the HTTP method; empty for a mount that takes every
	// method (the dashboard).
	method  string
	pattern string
	guard   guardKind
	handler http.Handler
}

// routeTable is every route the server answers, its optional parts
// included when configured.
func (s *Server) routeTable() []route {
	t := []route{
		{"GET", "/healthz", guardNone, http.HandlerFunc(s.healthz)},
		{"GET", "/readyz", guardNone, http.HandlerFunc(s.readyz)},
		{"GET", "/openapi.json", guardNone, http.HandlerFunc(s.openapi)},
		{"POST", "/webhooks/chatarchitect/{secret}", guardNone, http.HandlerFunc(s.webhook)},

		{"POST", "/v1/messages", guardBearer, http.HandlerFunc(s.sendMessage)},
		{"GET", "/v1/messages/{id}", guardBearer, http.HandlerFunc(s.getMessage)},
		{"DELETE", "/v1/messages/{id}", guardBearer, http.HandlerFunc(s.cancelMessage)},
		{"POST", "/v1/messages/batch", guardBearer, http.HandlerFunc(s.sendBatch)},
		// Operations (operations.go): campaigns and dead letters.
		{"GET", "/v1/messages", guardBearer, http.HandlerFunc(s.listMessages)},
		{"DELETE", "/v1/messages", guardBearer, http.HandlerFunc(s.cancelBatch)},
		{"GET", "/v1/batches/{batch_id}", guardBearer, http.HandlerFunc(s.getBatch)},
		{"GET", "/v1/dead-letters", guardBearer, http.HandlerFunc(s.listDeadLetters)},
		{"POST", "/v1/dead-letters/retry", guardBearer, http.HandlerFunc(s.retryDeadLetters)},
	}
	t = append(t, s.consoleRoutes()...) // console.go
	if s.cfg.Metrics != nil {
		t = append(t, route{"GET", "/metrics", guardNone, s.metrics()})
	}
	if s.cfg.Policy != nil {
		t = append(t, s.policyRoutes()...)
	}
	if s.cfg.Senders != nil {
		t = append(t, s.senderRoutes()...) // senders.go
		t = append(t, s.dropInRoutes()...) // dropin.go
	}
	if s.cfg.Keys != nil {
		t = append(t, s.keyRoutes()...) // keys.go
	}
	if s.cfg.Dashboard != nil {
		// The mux redirects /monitoring here.
		t = append(t, route{"", "/monitoring/", guardBasic, s.cfg.Dashboard})
	}
	return t
}

// registration is one pattern of the mux and its handler.
type registration struct {
	pattern string
	handler http.Handler
}

// registrations lays out the mux: each route of the table behind its
// guard, and what no route takes.
func (s *Server) registrations() []registration {
	table := s.routeTable()
	regs := make([]registration, 0, len(table)+1)
	guards := make(map[string]guardKind, len(table))
	for _, rt := range table {
		pattern := rt.pattern
		if rt.method != "" {
			pattern = rt.method + " " + rt.pattern
		}
		guards[pattern] = rt.guard
		regs = append(regs, registration{pattern, s.guard(rt.guard, rt.handler)})
	}
	return append(regs, registration{"/", s.notRouted(guards)})
}

// notRouted answers what no route takes, in JSON: 405, with Allow, when
// other methods of the path are routes; else 404. Both are behind the key
// unless every route of the path is open, so that probing without one
// learns nothing.
func (s *Server) notRouted(guards map[string]guardKind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		guard := guardNone
		probe := r.Clone(r.Context())
		// HEAD goes with GET.
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe.Method = m
			_, pattern := s.mux.Handler(probe)
			if g, ok := guards[pattern]; ok && strings.HasPrefix(pattern, m+" ") {
				allow = append(allow, m)
				guard = max(guard, g)
			}
		}
		if len(allow) == 0 {
			guard = guardBearer
		}
		s.guard(guard, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if len(allow) == 0 {
				writeError(w, errNotFound, s.log)
				return
			}
			methods := strings.Join(allow, ", ")
			w.Header().Set("Allow", methods)
			if guard == guardApp {
				// The drop-in routes answer as ChatArchitect does.
				caError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+" (allowed: "+methods+")")
				return
			}
			writeError(w, errorf(http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path+" (allowed: "+methods+")"), s.log)
		})).ServeHTTP(w, r)
	})
}

// routes registers the layout on the mux; nothing else registers routes.
func (s *Server) routes() {
	for _, r := range s.registrations() {
		s.mux.Handle(r.pattern, r.handler)
	}
}

// guard puts a handler behind its access check.
func (s *Server) guard(g guardKind, h http.Handler) http.Handler {
	switch g {
	case guardBearer:
		return s.auth(h.ServeHTTP)
	case guardAdmin:
		return s.admin(h.ServeHTTP)
	case guardBasic:
		return s.basicAuth(h)
	case guardApp:
		return s.app(h)
	}
	return h
}

// ServeHTTP implements http.Handler: every answer carries an X-Request-Id,
// and every log line the request causes names it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(requestIDHeader)
	if !validRequestID(id) {
		id = uuid.NewString()
	}
	w.Header().Set(requestIDHeader, id)
	log := s.log.With(zap.String("request_id", id))
	s.mux.ServeHTTP(&tracedWriter{ResponseWriter: w, log: log}, r.WithContext(context.WithValue(r.Context(), loggerKey{}, log)))
}

// requestIDHeader names the request id, given by the client or made up.
const requestIDHeader = "X-Request-Id"

// maxRequestID bounds a client's request id: it goes into every log line.
const maxRequestID = 128

// validRequestID reports whether a client's request id may be kept: 1 to
// 128 printable ASCII characters, so that it cannot forge log lines.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// loggerKey is the context key of the request's logger.
type loggerKey struct{}

// logger is the logger of the request whose context ctx is: the server's,
// with the request id.
func (s *Server) logger(ctx context.Context) *zap.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*zap.Logger); ok {
		return l
	}
	return s.log
}

// tracedWriter carries the request's logger to writeError, which handlers
// call with the server's.
type tracedWriter struct {
	http.ResponseWriter
	log *zap.Logger
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *tracedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes flushes on, for the dashboard's and the metrics' handlers.
func (w *tracedWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// principal is who a request's key speaks for: an admin (one of
// CHATQ_API_KEYS), who sees everything, or one tenant.
type principal struct {
	admin  bool
	tenant string
}

// sees reports whether p may see what belongs to tenant.
func (p principal) sees(tenant string) bool { return p.admin || p.tenant == tenant }

type principalKey struct{}

// caller is the principal auth put in the request's context.
func caller(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// auth lets a request through only with an API key as its bearer token:
// one of the admin keys, every one compared in constant time, or a tenant
// key (tenants.Keys.Lookup compares its hash in constant time). The
// request's context says whose key it was (caller).
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := bearer(r)
		p := principal{admin: true}
		if !s.validKey(key) {
			if s.cfg.Keys == nil {
				writeError(w, errUnauthorized, s.log)
				return
			}
			k, ok, err := s.cfg.Keys.Lookup(r.Context(), key)
			if err != nil {
				writeError(w, err, s.log)
				return
			}
			if !ok {
				writeError(w, errUnauthorized, s.log)
				return
			}
			p = principal{tenant: k.Tenant}
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// admin lets through admin keys alone: senders and keys are the
// deployment's, not a tenant's. A tenant key is told so with a 403.
func (s *Server) admin(next http.HandlerFunc) http.Handler {
	return s.auth(func(w http.ResponseWriter, r *http.Request) {
		if !caller(r).admin {
			writeError(w, errForbidden, s.log)
			return
		}
		next(w, r)
	})
}

// basicAuth guards the dashboard: browsers speak Basic auth, so the
// password is an API key and the user name is ignored.
func (s *Server) basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, password, ok := r.BasicAuth()
		if !ok || !s.validKey(password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="chatq dashboard", charset="UTF-8"`)
			writeError(w, errorf(http.StatusUnauthorized, "unauthorized", "the dashboard needs HTTP Basic auth with an API key as the password"), s.log)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validKey reports whether key is one of the API keys, comparing in
// constant time.
func (s *Server) validKey(key string) bool {
	ok := 0
	for _, k := range s.cfg.APIKeys {
		ok |= subtle.ConstantTimeCompare([]byte(key), []byte(k))
	}
	return key != "" && ok == 1
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		// Spaces may separate scheme and token (RFC 6750); HTTP has
		// already dropped those at the end. Anything else, such as a
		// trailing no-break space, is part of the token: a near miss.
		return strings.TrimLeft(h[len(prefix):], " ")
	}
	return ""
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "redis": "unreachable"})
		return
	}
	body := map[string]any{"status": "ready", "redis": "ok"}
	if s.cfg.Circuit != nil {
		// Still 200 while the circuit is open: the API accepts messages,
		// they wait.
		st, err := s.cfg.Circuit.State(ctx)
		if err != nil {
			s.logger(r.Context()).Warn("reading the circuit breaker's state", zap.Error(err))
			body["circuit"] = map[string]string{"state": "unknown"}
		} else {
			body["circuit"] = st
		}
		if t, ok := s.cfg.Circuit.(Throttles); ok {
			// Present only while a Retry-After holds a sender back.
			list, err := t.Throttles(ctx)
			switch {
			case err != nil:
				s.logger(r.Context()).Warn("reading the senders' throttles", zap.Error(err))
			case len(list) > 0:
				body["throttles"] = list
			}
		}
	}
	if list := s.senderReadiness(ctx); list != nil {
		body["senders"] = list
	}
	writeJSON(w, http.StatusOK, body)
}

// readBody reads a JSON body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, errNotJSON
	}
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, errorf(http.StatusBadRequest, "invalid_request", "the body could not be read")
	}
	return body, nil
}

// isUnavailable reports whether err means Redis could not be reached.
func isUnavailable(err error) bool {
	var netErr net.Error
	var opErr *net.OpError
	if errors.As(err, &netErr) || errors.As(err, &opErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) {
		return true
	}
	// asynq passes Redis's errors on as text ("redis eval error: dial tcp
	// ...: connect: connection refused"), not wrapped.
	msg := err.Error()
	for _, s := range []string{"LOADING", "connection pool timeout", "connection refused", "connection reset", "broken pipe", "i/o timeout", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
