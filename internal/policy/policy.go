// Package policy is chatq's conversation policy: what WhatsApp lets a
// business send, known before the send. It keeps each tenant's
// suppression list (users who opted out), each sender's 24h customer
// service windows with its users, and a cache of each sender's templates,
// all in Redis; and it checks messages against them at enqueue and again
// in the worker.
package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
)

// Error codes of policy refusals (the "code" of the HTTP API's 422).
const (
	CodeSuppressed          = "suppressed"
	CodeWindowClosed        = "window_closed"
	CodeUnknownTemplate     = "unknown_template"
	CodeTemplateNotApproved = "template_not_approved"
	CodeTemplateParams      = "template_params"
	CodeCallbackURL         = "callback_url_refused"
	CodeUSMarketing         = "us_marketing_blocked"
	CodeCountryRefused      = "country_refused"
)

// Error is a message the conversation policy refuses. Field is the JSON
// path of what is refused ("destination", "payload.template.params"), as
// in enqueue.ValidationError.
type Error struct {
	Code   string
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + " " + e.Reason
}

// Config tunes a Checker. The zero value is usable.
type Config struct {
	// Window is CHATQ_WINDOW_POLICY; empty means WindowLearn.
	Window WindowPolicy
	// AllowPrivateCallbacks accepts callback URLs on loopback and private
	// addresses (CHATQ_CALLBACK_ALLOW_PRIVATE).
	AllowPrivateCallbacks bool
	// Resolver resolves callback URL hosts; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// Source refreshes the template cache of the environment's sender; nil
	// leaves the cache to the processes that have ChatArchitect
	// credentials.
	Source Source
	// EnvSender is the environment's sender's number (CHATQ_CA_SOURCE):
	// its windows and template cache keep the keys of a single-sender
	// deployment, so that the state of before stays in force. A sender of
	// "" is it too.
	EnvSender string
	// SenderSource returns the Source of a stored sender's templates
	// (getHSM with its app's credentials and its number), nil when this
	// process cannot fetch them; nil leaves the stored senders' caches to
	// the processes that can.
	SenderSource func(sender string) Source
	// Senders lists the stored senders whose template caches
	// RefreshTemplates refreshes; nil refreshes the environment's sender's
	// alone.
	Senders func() []string
	// WindowTTL is how long a recipient's window state is kept after its
	// last change; zero means 30 days.
	WindowTTL time.Duration
	// AllowUSMarketing lets marketing templates to +1 numbers through
	// (CHATQ_ALLOW_US_MARKETING); by default they are refused at enqueue,
	// since WhatsApp refuses them all (131049) since 1 April 2025.
	AllowUSMarketing bool
	// TemplateStatus, if set, is told each template's status after every
	// refresh of a sender's template cache (sender "" for the
	// environment's sender), once per template name: PAUSED or DISABLED
	// when any of its languages is, else APPROVED, REJECTED... The store
	// keeps it (store.Store.SetTemplateState), so that a pause or an
	// approval no webhook reported still holds or releases the template's
	// messages.
	TemplateStatus func(ctx context.Context, sender, name, status string) error
	// Log gets the few warnings of the template cache; nil discards them.
	Log *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Checker applies the conversation policy. It is safe for concurrent use.
// New's Checker is that of tenant default and the environment's sender;
// ForTenant and ForSender return those of others.
type Checker struct {
	cfg Config
	rdb redis.UniversalClient
	// caches holds every sender's template cache, shared by the Checkers
	// ForTenant and ForSender derive, so that each keeps its copy in
	// memory.
	caches *templateCaches
	// Suppressions is the tenant's suppression list.
	Suppressions *Suppressions
	// Windows is the sender's window state with its recipients.
	Windows *Windows
	// Templates is the sender's template cache.
	Templates *Templates
	// Countries is the country codes the sender may not message.
	Countries *Countries
	// Caps is the tenant's memory of recipients at Meta's marketing cap.
	Caps *MarketingCaps
}

// templateCaches is the template cache of each sender, made on first use.
type templateCaches struct {
	mu  sync.Mutex
	env *Templates
	by  map[string]*Templates
}

// New returns a Checker keeping its state in rdb.
func New(rdb redis.UniversalClient, cfg Config) *Checker {
	if cfg.Window == "" {
		cfg.Window = WindowLearn
	}
	if cfg.WindowTTL <= 0 {
		cfg.WindowTTL = 30 * 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.EnvSender = Normalize(cfg.EnvSender)
	env := &Templates{rdb: rdb, key: templatesKey(""), source: cfg.Source, log: cfg.Log, now: cfg.Now, onStatus: cfg.TemplateStatus}
	return &Checker{
		cfg:          cfg,
		rdb:          rdb,
		caches:       &templateCaches{env: env, by: map[string]*Templates{}},
		Suppressions: newSuppressions(rdb, cfg.Now, defaultTenant),
		Windows:      &Windows{rdb: rdb, ttl: cfg.WindowTTL},
		Templates:    env,
		Countries:    &Countries{rdb: rdb},
		Caps:         NewMarketingCaps(rdb, defaultTenant),
	}
}

// ForSender returns the checker of one sender: the same policy and
// suppression list, with the sender's own windows and template cache. ""
// and the environment's sender's number are the environment's sender.
func (c *Checker) ForSender(sender string) *Checker {
	if c == nil {
		return nil
	}
	t := *c
	t.Windows = c.WindowsOf(sender)
	t.Templates = c.templatesOf(c.senderOf(sender))
	t.Countries = &Countries{rdb: c.rdb, sender: c.senderOf(sender)}
	return &t
}

// WindowsOf returns the windows of one sender with its recipients, as
// ForSender(sender).Windows, without the rest of its checker.
func (c *Checker) WindowsOf(sender string) *Windows {
	return &Windows{rdb: c.rdb, ttl: c.cfg.WindowTTL, sender: c.senderOf(sender)}
}

// senderOf is the number whose state is sender's, "" for the
// environment's sender.
func (c *Checker) senderOf(sender string) string {
	n := Normalize(sender)
	if n == c.cfg.EnvSender {
		return ""
	}
	return n
}

// templatesOf returns the template cache of sender (senderOf).
func (c *Checker) templatesOf(sender string) *Templates {
	cs := c.caches
	if sender == "" {
		return cs.env
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if t, ok := cs.by[sender]; ok {
		return t
	}
	var src Source
	if c.cfg.SenderSource != nil {
		src = senderSource{get: c.cfg.SenderSource, sender: sender}
	}
	t := &Templates{rdb: c.rdb, key: templatesKey(sender), sender: sender, source: src, log: c.cfg.Log.With(zap.String("sender", sender)), now: c.cfg.Now,
		onStatus: c.cfg.TemplateStatus}
	cs.by[sender] = t
	return t
}

// senderSource asks Config.SenderSource for the sender's Source at each
// fetch, so that changed credentials are used from the next one on.
type senderSource struct {
	get    func(string) Source
	sender string
}

func (s senderSource) Templates(ctx context.Context) ([]chatarchitect.Template, error) {
	src := s.get(s.sender)
	if src == nil {
		return nil, fmt.Errorf("list templates of %s: no ChatArchitect credentials for this sender here", s.sender)
	}
	return src.Templates(ctx)
}

// RefreshTemplates refreshes the template caches every interval (zero
// means DefaultRefreshInterval), and once at once, until ctx ends: the
// environment's sender's from Config.Source, and each of Config.Senders'
// from Config.SenderSource. It returns at once when it can fetch none.
func (c *Checker) RefreshTemplates(ctx context.Context, interval time.Duration) {
	if c.cfg.Source == nil && (c.cfg.Senders == nil || c.cfg.SenderSource == nil) {
		return
	}
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.refreshAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshAll syncs every cache it can, one after the other: getHSM is
// cheap, and ChatArchitect's limits are per app.
func (c *Checker) refreshAll(ctx context.Context) {
	caches := []*Templates{}
	if c.cfg.Source != nil {
		caches = append(caches, c.caches.env)
	}
	if c.cfg.Senders != nil && c.cfg.SenderSource != nil {
		for _, n := range c.cfg.Senders() {
			if s := c.senderOf(n); s != "" {
				caches = append(caches, c.templatesOf(s))
			}
		}
	}
	for _, ts := range caches {
		cat, err := ts.Sync(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			ts.log.Warn("refreshing the template cache", zap.Error(err))
			continue
		}
		ts.log.Debug("template cache refreshed", zap.Int("templates", len(cat.Templates)))
	}
}

// ForTenant returns the checker of one tenant: the same policy, sender,
// windows and templates, with the tenant's own suppression list, which applies to
// every sender of the tenant and to no other tenant.
func (c *Checker) ForTenant(tenant string) *Checker {
	if c == nil {
		return nil
	}
	t := *c
	t.Suppressions = newSuppressions(c.rdb, c.cfg.Now, tenant)
	t.Caps = NewMarketingCaps(c.rdb, tenant)
	return &t
}

// WindowPolicy returns the window policy in force.
func (c *Checker) WindowPolicy() WindowPolicy { return c.cfg.Window }

// Subject is what the policy needs to know of a message.
type Subject struct {
	Destination string
	// FreeForm is true for anything but a template: WhatsApp allows it
	// only inside the 24h window.
	FreeForm bool
	// Template is the template a template message sends.
	Template *TemplateUse
	// Fallback is the template to send instead when the window is closed.
	Fallback *TemplateUse
	// CallbackURL is the message's callback URL, if any.
	CallbackURL string
}

// TemplateUse is a template a message sends, and where in the message it
// is named (for errors).
type TemplateUse struct {
	// Field is the JSON path of the template object: "payload.template"
	// or "fallback_template".
	Field    string
	Name     string
	Language string
	Params   int
	// Category is set by the check: the template's category, lowercased
	// (marketing, utility, authentication), when the cache knows it.
	Category string
}

// Check applies the policy to messages about to be enqueued and returns
// one error per subject (nil, or an *Error), in order; the error is for
// failures of the whole check (Redis unreachable). What it reads of Redis
// (the recipients' suppressions, the countries the sender may not message,
// the windows of the free-form messages) it reads in one round trip, so a
// batch costs little more than one message.
func (c *Checker) Check(ctx context.Context, subjects []Subject) ([]error, error) {
	errs := make([]error, len(subjects))
	dests := make([]string, len(subjects))
	for i, s := range subjects {
		dests[i] = s.Destination
	}
	pipe := c.rdb.Pipeline()
	suppressed := c.Suppressions.queueMany(ctx, pipe, dests)
	countries := c.Countries.queueRefused(ctx, pipe)
	// Read for every free-form message without a fallback, and used for
	// those that pass the other checks.
	windows := make([]*redis.SliceCmd, len(subjects))
	if c.cfg.Window != WindowOff {
		for i, s := range subjects {
			if s.FreeForm && s.Fallback == nil {
				windows[i] = c.Windows.queue(ctx, pipe, s.Destination)
			}
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read policy state: %w", err)
	}
	sup, err := suppressed()
	if err != nil {
		return nil, err
	}
	refused, err := countries()
	if err != nil {
		return nil, err
	}
	for i, s := range subjects {
		if sup[i] != nil {
			errs[i] = suppressedError(sup[i])
			continue
		}
		if cc := chatarchitect.CountryCallingCode(s.Destination); refused[cc] {
			errs[i] = countryRefusedError(cc)
			continue
		}
		for _, use := range []*TemplateUse{s.Template, s.Fallback} {
			if use == nil || errs[i] != nil {
				continue
			}
			if err := c.Templates.Check(ctx, use); err != nil {
				var pe *Error
				if !errors.As(err, &pe) {
					return nil, err
				}
				errs[i] = err
				continue
			}
			if err := c.checkUSMarketing(s.Destination, use); err != nil {
				errs[i] = err
			}
		}
	}
	if err := c.checkCallbacks(ctx, subjects, errs); err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	for i, w := range windows {
		if w == nil || errs[i] != nil {
			continue
		}
		if win := parseWindow(w); !c.cfg.Window.Allows(win, now) {
			errs[i] = c.windowError(win, now)
		}
	}
	return errs, nil
}

// checkCallbacks refuses callback URLs on non-public addresses, resolving
// each distinct host once.
func (c *Checker) checkCallbacks(ctx context.Context, subjects []Subject, errs []error) error {
	if c.cfg.AllowPrivateCallbacks {
		return nil
	}
	seen := map[string]error{}
	for i, s := range subjects {
		if s.CallbackURL == "" || errs[i] != nil {
			continue
		}
		err, ok := seen[s.CallbackURL]
		if !ok {
			err = callback.CheckURL(ctx, c.cfg.Resolver, s.CallbackURL)
			seen[s.CallbackURL] = err
		}
		if err != nil {
			errs[i] = &Error{Code: CodeCallbackURL, Field: "callback_url",
				Reason: "is refused: " + err.Error() + " (CHATQ_CALLBACK_ALLOW_PRIVATE allows private addresses)"}
		}
	}
	return nil
}

// checkUSMarketing refuses a marketing template to a +1 number: WhatsApp
// refuses every one (131049) since 1 April 2025, so sending it would only
// cost a send and a failure. The +1 plan takes in Canada and the Caribbean
// too, which the rule does not name; CHATQ_ALLOW_US_MARKETING lets them
// through.
func (c *Checker) checkUSMarketing(destination string, use *TemplateUse) error {
	if c.cfg.AllowUSMarketing || use.Category != "marketing" || chatarchitect.CountryCallingCode(destination) != "1" {
		return nil
	}
	field := "destination"
	if use.Field != "payload.template" {
		field = use.Field + ".elementName"
	}
	return &Error{Code: CodeUSMarketing, Field: field,
		Reason: fmt.Sprintf("is refused: %s is a marketing template and %s a +1 (US) number, and WhatsApp delivers no marketing templates to US numbers since 1 April 2025 (error 131049); CHATQ_ALLOW_US_MARKETING=true sends them anyway",
			use.Name, destination)}
}

func suppressedError(s *Suppression) *Error {
	return &Error{Code: CodeSuppressed, Field: "destination",
		Reason: fmt.Sprintf("is suppressed since %s (%s): chatq does not message it", s.At.Format(time.RFC3339), s.Reason)}
}

func (c *Checker) windowError(w Window, now time.Time) *Error {
	var why string
	switch {
	case w.ClosedAt.After(w.LastInbound):
		why = "a send to it failed because its 24h window is closed, and the user has not written since"
	case !w.LastInbound.IsZero():
		why = fmt.Sprintf("the user last wrote %s ago, more than 24h", now.Sub(w.LastInbound).Round(time.Minute))
	default:
		why = "chatq has not seen the user write in the last 24h (CHATQ_WINDOW_POLICY=strict)"
	}
	return &Error{Code: CodeWindowClosed, Field: "destination",
		Reason: "is outside its 24h window: " + why + "; send a template, or give a fallback_template"}
}

// Verdict is the policy's answer for a message about to be sent.
type Verdict int

// The verdicts of Decide.
const (
	// Send the message as it is.
	Send Verdict = iota
	// SendFallback: send the message's fallback template instead.
	SendFallback
	// Refuse: do not send; the *Error says why.
	Refuse
)

// Decide applies the policy to a message the worker is about to send. A
// suppressed recipient is refused; a free-form message outside the window
// (as the policy sees it) gets its fallback template, or is refused
// without one. Templates were checked at enqueue and are not again.
func (c *Checker) Decide(ctx context.Context, destination string, freeForm, hasFallback bool) (Verdict, *Error, error) {
	// One round trip for both reads: this runs before every send.
	pipe := c.rdb.Pipeline()
	decide := c.Queue(ctx, pipe, destination, freeForm)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Refuse, nil, fmt.Errorf("read policy state of %s: %w", destination, err)
	}
	return decide(hasFallback)
}

// Queue queues on pipe the reads Decide makes, for a caller that reads
// more in the same round trip (the worker, before each send), and returns
// the decision, to call once pipe ran.
func (c *Checker) Queue(ctx context.Context, pipe redis.Pipeliner, destination string, freeForm bool) (decide func(hasFallback bool) (Verdict, *Error, error)) {
	checkWindow := freeForm && c.cfg.Window != WindowOff
	supp := c.Suppressions.queueGet(ctx, pipe, destination)
	var win *redis.SliceCmd
	if checkWindow {
		win = c.Windows.queue(ctx, pipe, destination)
	}
	return func(hasFallback bool) (Verdict, *Error, error) {
		if err := supp.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return Refuse, nil, fmt.Errorf("read policy state of %s: %w", destination, err)
		}
		if win != nil && win.Err() != nil && !errors.Is(win.Err(), redis.Nil) {
			return Refuse, nil, fmt.Errorf("read policy state of %s: %w", destination, win.Err())
		}
		s, err := parseSuppression(Normalize(destination), supp.Val()[0])
		if err != nil {
			return Refuse, nil, err
		}
		if s != nil {
			return Refuse, suppressedError(s), nil
		}
		if !checkWindow {
			return Send, nil, nil
		}
		w := parseWindow(win)
		now := c.cfg.Now()
		switch {
		case c.cfg.Window.Allows(w, now):
			return Send, nil, nil
		case hasFallback:
			return SendFallback, nil, nil
		}
		return Refuse, c.windowError(w, now), nil
	}
}

// InWindow reports whether chatq saw destination write within the last
// 24h (and no send failed for a closed window since): a message to it is
// a reply in a conversation the user opened.
func (c *Checker) InWindow(ctx context.Context, destination string) (bool, error) {
	w, err := c.Windows.Get(ctx, destination)
	if err != nil {
		return false, err
	}
	return w.Open(c.cfg.Now()), nil
}

// Learned says what LearnFailure recorded.
type Learned string

// What a failure can teach.
const (
	LearnedNothing      Learned = ""
	LearnedOptOut       Learned = "suppressed"
	LearnedWindowClosed Learned = "window_closed"
	// LearnedCountryRefused: the sender may not message the recipient's
	// country (Countries).
	LearnedCountryRefused Learned = "country_refused"
	// LearnedMarketingCapped: the recipient is at Meta's marketing cap,
	// and the tenant's marketing messages to them wait (Caps).
	LearnedMarketingCapped Learned = "marketing_capped"
)

// LearnFailure records what a failed send or failed delivery event says
// about its recipient: an opt-out code suppresses them, a closed-window
// code marks their window closed, a country refusal (130497) refuses their
// country to the sender, a marketing cap (131049) holds the tenant's
// marketing messages to them. source is SourceWebhook or SourceSend.
func (c *Checker) LearnFailure(ctx context.Context, destination, code, reason, source string, at time.Time) (Learned, error) {
	if destination == "" {
		return LearnedNothing, nil
	}
	switch {
	case chatarchitect.IsOptOutCode(code):
		if reason == "" {
			reason = "the user opted out"
		}
		// An opt-out as of the failure: an opt-in sent later lifts it, one
		// sent earlier and delivered late does not.
		_, err := c.Suppressions.OptOut(ctx, Suppression{Destination: destination, Reason: reason, Code: code, Source: source, At: at})
		return LearnedOptOut, err
	case chatarchitect.IsWindowClosedCode(code):
		return LearnedWindowClosed, c.Windows.Closed(ctx, destination, at)
	case IsCountryRefusedCode(code):
		return LearnedCountryRefused, c.Countries.Refuse(ctx, chatarchitect.CountryCallingCode(destination))
	case IsMarketingCapCode(code):
		_, err := c.Caps.Capped(ctx, destination, at)
		return LearnedMarketingCapped, err
	}
	return LearnedNothing, nil
}

// UserEvent records a user's opt-in (off the list) or opt-out (on it) as
// of at, the event's own time: ChatArchitect retries webhooks for days, so
// an older event may arrive after a newer one, and must not undo it. An
// operator's suppression stands whatever the user events say. Other event
// types change nothing, and answer "".
func (c *Checker) UserEvent(ctx context.Context, phone, eventType string, at time.Time) (Consent, error) {
	switch eventType {
	case "opted-out":
		return c.Suppressions.OptOut(ctx, Suppression{Destination: phone, Reason: "the user opted out", Source: SourceUserEvent, At: at})
	case "opted-in":
		return c.Suppressions.OptIn(ctx, phone, at)
	}
	return "", nil
}

// IsCountryRefusedCode reports whether a failure code says that the
// business may not message users in the recipient's country (130497).
func IsCountryRefusedCode(code string) bool {
	info, _ := chatarchitect.LookupCode(code)
	return info.Marker == chatarchitect.MarkerCountryRefused
}
