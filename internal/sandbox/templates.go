package sandbox

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/chatq/chatq/enqueue"
	"github.com/google/uuid"
)

// Template statuses, as getHSM reports them.
const (
	statusPending  = "PENDING"
	statusApproved = "APPROVED"
	statusRejected = "REJECTED"
	statusPaused   = "PAUSED"
	statusDisabled = "DISABLED"
)

// settableStatuses are the statuses PUT /sandbox/templates/{name} sets.
func settableStatuses() []string {
	return []string{statusApproved, statusPaused, statusDisabled, statusRejected}
}

// rejectWord in a submitted template's content makes its review fail.
const rejectWord = "REJECT"

// maxTemplateContent is WhatsApp's limit on a template body.
const maxTemplateContent = 1024

var placeholderRe = regexp.MustCompile(`\{\{\s*([0-9]+)\s*\}\}`)

// templateCategories and templateTypes are the values submit_template
// accepts.
func templateCategories() []string { return []string{"MARKETING", "UTILITY", "AUTHENTICATION"} }
func templateTypes() []string      { return []string{"TEXT", "IMAGE", "VIDEO", "DOCUMENT"} }

// template is one message template. It is never modified once stored: its
// status is a function of the time.
type template struct {
	id           string
	elementName  string
	languageCode string
	category     string
	templateType string
	content      string
	example      string
	params       int       // placeholders {{1}}..{{params}}
	createdAt    time.Time // submission
	reviewedAt   time.Time // when the review ends
	verdict      string    // the status after review
	reason       string    // why it has its verdict, when it was set by hand
}

func (t *template) status(now time.Time) string {
	if now.Before(t.reviewedAt) {
		return statusPending
	}
	return t.verdict
}

// templateView is a template in getHSM's shape.
type templateView struct {
	ID           string `json:"id"`
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Category     string `json:"category"`
	TemplateType string `json:"templateType"`
	Status       string `json:"status"`
	Data         string `json:"data"`
	Reason       string `json:"reason,omitempty"`
	CreatedOn    int64  `json:"createdOn"`  // unix milliseconds
	ModifiedOn   int64  `json:"modifiedOn"` // unix milliseconds
}

func (t *template) view(now time.Time) templateView {
	v := templateView{
		ID:           t.id,
		ElementName:  t.elementName,
		LanguageCode: t.languageCode,
		Category:     t.category,
		TemplateType: t.templateType,
		Status:       t.status(now),
		Data:         t.content,
		CreatedOn:    t.createdAt.UnixMilli(),
		ModifiedOn:   t.createdAt.UnixMilli(),
	}
	if v.Status != statusPending {
		v.ModifiedOn = t.reviewedAt.UnixMilli()
	}
	switch {
	case t.reason != "" && v.Status != statusPending:
		v.Reason = t.reason
	case v.Status == statusRejected:
		v.Reason = "The template was rejected in review (its content contains " + rejectWord + ")."
	}
	return v
}

// templateStore holds the templates, seeded with a few approved ones.
type templateStore struct {
	review time.Duration

	mu    sync.RWMutex
	list  []*template
	byKey map[string]*template
}

func templateKey(elementName, languageCode string) string {
	return elementName + "\x00" + languageCode
}

func newTemplateStore(review time.Duration, now time.Time) *templateStore {
	ts := &templateStore{review: review, byKey: make(map[string]*template)}
	seeds := []submittedTemplate{
		{ElementName: "welcome_offer", LanguageCode: "en_US", Category: "MARKETING", TemplateType: "TEXT",
			Content: "Welcome {{1}}! Your discount code is {{2}}.", Example: "Welcome [John]! Your discount code is [12345]."},
		{ElementName: "otp_code", LanguageCode: "en", Category: "AUTHENTICATION", TemplateType: "TEXT",
			Content: "Your code is {{1}}.", Example: "Your code is [123456]."},
		{ElementName: "order_update", LanguageCode: "en_US", Category: "UTILITY", TemplateType: "TEXT",
			Content: "Your order {{1}} is {{2}}.", Example: "Your order [1234] is [shipped]."},
	}
	for _, seed := range seeds {
		n, _ := countPlaceholders(seed.Content)
		t := seed.template(n, now)
		t.reviewedAt = now // approved from the start
		ts.list = append(ts.list, t)
		ts.byKey[templateKey(t.elementName, t.languageCode)] = t
	}
	return ts
}

// submittedTemplate is the "submit_template" object of POST /submit_template.
type submittedTemplate struct {
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Category     string `json:"category"`
	TemplateType string `json:"templateType"`
	Content      string `json:"content"`
	Example      string `json:"example"`
}

func (st *submittedTemplate) template(params int, now time.Time) *template {
	verdict := statusApproved
	if strings.Contains(st.Content, rejectWord) {
		verdict = statusRejected
	}
	return &template{
		id:           uuid.NewString(),
		elementName:  st.ElementName,
		languageCode: st.LanguageCode,
		category:     strings.ToUpper(st.Category),
		templateType: strings.ToUpper(st.TemplateType),
		content:      st.Content,
		example:      st.Example,
		params:       params,
		createdAt:    now,
		verdict:      verdict,
	}
}

// validate checks a submission and returns a *enqueue.ValidationError
// naming the field, or nil; it returns the content's number of placeholders.
func (st *submittedTemplate) validate() (int, error) {
	const root = "submit_template"
	if err := enqueue.ValidateTemplateSpec(root, &enqueue.TemplateSpec{ElementName: st.ElementName, LanguageCode: st.LanguageCode}); err != nil {
		return 0, err
	}
	if err := oneOf(root+".category", st.Category, templateCategories()); err != nil {
		return 0, err
	}
	if err := oneOf(root+".templateType", st.TemplateType, templateTypes()); err != nil {
		return 0, err
	}
	if err := required(root+".content", st.Content, maxTemplateContent); err != nil {
		return 0, err
	}
	if err := required(root+".example", st.Example, maxTemplateContent); err != nil {
		return 0, err
	}
	n, err := countPlaceholders(st.Content)
	if err != nil {
		return 0, &enqueue.ValidationError{Field: root + ".content", Reason: err.Error()}
	}
	return n, nil
}

func oneOf(field, value string, allowed []string) error {
	if value == "" {
		return &enqueue.ValidationError{Field: field, Reason: "is required"}
	}
	if !slices.Contains(allowed, strings.ToUpper(value)) {
		return &enqueue.ValidationError{Field: field, Reason: fmt.Sprintf("must be one of %s, not %q", strings.Join(allowed, ", "), value)}
	}
	return nil
}

func required(field, value string, maxLen int) error {
	if value == "" {
		return &enqueue.ValidationError{Field: field, Reason: "is required"}
	}
	if n := utf8.RuneCountInString(value); n > maxLen {
		return &enqueue.ValidationError{Field: field, Reason: fmt.Sprintf("must be at most %d characters, not %d", maxLen, n)}
	}
	return nil
}

// countPlaceholders returns n for a content whose placeholders are exactly
// {{1}}..{{n}} (each may appear more than once).
func countPlaceholders(content string) (int, error) {
	seen := map[int]bool{}
	most := 0
	for _, m := range placeholderRe.FindAllStringSubmatch(content, -1) {
		n, err := strconv.Atoi(m[1])
		if err != nil || n < 1 {
			return 0, fmt.Errorf("has placeholder %s: they are numbered from {{1}}", m[0])
		}
		seen[n] = true
		most = max(most, n)
	}
	for i := 1; i <= most; i++ {
		if !seen[i] {
			return 0, fmt.Errorf("skips placeholder {{%d}}: they must be numbered {{1}} to {{%d}} without gaps", i, most)
		}
	}
	return most, nil
}

// add stores a validated submission; it fails if a template of that name
// and language exists.
func (ts *templateStore) add(st *submittedTemplate, params int, now time.Time) (*template, error) {
	t := st.template(params, now)
	t.reviewedAt = now.Add(ts.review)
	key := templateKey(t.elementName, t.languageCode)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.byKey[key]; ok {
		return nil, badRequest(fmt.Sprintf("Template %s (%s) already exists", t.elementName, t.languageCode))
	}
	ts.list = append(ts.list, t)
	ts.byKey[key] = t
	return t, nil
}

func (ts *templateStore) all() []*template {
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return slices.Clone(ts.list)
}

// checkSend returns why a template message cannot be sent, or nil: the
// template must exist, be approved, paused or disabled (the last two are
// accepted, then fail as WhatsApp's do), and get exactly its number of
// params. It returns the template's category, lowercased, and status.
func (ts *templateStore) checkSend(spec *enqueue.TemplateSpec, now time.Time) (category, status string, err error) {
	ts.mu.RLock()
	t := ts.byKey[templateKey(spec.ElementName, spec.LanguageCode)]
	ts.mu.RUnlock()
	if t == nil {
		return "", "", badRequest(fmt.Sprintf("Template not found: %s (%s)", spec.ElementName, spec.LanguageCode))
	}
	status = t.status(now)
	switch status {
	case statusApproved, statusPaused, statusDisabled:
	default:
		return "", "", badRequest(fmt.Sprintf("Template %s (%s) is %s, not %s", t.elementName, t.languageCode, status, statusApproved))
	}
	if len(spec.Params) != t.params {
		return "", "", badRequest(fmt.Sprintf("Template params mismatch: %s (%s) takes %d params, got %d", t.elementName, t.languageCode, t.params, len(spec.Params)))
	}
	return strings.ToLower(t.category), status, nil
}

// setStatus gives every language of the template called name the status,
// as Meta's quality rating or review would, and returns the templates as
// they are now; none when no template has that name.
func (ts *templateStore) setStatus(name, status, reason string, now time.Time) []*template {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var changed []*template
	for i, t := range ts.list {
		if t.elementName != name {
			continue
		}
		// A template is never modified once stored: a copy replaces it.
		c := *t
		c.verdict, c.reason = status, reason
		if c.reviewedAt.After(now) {
			c.reviewedAt = now
		}
		ts.list[i] = &c
		ts.byKey[templateKey(c.elementName, c.languageCode)] = &c
		changed = append(changed, &c)
	}
	return changed
}
