package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/chatarchitect"
)

// Source lists the business number's templates: ChatArchitect's getHSM,
// which *chatarchitect.Client implements.
type Source interface {
	Templates(ctx context.Context) ([]chatarchitect.Template, error)
}

// Template is one template in chatq's cache, in getHSM's names plus the
// number of parameters it takes.
type Template struct {
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Category     string `json:"category,omitempty"`
	TemplateType string `json:"templateType,omitempty"`
	// Status is APPROVED, PENDING, REJECTED, PAUSED... as the upstream
	// says; only APPROVED templates can be sent.
	Status string `json:"status"`
	// Data is the template's text with its {{1}}..{{n}} placeholders.
	Data string `json:"data,omitempty"`
	// Params is n: how many parameters a send must give.
	Params int `json:"params"`
}

// Catalog is the cached list of templates and when it was fetched.
type Catalog struct {
	FetchedAt time.Time  `json:"fetched_at"`
	Templates []Template `json:"templates"`
}

// templatesKey holds a sender's catalog, shared by every chatq process:
// templates belong to the sender's app and number (getHSM lists those of
// one number). The environment's sender ("") keeps the key of a
// single-sender deployment.
func templatesKey(sender string) string {
	if sender == "" {
		return "chatq:templates"
	}
	return "chatq:templates:{" + sender + "}"
}

// Statuses of a template WhatsApp holds for low quality, as getHSM and
// template-event webhooks say them.
const (
	TemplatePaused   = "PAUSED"
	TemplateDisabled = "DISABLED"
)

// Defaults of the template cache.
const (
	// DefaultRefreshInterval is how often Run refreshes the catalog.
	DefaultRefreshInterval = 10 * time.Minute
	// memoryTTL is how long a process uses its copy of the catalog before
	// it reads Redis again: a sync by another process shows within it.
	memoryTTL = 15 * time.Second
	// missInterval spaces the refreshes a template missing from the
	// catalog causes, so that a mistyped name cannot hammer getHSM.
	missInterval = 30 * time.Second
)

// Templates is one sender's template cache: the catalog in Redis,
// refreshed from the Source, with a copy in memory.
type Templates struct {
	rdb redis.UniversalClient
	key string
	// sender is the number whose templates these are, "" for the
	// environment's sender.
	sender string
	source Source // nil: read the catalog others keep
	log    *zap.Logger
	now    func() time.Time
	// onStatus is Config.TemplateStatus.
	onStatus func(ctx context.Context, sender, name, status string) error

	fetch sync.Mutex // one refresh at a time

	mu        sync.Mutex
	catalog   *Catalog // nil when none was found
	index     map[string]*Template
	loadedAt  time.Time
	lastFetch time.Time // last refresh attempt, for missInterval
}

func templateKey(name, language string) string { return name + "\x00" + language }

// Sync fetches the catalog from the Source and stores it.
func (ts *Templates) Sync(ctx context.Context) (*Catalog, error) {
	if ts.source == nil {
		return nil, errors.New("sync templates: no ChatArchitect credentials configured")
	}
	ts.fetch.Lock()
	defer ts.fetch.Unlock()
	ts.mu.Lock()
	ts.lastFetch = ts.now()
	ts.mu.Unlock()
	list, err := ts.source.Templates(ctx)
	if err != nil {
		return nil, fmt.Errorf("sync templates: %w", err)
	}
	c := &Catalog{FetchedAt: ts.now().UTC(), Templates: make([]Template, 0, len(list))}
	for _, t := range list {
		c.Templates = append(c.Templates, Template{
			ElementName: t.ElementName, LanguageCode: t.LanguageCode, Category: t.Category,
			TemplateType: t.TemplateType, Status: strings.ToUpper(t.Status), Data: t.Data, Params: CountParams(t.Data),
		})
	}
	slices.SortFunc(c.Templates, func(a, b Template) int {
		return strings.Compare(templateKey(a.ElementName, a.LanguageCode), templateKey(b.ElementName, b.LanguageCode))
	})
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("sync templates: %w", err)
	}
	if err := ts.rdb.Set(ctx, ts.key, b, 0).Err(); err != nil {
		return nil, fmt.Errorf("sync templates: %w", err)
	}
	ts.keep(c)
	ts.report(ctx, c)
	return c, nil
}

// report tells onStatus each template's status, once per name: its
// messages are held for the whole template, whatever their language.
func (ts *Templates) report(ctx context.Context, c *Catalog) {
	if ts.onStatus == nil {
		return
	}
	status := map[string]string{}
	var names []string
	for _, t := range c.Templates {
		cur, seen := status[t.ElementName]
		if !seen {
			names = append(names, t.ElementName)
		}
		if !seen || statusWeight(t.Status) > statusWeight(cur) {
			status[t.ElementName] = t.Status
		}
	}
	for _, name := range names {
		if err := ts.onStatus(ctx, ts.sender, name, status[name]); err != nil {
			ts.log.Warn("recording a template's status from the template cache", zap.String("template", name), zap.Error(err))
		}
	}
}

// statusWeight orders template statuses by how much they hold back: a
// template disabled in one language is disabled, paused in one is paused.
func statusWeight(status string) int {
	switch status {
	case TemplateDisabled:
		return 2
	case TemplatePaused:
		return 1
	}
	return 0
}

// Catalog returns the cached catalog, nil when no process ever synced it.
func (ts *Templates) Catalog(ctx context.Context) (*Catalog, error) {
	ts.mu.Lock()
	if ts.catalog != nil && ts.now().Sub(ts.loadedAt) < memoryTTL {
		c := ts.catalog
		ts.mu.Unlock()
		return c, nil
	}
	ts.mu.Unlock()
	b, err := ts.rdb.Get(ctx, ts.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read template cache: %w", err)
	}
	c := new(Catalog)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("read template cache: %w", err)
	}
	ts.keep(c)
	return c, nil
}

func (ts *Templates) keep(c *Catalog) {
	index := make(map[string]*Template, len(c.Templates))
	for i := range c.Templates {
		t := &c.Templates[i]
		index[templateKey(t.ElementName, t.LanguageCode)] = t
	}
	ts.mu.Lock()
	ts.catalog, ts.index, ts.loadedAt = c, index, ts.now()
	ts.mu.Unlock()
}

func (ts *Templates) lookup(name, language string) *Template {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.index[templateKey(name, language)]
}

// mayFetch reports whether a miss may refresh the catalog now.
func (ts *Templates) mayFetch() bool {
	if ts.source == nil {
		return false
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.now().Sub(ts.lastFetch) >= missInterval
}

// Check validates a template send against the catalog: the template must
// exist in that language, be APPROVED or PAUSED (its messages wait in the
// worker until it is approved again), and get exactly its number of
// parameters. A template that passes gets its category in use.Category. A template missing from the catalog refreshes it first (at
// most every 30s), in case it was approved since.
//
// Where no catalog exists at all and none can be fetched (no credentials
// here, or ChatArchitect unreachable), the send is accepted: refusing
// would stop every template, one-time codes included, for as long as the
// upstream is away, while a wrong template fails harmlessly upstream
// (a 132xxx error, a dead letter). Once a catalog exists, even a stale
// one, it is trusted.
func (ts *Templates) Check(ctx context.Context, use *TemplateUse) error {
	c, err := ts.Catalog(ctx)
	if err != nil {
		return err
	}
	t := ts.lookup(use.Name, use.Language)
	if t == nil && ts.mayFetch() {
		fresh, err := ts.Sync(ctx)
		switch {
		case err != nil && c == nil:
			ts.log.Warn("no template cache and ChatArchitect unreachable: template sends are accepted unchecked", zap.Error(err))
		case err != nil:
			ts.log.Warn("refreshing the template cache failed; checking against the cached one", zap.Error(err))
		default:
			c = fresh
		}
		t = ts.lookup(use.Name, use.Language)
	}
	if c == nil {
		return nil
	}
	if t == nil {
		reason := fmt.Sprintf("names no known template %q in language %q", use.Name, use.Language)
		if others := ts.languages(use.Name); len(others) > 0 {
			reason += " (it exists in " + strings.Join(others, ", ") + ")"
		}
		return &Error{Code: CodeUnknownTemplate, Field: use.Field + ".elementName", Reason: reason}
	}
	if !strings.EqualFold(t.Status, chatarchitect.TemplateApproved) && !strings.EqualFold(t.Status, TemplatePaused) {
		return &Error{Code: CodeTemplateNotApproved, Field: use.Field + ".elementName",
			Reason: fmt.Sprintf("names template %s (%s), which is %s, not APPROVED", t.ElementName, t.LanguageCode, t.Status)}
	}
	if use.Params != t.Params {
		return &Error{Code: CodeTemplateParams, Field: use.Field + ".params",
			Reason: fmt.Sprintf("must hold %d %s, not %d", t.Params, plural(t.Params, "parameter", "parameters"), use.Params)}
	}
	use.Category = strings.ToLower(t.Category)
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// languages lists the languages a template name exists in.
func (ts *Templates) languages(name string) []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.catalog == nil {
		return nil
	}
	var out []string
	for _, t := range ts.catalog.Templates {
		if t.ElementName == name {
			out = append(out, t.LanguageCode)
		}
	}
	return out
}

var placeholderRe = regexp.MustCompile(`\{\{\s*([0-9]+)\s*\}\}`)

// CountParams returns the number of parameters a template's text takes:
// the highest n of its {{n}} placeholders.
func CountParams(data string) int {
	most := 0
	for _, m := range placeholderRe.FindAllStringSubmatch(data, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil {
			most = max(most, n)
		}
	}
	return most
}
