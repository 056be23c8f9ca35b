package sandbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/sandbox"
)

// fast is a config whose webhooks follow one another quickly.
func fast() sandbox.Config {
	return sandbox.Config{WebhookDelay: 2 * time.Millisecond, TemplateApprovalDelay: 50 * time.Millisecond}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  sandbox.Config
		want string
	}{
		{"no app id", sandbox.Config{AppSecret: "s"}, "AppID is required"},
		{"no secret", sandbox.Config{AppID: "a"}, "AppSecret is required"},
		{"negative rate", sandbox.Config{AppID: "a", AppSecret: "s", Rate: -1}, "Rate must be"},
		{"error ratio over 1", sandbox.Config{AppID: "a", AppSecret: "s", ErrorRatio: 1.5}, "ErrorRatio must be between 0 and 1"},
		{"negative latency", sandbox.Config{AppID: "a", AppSecret: "s", Latency: -time.Second}, "Latency must not be negative"},
		{"negative workers", sandbox.Config{AppID: "a", AppSecret: "s", WebhookWorkers: -1}, "WebhookWorkers must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, err := sandbox.New(tt.cfg, zap.NewNop())
			if err == nil {
				srv.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %q, want it to contain %q", err, tt.want)
			}
		})
	}

	srv, err := sandbox.New(sandbox.Config{AppID: "a", AppSecret: "s"}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv.Close()
	srv.Close() // idempotent
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const want = `{"status":"error","message":"Authentication Failed"}`
	endpoints := []struct {
		path string
		body any
	}{
		{"/webhook", map[string]string{"channel": "whatsapp", "destination": business, "webhook": "http://127.0.0.1:1/x"}},
		{"/whatsappmessage", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": text("hi")}},
		{"/getHSM", map[string]string{"channel": "whatsapp", "destination": business, "getHSM": "true"}},
		{"/submit_template", map[string]any{"channel": "whatsapp", "destination": business}},
	}
	credentials := []struct {
		name    string
		prepare func(*http.Request)
	}{
		{"none", nil},
		{"wrong secret", func(r *http.Request) { r.SetBasicAuth(testAppID, "wrong") }},
		{"wrong id", func(r *http.Request) { r.SetBasicAuth("wrong", testAppSecret) }},
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testAppSecret) }},
	}
	for _, ep := range endpoints {
		for _, c := range credentials {
			status, _, body := e.do(t, http.MethodPost, ep.path, ep.body, c.prepare)
			if status != http.StatusUnauthorized || string(body) != want {
				t.Errorf("%s with %s credentials: %d %s, want 401 %s", ep.path, c.name, status, body, want)
			}
		}
	}

	// auth_failure simulates an outage of the credentials.
	e.configure(t, map[string]any{"auth_failure": true})
	for _, ep := range endpoints {
		if status, body := e.call(t, http.MethodPost, ep.path, ep.body); status != http.StatusUnauthorized || string(body) != want {
			t.Errorf("%s during auth_failure: %d %s, want 401", ep.path, status, body)
		}
	}
	e.configure(t, map[string]any{"auth_failure": false})
	e.mustSend(t, "4915112345678", text("hi"))

	st := e.stats(t)
	if st.Rejected != int64(len(credentials))+1 || st.Accepted != 1 || st.Requests != int64(len(credentials))+2 {
		t.Errorf("stats = %+v, want %d rejected, 1 accepted", st, len(credentials)+1)
	}
}

func TestRegisterWebhook(t *testing.T) {
	t.Parallel()
	e := setup(t, fast(), setupOptions{noWebhook: true})
	tests := []struct {
		name string
		body map[string]string
		want string
	}{
		{"no url", map[string]string{"channel": "whatsapp", "destination": business}, "webhook is required"},
		{"ftp url", map[string]string{"channel": "whatsapp", "destination": business, "webhook": "ftp://example.com/x"}, "webhook must be an http or https URL"},
		{"relative url", map[string]string{"channel": "whatsapp", "destination": business, "webhook": "/hooks"}, "webhook must be an http or https URL"},
		{"bad channel", map[string]string{"channel": "sms", "destination": business, "webhook": "http://127.0.0.1/x"}, `channel must be "whatsapp", not "sms"`},
		{"bad destination", map[string]string{"channel": "whatsapp", "destination": "12ab", "webhook": "http://127.0.0.1/x"}, "destination must be a phone number"},
	}
	for _, tt := range tests {
		status, body := e.call(t, http.MethodPost, "/webhook", tt.body)
		a := decode[answer](t, body)
		if status != http.StatusBadRequest || a.Status != "error" || !strings.HasPrefix(a.Message, tt.want) {
			t.Errorf("%s: %d %s, want 400 %q", tt.name, status, body, tt.want)
		}
	}

	// Without a webhook, messages are accepted and their events counted as
	// unrouted.
	e.mustSend(t, "4915112345678", text("hi"))
	if st := e.stats(t); st.WebhooksUnrouted != 4 || st.WebhooksPending != 0 {
		t.Errorf("stats without webhook = %+v, want 4 unrouted", st)
	}

	status, body := e.call(t, http.MethodPost, "/webhook", map[string]any{
		"channel": "whatsapp", "destination": business, "webhook": e.hooks.srv.URL + "/hooks/secret", "webhook_separate": false,
	})
	if a := decode[answer](t, body); status != http.StatusOK || a.Status != "success" {
		t.Fatalf("register: %d %s", status, body)
	}
	id := e.mustSend(t, "4915112345678", text("hi again"))
	e.idle(t)
	if got := summaries(t, e.hooks.about(t, id, "")); len(got) != 4 {
		t.Errorf("events after registering = %v, want 4", got)
	}
}

func TestSendValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	tests := []struct {
		name string
		body any
		want string
	}{
		{"empty body", "", "Request body is required"},
		{"not json", "{", "Request body is not valid JSON"},
		{"no channel", map[string]any{"destination": "4915112345678", "payload": text("hi")}, "channel is required"},
		{"other channel", map[string]any{"channel": "sms", "destination": "4915112345678", "payload": text("hi")}, `channel must be "whatsapp", not "sms"`},
		{"no destination", map[string]any{"channel": "whatsapp", "payload": text("hi")}, "destination is required"},
		{"bad destination", map[string]any{"channel": "whatsapp", "destination": "12-34", "payload": text("hi")}, "destination must be a phone number"},
		{"destination not a string", map[string]any{"channel": "whatsapp", "destination": 4915112345678, "payload": text("hi")}, "destination must be of JSON type string"},
		{"no payload", map[string]any{"channel": "whatsapp", "destination": "4915112345678"}, "payload is required"},
		{"no type", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": map[string]any{"message": "hi"}}, "payload.type is required"},
		{"empty text", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": text("")}, "payload.message is required"},
		{"unknown field", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": map[string]any{"type": "text", "message": "hi", "colour": "red"}}, "payload.colour is not a known field"},
		{"image url scheme", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": map[string]any{"type": "image", "originalUrl": "file:///etc/passwd"}}, "payload.originalUrl must be an http or https URL"},
		{"latitude", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": map[string]any{"type": "location", "latitude": 91, "longitude": 0}}, "payload.latitude must be between -90 and 90"},
		{"unknown template", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": templ("nope", "en")}, "Template not found: nope (en)"},
		{"template params", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": templ("welcome_offer", "en_US", "John")}, "Template params mismatch: welcome_offer (en_US) takes 2 params, got 1"},
		{"template language", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": templ("welcome_offer", "en", "John", "X1")}, "Template not found: welcome_offer (en)"},
	}
	for _, tt := range tests {
		status, body := e.call(t, http.MethodPost, "/whatsappmessage", tt.body)
		a := decode[answer](t, body)
		if status != http.StatusBadRequest || a.Status != "error" || !strings.HasPrefix(a.Message, tt.want) {
			t.Errorf("%s: %d %s, want 400 %q", tt.name, status, body, tt.want)
		}
	}
	big := strings.Repeat("x", 2<<20)
	if status, body := e.call(t, http.MethodPost, "/whatsappmessage", map[string]any{"channel": "whatsapp", "destination": "4915112345678", "payload": text(big)}); status != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d %.100s, want 413", status, body)
	}

	// Payloads of every type that are valid are accepted; media are not fetched.
	valid := []any{
		text("hi"),
		map[string]any{"type": "image", "originalUrl": "https://127.0.0.1:1/a.jpg", "caption": "c"},
		map[string]any{"type": "audio", "url": "https://127.0.0.1:1/a.mp3"},
		map[string]any{"type": "video", "url": "https://127.0.0.1:1/a.mp4"},
		map[string]any{"type": "file", "url": "https://127.0.0.1:1/a.pdf", "filename": "a.pdf"},
		map[string]any{"type": "location", "latitude": 52.5, "longitude": 13.4},
		map[string]any{"type": "contact", "contact": map[string]any{"name": map[string]any{"formattedName": "Jo"}, "phones": []any{map[string]any{"phone": "+4915112345678"}}}},
		map[string]any{"type": "quick_reply", "content": map[string]any{"type": "text", "text": "Pick"}, "options": []any{map[string]any{"type": "text", "title": "Yes"}}},
		map[string]any{"type": "list", "body": "Menu", "msgid": "m1", "globalButtons": []any{map[string]any{"type": "text", "title": "Open"}},
			"items": []any{map[string]any{"title": "S", "options": []any{map[string]any{"type": "text", "title": "Row"}}}}},
		templ("otp_code", "en", "123456"),
	}
	for _, p := range valid {
		e.mustSend(t, "+4915112345678", p)
	}
	st := e.stats(t)
	if st.Rejected != int64(len(tests))+1 || st.Accepted != int64(len(valid)) {
		t.Errorf("stats = %+v, want %d rejected, %d accepted", st, len(tests)+1, len(valid))
	}
}

func TestDeliveredAndRead(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	before := time.Now()
	id := e.mustSend(t, "+4915112345678", text("Hi John"))
	e.idle(t)
	hooks := e.hooks.about(t, id, "")
	if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, hooks)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	enqueued := hooks[0].event(t)
	wamid := decode[struct {
		WhatsAppMessageID string `json:"whatsappMessageId"`
	}](t, enqueued.Payload).WhatsAppMessageID
	if enqueued.ID != id || enqueued.Destination != "4915112345678" || !strings.HasPrefix(wamid, "wamid.") {
		t.Errorf("enqueued = %+v, wamid %q; want id %s and a wamid", enqueued, wamid, id)
	}
	last := int64(0)
	for _, h := range hooks {
		if h.App != "chatq-sandbox" || h.Version != 2 || h.Type != "message-event" || h.Timestamp < before.UnixMilli() || h.Timestamp < last {
			t.Errorf("envelope %s: want app chatq-sandbox, version 2, increasing timestamps", h.raw)
		}
		last = h.Timestamp
	}
	for _, h := range hooks[1:] {
		ev := h.event(t)
		ts := decode[struct{ TS int64 }](t, ev.Payload).TS
		if ev.ID != wamid || ev.GsID != id || ts < before.Unix() {
			t.Errorf("%s event = %s; want id %s, gsId %s and a ts", ev.Type, h.raw, wamid, id)
		}
	}
}

func TestMagicDestinations(t *testing.T) {
	t.Parallel()
	full := []string{"enqueued", "sent", "delivered", "read"}
	tests := []struct {
		name     string
		number   string
		statuses []int    // the answers to successive sends
		events   []string // the webhooks of the accepted message
		message  string   // the first refusal's message
	}{
		{"any other", "4915100009999", []int{200}, full, ""},
		{"0001 undeliverable", "4915100000001", []int{200}, []string{"enqueued", "failed 131026"}, ""},
		{"0002 invalid", "4915100000002", []int{400, 400}, nil, "Invalid Destination"},
		{"0003 server error", "4915100000003", []int{500, 200}, full, "Internal Server Error"},
		{"0004 throttled", "4915100000004", []int{429, 200}, full, "Too Many Requests"},
		{"0005 never read", "4915100000005", []int{200}, []string{"enqueued", "sent", "delivered"}, ""},
		{"0006 opted out", "4915100000006", []int{200}, []string{"failed 1012", "user-event opted-out"}, ""},
		{"0008 window closed", "4915100000008", []int{200}, []string{"enqueued", "failed 131047"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, fast())
			var id string
			for i, want := range tt.statuses {
				status, headers, body := e.do(t, http.MethodPost, "/whatsappmessage", map[string]any{
					"channel": "whatsapp", "destination": tt.number, "payload": text("hello"),
				}, func(r *http.Request) { r.SetBasicAuth(testAppID, testAppSecret) })
				a := decode[answer](t, body)
				if status != want {
					t.Fatalf("attempt %d: %d %s, want %d", i+1, status, body, want)
				}
				if status == http.StatusOK {
					id = a.MessageID
					continue
				}
				if i == 0 && a.Message != tt.message {
					t.Errorf("attempt %d message = %q, want %q", i+1, a.Message, tt.message)
				}
				if status == http.StatusTooManyRequests && headers.Get("Retry-After") != "1" {
					t.Errorf("Retry-After = %q, want 1", headers.Get("Retry-After"))
				}
			}
			e.idle(t)
			got := summaries(t, e.hooks.about(t, id, tt.number))
			if id == "" {
				got = summaries(t, e.hooks.all())
			}
			if diff := cmp.Diff(tt.events, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMagicFailedShape(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	id := e.mustSend(t, "4915100000001", text("hello"))
	e.idle(t)
	hooks := e.hooks.about(t, id, "")
	if len(hooks) != 2 {
		t.Fatalf("events = %v", summaries(t, hooks))
	}
	got := decode[map[string]any](t, []byte(hooks[1].raw))
	delete(got, "timestamp")
	want := map[string]any{
		"app": "chatq-sandbox", "version": 2.0, "type": "message-event",
		"payload": map[string]any{
			"id": id, "gsId": id, "type": "failed", "destination": "4915100000001",
			"payload": map[string]any{"code": 131026.0, "reason": "Message undeliverable"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("failed webhook (-want +got):\n%s", diff)
	}

	e.mustSend(t, "4915100000006", text("hello"))
	e.idle(t)
	users := e.hooks.about(t, "", "4915100000006")
	if len(users) != 1 || users[0].raw == "" {
		t.Fatalf("user events = %v", summaries(t, users))
	}
	if diff := cmp.Diff(map[string]any{"phone": "4915100000006", "type": "opted-out"}, decode[map[string]any](t, users[0].Payload)); diff != "" {
		t.Errorf("user-event payload (-want +got):\n%s", diff)
	}
}

func TestMagicHang(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const number = "4915100000007"
	body, err := json.Marshal(map[string]any{"channel": "whatsapp", "destination": number, "payload": text("hello")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/whatsappmessage", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(testAppID, testAppSecret)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("first attempt answered %d, want it to hang until the client gives up", resp.StatusCode)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first attempt: %v, want a client timeout", err)
	}
	id := e.mustSend(t, number, text("hello"))
	e.idle(t)
	if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	status, out := e.call(t, http.MethodGet, "/sandbox/messages?destination="+number, nil)
	if msgs := decode[[]map[string]any](t, out); status != http.StatusOK || len(msgs) != 1 || msgs[0]["messageId"] != id {
		t.Errorf("messages = %s, want only %s", out, id)
	}
	if st := e.stats(t); st.Hung != 1 || st.Accepted != 1 || st.Requests != 2 {
		t.Errorf("stats = %+v, want 1 hung, 1 accepted", st)
	}
}

func TestCloseReleasesHangingRequest(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	done := make(chan int, 1)
	go func() {
		body := `{"channel":"whatsapp","destination":"4915100000007","payload":{"type":"text","message":"hi"}}`
		req, err := http.NewRequest(http.MethodPost, e.url+"/whatsappmessage", strings.NewReader(body))
		if err != nil {
			done <- 0
			return
		}
		req.SetBasicAuth(testAppID, testAppSecret)
		resp, err := e.client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	poll.Until(t, waitFor, "the request hangs", func() (bool, string) { return e.stats(t).Hung > 0, "" })
	e.srv.Close()
	if status := <-done; status != http.StatusServiceUnavailable {
		t.Errorf("hanging request after Close = %d, want 503", status)
	}
}

func TestWindow(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const number = "4915100000008"
	closed := e.mustSend(t, number, text("free-form"))
	template := e.mustSend(t, number, templ("order_update", "en_US", "1234", "shipped"))

	status, body := e.call(t, http.MethodPost, "/sandbox/inbound", map[string]string{"from": "+" + number, "text": "hello?"})
	if a := decode[answer](t, body); status != http.StatusOK || a.ID == "" {
		t.Fatalf("inbound: %d %s", status, body)
	}
	open := e.mustSend(t, number, text("free-form, window open"))
	e.idle(t)

	full := []string{"enqueued", "sent", "delivered", "read"}
	for _, c := range []struct {
		name, id string
		want     []string
	}{
		{"free-form, window closed", closed, []string{"enqueued", "failed 131047"}},
		{"template, window closed", template, full},
		{"free-form after inbound", open, full},
	} {
		if diff := cmp.Diff(c.want, summaries(t, e.hooks.about(t, c.id, ""))); diff != "" {
			t.Errorf("%s: events (-want +got):\n%s", c.name, diff)
		}
	}
	var inbound []hook
	for _, h := range e.hooks.all() {
		if h.Type == "message" {
			inbound = append(inbound, h)
		}
	}
	if len(inbound) != 1 {
		t.Fatalf("got %d message webhooks, want 1", len(inbound))
	}
	got := decode[map[string]any](t, inbound[0].Payload)
	delete(got, "id")
	want := map[string]any{
		"source": number, "type": "text", "payload": map[string]any{"text": "hello?"},
		"sender": map[string]any{"phone": number, "name": "Sandbox User"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("message webhook (-want +got):\n%s", diff)
	}
}

func TestOptOutAndIn(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const number = "4915112340000"
	for _, path := range []string{"/sandbox/optout", "/sandbox/optin"} {
		if status, body := e.call(t, http.MethodPost, path, map[string]string{"phone": "12"}); status != http.StatusBadRequest {
			t.Errorf("%s with a bad phone: %d %s, want 400", path, status, body)
		}
	}
	if status, body := e.call(t, http.MethodPost, "/sandbox/optout", map[string]string{"phone": number}); status != http.StatusOK {
		t.Fatalf("optout: %d %s", status, body)
	}
	out := e.mustSend(t, number, text("hello"))
	e.idle(t)
	if status, body := e.call(t, http.MethodPost, "/sandbox/optin", map[string]string{"phone": number}); status != http.StatusOK {
		t.Fatalf("optin: %d %s", status, body)
	}
	in := e.mustSend(t, number, text("hello again"))
	e.idle(t)

	if diff := cmp.Diff([]string{"failed 1012"}, summaries(t, e.hooks.about(t, out, ""))); diff != "" {
		t.Errorf("while opted out (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, e.hooks.about(t, in, ""))); diff != "" {
		t.Errorf("after opt-in (-want +got):\n%s", diff)
	}
	want := []string{"user-event opted-out", "user-event opted-out", "user-event opted-in"}
	if diff := cmp.Diff(want, summaries(t, e.hooks.about(t, "", number))); diff != "" {
		t.Errorf("user events (-want +got):\n%s", diff)
	}

	// Opting in overrides the magic opted-out number too.
	e.call(t, http.MethodPost, "/sandbox/optin", map[string]string{"phone": "4915100000006"})
	id := e.mustSend(t, "4915100000006", text("hello"))
	e.idle(t)
	if got := summaries(t, e.hooks.about(t, id, "")); len(got) != 4 {
		t.Errorf("0006 after opt-in: %v, want delivered and read", got)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.Rate = 1
	e := setup(t, cfg)
	e.mustSend(t, "4915112345678", text("one"))
	status, headers, body := e.do(t, http.MethodPost, "/whatsappmessage", map[string]any{
		"channel": "whatsapp", "destination": "4915112345678", "payload": text("two"),
	}, func(r *http.Request) { r.SetBasicAuth(testAppID, testAppSecret) })
	if status != http.StatusTooManyRequests || headers.Get("Retry-After") != "1" || decode[answer](t, body).Message != "Too Many Requests" {
		t.Errorf("over the rate: %d Retry-After %q %s, want 429 with Retry-After 1", status, headers.Get("Retry-After"), body)
	}
	if st := e.stats(t); st.Throttled != 1 || st.Accepted != 1 || st.Rejected != 0 {
		t.Errorf("stats = %+v, want 1 throttled, 1 accepted", st)
	}

	// A slower rate asks for a longer wait; rate 0 lifts the limit.
	e.configure(t, map[string]any{"rate": 0.25})
	e.mustSend(t, "4915112345678", text("three"))
	_, headers, _ = e.do(t, http.MethodPost, "/whatsappmessage", map[string]any{
		"channel": "whatsapp", "destination": "4915112345678", "payload": text("four"),
	}, func(r *http.Request) { r.SetBasicAuth(testAppID, testAppSecret) })
	if got := headers.Get("Retry-After"); got != "4" {
		t.Errorf("Retry-After at 0.25/s = %q, want 4", got)
	}
	e.configure(t, map[string]any{"rate": 0})
	for range 20 {
		e.mustSend(t, "4915112345678", text("unlimited"))
	}
}

func TestErrorRatio(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ErrorRatio = 1
	e := setup(t, cfg)
	for range 5 {
		if status, a := e.send(t, "4915112345678", text("hi")); status != http.StatusInternalServerError || a.Message != "Internal Server Error" {
			t.Fatalf("with error_ratio 1: %d %+v, want 500", status, a)
		}
	}
	e.configure(t, map[string]any{"error_ratio": 0.5})
	errs := 0
	for range 200 {
		if status, _ := e.send(t, "4915112345678", text("hi")); status == http.StatusInternalServerError {
			errs++
		}
	}
	// 200 draws at 0.5: outside 50..150 happens with probability < 1e-12.
	if errs < 50 || errs > 150 {
		t.Errorf("error_ratio 0.5 gave %d errors in 200", errs)
	}
	e.configure(t, map[string]any{"error_ratio": 0})
	e.mustSend(t, "4915112345678", text("hi"))
	if st := e.stats(t); st.ServerErrors != int64(5+errs) || st.Accepted != int64(200-errs+1) {
		t.Errorf("stats = %+v, want %d server errors", st, 5+errs)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	const latency = 150 * time.Millisecond
	e.configure(t, map[string]any{"latency": latency.String()})
	for _, call := range []func(){
		func() { e.mustSend(t, "4915112345678", text("hi")) },
		func() { e.call(t, http.MethodPost, "/getHSM", nil) },
		func() { e.do(t, http.MethodPost, "/whatsappmessage", "{}", nil) }, // even a 401
	} {
		start := time.Now()
		call()
		if took := time.Since(start); took < latency {
			t.Errorf("answer took %s, want at least %s", took, latency)
		}
	}
	// The introspection routes are not slowed down.
	start := time.Now()
	e.stats(t)
	if took := time.Since(start); took >= latency {
		t.Errorf("stats took %s, want no latency", took)
	}
}

func TestDuplicateWebhooks(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.DuplicateRatio = 1
	e := setup(t, cfg)
	id := e.mustSend(t, "4915112345678", text("hi"))
	e.idle(t)
	hooks := e.hooks.about(t, id, "")
	bodies := map[string]int{}
	for _, h := range hooks {
		bodies[h.raw]++
	}
	if len(hooks) != 8 || len(bodies) != 4 {
		t.Fatalf("got %d webhooks with %d distinct bodies (%v), want each of 4 twice", len(hooks), len(bodies), summaries(t, hooks))
	}
	for body, n := range bodies {
		if n != 2 {
			t.Errorf("%s sent %d times, want 2", body, n)
		}
	}
	if st := e.stats(t); st.WebhooksDuplicated != 4 || st.WebhooksSent != 8 {
		t.Errorf("stats = %+v, want 4 duplicated, 8 sent", st)
	}
}

func TestReorderedWebhooks(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ReorderRatio = 1
	e := setup(t, cfg)
	ids := []string{e.mustSend(t, "4915112345678", text("a")), e.mustSend(t, "4915112345679", text("b"))}
	e.idle(t)
	inOrder := []string{"enqueued", "sent", "delivered", "read"}
	for _, id := range ids {
		hooks := e.hooks.about(t, id, "")
		got := summaries(t, hooks)
		if cmp.Equal(inOrder, got) {
			t.Errorf("reorder_ratio 1 left %s in order", id)
		}
		sorted := append([]string(nil), got...)
		order := map[string]int{"enqueued": 0, "sent": 1, "delivered": 2, "read": 3}
		for i := range sorted {
			for j := i + 1; j < len(sorted); j++ {
				if order[sorted[j]] < order[sorted[i]] {
					sorted[i], sorted[j] = sorted[j], sorted[i]
				}
			}
		}
		if diff := cmp.Diff(inOrder, sorted); diff != "" {
			t.Errorf("reordered events are not the same events (-want +got):\n%s", diff)
		}
	}

	// Turned off at run time, order comes back.
	e.configure(t, map[string]any{"reorder_ratio": 0})
	id := e.mustSend(t, "4915112345670", text("c"))
	e.idle(t)
	if diff := cmp.Diff(inOrder, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
		t.Errorf("after reorder_ratio 0 (-want +got):\n%s", diff)
	}
}

func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	t.Run("recovers", func(t *testing.T) {
		t.Parallel()
		e := setup(t, fast(), setupOptions{fail: func(call int) int {
			if call < 2 {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		}})
		id := e.mustSend(t, "4915112345678", text("hi"))
		e.idle(t)
		if diff := cmp.Diff([]string{"enqueued", "sent", "delivered", "read"}, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if st := e.stats(t); st.WebhooksRetried != 2 || st.WebhooksSent != 4 || st.WebhooksFailed != 0 {
			t.Errorf("stats = %+v, want 2 retried, 4 sent", st)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		t.Parallel()
		e := setup(t, fast(), setupOptions{fail: func(int) int { return http.StatusInternalServerError }})
		e.call(t, http.MethodPost, "/sandbox/optout", map[string]string{"phone": "4915112345678"})
		e.idle(t)
		if st := e.stats(t); st.WebhooksRetried != 3 || st.WebhooksFailed != 1 || st.WebhooksSent != 0 {
			t.Errorf("stats = %+v, want 3 retried, 1 failed", st)
		}
	})
}

func TestWebhookBacklog(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.WebhookBacklog = 1
	cfg.WebhookDelay = time.Hour
	e := setup(t, cfg)
	e.mustSend(t, "4915112345678", text("kept"))
	e.mustSend(t, "4915112345678", text("over the backlog"))
	if st := e.stats(t); st.WebhooksPending != 1 || st.WebhooksDropped != 4 || st.Accepted != 2 {
		t.Errorf("stats = %+v, want 1 pending, 4 dropped", st)
	}
}

func TestTemplates(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.TemplateApprovalDelay = 300 * time.Millisecond
	e := setup(t, cfg)
	status, body := e.call(t, http.MethodPost, "/getHSM", map[string]string{"channel": "whatsapp", "destination": business, "getHSM": "true"})
	a := decode[answer](t, body)
	if status != http.StatusOK || a.Status != "success" {
		t.Fatalf("getHSM: %d %s", status, body)
	}
	type seed struct{ Name, Lang, Status, Data string }
	var seeds []seed
	for _, tm := range a.Templates {
		if tm.ID == "" || tm.Category == "" || tm.TemplateType != "TEXT" {
			t.Errorf("template %+v lacks id, category or type", tm)
		}
		seeds = append(seeds, seed{tm.ElementName, tm.LanguageCode, tm.Status, tm.Data})
	}
	wantSeeds := []seed{
		{"welcome_offer", "en_US", "APPROVED", "Welcome {{1}}! Your discount code is {{2}}."},
		{"otp_code", "en", "APPROVED", "Your code is {{1}}."},
		{"order_update", "en_US", "APPROVED", "Your order {{1}} is {{2}}."},
	}
	if diff := cmp.Diff(wantSeeds, seeds); diff != "" {
		t.Errorf("seeded templates (-want +got):\n%s", diff)
	}

	submit := func(name, content string) (int, answer) {
		status, body := e.call(t, http.MethodPost, "/submit_template", map[string]any{
			"channel": "whatsapp", "destination": business,
			"submit_template": map[string]string{
				"elementName": name, "languageCode": "en", "category": "UTILITY", "templateType": "TEXT",
				"content": content, "example": "Your parcel [1] ships [today].",
			},
		})
		return status, decode[answer](t, body)
	}
	if status, a := submit("parcel_notice", "Your parcel {{1}} ships {{2}}."); status != http.StatusOK || a.Template.Status != "PENDING" {
		t.Fatalf("submit: %d %+v, want 200 PENDING", status, a)
	}
	if status, a := submit("bad_words", "Please REJECT {{1}}."); status != http.StatusOK || a.Template.Status != "PENDING" {
		t.Fatalf("submit: %d %+v, want 200 PENDING", status, a)
	}
	if status, a := submit("parcel_notice", "Again {{1}}."); status != http.StatusBadRequest || a.Message != "Template parcel_notice (en) already exists" {
		t.Errorf("duplicate submit: %d %+v", status, a)
	}
	if status, a := e.send(t, "4915112345678", templ("parcel_notice", "en", "A1", "today")); status != http.StatusBadRequest || a.Message != "Template parcel_notice (en) is PENDING, not APPROVED" {
		t.Errorf("send of a pending template: %d %+v", status, a)
	}

	statuses := func() map[string]string {
		_, body := e.call(t, http.MethodPost, "/getHSM", nil)
		out := map[string]string{}
		for _, tm := range decode[answer](t, body).Templates {
			out[tm.ElementName] = tm.Status
		}
		return out
	}
	var got map[string]string
	poll.Until(t, waitFor, "the templates are reviewed", func() (bool, string) {
		got = statuses()
		return got["parcel_notice"] != "PENDING" && got["bad_words"] != "PENDING", fmt.Sprint(got)
	})
	if got["parcel_notice"] != "APPROVED" || got["bad_words"] != "REJECTED" {
		t.Errorf("after review: %v, want parcel_notice APPROVED and bad_words REJECTED", got)
	}
	e.mustSend(t, "4915112345678", templ("parcel_notice", "en", "A1", "today"))
	if status, a := e.send(t, "4915112345678", templ("parcel_notice", "en", "A1")); status != http.StatusBadRequest || a.Message != "Template params mismatch: parcel_notice (en) takes 2 params, got 1" {
		t.Errorf("send with too few params: %d %+v", status, a)
	}
	if status, a := e.send(t, "4915112345678", templ("bad_words", "en", "x")); status != http.StatusBadRequest || a.Message != "Template bad_words (en) is REJECTED, not APPROVED" {
		t.Errorf("send of a rejected template: %d %+v", status, a)
	}
}

func TestSubmitTemplateValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	valid := func() map[string]string {
		return map[string]string{
			"elementName": "promo", "languageCode": "en_US", "category": "MARKETING", "templateType": "TEXT",
			"content": "Hi {{1}}, see {{2}}.", "example": "Hi [Jo], see [this].",
		}
	}
	with := func(key, value string) map[string]string {
		m := valid()
		m[key] = value
		return m
	}
	tests := []struct {
		name     string
		template any
		want     string
	}{
		{"missing", nil, "submit_template is required"},
		{"no name", with("elementName", ""), "submit_template.elementName is required"},
		{"upper-case name", with("elementName", "Promo"), "submit_template.elementName must be lowercase"},
		{"bad language", with("languageCode", "english"), "submit_template.languageCode must be a language code"},
		{"bad category", with("category", "SPAM"), "submit_template.category must be one of MARKETING, UTILITY, AUTHENTICATION"},
		{"bad type", with("templateType", "GIF"), "submit_template.templateType must be one of"},
		{"no content", with("content", ""), "submit_template.content is required"},
		{"no example", with("example", ""), "submit_template.example is required"},
		{"placeholder gap", with("content", "Hi {{1}}, see {{3}}."), "submit_template.content skips placeholder {{2}}"},
		{"placeholder zero", with("content", "Hi {{0}}."), "submit_template.content has placeholder {{0}}"},
	}
	for _, tt := range tests {
		body := map[string]any{"channel": "whatsapp", "destination": business}
		if tt.template != nil {
			body["submit_template"] = tt.template
		}
		status, out := e.call(t, http.MethodPost, "/submit_template", body)
		if a := decode[answer](t, out); status != http.StatusBadRequest || !strings.HasPrefix(a.Message, tt.want) {
			t.Errorf("%s: %d %s, want 400 %q", tt.name, status, out, tt.want)
		}
	}
}

func TestMessagesAndDuplicates(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	before := time.Now().Add(-time.Second)
	first := e.mustSend(t, "+4915112345678", text("same"))
	// The same payload with its keys in another order: not the same bytes.
	status, body := e.call(t, http.MethodPost, "/whatsappmessage", `{"channel":"whatsapp","destination":"4915112345678","payload":{"type":"text","message":"same"}}`)
	second := decode[answer](t, body).MessageID
	if status != http.StatusOK || second == "" {
		t.Fatalf("send: %d %s", status, body)
	}
	other := e.mustSend(t, "4915187654321", text("same"))

	type item struct {
		MessageID   string          `json:"messageId"`
		Destination string          `json:"destination"`
		Payload     json.RawMessage `json:"payload"`
		ReceivedAt  time.Time       `json:"received_at"`
	}
	status, body = e.call(t, http.MethodGet, "/sandbox/messages", nil)
	all := decode[[]item](t, body)
	if status != http.StatusOK || len(all) != 3 {
		t.Fatalf("messages: %d %s", status, body)
	}
	var ids []string
	for _, it := range all {
		ids = append(ids, it.MessageID)
		if it.ReceivedAt.Before(before) || it.ReceivedAt.After(time.Now()) {
			t.Errorf("received_at %s out of range", it.ReceivedAt)
		}
	}
	if diff := cmp.Diff([]string{first, second, other}, ids); diff != "" {
		t.Errorf("message ids (-want +got):\n%s", diff)
	}
	_, body = e.call(t, http.MethodGet, "/sandbox/messages?destination=%2B4915187654321", nil)
	filtered := decode[[]item](t, body)
	if len(filtered) != 1 || filtered[0].MessageID != other || filtered[0].Destination != "4915187654321" {
		t.Fatalf("filtered messages = %s", body)
	}
	if diff := cmp.Diff(map[string]any{"type": "text", "message": "same"}, decode[map[string]any](t, filtered[0].Payload)); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
	_, body = e.call(t, http.MethodGet, "/sandbox/messages?destination=4910000000000", nil)
	if string(body) != "[]" {
		t.Errorf("no match = %s, want []", body)
	}
	// Sending the first again is a duplicate.
	e.mustSend(t, "4915112345678", text("same"))
	if st := e.stats(t); st.Duplicates != 1 || st.Accepted != 4 {
		t.Errorf("stats = %+v, want 1 duplicate of 4", st)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	if status, _ := e.send(t, "4915100000003", text("hi")); status != http.StatusInternalServerError {
		t.Fatalf("first 0003 attempt = %d, want 500", status)
	}
	e.mustSend(t, "4915100000003", text("hi"))
	e.call(t, http.MethodPost, "/sandbox/inbound", map[string]string{"from": "4915100000008", "text": "hi"})
	e.idle(t)
	if st := e.stats(t); st.Accepted != 1 || st.WebhooksSent != 5 {
		t.Fatalf("stats before reset = %+v", st)
	}

	if status, body := e.call(t, http.MethodPost, "/sandbox/reset", nil); status != http.StatusOK {
		t.Fatalf("reset: %d %s", status, body)
	}
	if diff := cmp.Diff(sandbox.Stats{}, e.stats(t)); diff != "" {
		t.Errorf("stats after reset (-want +got):\n%s", diff)
	}
	if _, body := e.call(t, http.MethodGet, "/sandbox/messages", nil); string(body) != "[]" {
		t.Errorf("messages after reset = %s", body)
	}
	// Attempt counters and windows start over.
	if status, _ := e.send(t, "4915100000003", text("hi")); status != http.StatusInternalServerError {
		t.Errorf("first 0003 attempt after reset = %d, want 500", status)
	}
	id := e.mustSend(t, "4915100000008", text("hi"))
	e.idle(t)
	if diff := cmp.Diff([]string{"enqueued", "failed 131047"}, summaries(t, e.hooks.about(t, id, ""))); diff != "" {
		t.Errorf("0008 after reset (-want +got):\n%s", diff)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Config{WebhookDelay: 200 * time.Millisecond, Rate: 40})
	type knobs struct {
		Rate           float64 `json:"rate"`
		ErrorRatio     float64 `json:"error_ratio"`
		Latency        string  `json:"latency"`
		WebhookDelay   string  `json:"webhook_delay"`
		DuplicateRatio float64 `json:"duplicate_ratio"`
		ReorderRatio   float64 `json:"reorder_ratio"`
		AuthFailure    bool    `json:"auth_failure"`
	}
	get := func() knobs {
		status, body := e.call(t, http.MethodGet, "/sandbox/config", nil)
		if status != http.StatusOK {
			t.Fatalf("get config: %d %s", status, body)
		}
		return decode[knobs](t, body)
	}
	if diff := cmp.Diff(knobs{Rate: 40, Latency: "0s", WebhookDelay: "200ms"}, get()); diff != "" {
		t.Errorf("initial knobs (-want +got):\n%s", diff)
	}

	bad := []struct {
		name string
		body string
		want string
	}{
		{"negative rate", `{"rate":-1}`, "rate must be"},
		{"error ratio over 1", `{"error_ratio":1.5}`, "error_ratio must be between 0 and 1, not 1.5"},
		{"negative duplicate ratio", `{"duplicate_ratio":-0.1}`, "duplicate_ratio must be between 0 and 1"},
		{"reorder ratio as string", `{"reorder_ratio":"half"}`, "reorder_ratio must be of JSON type number"},
		{"latency not a duration", `{"latency":"soon"}`, `latency must be a duration such as "200ms" or "1s", not "soon"`},
		{"latency as number", `{"latency":50}`, "latency must be of JSON type string"},
		{"negative webhook delay", `{"webhook_delay":"-1s"}`, "webhook_delay must not be negative"},
		{"unknown knob", `{"speed":2}`, "speed is not a known field"},
		{"not json", `{`, "Request body is not valid JSON"},
		{"empty", ``, "Request body is required"},
	}
	for _, tt := range bad {
		status, body := e.call(t, http.MethodPut, "/sandbox/config", tt.body)
		if a := decode[answer](t, body); status != http.StatusBadRequest || !strings.HasPrefix(a.Message, tt.want) {
			t.Errorf("%s: %d %s, want 400 %q", tt.name, status, body, tt.want)
		}
	}
	// A bad value anywhere changes nothing.
	e.call(t, http.MethodPut, "/sandbox/config", `{"error_ratio":0.5,"latency":"x"}`)
	if got := get().ErrorRatio; got != 0 {
		t.Errorf("error_ratio after a refused change = %g, want 0", got)
	}

	e.configure(t, map[string]any{"rate": 20, "error_ratio": 0.1, "latency": "50ms", "webhook_delay": "0s", "duplicate_ratio": 0.2, "reorder_ratio": 0.3, "auth_failure": true})
	want := knobs{Rate: 20, ErrorRatio: 0.1, Latency: "50ms", WebhookDelay: "0s", DuplicateRatio: 0.2, ReorderRatio: 0.3, AuthFailure: true}
	if diff := cmp.Diff(want, get()); diff != "" {
		t.Errorf("knobs after PUT (-want +got):\n%s", diff)
	}
	e.configure(t, map[string]any{"auth_failure": false})
	want.AuthFailure = false
	if diff := cmp.Diff(want, get()); diff != "" {
		t.Errorf("knobs after a partial PUT (-want +got):\n%s", diff)
	}
}

func TestStatsCountRequests(t *testing.T) {
	t.Parallel()
	e := setup(t, fast())
	e.mustSend(t, "4915112345678", text("a"))
	e.send(t, "4915100000002", text("b"))
	e.send(t, "4915100000004", text("c"))
	e.send(t, "4915100000003", text("d"))
	e.idle(t)
	want := sandbox.Stats{Requests: 4, Accepted: 1, Rejected: 1, Throttled: 1, ServerErrors: 1, WebhooksSent: 4}
	if diff := cmp.Diff(want, e.stats(t)); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, e.srv.Stats()); diff != "" {
		t.Errorf("Stats() (-want +got):\n%s", diff)
	}
}

func TestMessagesWhileSending(t *testing.T) {
	t.Parallel()
	e := setup(t, sandbox.Config{}, setupOptions{noWebhook: true})
	const senders, each = 4, 25
	// The senders report to the test goroutine, which alone may fail the test.
	done := make(chan error, senders)
	for i := range senders {
		go func() {
			for j := range each {
				body := fmt.Sprintf(`{"channel":"whatsapp","destination":"49151%08d","payload":{"type":"text","message":"hi"}}`, i*1000+j+100)
				req, err := http.NewRequest(http.MethodPost, e.url+"/whatsappmessage", strings.NewReader(body))
				if err != nil {
					done <- err
					return
				}
				req.SetBasicAuth(testAppID, testAppSecret)
				resp, err := e.client.Do(req)
				if err != nil {
					done <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					done <- fmt.Errorf("send: status %d", resp.StatusCode)
					return
				}
			}
			done <- nil
		}()
	}
	for finished := 0; finished < senders; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished++
		default:
			if status, body := e.call(t, http.MethodGet, "/sandbox/messages", nil); status != http.StatusOK || !json.Valid(body) {
				t.Fatalf("messages while sending: %d %.200s", status, body)
			}
		}
	}
	_, body := e.call(t, http.MethodGet, "/sandbox/messages", nil)
	if n := len(decode[[]json.RawMessage](t, body)); n != senders*each {
		t.Errorf("got %d messages, want %d", n, senders*each)
	}
}

func TestSeveralAppsAndTheirSources(t *testing.T) {
	e := setup(t, sandbox.Config{Apps: map[string]string{"second-app": "second-secret"}})
	send := func(id, secret, body string) int {
		status, _, out := e.do(t, http.MethodPost, "/whatsappmessage", body, func(r *http.Request) { r.SetBasicAuth(id, secret) })
		if status != http.StatusOK && status != http.StatusUnauthorized {
			t.Fatalf("send as %s: %d %s", id, status, out)
		}
		return status
	}
	msg := `{"type":"text","message":"hi"}`
	if got := send(testAppID, testAppSecret, `{"channel":"whatsapp","destination":"4915100000021","payload":`+msg+`}`); got != http.StatusOK {
		t.Errorf("the first app: %d", got)
	}
	if got := send("second-app", "second-secret", `{"channel":"whatsapp","destination":"4915100000022","source":"+4930000002","payload":`+msg+`}`); got != http.StatusOK {
		t.Errorf("the second app: %d", got)
	}
	if got := send("second-app", testAppSecret, `{"channel":"whatsapp","destination":"4915100000023","payload":`+msg+`}`); got != http.StatusUnauthorized {
		t.Errorf("the second app with the first one's secret: %d, want 401", got)
	}
	type item struct {
		Destination string `json:"destination"`
		AppID       string `json:"app_id"`
		Source      string `json:"source"`
	}
	_, body := e.call(t, http.MethodGet, "/sandbox/messages", nil)
	want := []item{{"4915100000021", testAppID, ""}, {"4915100000022", "second-app", "4930000002"}}
	if diff := cmp.Diff(want, decode[[]item](t, body)); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if _, err := sandbox.New(sandbox.Config{AppID: "a", AppSecret: "b", Apps: map[string]string{"c": ""}}, nil); err == nil || !strings.Contains(err.Error(), `app "c"`) {
		t.Errorf("an app without a secret: %v", err)
	}
}

// An app the sandbox does not know is accepted when Authorize says yes, as
// chatq dev's sandbox accepts the apps of the senders added to it.
func TestAuthorizeAcceptsMoreApps(t *testing.T) {
	e := setup(t, sandbox.Config{Authorize: func(id, secret string) bool { return id == "added-app" && secret == "added-secret" }})
	for _, tt := range []struct {
		id, secret string
		want       int
	}{
		{"added-app", "added-secret", http.StatusOK},
		{"added-app", "wrong", http.StatusUnauthorized},
		{"other-app", "added-secret", http.StatusUnauthorized},
		{testAppID, testAppSecret, http.StatusOK},
	} {
		status, _, body := e.do(t, http.MethodPost, "/whatsappmessage", `{"channel":"whatsapp","destination":"4915100000031","payload":{"type":"text","message":"hi"}}`,
			func(r *http.Request) { r.SetBasicAuth(tt.id, tt.secret) })
		if status != tt.want {
			t.Errorf("%s:%s: %d %s, want %d", tt.id, tt.secret, status, body, tt.want)
		}
	}
}
