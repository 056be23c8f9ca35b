// Package api is chatq's HTTP API: messages in, records out, and the
// receiver of ChatArchitect's delivery webhooks.
package api

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

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
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		m.Handle("GET /metrics", s.metrics())
	}
	m.HandleFunc("POST /webhooks/chatarchitect/{secret}", s.webhook)

	m.Handle("POST /v1/messages", s.auth(s.sendMessage))
	m.Handle("GET /v1/messages/{id}", s.auth(s.getMessage))
	m.Handle("DELETE /v1/messages/{id}", s.auth(s.cancelMessage))
	m.Handle("POST /v1/messages/batch", s.auth(s.sendBatch))
	s.policyRoutes()
	// Operations (operations.go): campaigns and dead letters.
	m.Handle("GET /v1/messages", s.auth(s.listMessages))
	m.Handle("DELETE /v1/messages", s.auth(s.cancelBatch))
	m.Handle("GET /v1/batches/{batch_id}", s.auth(s.getBatch))
	m.Handle("GET /v1/dead-letters", s.auth(s.listDeadLetters))
	m.Handle("POST /v1/dead-letters/retry", s.auth(s.retryDeadLetters))
	s.consoleRoutes() // console.go
	s.senderRoutes()
	s.keyRoutes()
	s.dropInRoutes()
	if s.cfg.Dashboard != nil {
		m.Handle("/monitoring/", s.basicAuth(s.cfg.Dashboard))
		m.Handle("/monitoring", http.RedirectHandler("/monitoring/", http.StatusMovedPermanently))
	}
	// JSON answers for wrong methods and unknown routes; behind the key,
	// so that probing without one learns nothing.
	for _, p := range []string{"/v1/messages", "/v1/messages/{id}", "/v1/batches/{batch_id}", "/v1/dead-letters", "/v1/dead-letters/retry"} {
		m.Handle(p, s.auth(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, errorf(http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path), s.log)
		}))
	}
	m.Handle("/", s.auth(func(w http.ResponseWriter, r *http.Request) { writeError(w, errNotFound, s.log) }))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

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
			s.log.Warn("reading the circuit breaker's state", zap.Error(err))
			body["circuit"] = map[string]string{"state": "unknown"}
		} else {
			body["circuit"] = st
		}
		if t, ok := s.cfg.Circuit.(Throttles); ok {
			// Present only while a Retry-After holds a sender back.
			list, err := t.Throttles(ctx)
			switch {
			case err != nil:
				s.log.Warn("reading the senders' throttles", zap.Error(err))
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
