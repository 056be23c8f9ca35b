// Package sandbox is a stand-in for the ChatArchitect API
// (api.chatarchitect.com) that runs offline, so that users and chatq's own
// tests can exercise an integration end to end without a WhatsApp account.
//
// It serves POST /webhook, /whatsappmessage, /getHSM and /submit_template
// with Basic auth and ChatArchitect's wire shapes, validates payloads
// exactly as chatq does (package enqueue), and reports each accepted
// message's fate through Gupshup-v2-shaped webhooks sent to the registered
// URL. Like a payment provider's test card numbers, the last four digits of
// a destination choose the outcome:
//
//	0001  accepted, enqueued, then failed with 131026 (undeliverable)
//	0002  refused at once: 400 "Invalid Destination", every time
//	0003  500 on the first attempt, accepted on the next
//	0004  429 with Retry-After: 1 on the first attempt, accepted on the next
//	0005  accepted, enqueued, sent, delivered, never read
//	0006  opted out: accepted, then failed with 1012 and an opted-out user-event
//	0007  the first attempt hangs until the client gives up; the next is accepted
//	0008  24h window closed: free-form messages fail with 131047 until the
//	      user writes (POST /sandbox/inbound); templates go through
//	0009  marketing cap: marketing templates fail with 131049, the rest go
//	      through
//	0010  marketing hold-out: marketing templates fail with 130472, the rest
//	      go through
//	0011  spam rate limit: 429 with code 131048 on the first attempt,
//	      accepted on the next
//	0012  country refused: every message fails with 130497
//	0015  number in maintenance: 503 with code 131057 on the first attempt,
//	      accepted on the next
//	0016  account API call limit: 429 with code 80007 on the first attempt,
//	      accepted on the next
//	0017  marketing cap at the send: the first marketing template is refused
//	      with 400 and code 131049, the next accepted; the rest go through
//	0018  marketing hold-out at the send: every marketing template is refused
//	      with 400 and code 130472; the rest go through
//	other accepted, enqueued, sent, delivered, read
//
// Marketing templates to +1 (US) numbers fail with 131049, as WhatsApp's
// have since April 2025. Sends of a template paused by PUT
// /sandbox/templates/{name} fail with 132015, of a disabled one with 132016.
// Sent and delivered events carry a pricing object by the template's
// category (free-form messages, and utility templates inside the user's
// window, are free).
//
// "First attempt" is the first valid request the sandbox receives for that
// destination since it started or was reset.
//
// Under /sandbox/ (no auth) it offers introspection and control: the log of
// accepted messages, counters, simulated inbound messages and opt-in/out,
// template status changes (with their template-event webhooks), run-time
// knobs (rate limit, random errors, latency, webhook delay,
// duplicated and reordered webhooks, an authentication outage) and a reset.
package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// appName is the "app" of every webhook envelope.
const appName = "chatq-sandbox"

// Defaults of the zero Config fields.
const (
	defaultWebhookWorkers        = 32
	defaultWebhookBacklog        = 100_000
	defaultTemplateApprovalDelay = 2 * time.Second
	defaultWebhookTimeout        = 5 * time.Second
)

// Config configures a Server. Rate, ErrorRatio, Latency, WebhookDelay,
// DuplicateRatio and ReorderRatio are only starting values: PUT
// /sandbox/config changes them at run time.
type Config struct {
	// AppID and AppSecret are the Basic auth credentials every API call
	// must carry. Both are required.
	AppID, AppSecret string
	// Apps are more apps' credentials, app id to secret, each accepted as
	// AppID and AppSecret are: one sandbox stands in for several
	// ChatArchitect apps, and its message log says which app sent each
	// message. Nil means the one app.
	Apps map[string]string
	// Authorize, if set, is asked about the credentials of an app the
	// sandbox does not know, and accepts them when it says yes: chatq dev
	// accepts those of the senders added to it, so that they send through
	// its sandbox. It must compare secrets in constant time.
	Authorize func(appID, secret string) bool
	// Rate limits accepted sends to this many messages per second, with a
	// token bucket holding one second's worth; an empty bucket answers 429
	// with Retry-After. Zero turns the limit off.
	Rate float64
	// ErrorRatio is the fraction (0 to 1) of sends answered with a random
	// 500. Zero never fails.
	ErrorRatio float64
	// Latency is added to every answer of the four API endpoints. Zero
	// adds none.
	Latency time.Duration
	// WebhookDelay separates a message's acceptance and each of its
	// successive webhooks. Zero sends them as fast as they go.
	WebhookDelay time.Duration
	// DuplicateRatio is the fraction (0 to 1) of webhooks that are sent a
	// second time, later, with the same body. Zero sends each once.
	DuplicateRatio float64
	// ReorderRatio is the fraction (0 to 1) of messages whose webhooks are
	// sent in a shuffled order. Zero keeps them in order.
	ReorderRatio float64
	// WebhookWorkers is the number of goroutines sending webhooks. Zero
	// means 32.
	WebhookWorkers int
	// WebhookBacklog bounds the messages (and inbound or opt-in/out
	// events) whose webhooks are still waiting to be sent. The webhooks of
	// a message accepted while the backlog is full are dropped and counted
	// as webhooks_dropped; the send itself still succeeds. Zero means
	// 100,000.
	WebhookBacklog int
	// TemplateApprovalDelay is how long a submitted template stays
	// PENDING. Zero means 2s.
	TemplateApprovalDelay time.Duration
	// HTTPClient sends the webhooks. Nil means a client of the sandbox's
	// own with a 5s timeout and keep-alive connections sized to the pool.
	HTTPClient *http.Client
}

// validate checks the values a caller set; zero values are defaults.
func (c *Config) validate() error {
	if c.AppID == "" {
		return errors.New("sandbox: AppID is required")
	}
	if c.AppSecret == "" {
		return errors.New("sandbox: AppSecret is required")
	}
	for id, secret := range c.Apps {
		if id == "" || secret == "" {
			return fmt.Errorf("sandbox: Apps: app %q needs an id and a secret", id)
		}
	}
	checks := []error{
		checkRate("Rate", c.Rate),
		checkRatio("ErrorRatio", c.ErrorRatio),
		checkDuration("Latency", c.Latency),
		checkDuration("WebhookDelay", c.WebhookDelay),
		checkRatio("DuplicateRatio", c.DuplicateRatio),
		checkRatio("ReorderRatio", c.ReorderRatio),
		checkDuration("TemplateApprovalDelay", c.TemplateApprovalDelay),
	}
	if c.WebhookWorkers < 0 {
		checks = append(checks, errors.New("WebhookWorkers must not be negative"))
	}
	if c.WebhookBacklog < 0 {
		checks = append(checks, errors.New("WebhookBacklog must not be negative"))
	}
	for _, err := range checks {
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
	}
	return nil
}

func checkRate(name string, r float64) error {
	if math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
		return fmt.Errorf("%s must be a number of messages per second, 0 or more (0 turns the limit off), not %g", name, r)
	}
	return nil
}

func checkRatio(name string, r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return fmt.Errorf("%s must be between 0 and 1, not %g", name, r)
	}
	return nil
}

func checkDuration(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s must not be negative, not %s", name, d)
	}
	return nil
}

// knobs are the settings PUT /sandbox/config changes at run time. A knobs
// value is never modified once published: a change publishes a new one.
type knobs struct {
	rate           float64
	errorRatio     float64
	latency        time.Duration
	webhookDelay   time.Duration
	duplicateRatio float64
	reorderRatio   float64
	authFailure    bool
	// limiter enforces rate; nil when rate is 0.
	limiter *rate.Limiter
}

// newLimiter returns a token bucket holding one second's worth of r, or nil
// for no limit.
func newLimiter(r float64) *rate.Limiter {
	if r == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(r), max(1, int(math.Ceil(r))))
}

// Server is the sandbox: an http.Handler for every route. New starts its
// webhook goroutines; Close stops them.
type Server struct {
	// apps are the accepted credentials: app id to secret.
	apps map[string][]byte
	// authorize is Config.Authorize.
	authorize func(appID, secret string) bool
	logger    *zap.Logger
	mux       *http.ServeMux

	// knobsMu serialises changes of knobs; readers just Load.
	knobsMu sync.Mutex
	knobs   atomic.Pointer[knobs]

	webhookURL atomic.Pointer[string]
	stats      stats
	log        *messageLog
	dests      *destinations
	templates  *templateStore
	hooks      *dispatcher

	// ownTransport is the transport of the default webhook client, whose
	// idle connections Close releases; nil with a caller's client.
	ownTransport *http.Transport
	closeOnce    sync.Once
}

// New returns a running sandbox. Its webhook goroutines run until Close.
func New(cfg Config, logger *zap.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	workers := cmp.Or(cfg.WebhookWorkers, defaultWebhookWorkers)
	s := &Server{
		apps:      apps(cfg),
		authorize: cfg.Authorize,
		logger:    logger,
		log:       newMessageLog(),
		dests:     newDestinations(),
		templates: newTemplateStore(cmp.Or(cfg.TemplateApprovalDelay, defaultTemplateApprovalDelay), time.Now()),
	}
	s.knobs.Store(&knobs{
		rate:           cfg.Rate,
		errorRatio:     cfg.ErrorRatio,
		latency:        cfg.Latency,
		webhookDelay:   cfg.WebhookDelay,
		duplicateRatio: cfg.DuplicateRatio,
		reorderRatio:   cfg.ReorderRatio,
		limiter:        newLimiter(cfg.Rate),
	})
	client := cfg.HTTPClient
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// Every worker may hold a connection to the one receiver.
		tr.MaxIdleConns = workers
		tr.MaxIdleConnsPerHost = workers
		client = &http.Client{Timeout: defaultWebhookTimeout, Transport: tr}
		s.ownTransport = tr
	}
	s.hooks = newDispatcher(dispatcherConfig{
		logger:  logger,
		client:  client,
		stats:   &s.stats,
		url:     &s.webhookURL,
		workers: workers,
		backlog: cmp.Or(cfg.WebhookBacklog, defaultWebhookBacklog),
	})
	s.mux = s.routes()
	return s, nil
}

// apps returns the credentials of cfg's apps, app id to secret.
func apps(cfg Config) map[string][]byte {
	out := map[string][]byte{cfg.AppID: []byte(cfg.AppSecret)}
	for id, secret := range cfg.Apps {
		out[id] = []byte(secret)
	}
	return out
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", s.handleRegisterWebhook)
	mux.HandleFunc("POST /whatsappmessage", s.handleSend)
	mux.HandleFunc("POST /getHSM", s.handleGetTemplates)
	mux.HandleFunc("POST /submit_template", s.handleSubmitTemplate)

	mux.HandleFunc("GET /sandbox/config", s.handleGetConfig)
	mux.HandleFunc("PUT /sandbox/config", s.handlePutConfig)
	mux.HandleFunc("GET /sandbox/messages", s.handleMessages)
	mux.HandleFunc("GET /sandbox/stats", s.handleStats)
	mux.HandleFunc("POST /sandbox/inbound", s.handleInbound)
	mux.HandleFunc("POST /sandbox/optout", s.handleOptOut)
	mux.HandleFunc("POST /sandbox/optin", s.handleOptIn)
	mux.HandleFunc("POST /sandbox/reset", s.handleReset)
	mux.HandleFunc("PUT /sandbox/templates/{name}", s.handleTemplateStatus)
	return mux
}

// ServeHTTP serves every route of the sandbox.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Close stops the webhook goroutines, abandoning the webhooks not yet sent,
// and releases requests that are hanging on purpose (destination 0007) or
// waiting out Latency. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.hooks.stop()
		if s.ownTransport != nil {
			s.ownTransport.CloseIdleConnections()
		}
	})
}

// Stats returns the counters as GET /sandbox/stats shows them.
func (s *Server) Stats() Stats {
	return s.stats.snapshot(s.hooks.pending.Load())
}

// reset forgets every message, counter, attempt, window and opt-out, and
// abandons the webhooks not yet sent. Knobs, templates and the registered
// webhook stay.
func (s *Server) reset() {
	s.hooks.reset()
	s.log.reset()
	s.dests.reset()
	s.stats.reset()
}
