// Package senders is chatq's sender registry: the business numbers a
// deployment sends from, each with its ChatArchitect app's credentials, its
// tenant, its portfolio and its limits, kept in Redis with the secrets
// sealed under CHATQ_SECRETS_KEY, and cached in every process by a Registry
// that sees a change within a second.
package senders

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/tenants"
)

// Errors of the registry's changes, for errors.Is.
var (
	// ErrNotFound: no sender has that number.
	ErrNotFound = errors.New("no sender with this number")
	// ErrExists: a sender with that number exists already.
	ErrExists = errors.New("a sender with this number exists already")
	// ErrNoSecretsKey: the process has no CHATQ_SECRETS_KEY, so it cannot
	// store a sender's secrets.
	ErrNoSecretsKey = errors.New("senders cannot be stored without CHATQ_SECRETS_KEY: set it (32 bytes, hex or base64) on every chatq process")
	// ErrFromEnvironment: the sender is the one the CHATQ_CA_ variables
	// define; it changes only there.
	ErrFromEnvironment = errors.New("this sender is defined by CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE: change it there")
	// ErrNoSender: the tenant has no sender to send from.
	ErrNoSender = errors.New("the tenant has no sender")
)

// Limits are a sender's flow-control limits, with the meaning of the
// CHATQ_ variables of the same names.
type Limits struct {
	RatePerSecond       float64
	RateBurst           int
	PairInterval        time.Duration
	PairBurst           int
	DailyRecipientLimit int
}

// Overrides are the limits a sender sets for itself; a nil field takes the
// deployment's default (its CHATQ_ variable).
type Overrides struct {
	RatePerSecond       *float64
	RateBurst           *int
	PairInterval        *time.Duration
	PairBurst           *int
	DailyRecipientLimit *int
}

// LimitNames are the names of the limits, as the API and Patch.Reset
// spell them.
var LimitNames = []string{"rate_per_second", "rate_burst", "pair_interval", "pair_burst", "daily_recipient_limit"}

// apply returns the limits o sets over d. A sender that sets its rate but
// not its burst gets a second's worth of its own rate as its burst, not the
// deployment's.
func (o Overrides) apply(d Limits) Limits {
	l := d
	if o.RatePerSecond != nil {
		l.RatePerSecond = *o.RatePerSecond
		l.RateBurst = max(1, int(math.Round(l.RatePerSecond)))
	}
	if o.RateBurst != nil {
		l.RateBurst = *o.RateBurst
	}
	if o.PairInterval != nil {
		l.PairInterval = *o.PairInterval
	}
	if o.PairBurst != nil {
		l.PairBurst = *o.PairBurst
	}
	if o.DailyRecipientLimit != nil {
		l.DailyRecipientLimit = *o.DailyRecipientLimit
	}
	return l
}

func (o Overrides) validate() error {
	bad := func(field, reason string) error { return &enqueue.ValidationError{Field: field, Reason: reason} }
	switch {
	case o.RatePerSecond != nil && (math.IsNaN(*o.RatePerSecond) || math.IsInf(*o.RatePerSecond, 0) || *o.RatePerSecond <= 0):
		return bad("rate_per_second", "must be a positive number")
	case o.RateBurst != nil && *o.RateBurst < 1:
		return bad("rate_burst", "must be at least 1")
	case o.PairInterval != nil && *o.PairInterval < 0:
		return bad("pair_interval", "must not be negative (0 turns the limit off)")
	case o.PairBurst != nil && *o.PairBurst < 1:
		return bad("pair_burst", "must be at least 1")
	case o.DailyRecipientLimit != nil && *o.DailyRecipientLimit < 0:
		return bad("daily_recipient_limit", "must not be negative (0 turns the limit off)")
	}
	return nil
}

// Sender is one business number chatq sends from. AppSecret and
// WebhookSecret are plain text in memory only: never log a Sender whole.
type Sender struct {
	// Number is the business's WhatsApp number, digits only: the source
	// of its messages.
	Number string
	// AppID and AppSecret are its ChatArchitect app's Basic credentials.
	// One app may have several senders.
	AppID, AppSecret string
	// Tenant owns the sender: only its keys send from it.
	Tenant string
	// Portfolio shares a daily unique-recipient limit among its senders;
	// it is the sender's own number unless set.
	Portfolio string
	// Limits are the effective limits; Overrides those the sender sets.
	Limits    Limits
	Overrides Overrides
	// Default makes it the sender of its tenant's messages that name none.
	Default bool
	// Paused holds the sender's messages back until it is resumed.
	Paused bool
	// WebhookSecret is the last segment of the sender's own webhook URL.
	WebhookSecret string
	// WebhookURL is where the application that uses the drop-in
	// endpoints wants this sender's webhooks (POST /webhook), or "".
	WebhookURL string
	// Env marks the sender of the CHATQ_CA_ variables, which the registry
	// cannot change.
	Env bool
	// CreatedAt and UpdatedAt are zero for the environment's sender.
	CreatedAt, UpdatedAt time.Time
}

// WebhookPath is the path of the sender's webhook URL on chatq api.
func (s *Sender) WebhookPath() string { return "/webhooks/chatarchitect/" + s.WebhookSecret }

// EnvTenant is the tenant of the sender the CHATQ_CA_ variables define, and
// of every message sent without a tenant key.
const EnvTenant = tenants.Default

// Spec is a new sender, as POST /v1/senders gives it.
type Spec struct {
	Number, AppID, AppSecret string
	// Tenant is required; Portfolio defaults to the number.
	Tenant, Portfolio string
	Overrides         Overrides
	Default, Paused   bool
}

// Patch changes a sender: nil fields stay as they are.
type Patch struct {
	AppID, AppSecret, Tenant, Portfolio *string
	Default                             *bool
	// Overrides are limits to set; Reset names limits (LimitNames) that
	// go back to the deployment's defaults.
	Overrides Overrides
	Reset     []string
}

// Normalize writes a number as the registry keys it: digits only.
func Normalize(number string) string { return strings.TrimPrefix(strings.TrimSpace(number), "+") }

func (sp *Spec) validate() error {
	bad := func(field, reason string) error { return &enqueue.ValidationError{Field: field, Reason: reason} }
	if sp.Number == "" {
		return bad("number", "is required: the business's WhatsApp number")
	}
	if err := enqueue.ValidateDestination("number", sp.Number); err != nil {
		return err
	}
	if err := checkCredential("app_id", sp.AppID); err != nil {
		return err
	}
	if err := checkCredential("app_secret", sp.AppSecret); err != nil {
		return err
	}
	if err := tenants.Validate("tenant", sp.Tenant); err != nil {
		return err
	}
	if sp.Portfolio != "" && (len(sp.Portfolio) > 64 || strings.ContainsAny(sp.Portfolio, "{}\r\n")) {
		return bad("portfolio", "must be at most 64 characters, without braces or line breaks")
	}
	return sp.Overrides.validate()
}

func checkCredential(field, v string) error {
	switch {
	case strings.TrimSpace(v) == "":
		return &enqueue.ValidationError{Field: field, Reason: "is required"}
	case len(v) > 256:
		return &enqueue.ValidationError{Field: field, Reason: "must be at most 256 characters"}
	case strings.ContainsAny(v, "\r\n"):
		return &enqueue.ValidationError{Field: field, Reason: "must not contain line breaks"}
	case field == "app_id" && strings.Contains(v, ":"):
		return &enqueue.ValidationError{Field: field, Reason: "must not contain a colon (it is a Basic auth user name)"}
	}
	return nil
}

// apply returns the spec that p makes of sp.
func (p *Patch) apply(sp Spec) (Spec, error) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&sp.AppID, p.AppID)
	set(&sp.AppSecret, p.AppSecret)
	set(&sp.Tenant, p.Tenant)
	set(&sp.Portfolio, p.Portfolio)
	if p.Default != nil {
		sp.Default = *p.Default
	}
	o := &sp.Overrides
	for _, name := range p.Reset {
		switch name {
		case "rate_per_second":
			o.RatePerSecond = nil
		case "rate_burst":
			o.RateBurst = nil
		case "pair_interval":
			o.PairInterval = nil
		case "pair_burst":
			o.PairBurst = nil
		case "daily_recipient_limit":
			o.DailyRecipientLimit = nil
		default:
			return sp, fmt.Errorf("patch: %q is not a limit", name)
		}
	}
	n := p.Overrides
	if n.RatePerSecond != nil {
		o.RatePerSecond = n.RatePerSecond
	}
	if n.RateBurst != nil {
		o.RateBurst = n.RateBurst
	}
	if n.PairInterval != nil {
		o.PairInterval = n.PairInterval
	}
	if n.PairBurst != nil {
		o.PairBurst = n.PairBurst
	}
	if n.DailyRecipientLimit != nil {
		o.DailyRecipientLimit = n.DailyRecipientLimit
	}
	return sp, nil
}
