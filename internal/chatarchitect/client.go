package chatarchitect

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is ChatArchitect's production API.
const DefaultBaseURL = "https://api.chatarchitect.com"

// DefaultTimeout bounds one request when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// The endpoints, relative to Config.BaseURL.
const (
	pathSend           = "/whatsappmessage"
	pathWebhook        = "/webhook"
	pathTemplates      = "/getHSM"
	pathSubmitTemplate = "/submit_template"
)

const (
	// maxAnswer bounds the body read of an answer: a send's answer is a
	// few dozen bytes, and a proxy's error page must not be read whole.
	maxAnswer = 1 << 20
	// maxTemplatesAnswer bounds getHSM's answer, which lists every template
	// of the account.
	maxTemplatesAnswer = 16 << 20
	// maxPooledBuffer keeps the occasional large answer from pinning memory
	// in the buffer pool.
	maxPooledBuffer = 64 << 10
	// maxReason bounds the upstream's text kept in an error.
	maxReason = 512
)

// Template statuses as ChatArchitect reports them.
const (
	TemplatePending  = "PENDING"
	TemplateApproved = "APPROVED"
	TemplateRejected = "REJECTED"
)

// Config is the client's configuration. Every zero value has a default or is
// only needed by some calls, as documented per field.
type Config struct {
	// BaseURL is the API's root, without the endpoint path. Zero means
	// DefaultBaseURL.
	BaseURL string
	// AppID and AppSecret are the Basic auth credentials sent on every
	// request. They have no default: empty ones are sent as they are, and
	// the upstream refuses them (ClassAccount).
	AppID     string
	AppSecret string
	// Source is the business's own WhatsApp number: the destination of
	// /webhook, /getHSM and /submit_template. Send does not need it.
	Source string
	// Timeout bounds each request, from connecting to reading the whole
	// answer. Zero means DefaultTimeout.
	Timeout time.Duration
}

// Template is an approved or pending message template (HSM), as /getHSM
// lists it. The JSON names are ChatArchitect's.
type Template struct {
	ID           string `json:"id"`
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	Category     string `json:"category"`
	TemplateType string `json:"templateType"`
	// Status is TemplatePending, TemplateApproved, TemplateRejected, or
	// whatever else the upstream reports.
	Status string `json:"status"`
	// Data is the template's text with its {{1}}..{{n}} placeholders.
	Data string `json:"data"`
	// Reason is why a template was rejected, when the upstream says.
	Reason string `json:"reason,omitempty"`
}

// UnmarshalJSON decodes a template whose id may come as a number, and keeps
// what it can of a template with a field of an unexpected type.
func (t *Template) UnmarshalJSON(b []byte) error {
	type plain Template
	var w struct {
		plain
		ID flexString `json:"id"`
	}
	if err := json.Unmarshal(b, &w); err != nil && !isTypeError(err) {
		return err
	}
	*t = Template(w.plain)
	t.ID = string(w.ID)
	return nil
}

// TemplateSubmission is a new template for /submit_template. The JSON names
// are ChatArchitect's.
type TemplateSubmission struct {
	ElementName  string `json:"elementName"`
	LanguageCode string `json:"languageCode"`
	// Category is MARKETING, UTILITY or AUTHENTICATION.
	Category string `json:"category"`
	// TemplateType is TEXT, IMAGE, VIDEO, DOCUMENT...; empty means TEXT.
	TemplateType string `json:"templateType"`
	// Content is the text with {{1}}..{{n}} placeholders.
	Content string `json:"content"`
	// Example is Content with sample values, which WhatsApp's review wants
	// whenever Content has placeholders.
	Example string `json:"example,omitempty"`
}

// Client calls the ChatArchitect API. Create it with New. It is safe for
// concurrent use; one Client should serve a whole process so that
// connections are reused.
type Client struct {
	hc      *http.Client
	timeout time.Duration
	source  string

	// auth and contentType are shared by every request's header map; the
	// transport only reads them.
	auth        []string
	contentType []string
	userAgent   []string

	sendURL, webhookURL, templatesURL, submitURL string

	// bufs holds *bytes.Buffer for reading answers.
	bufs sync.Pool
	now  func() time.Time
}

// New returns a client for cfg. When hc is nil the client uses its own
// http.Client whose transport keeps enough idle connections for a worker's
// concurrent sends; a caller that passes hc owns its transport and timeout.
func New(cfg Config, hc *http.Client) *Client {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	if hc == nil {
		hc = newHTTPClient(timeout)
	}
	creds := base64.StdEncoding.EncodeToString([]byte(cfg.AppID + ":" + cfg.AppSecret))
	c := &Client{
		hc:           hc,
		timeout:      timeout,
		source:       cfg.Source,
		auth:         []string{"Basic " + creds},
		contentType:  []string{"application/json"},
		userAgent:    []string{"chatq"},
		sendURL:      base + pathSend,
		webhookURL:   base + pathWebhook,
		templatesURL: base + pathTemplates,
		submitURL:    base + pathSubmitTemplate,
		now:          time.Now,
	}
	c.bufs.New = func() any { return new(bytes.Buffer) }
	return c
}

// NewHTTPClient returns the http.Client New builds when given none, for a
// caller that shares one among the clients of several apps: their sends go
// to one host and reuse its connections.
func NewHTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return newHTTPClient(timeout)
}

// newHTTPClient builds the default http.Client. A worker runs 50 or more
// sends at once against one host; the default transport keeps only 2 idle
// connections per host, so most sends would open a new TLS connection.
func newHTTPClient(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          512,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   min(timeout, 10*time.Second),
			ExpectContinueTimeout: time.Second,
		},
		Timeout: timeout,
		// A POST that is redirected would be replayed as a GET without its
		// body; the 3xx is reported instead (see classifyStatus).
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// The fixed parts of the send envelope, around the destination and the payload.
const (
	envelopeHead    = `{"channel":"whatsapp","destination":`
	envelopePayload = `,"payload":`
)

// envelopeSource names the business number in the send body. The
// overview's body names none (the app's credentials say who sends); when
// one app has several numbers, chatq adds Gupshup's "source" field, which
// ChatArchitect's API is assumed to pass on, since it fronts Gupshup.
const envelopeSource = `,"source":`

// Send posts one message to /whatsappmessage and returns the upstream's
// messageId. payload is the ChatArchitect payload object, forwarded byte for
// byte. Every failure is an *APIError whose Class says what to do next.
func (c *Client) Send(ctx context.Context, destination string, payload json.RawMessage) (messageID string, err error) {
	return c.SendFrom(ctx, "", destination, payload)
}

// SendFrom is Send from one business number of an app that has several:
// the body carries "source": source. An empty source sends exactly Send's
// body, the overview's.
func (c *Client) SendFrom(ctx context.Context, source, destination string, payload json.RawMessage) (messageID string, err error) {
	if destination == "" {
		return "", &APIError{Class: ClassPermanent, Reason: "empty destination"}
	}
	// The envelope is assembled from bytes, so a payload that is not exactly
	// one JSON object would corrupt it (or smuggle fields into it).
	if !isJSONObject(payload) {
		return "", &APIError{Class: ClassPermanent, Reason: "payload is not a JSON object"}
	}
	// One exact-size allocation, not a pooled buffer: a transport may still
	// read a request body after Do returns (see http.RoundTripper).
	body := make([]byte, 0, len(envelopeHead)+len(destination)+2+len(envelopeSource)+len(source)+2+len(envelopePayload)+len(payload)+1)
	body = append(body, envelopeHead...)
	body = appendJSONString(body, destination)
	if source != "" {
		body = append(body, envelopeSource...)
		body = appendJSONString(body, strings.TrimPrefix(source, "+"))
	}
	body = append(body, envelopePayload...)
	body = append(body, payload...)
	body = append(body, '}')

	var a answer
	status, retryAfter, apiErr := c.post(ctx, c.sendURL, body, maxAnswer, &a)
	if apiErr != nil {
		return "", apiErr
	}
	if isSuccess(status) && a.MessageID != "" {
		return a.MessageID, nil
	}
	code, reason := a.failure()
	if isSuccess(status) && reason == "" {
		// A 2xx that says nothing of a refusal: ChatArchitect may well have
		// taken the message and lost its answer on the way, so a resend may
		// duplicate it.
		e := classify(status, code, "answer without a messageId", retryAfter)
		e.Ambiguous = true
		return "", e
	}
	return "", classify(status, code, reason, retryAfter)
}

// isJSONObject reports whether b is one valid JSON object.
func isJSONObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return json.Valid(b)
		}
		return false
	}
	return false
}

// RegisterWebhook points the business number's webhooks (messages, delivery
// events, user events, all on one URL) at webhookURL. The URL carries
// chatq's webhook secret, so it appears in no error.
func (c *Client) RegisterWebhook(ctx context.Context, webhookURL string) error {
	if webhookURL == "" {
		return errors.New("register webhook: empty webhook URL")
	}
	if c.source == "" {
		return errors.New("register webhook: no Source (business number) configured")
	}
	body, err := json.Marshal(struct {
		Channel     string `json:"channel"`
		Destination string `json:"destination"`
		Webhook     string `json:"webhook"`
		Separate    string `json:"webhook_separate"`
	}{"whatsapp", c.source, webhookURL, "false"})
	if err != nil {
		return fmt.Errorf("register webhook: %w", err)
	}
	var a answer
	if err := c.call(ctx, c.webhookURL, body, maxAnswer, &a); err != nil {
		return fmt.Errorf("register webhook: %w", err)
	}
	return nil
}

// Templates lists the business number's templates with their review status.
func (c *Client) Templates(ctx context.Context) ([]Template, error) {
	if c.source == "" {
		return nil, errors.New("list templates: no Source (business number) configured")
	}
	body, err := json.Marshal(struct {
		Channel     string `json:"channel"`
		Destination string `json:"destination"`
		GetHSM      string `json:"getHSM"`
	}{"whatsapp", c.source, "true"})
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	var a answer
	if err := c.call(ctx, c.templatesURL, body, maxTemplatesAnswer, &a); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return a.Templates, nil
}

// SubmitTemplate submits a new template for WhatsApp's review. The template
// comes back PENDING and turns APPROVED or REJECTED later (see Templates).
func (c *Client) SubmitTemplate(ctx context.Context, t TemplateSubmission) (Template, error) {
	if c.source == "" {
		return Template{}, errors.New("submit template: no Source (business number) configured")
	}
	for _, f := range []struct{ name, value string }{
		{"elementName", t.ElementName},
		{"languageCode", t.LanguageCode},
		{"category", t.Category},
		{"content", t.Content},
	} {
		if strings.TrimSpace(f.value) == "" {
			return Template{}, fmt.Errorf("submit template: %s is required", f.name)
		}
	}
	if t.TemplateType == "" {
		t.TemplateType = "TEXT"
	}
	body, err := json.Marshal(struct {
		Channel     string             `json:"channel"`
		Destination string             `json:"destination"`
		Submit      TemplateSubmission `json:"submit_template"`
	}{"whatsapp", c.source, t})
	if err != nil {
		return Template{}, fmt.Errorf("submit template %s: %w", t.ElementName, err)
	}
	var a answer
	if err := c.call(ctx, c.submitURL, body, maxAnswer, &a); err != nil {
		return Template{}, fmt.Errorf("submit template %s: %w", t.ElementName, err)
	}
	// The answer's shape is Gupshup's ({"status":"success","template":{...}});
	// whatever it leaves out is what was submitted.
	got := Template{Status: TemplatePending}
	if a.Template != nil {
		got = *a.Template
	}
	got.ElementName = cmpOr(got.ElementName, t.ElementName)
	got.LanguageCode = cmpOr(got.LanguageCode, t.LanguageCode)
	got.Category = cmpOr(got.Category, t.Category)
	got.TemplateType = cmpOr(got.TemplateType, t.TemplateType)
	got.Data = cmpOr(got.Data, t.Content)
	got.Status = cmpOr(got.Status, TemplatePending)
	return got, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// answer is the union of ChatArchitect's answers: {"status":"submitted",
// "messageId"} to a send, {"status":"success","templates"} to getHSM,
// {"status":"success","template"} to submit_template, and
// {"status":"error","message"} to anything refused. Unknown fields are
// ignored.
type answer struct {
	Status    string          `json:"status"`
	MessageID string          `json:"messageId"`
	Code      flexString      `json:"code"`
	Reason    string          `json:"reason"`
	Message   json.RawMessage `json:"message"`
	Error     json.RawMessage `json:"error"`
	Templates []Template      `json:"templates"`
	Template  *Template       `json:"template"`
}

// errorDetail is an error object nested in "error" or "message", after
// WhatsApp's own error objects.
type errorDetail struct {
	Code      flexString `json:"code"`
	Message   string     `json:"message"`
	Title     string     `json:"title"`
	Reason    string     `json:"reason"`
	ErrorData struct {
		Details string `json:"details"`
	} `json:"error_data"`
}

// failure returns the error code and reason the answer carries, from the
// top level or from a nested error object.
func (a *answer) failure() (code, reason string) {
	code, reason = string(a.Code), a.Reason
	for _, raw := range []json.RawMessage{a.Message, a.Error} {
		switch {
		case len(raw) == 0:
		case raw[0] == '"':
			var s string
			if json.Unmarshal(raw, &s) == nil && reason == "" {
				reason = s
			}
		case raw[0] == '{':
			var d errorDetail
			if err := json.Unmarshal(raw, &d); err != nil && !isTypeError(err) {
				continue
			}
			code = cmpOr(code, string(d.Code))
			reason = cmpOr(reason, cmpOr(d.Message, cmpOr(d.Reason, cmpOr(d.Title, d.ErrorData.Details))))
		}
	}
	return strings.TrimSpace(code), truncate(strings.TrimSpace(reason), maxReason)
}

// call posts body to url and turns anything but a 2xx answer whose status is
// not "error" into an *APIError.
func (c *Client) call(ctx context.Context, url string, body []byte, limit int64, a *answer) error {
	status, retryAfter, apiErr := c.post(ctx, url, body, limit, a)
	if apiErr != nil {
		return apiErr
	}
	if isSuccess(status) && !strings.EqualFold(a.Status, "error") {
		return nil
	}
	code, reason := a.failure()
	return classify(status, code, reason, retryAfter)
}

func isSuccess(status int) bool { return status >= 200 && status < 300 }

// writeTrace records whether the transport wrote the whole request, which is
// what tells a failure before sending from one that may have been accepted.
type writeTrace struct {
	wrote atomic.Bool
}

func (w *writeTrace) wroteRequest(info httptrace.WroteRequestInfo) {
	if info.Err == nil {
		w.wrote.Store(true)
	}
}

// post sends one request and decodes the answer into a, whatever its
// Content-Type (Gupshup labels JSON text/html). An answer that is not JSON
// leaves a as it was. The *APIError is set only when no usable answer
// arrived; otherwise the caller judges status and a.
func (c *Client) post(ctx context.Context, url string, body []byte, limit int64, a *answer) (status int, retryAfter time.Duration, apiErr *APIError) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	trace := new(writeTrace)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: trace.wroteRequest})

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		// Only a malformed BaseURL gets here, and every request would fail
		// alike.
		return 0, 0, &APIError{Class: ClassAccount, Reason: "invalid request", Err: err}
	}
	req.Header = http.Header{
		"Authorization": c.auth,
		"Content-Type":  c.contentType,
		"User-Agent":    c.userAgent,
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, 0, transportError(err, trace.wrote.Load())
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	if v := resp.Header.Get("Retry-After"); v != "" {
		retryAfter = parseRetryAfter(v, c.now())
	}

	buf := c.bufs.Get().(*bytes.Buffer)
	defer c.putBuffer(buf)
	buf.Reset()
	fits, err := readBody(buf, resp, limit)
	if err != nil {
		if isSuccess(status) {
			// The upstream took the request and began to answer: the message
			// may well have been accepted.
			return status, retryAfter, &APIError{
				StatusCode: status, RetryAfter: retryAfter, Class: ClassRetryable,
				Ambiguous: true, Reason: "answer interrupted", Err: err,
			}
		}
		// A refusal is a refusal even when its body is cut short.
		apiErr = classify(status, "", "", retryAfter)
		apiErr.Err = err
		return status, retryAfter, apiErr
	}
	if fits {
		if err := json.Unmarshal(buf.Bytes(), a); err != nil && !isTypeError(err) {
			*a = answer{}
		}
	}
	return status, retryAfter, nil
}

// readBody reads at most limit bytes of the answer into buf; fits is false
// when the answer is larger.
func readBody(buf *bytes.Buffer, resp *http.Response, limit int64) (fits bool, err error) {
	if resp.ContentLength > limit {
		return false, nil
	}
	if resp.ContentLength > 0 {
		// ReadFrom wants MinRead bytes free before each read, including the
		// last one that only sees EOF; grow once instead of twice.
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1)); err != nil {
		return false, err
	}
	return int64(buf.Len()) <= limit, nil
}

func (c *Client) putBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBuffer {
		c.bufs.Put(buf)
	}
}

// transportError classifies a request that got no answer. Whether the
// request had been written decides whether a resend may duplicate it.
func transportError(err error, wrote bool) *APIError {
	reason := "request not sent"
	if wrote {
		reason = "no answer to the request"
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		reason += ": timeout"
	}
	return &APIError{Class: ClassRetryable, Ambiguous: wrote, Reason: reason, Err: err}
}
