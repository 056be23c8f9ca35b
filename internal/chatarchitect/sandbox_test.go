package chatarchitect_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/sandbox"
)

// These tests run the client against the sandbox over real HTTP: what the
// client sends must be what the sandbox accepts, and every answer the
// sandbox can give must come out of the client with the right class.

const (
	testAppID     = "chatq-test"
	testAppSecret = "chatq-test-secret"
	// business is the business's own number: the Source of the client.
	business = "4930901820"
	// waitFor bounds every poll for something the sandbox does in the
	// background (webhooks, template review).
	waitFor = 5 * time.Second
)

// sandboxEnv is a sandbox served on a real port.
type sandboxEnv struct {
	sb  *sandbox.Server
	url string
}

// newSandbox starts a sandbox with cfg, its credentials filled in.
func newSandbox(tb testing.TB, cfg sandbox.Config) *sandboxEnv {
	tb.Helper()
	cfg.AppID = testAppID
	cfg.AppSecret = testAppSecret
	sb, err := sandbox.New(cfg, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("sandbox.New: %v", err)
	}
	srv := httptest.NewServer(sb)
	// Cleanups run last first: the sandbox releases its hanging requests
	// (destination 0007) before the server waits for them.
	tb.Cleanup(srv.Close)
	tb.Cleanup(sb.Close)
	return &sandboxEnv{sb: sb, url: srv.URL}
}

// client returns a client of the sandbox with the right credentials.
func (e *sandboxEnv) client(tb testing.TB, timeout time.Duration) *chatarchitect.Client {
	tb.Helper()
	return e.clientWith(tb, testAppSecret, timeout)
}

// clientWith returns a client of the sandbox that authenticates with secret.
func (e *sandboxEnv) clientWith(tb testing.TB, secret string, timeout time.Duration) *chatarchitect.Client {
	tb.Helper()
	return chatarchitect.New(chatarchitect.Config{
		BaseURL:   e.url,
		AppID:     testAppID,
		AppSecret: secret,
		Source:    business,
		Timeout:   timeout,
	}, nil)
}

// control calls one of the sandbox's /sandbox/ routes (no auth) and fails
// the test unless it answers 200; it returns the answer's body.
func (e *sandboxEnv) control(tb testing.TB, method, path, body string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: waitFor}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

// configure changes the sandbox's knobs with PUT /sandbox/config.
func (e *sandboxEnv) configure(tb testing.TB, knobs string) {
	tb.Helper()
	e.control(tb, http.MethodPut, "/sandbox/config", knobs)
}

// received is one entry of GET /sandbox/messages.
type received struct {
	MessageID   string          `json:"messageId"`
	Destination string          `json:"destination"`
	Payload     json.RawMessage `json:"payload"`
	ReceivedAt  time.Time       `json:"received_at"`
}

// messages lists what the sandbox accepted for destination.
func (e *sandboxEnv) messages(tb testing.TB, destination string) []received {
	tb.Helper()
	body := e.control(tb, http.MethodGet, "/sandbox/messages?destination="+destination, "")
	var got []received
	if err := json.Unmarshal(body, &got); err != nil {
		tb.Fatalf("GET /sandbox/messages: %v in %s", err, body)
	}
	return got
}

// marshal returns the wire form of a payload after checking that it is
// valid, so that a failure below is the client's or the sandbox's, not the
// test's.
func marshal(tb testing.TB, p enqueue.Payload) json.RawMessage {
	tb.Helper()
	if err := enqueue.ValidatePayload(p); err != nil {
		tb.Fatalf("test payload %s is invalid: %v", p.Type(), err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		tb.Fatalf("marshal %s: %v", p.Type(), err)
	}
	return b
}

// asAPIError returns err as an *APIError, failing the test if it is not one.
func asAPIError(tb testing.TB, err error) *chatarchitect.APIError {
	tb.Helper()
	var apiErr *chatarchitect.APIError
	if !errors.As(err, &apiErr) {
		tb.Fatalf("error = %v (%T), want an *chatarchitect.APIError", err, err)
	}
	return apiErr
}

// ignoreCause leaves the transport cause out of APIError comparisons: it is
// the net/http error of the moment, not part of the classification.
var ignoreCause = cmpopts.IgnoreFields(chatarchitect.APIError{}, "Err")

// decode turns a JSON document into generic values, so that two encodings
// of the same payload compare equal field by field.
func decode(tb testing.TB, b []byte) any {
	tb.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func float(f float64) *float64 { return &f }

func TestSandboxSendEveryType(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	client := env.client(t, waitFor)

	tests := []struct {
		name    string
		payload enqueue.Payload
	}{
		{"text", &enqueue.Text{Message: "Hi John, how are you? <3 & more"}},
		{"image", &enqueue.Image{OriginalURL: "https://example.com/cat.jpg", PreviewURL: "https://example.com/cat-small.jpg", Caption: "A cat"}},
		{"audio", &enqueue.Audio{URL: "https://example.com/hello.mp3"}},
		{"video", &enqueue.Video{URL: "https://example.com/clip.mp4", Caption: "A clip"}},
		{"file", &enqueue.File{URL: "https://example.com/invoice.pdf", Filename: "invoice.pdf", Caption: "Your invoice"}},
		{"location", &enqueue.Location{Latitude: float(52.520008), Longitude: float(13.404954), Name: "Berlin", Address: "Alexanderplatz"}},
		{"contact", &enqueue.Contact{Contact: enqueue.ContactCard{
			Name:   enqueue.ContactName{FormattedName: "John Doe", FirstName: "John", LastName: "Doe"},
			Phones: []enqueue.ContactPhone{{Phone: "+4915112345678", Type: "CELL", WaID: "4915112345678"}},
			Emails: []enqueue.ContactEmail{{Email: "john@example.com", Type: "WORK"}},
			Org:    &enqueue.ContactOrg{Company: "Example GmbH"},
		}}},
		{"list", &enqueue.List{
			Title: "Our menu", Body: "Pick a dish", MsgID: "menu-1",
			GlobalButtons: []enqueue.ListButton{{Type: "text", Title: "Menu"}},
			Items: []enqueue.ListItem{{Title: "Mains", Options: []enqueue.ListOption{
				{Type: "text", Title: "Pasta", Description: "With tomatoes", PostbackText: "pasta"},
				{Type: "text", Title: "Pizza", PostbackText: "pizza"},
			}}},
		}},
		{"quick_reply", &enqueue.QuickReply{
			MsgID:   "qr-1",
			Content: enqueue.ReplyContent{Type: "text", Header: "Delivery", Text: "Is now a good time?"},
			Options: []enqueue.ReplyOption{{Type: "text", Title: "Yes", PostbackText: "yes"}, {Type: "text", Title: "Later"}},
		}},
		// welcome_offer is one of the sandbox's approved templates, with
		// two placeholders.
		{"template", &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "welcome_offer", LanguageCode: "en_US", Params: []string{"John", "12345"}}}},
	}
	if len(tests) != len(enqueue.PayloadTypes) {
		t.Fatalf("the test covers %d payload types, enqueue has %d", len(tests), len(enqueue.PayloadTypes))
	}
	ctx := context.Background()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.payload.Type() != tt.name {
				t.Fatalf("payload type = %q, want %q", tt.payload.Type(), tt.name)
			}
			// One destination per type, so that the sandbox's log of it
			// holds this send alone.
			destination := fmt.Sprintf("49155512%04d", 100+i)
			sent := marshal(t, tt.payload)
			id, err := client.Send(ctx, destination, sent)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if id == "" {
				t.Fatal("Send returned an empty messageId")
			}
			got := env.messages(t, destination)
			if len(got) != 1 {
				t.Fatalf("sandbox accepted %d messages for %s, want 1: %+v", len(got), destination, got)
			}
			if got[0].MessageID != id {
				t.Errorf("sandbox messageId = %q, Send returned %q", got[0].MessageID, id)
			}
			if diff := cmp.Diff(decode(t, sent), decode(t, got[0].Payload)); diff != "" {
				t.Errorf("payload the sandbox received (-sent +received):\n%s", diff)
			}
		})
	}
}

func TestSandboxMagicDestinations(t *testing.T) {
	t.Parallel()
	const shortTimeout = 300 * time.Millisecond
	tests := []struct {
		suffix string
		// timeout is the client's; zero means waitFor.
		timeout time.Duration
		// first is the outcome of the first attempt; nil means accepted.
		first *chatarchitect.APIError
		// retried: a second attempt is made and must be accepted.
		retried bool
	}{
		{suffix: "0001"},
		{suffix: "0002", first: &chatarchitect.APIError{StatusCode: 400, Reason: "Invalid Destination", Class: chatarchitect.ClassPermanent}},
		{suffix: "0003", retried: true, first: &chatarchitect.APIError{StatusCode: 500, Reason: "Internal Server Error", Class: chatarchitect.ClassRetryable}},
		{suffix: "0004", retried: true, first: &chatarchitect.APIError{StatusCode: 429, Reason: "Too Many Requests", RetryAfter: time.Second, Class: chatarchitect.ClassRateLimited}},
		{suffix: "0005"},
		{suffix: "0006"},
		{suffix: "0007", timeout: shortTimeout, retried: true, first: &chatarchitect.APIError{Reason: "no answer to the request: timeout", Class: chatarchitect.ClassRetryable, Ambiguous: true}},
		{suffix: "0008"},
		{suffix: "0009"},
		{suffix: "0010"},
		{suffix: "0011", retried: true, first: &chatarchitect.APIError{StatusCode: 429, Code: "131048",
			Reason: "Spam rate limit hit: message failed to send because there are restrictions on how many messages can be sent from this phone number",
			Class:  chatarchitect.ClassRateLimited, Marker: chatarchitect.MarkerSenderSpam}},
		{suffix: "0012"},
		{suffix: "0015", retried: true, first: &chatarchitect.APIError{StatusCode: 503, Code: "131057", Reason: "Business Account is in maintenance mode",
			Class: chatarchitect.ClassRetryable, Marker: chatarchitect.MarkerNotAFailure}},
		{suffix: "0016", retried: true, first: &chatarchitect.APIError{StatusCode: 429, Code: "80007",
			Reason: "Rate limit issues: the WhatsApp Business Account has reached its rate limit",
			Class:  chatarchitect.ClassRateLimited, Marker: chatarchitect.MarkerAccountWide}},
	}
	env := newSandbox(t, sandbox.Config{})
	for _, tt := range tests {
		t.Run(tt.suffix, func(t *testing.T) {
			t.Parallel()
			client := env.client(t, cmpOr(tt.timeout, waitFor))
			destination := "491555000" + tt.suffix
			payload := marshal(t, &enqueue.Text{Message: "Hello " + tt.suffix})
			ctx := context.Background()

			id, err := client.Send(ctx, destination, payload)
			if tt.first == nil {
				if err != nil {
					t.Fatalf("Send: %v, want it accepted", err)
				}
			} else {
				if err == nil {
					t.Fatalf("Send accepted the first attempt (messageId %s), want %v", id, tt.first)
				}
				if diff := cmp.Diff(tt.first, asAPIError(t, err), ignoreCause); diff != "" {
					t.Errorf("first attempt's error (-want +got):\n%s", diff)
				}
				if !tt.retried {
					// A refused destination stays refused.
					_, err := client.Send(ctx, destination, payload)
					if diff := cmp.Diff(tt.first, asAPIError(t, err), ignoreCause); diff != "" {
						t.Errorf("second attempt's error (-want +got):\n%s", diff)
					}
					if got := env.messages(t, destination); len(got) != 0 {
						t.Errorf("sandbox accepted %d messages for %s, want none", len(got), destination)
					}
					return
				}
				id, err = client.Send(ctx, destination, payload)
				if err != nil {
					t.Fatalf("second attempt: %v, want it accepted", err)
				}
			}
			if id == "" {
				t.Fatal("Send returned an empty messageId")
			}
			// The failed first attempt left nothing behind: not even the
			// hanging one of 0007 counts as accepted.
			got := env.messages(t, destination)
			if len(got) != 1 || got[0].MessageID != id {
				t.Errorf("sandbox accepted %+v for %s, want only %s", got, destination, id)
			}
		})
	}
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

func TestSandboxAuthFailures(t *testing.T) {
	t.Parallel()
	authFailed := &chatarchitect.APIError{StatusCode: 401, Reason: "Authentication Failed", Class: chatarchitect.ClassAccount}
	ctx := context.Background()
	payload := marshal(t, &enqueue.Text{Message: "Hi"})

	t.Run("wrong secret", func(t *testing.T) {
		t.Parallel()
		env := newSandbox(t, sandbox.Config{})
		client := env.clientWith(t, "not-the-secret", waitFor)
		_, err := client.Send(ctx, "4915551110000", payload)
		if diff := cmp.Diff(authFailed, asAPIError(t, err), ignoreCause); diff != "" {
			t.Errorf("Send error (-want +got):\n%s", diff)
		}
		if got := env.sb.Stats().Rejected; got != 1 {
			t.Errorf("sandbox counted %d rejected sends, want 1", got)
		}
	})

	t.Run("auth_failure knob", func(t *testing.T) {
		t.Parallel()
		env := newSandbox(t, sandbox.Config{})
		client := env.client(t, waitFor)
		env.configure(t, `{"auth_failure":true}`)
		calls := []struct {
			name string
			call func() error
		}{
			{"Send", func() error { _, err := client.Send(ctx, "4915551110010", payload); return err }},
			{"RegisterWebhook", func() error { return client.RegisterWebhook(ctx, "http://127.0.0.1:1/hooks") }},
			{"Templates", func() error { _, err := client.Templates(ctx); return err }},
			{"SubmitTemplate", func() error {
				_, err := client.SubmitTemplate(ctx, chatarchitect.TemplateSubmission{
					ElementName: "outage", LanguageCode: "en", Category: "UTILITY", Content: "Down", Example: "Down",
				})
				return err
			}},
		}
		for _, c := range calls {
			if diff := cmp.Diff(authFailed, asAPIError(t, c.call()), ignoreCause); diff != "" {
				t.Errorf("%s error during the outage (-want +got):\n%s", c.name, diff)
			}
		}
		// The outage ends: the same client works again.
		env.configure(t, `{"auth_failure":false}`)
		if _, err := client.Send(ctx, "4915551110020", payload); err != nil {
			t.Errorf("Send after the outage: %v", err)
		}
	})
}

func TestSandboxRateLimit(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	client := env.client(t, waitFor)
	// One message per second, and a bucket of one: the first send takes
	// the token, and the sends right after it find the bucket empty.
	env.configure(t, `{"rate":1}`)
	ctx := context.Background()
	payload := marshal(t, &enqueue.Text{Message: "Hi"})
	const sends = 5
	var accepted, limited int
	for i := range sends {
		_, err := client.Send(ctx, fmt.Sprintf("49155522%04d", 100+i), payload)
		if err == nil {
			accepted++
			continue
		}
		want := &chatarchitect.APIError{StatusCode: 429, Reason: "Too Many Requests", RetryAfter: time.Second, Class: chatarchitect.ClassRateLimited}
		if diff := cmp.Diff(want, asAPIError(t, err), ignoreCause); diff != "" {
			t.Errorf("send %d error (-want +got):\n%s", i, diff)
		}
		limited++
	}
	if accepted == 0 || limited == 0 {
		t.Errorf("%d sends accepted and %d rate limited, want some of each", accepted, limited)
	}
	if got := env.sb.Stats().Throttled; got != int64(limited) {
		t.Errorf("sandbox counted %d throttled sends, the client saw %d", got, limited)
	}
}

func TestSandboxErrorRatio(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	client := env.client(t, waitFor)
	env.configure(t, `{"error_ratio":1}`)
	ctx := context.Background()
	payload := marshal(t, &enqueue.Text{Message: "Hi"})
	want := &chatarchitect.APIError{StatusCode: 500, Reason: "Internal Server Error", Class: chatarchitect.ClassRetryable}
	for i := range 3 {
		_, err := client.Send(ctx, "4915553330000", payload)
		if diff := cmp.Diff(want, asAPIError(t, err), ignoreCause); diff != "" {
			t.Errorf("send %d error (-want +got):\n%s", i, diff)
		}
	}
	env.configure(t, `{"error_ratio":0}`)
	if _, err := client.Send(ctx, "4915553330000", payload); err != nil {
		t.Errorf("Send with error_ratio 0: %v", err)
	}
}

func TestSandboxInvalidPayloads(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	client := env.client(t, waitFor)
	// Raw JSON, as a client that skips enqueue's validation would send it.
	tests := []struct {
		name        string
		destination string
		payload     string
		// wantReason is the start of the sandbox's reason: the field at
		// fault, or the provider's own words.
		wantReason string
	}{
		{"text without message", "4915554440000", `{"type":"text"}`, "payload.message is required"},
		{"no type", "4915554440000", `{"message":"hi"}`, "payload.type "},
		{"unknown type", "4915554440000", `{"type":"sticker","url":"https://example.com/s.webp"}`, "payload.type "},
		{"unknown field", "4915554440000", `{"type":"text","message":"hi","colour":"red"}`, "payload.colour "},
		{"media URL not http", "4915554440000", `{"type":"image","originalUrl":"ftp://example.com/cat.jpg"}`, "payload.originalUrl "},
		{"latitude out of range", "4915554440000", `{"type":"location","latitude":91,"longitude":0}`, "payload.latitude "},
		{"four quick-reply options", "4915554440000", `{"type":"quick_reply","content":{"type":"text","text":"?"},"options":[{"type":"text","title":"a"},{"type":"text","title":"b"},{"type":"text","title":"c"},{"type":"text","title":"d"}]}`, "payload.options "},
		{"unknown template", "4915554440000", `{"type":"template","template":{"elementName":"no_such_template","languageCode":"en","params":[]}}`, "Template not found"},
		{"template params mismatch", "4915554440000", `{"type":"template","template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John"]}}`, "Template params mismatch"},
		{"destination too short", "1234", `{"type":"text","message":"hi"}`, "destination "},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.Send(ctx, tt.destination, json.RawMessage(tt.payload))
			apiErr := asAPIError(t, err)
			if apiErr.StatusCode != http.StatusBadRequest || apiErr.Class != chatarchitect.ClassPermanent {
				t.Errorf("error = %v, want a permanent 400", apiErr)
			}
			if !strings.HasPrefix(apiErr.Reason, tt.wantReason) {
				t.Errorf("reason = %q, want it to start with %q", apiErr.Reason, tt.wantReason)
			}
		})
	}
	// After the parallel subtests: none of them got through.
	t.Cleanup(func() {
		if got := env.messages(t, "4915554440000"); len(got) != 0 {
			t.Errorf("sandbox accepted %d invalid messages", len(got))
		}
	})
}

func TestSandboxRegisterWebhook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The receiver is started first so that it outlives the sandbox's
	// webhook senders.
	hooks := make(chan []byte, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		select {
		case hooks <- body:
		default: // the test has seen enough
		}
	}))
	t.Cleanup(recv.Close)
	env := newSandbox(t, sandbox.Config{})
	client := env.client(t, waitFor)

	if err := client.RegisterWebhook(ctx, recv.URL+"/webhooks/chatarchitect/s3cret"); err != nil {
		t.Fatalf("RegisterWebhook: %v", err)
	}
	id, err := client.Send(ctx, "4915555550000", marshal(t, &enqueue.Text{Message: "Hi"}))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	// The registered URL gets the message's first event.
	select {
	case body := <-hooks:
		hook, err := chatarchitect.ParseWebhook(body)
		if err != nil {
			t.Fatalf("ParseWebhook(%s): %v", body, err)
		}
		if hook.Event == nil || hook.Event.ID != id || hook.Event.Type != chatarchitect.EventEnqueued {
			t.Errorf("first webhook = %s, want enqueued for %s", body, id)
		}
	case <-time.After(waitFor):
		t.Fatalf("no webhook within %s", waitFor)
	}

	apiErr := asAPIError(t, client.RegisterWebhook(ctx, "ftp://example.com/hooks"))
	if apiErr.StatusCode != http.StatusBadRequest || apiErr.Class != chatarchitect.ClassPermanent || !strings.HasPrefix(apiErr.Reason, "webhook ") {
		t.Errorf("RegisterWebhook(ftp URL) error = %v, want a permanent 400 naming the webhook", apiErr)
	}
}

// ignoreTemplateID leaves the random template id out of comparisons.
var ignoreTemplateID = cmpopts.IgnoreFields(chatarchitect.Template{}, "ID")

func TestSandboxTemplates(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	got, err := env.client(t, waitFor).Templates(context.Background())
	if err != nil {
		t.Fatalf("Templates: %v", err)
	}
	want := []chatarchitect.Template{
		{ElementName: "welcome_offer", LanguageCode: "en_US", Category: "MARKETING", TemplateType: "TEXT", Status: chatarchitect.TemplateApproved, Data: "Welcome {{1}}! Your discount code is {{2}}."},
		{ElementName: "otp_code", LanguageCode: "en", Category: "AUTHENTICATION", TemplateType: "TEXT", Status: chatarchitect.TemplateApproved, Data: "Your code is {{1}}."},
		{ElementName: "order_update", LanguageCode: "en_US", Category: "UTILITY", TemplateType: "TEXT", Status: chatarchitect.TemplateApproved, Data: "Your order {{1}} is {{2}}."},
	}
	byName := cmpopts.SortSlices(func(a, b chatarchitect.Template) bool { return a.ElementName < b.ElementName })
	if diff := cmp.Diff(want, got, ignoreTemplateID, byName); diff != "" {
		t.Errorf("Templates (-want +got):\n%s", diff)
	}
	for _, tmpl := range got {
		if tmpl.ID == "" {
			t.Errorf("template %s has no id", tmpl.ElementName)
		}
	}
}

func TestSandboxSubmitTemplate(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{TemplateApprovalDelay: 100 * time.Millisecond})
	client := env.client(t, waitFor)
	ctx := context.Background()

	tests := []struct {
		name       string
		submission chatarchitect.TemplateSubmission
		params     []string
		verdict    string
	}{
		{"approved", chatarchitect.TemplateSubmission{
			ElementName: "shipping_notice", LanguageCode: "en_US", Category: "UTILITY", TemplateType: "TEXT",
			Content: "Hi {{1}}, your parcel {{2}} is on its way.", Example: "Hi [John], your parcel [AB123] is on its way.",
		}, []string{"John", "AB123"}, chatarchitect.TemplateApproved},
		// The sandbox rejects a template whose content says REJECT.
		{"rejected", chatarchitect.TemplateSubmission{
			ElementName: "bad_offer", LanguageCode: "en", Category: "MARKETING",
			Content: "REJECT me {{1}}", Example: "REJECT me [John]",
		}, []string{"John"}, chatarchitect.TemplateRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub := tt.submission
			got, err := client.SubmitTemplate(ctx, sub)
			if err != nil {
				t.Fatalf("SubmitTemplate: %v", err)
			}
			want := chatarchitect.Template{
				ElementName: sub.ElementName, LanguageCode: sub.LanguageCode, Category: sub.Category,
				TemplateType: "TEXT", Status: chatarchitect.TemplatePending, Data: sub.Content,
			}
			if diff := cmp.Diff(want, got, ignoreTemplateID); diff != "" {
				t.Errorf("SubmitTemplate (-want +got):\n%s", diff)
			}
			if got.ID == "" {
				t.Error("submitted template has no id")
			}

			// Under review, it cannot be sent.
			send := marshal(t, &enqueue.Template{Template: enqueue.TemplateSpec{
				ElementName: sub.ElementName, LanguageCode: sub.LanguageCode, Params: tt.params,
			}})
			_, err = client.Send(ctx, "4915556660000", send)
			if apiErr := asAPIError(t, err); apiErr.Class != chatarchitect.ClassPermanent || !strings.Contains(apiErr.Reason, "PENDING") {
				t.Errorf("Send of a pending template: %v, want a permanent error saying PENDING", apiErr)
			}

			// A second submission of the same name and language is refused.
			_, err = client.SubmitTemplate(ctx, sub)
			if apiErr := asAPIError(t, err); apiErr.StatusCode != http.StatusBadRequest || apiErr.Class != chatarchitect.ClassPermanent {
				t.Errorf("second SubmitTemplate: %v, want a permanent 400", apiErr)
			}

			reviewed := waitForTemplate(t, client, sub.ElementName, sub.LanguageCode, tt.verdict)
			if reviewed.ID != got.ID {
				t.Errorf("reviewed template id = %q, submitted %q", reviewed.ID, got.ID)
			}
			_, err = client.Send(ctx, "4915556660000", send)
			switch tt.verdict {
			case chatarchitect.TemplateApproved:
				if err != nil {
					t.Errorf("Send of the approved template: %v", err)
				}
			default:
				if reviewed.Reason == "" {
					t.Error("rejected template carries no reason")
				}
				if apiErr := asAPIError(t, err); apiErr.Class != chatarchitect.ClassPermanent {
					t.Errorf("Send of a rejected template: %v, want a permanent error", apiErr)
				}
			}
		})
	}
}

// waitForTemplate polls Templates until the template has status.
func waitForTemplate(tb testing.TB, client *chatarchitect.Client, name, language, status string) chatarchitect.Template {
	tb.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last chatarchitect.Template
	for {
		list, err := client.Templates(ctx)
		if err != nil {
			tb.Fatalf("Templates: %v", err)
		}
		i := slices.IndexFunc(list, func(t chatarchitect.Template) bool {
			return t.ElementName == name && t.LanguageCode == language
		})
		if i < 0 {
			tb.Fatalf("template %s (%s) is not listed", name, language)
		}
		last = list[i]
		if last.Status == status {
			return last
		}
		if time.Now().After(deadline) {
			tb.Fatalf("template %s (%s) is still %s after %s, want %s", name, language, last.Status, waitFor, status)
		}
		<-tick.C
	}
}

// TestSandboxSendIsByteForByte checks that the client forwards the payload
// untouched: the sandbox stores what it received (compacted).
func TestSandboxSendIsByteForByte(t *testing.T) {
	t.Parallel()
	env := newSandbox(t, sandbox.Config{})
	payload := marshal(t, &enqueue.Text{Message: `Quotes " and <tags> & ünïcode`})
	if _, err := env.client(t, waitFor).Send(context.Background(), "4915557770000", payload); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := env.messages(t, "4915557770000")
	if len(got) != 1 {
		t.Fatalf("sandbox accepted %d messages, want 1", len(got))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, payload); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(compact.Bytes(), got[0].Payload) {
		t.Errorf("sandbox received %s, sent %s", got[0].Payload, payload)
	}
}

func TestSendFromNamesTheSourceOfAnAppOfSeveralNumbers(t *testing.T) {
	e := newSandbox(t, sandbox.Config{})
	c := e.client(t, time.Second)
	ctx := context.Background()
	payload := json.RawMessage(`{"type":"text","message":"hi"}`)
	if _, err := c.SendFrom(ctx, "+4930000002", "4915100000021", payload); err != nil {
		t.Fatalf("SendFrom: %v", err)
	}
	if _, err := c.Send(ctx, "4915100000022", payload); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var got []struct {
		Destination string `json:"destination"`
		AppID       string `json:"app_id"`
		Source      string `json:"source"`
	}
	if err := json.Unmarshal(e.control(t, http.MethodGet, "/sandbox/messages", ""), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Source != "4930000002" || got[1].Source != "" || got[0].AppID != testAppID {
		t.Errorf("the sandbox logged %+v; want the source on the first message alone", got)
	}
}
