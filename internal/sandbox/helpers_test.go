package sandbox_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/sandbox"
)

const (
	testAppID     = "sandbox-app"
	testAppSecret = "sandbox-secret"
	// business is the business's own number, the destination of /webhook.
	business = "4930901820"
	// waitFor bounds every poll.
	waitFor = 5 * time.Second
)

// env is a sandbox on a real port, with a webhook receiver registered.
type env struct {
	srv    *sandbox.Server
	url    string
	client *http.Client
	hooks  *receiver
}

// setupOptions tweak setup.
type setupOptions struct {
	noWebhook bool                        // register no webhook URL
	fail      func(call int) (status int) // the receiver's answer to its call-th POST (from 0)
}

// setup starts a sandbox with cfg (credentials filled in) and a receiver.
func setup(tb testing.TB, cfg sandbox.Config, opts ...setupOptions) *env {
	tb.Helper()
	var o setupOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	hooks := newReceiver(tb, o.fail)
	if cfg.AppID == "" {
		cfg.AppID = testAppID
	}
	if cfg.AppSecret == "" {
		cfg.AppSecret = testAppSecret
	}
	srv, err := sandbox.New(cfg, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatalf("sandbox.New: %v", err)
	}
	api := httptest.NewServer(srv)
	// Cleanups run last first: the sandbox stops (releasing hanging
	// requests and its senders) before the servers close.
	tb.Cleanup(api.Close)
	tb.Cleanup(srv.Close)
	e := &env{srv: srv, url: api.URL, client: &http.Client{Timeout: 10 * time.Second}, hooks: hooks}
	if !o.noWebhook {
		status, body := e.call(tb, http.MethodPost, "/webhook", map[string]string{
			"channel": "whatsapp", "destination": business, "webhook": hooks.srv.URL + "/hooks/secret", "webhook_separate": "false",
		})
		if status != http.StatusOK {
			tb.Fatalf("register webhook: %d %s", status, body)
		}
	}
	return e
}

// call sends a request with the sandbox's credentials; body is marshalled
// unless it is a string or []byte.
func (e *env) call(tb testing.TB, method, path string, body any) (int, []byte) {
	tb.Helper()
	status, _, out := e.do(tb, method, path, body, func(r *http.Request) { r.SetBasicAuth(testAppID, testAppSecret) })
	return status, out
}

func (e *env) do(tb testing.TB, method, path string, body any, prepare func(*http.Request)) (int, http.Header, []byte) {
	tb.Helper()
	var data []byte
	switch b := body.(type) {
	case nil:
	case string:
		data = []byte(b)
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			tb.Fatalf("marshal: %v", err)
		}
	}
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(data))
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if prepare != nil {
		prepare(req)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read answer: %v", err)
	}
	return resp.StatusCode, resp.Header, out
}

// answer is the provider's answer body.
type answer struct {
	Status    string `json:"status"`
	Message   string `json:"message"`
	MessageID string `json:"messageId"`
	ID        string `json:"id"`
	Templates []struct {
		ID           string `json:"id"`
		ElementName  string `json:"elementName"`
		LanguageCode string `json:"languageCode"`
		Category     string `json:"category"`
		TemplateType string `json:"templateType"`
		Status       string `json:"status"`
		Data         string `json:"data"`
	} `json:"templates"`
	Template struct {
		ElementName string `json:"elementName"`
		Status      string `json:"status"`
	} `json:"template"`
}

func decode[T any](tb testing.TB, data []byte) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		tb.Fatalf("decode %s: %v", data, err)
	}
	return v
}

func text(message string) map[string]any {
	return map[string]any{"type": "text", "message": message}
}

func templ(name, lang string, params ...string) map[string]any {
	if params == nil {
		params = []string{}
	}
	return map[string]any{"type": "template", "template": map[string]any{"elementName": name, "languageCode": lang, "params": params}}
}

// send posts a message and returns the status and answer.
func (e *env) send(tb testing.TB, destination string, payload any) (int, answer) {
	tb.Helper()
	status, body := e.call(tb, http.MethodPost, "/whatsappmessage", map[string]any{
		"channel": "whatsapp", "destination": destination, "payload": payload,
	})
	return status, decode[answer](tb, body)
}

// mustSend sends a message that must be accepted and returns its id.
func (e *env) mustSend(tb testing.TB, destination string, payload any) string {
	tb.Helper()
	status, a := e.send(tb, destination, payload)
	if status != http.StatusOK || a.Status != "submitted" || a.MessageID == "" {
		tb.Fatalf("send to %s: %d %+v", destination, status, a)
	}
	return a.MessageID
}

func (e *env) stats(tb testing.TB) sandbox.Stats {
	tb.Helper()
	status, body := e.call(tb, http.MethodGet, "/sandbox/stats", nil)
	if status != http.StatusOK {
		tb.Fatalf("stats: %d %s", status, body)
	}
	return decode[sandbox.Stats](tb, body)
}

// configure changes knobs through PUT /sandbox/config.
func (e *env) configure(tb testing.TB, change map[string]any) {
	tb.Helper()
	if status, body := e.call(tb, http.MethodPut, "/sandbox/config", change); status != http.StatusOK {
		tb.Fatalf("configure %v: %d %s", change, status, body)
	}
}

// idle waits until every webhook scheduled so far has been sent or given up.
func (e *env) idle(tb testing.TB) {
	tb.Helper()
	poll.Until(tb, waitFor, "no webhook pending", func() (bool, string) {
		st := e.stats(tb)
		return st.WebhooksPending == 0, fmt.Sprintf("%+v", st)
	})
}

// hook is one webhook the receiver got.
type hook struct {
	App       string          `json:"app"`
	Timestamp int64           `json:"timestamp"`
	Version   int             `json:"version"`
	Type      string          `json:"type"`
	Payload   json.RawMessage `json:"payload"`
	raw       string
}

// event is the payload of a message-event or user-event.
type event struct {
	ID          string          `json:"id"`
	GsID        string          `json:"gsId"`
	Type        string          `json:"type"`
	Destination string          `json:"destination"`
	Phone       string          `json:"phone"`
	Payload     json.RawMessage `json:"payload"`
	Pricing     *pricing        `json:"pricing"`
}

// pricing is the pricing object of sent and delivered events.
type pricing struct {
	Billable     bool   `json:"billable"`
	PricingModel string `json:"pricing_model"`
	Category     string `json:"category"`
	Type         string `json:"type"`
}

func (h hook) event(tb testing.TB) event {
	tb.Helper()
	return decode[event](tb, h.Payload)
}

// summary names a webhook for comparisons: "sent", "failed 131026",
// "user-event opted-out", "message".
func (h hook) summary(tb testing.TB) string {
	tb.Helper()
	ev := h.event(tb)
	switch h.Type {
	case "message-event":
		if ev.Type == "failed" {
			detail := decode[struct{ Code int }](tb, ev.Payload)
			return fmt.Sprintf("failed %d", detail.Code)
		}
		return ev.Type
	case "user-event":
		return "user-event " + ev.Type
	}
	return h.Type
}

// receiver is a webhook endpoint that records what it gets.
type receiver struct {
	srv  *httptest.Server
	fail func(call int) int

	mu    sync.Mutex
	calls int
	got   []hook
}

func newReceiver(tb testing.TB, fail func(int) int) *receiver {
	tb.Helper()
	rc := &receiver{fail: fail}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	tb.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.URL.Path != "/hooks/secret" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad webhook", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	call := rc.calls
	rc.calls++
	rc.mu.Unlock()
	if rc.fail != nil {
		if status := rc.fail(call); status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
	}
	var h hook
	if err := json.Unmarshal(body, &h); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	h.raw = string(body)
	rc.mu.Lock()
	rc.got = append(rc.got, h)
	rc.mu.Unlock()
}

func (rc *receiver) all() []hook {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hook(nil), rc.got...)
}

// about returns, in arrival order, the webhooks about a message (its id as
// id or gsId) or a phone number (user-events and inbound messages).
func (rc *receiver) about(tb testing.TB, messageID, phone string) []hook {
	tb.Helper()
	var out []hook
	for _, h := range rc.all() {
		ev := h.event(tb)
		switch {
		case h.Type == "message-event" && messageID != "" && (ev.ID == messageID || ev.GsID == messageID):
		case h.Type == "user-event" && phone != "" && ev.Phone == phone:
		default:
			continue
		}
		out = append(out, h)
	}
	return out
}

func summaries(tb testing.TB, hooks []hook) []string {
	tb.Helper()
	out := []string{}
	for _, h := range hooks {
		out = append(out, h.summary(tb))
	}
	return out
}
