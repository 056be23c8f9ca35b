package enqueue

import (
	"cmp"
	"context"
	"fmt"
	"net"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
)

// Policy checks messages against WhatsApp's conversation rules before they
// are stored: recipients who opted out, the 24h customer service window,
// templates that are unknown, unapproved or given the wrong number of
// parameters, callback URLs on private addresses. A Client with a Policy
// (Config.Policy) refuses such messages at once, with a *PolicyError,
// instead of letting them fail upstream. NewPolicy returns chatq's own.
type Policy interface {
	// CheckMessages returns one error per message, in order: nil, or a
	// *PolicyError. The error is for a failure of the whole check.
	CheckMessages(ctx context.Context, msgs []*Message) ([]error, error)
}

// PolicyError is a message the conversation policy refuses. Code says why
// ("suppressed", "window_closed", "unknown_template",
// "template_not_approved", "template_params", "callback_url_refused",
// "us_marketing_blocked", "country_refused"),
// Field names the refused part of the message, as in ValidationError.
type PolicyError = policy.Error

// PolicyConfig configures NewPolicy. The zero value is chatq's default.
type PolicyConfig struct {
	// Window is the 24h window policy (CHATQ_WINDOW_POLICY): "learn" (the
	// default when empty) refuses a free-form message to a recipient whose
	// window chatq knows to be closed, "strict" unless chatq saw the user
	// write in the last 24h, "off" never.
	Window string
	// AllowPrivateCallbacks accepts callback URLs on loopback and private
	// addresses (CHATQ_CALLBACK_ALLOW_PRIVATE).
	AllowPrivateCallbacks bool
	// Resolver resolves callback URL hosts; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// AllowUSMarketing lets marketing templates to +1 numbers through
	// (CHATQ_ALLOW_US_MARKETING); by default they are refused, as WhatsApp
	// refuses them all since 1 April 2025.
	AllowUSMarketing bool
	// Sender is the business number of chatq's CHATQ_CA_SOURCE: a message
	// naming it, or none, is checked against that sender's windows and
	// template cache, any other sender against its own.
	Sender string
	// Log gets the policy's warnings; nil discards them.
	Log *zap.Logger
}

// NewPolicy returns chatq's conversation policy on rdb: the suppression
// list, window state and template cache that chatq's API and workers keep
// there. Templates are checked against the cache the workers refresh; where
// none exists yet, template sends are accepted unchecked.
func NewPolicy(rdb redis.UniversalClient, cfg PolicyConfig) Policy {
	return CheckerPolicy(policy.New(rdb, policy.Config{
		Window:                policy.WindowPolicy(cfg.Window),
		AllowPrivateCallbacks: cfg.AllowPrivateCallbacks,
		Resolver:              cfg.Resolver,
		AllowUSMarketing:      cfg.AllowUSMarketing,
		EnvSender:             cfg.Sender,
		Log:                   cfg.Log,
	}))
}

// CheckerPolicy adapts chatq's internal policy checker to Policy, so that
// chatq's own commands share one checker (and its template cache) between
// the HTTP API and the Client. Applications use NewPolicy.
func CheckerPolicy(c *policy.Checker) Policy { return checkerPolicy{c} }

type checkerPolicy struct{ c *policy.Checker }

func (p checkerPolicy) CheckMessages(ctx context.Context, msgs []*Message) ([]error, error) {
	errs, _, err := p.checkCategories(ctx, msgs)
	return errs, err
}

// categorizer is a Policy that knows the account's templates (chatq's
// own): its check also tells each template message's category, "" where
// the template cache does not know it.
type categorizer interface {
	checkCategories(ctx context.Context, msgs []*Message) (errs []error, categories []string, err error)
}

// checkCategories checks each message against its tenant's suppression
// list and its sender's windows and template cache (a batch of one
// tenant's messages from one sender is one check) and tells each template
// message's category.
func (p checkerPolicy) checkCategories(ctx context.Context, msgs []*Message) ([]error, []string, error) {
	type whose struct{ tenant, sender string }
	byWhose := map[whose][]int{}
	var order []whose
	for i, m := range msgs {
		k := whose{m.Tenant, cmp.Or(m.Sender, m.ChosenSender)}
		if _, ok := byWhose[k]; !ok {
			order = append(order, k)
		}
		byWhose[k] = append(byWhose[k], i)
	}
	errs := make([]error, len(msgs))
	categories := make([]string, len(msgs))
	for _, k := range order {
		index := byWhose[k]
		subjects := make([]policy.Subject, len(index))
		for j, i := range index {
			subjects[j] = subject(msgs[i])
		}
		es, err := p.c.ForTenant(k.tenant).ForSender(k.sender).Check(ctx, subjects)
		if err != nil {
			return nil, nil, err
		}
		for j, i := range index {
			errs[i] = es[j]
			if subjects[j].Template != nil {
				categories[i] = subjects[j].Template.Category
			}
		}
	}
	return errs, categories, nil
}

// subject is what the policy needs to know of m.
func subject(m *Message) policy.Subject {
	s := policy.Subject{Destination: m.Destination, CallbackURL: m.CallbackURL}
	if t, ok := m.Payload.(*Template); ok {
		s.Template = templateUse("payload.template", &t.Template)
	} else {
		s.FreeForm = true
	}
	if m.FallbackTemplate != nil {
		s.Fallback = templateUse("fallback_template", m.FallbackTemplate)
	}
	return s
}

func templateUse(field string, t *TemplateSpec) *policy.TemplateUse {
	return &policy.TemplateUse{Field: field, Name: t.ElementName, Language: t.LanguageCode, Params: len(t.Params)}
}

// checkPolicy runs the policy on the messages whose records recs are about
// to be stored (index maps them to msgs and results), records each refusal
// in results and returns the records still to store.
func (c *Client) checkPolicy(ctx context.Context, msgs []*Message, recs []*store.Record, index []int, results []Result) ([]*store.Record, []int, error) {
	if c.cfg.Policy == nil || len(recs) == 0 {
		return recs, index, nil
	}
	checked := make([]*Message, len(index))
	for j, i := range index {
		checked[j] = msgs[i]
	}
	var errs []error
	var categories []string
	var err error
	if cp, ok := c.cfg.Policy.(categorizer); ok {
		errs, categories, err = cp.checkCategories(ctx, checked)
	} else {
		errs, err = c.cfg.Policy.CheckMessages(ctx, checked)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("check policy: %w", err)
	}
	keptRecs, keptIndex := recs[:0], index[:0]
	for j, i := range index {
		if errs[j] != nil {
			results[i].Err = errs[j]
			continue
		}
		if categories != nil && categories[j] != "" {
			c.categorize(recs[j], categories[j])
		}
		keptRecs = append(keptRecs, recs[j])
		keptIndex = append(keptIndex, i)
	}
	return keptRecs, keptIndex, nil
}

// categorize gives a template message's record its category, and an
// authentication template without expires_at its default expiry: a
// one-time code is worthless minutes after it was asked for. A scheduled
// one expires that long after its send_at.
func (c *Client) categorize(r *store.Record, category string) {
	r.Category = &category
	if category != store.CategoryAuthentication || r.ExpiresAt != nil {
		return
	}
	from := r.CreatedAt
	if r.SendAt != nil && r.SendAt.After(from) {
		from = *r.SendAt
	}
	t := from.Add(c.cfg.AuthTTL)
	r.ExpiresAt = &t
}
