package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// dropInFixture is the API with the sandbox as ChatArchitect: one app
// (the sandbox's credentials) with two senders of tenant acme, and a
// second app with one sender of tenant bolt.
type dropInFixture struct {
	*walkFixture
	reg *senders.Registry
}

const (
	sbApp, sbSecret = "app_sbx", "sbx_secret_91c2"
	acmeOne         = "4915100000301"
	acmeTwo         = "4915100000302"
	boltOne         = "4915100000401"
)

func newDropInFixture(t *testing.T) *dropInFixture {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{AppID: sbApp, AppSecret: sbSecret}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	t.Cleanup(func() { sbSrv.Close(); sb.Close() })

	rdb := redistest.Start(t).Client(t)
	c, err := senders.NewCipher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	reg := senders.New(rdb, senders.Config{Cipher: c, Defaults: senders.Limits{RatePerSecond: 40, RateBurst: 40, PairBurst: 3}})
	ctx := context.Background()
	for _, sp := range []senders.Spec{
		{Number: acmeOne, AppID: sbApp, AppSecret: sbSecret, Tenant: "acme"},
		{Number: acmeTwo, AppID: sbApp, AppSecret: sbSecret, Tenant: "acme"},
		{Number: boltOne, AppID: "app_bolt", AppSecret: "bolt_secret", Tenant: "bolt"},
	} {
		if _, err := reg.Add(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	st := store.New(rdb, store.Config{})
	srv, err := New(Config{APIKeys: []string{walkKey}, WebhookSecret: walkSecret, Senders: reg, Keys: tenants.NewKeys(rdb),
		Upstream: chatarchitect.Config{BaseURL: sbSrv.URL, Timeout: 5 * time.Second}},
		enqueue.NewClient(rdb, enqueue.Config{}), st, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &dropInFixture{walkFixture: &walkFixture{url: ts.URL, srv: srv, rdb: rdb, store: st}, reg: reg}
}

func (f *dropInFixture) post(t *testing.T, app, secret, path, body string) (int, map[string]any) {
	t.Helper()
	resp, b := f.do(t, http.MethodPost, path, body, basicAuth(app, secret))
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST %s: %d %s: not JSON", path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func TestDropInSend(t *testing.T) {
	f := newDropInFixture(t)
	ctx := context.Background()
	// The overview's own body, with Gupshup's source picking the sender.
	code, ans := f.post(t, sbApp, sbSecret, "/whatsappmessage",
		`{"channel":"whatsapp","source":"`+acmeTwo+`","destination":"96996999699","payload":{"type":"text","message":"Hi John, how are you?"}}`)
	id, _ := ans["messageId"].(string)
	if code != http.StatusOK || ans["status"] != "submitted" || id == "" {
		t.Fatalf("POST /whatsappmessage: %d %v, want 200 submitted with a messageId", code, ans)
	}
	rec, err := f.store.Get(ctx, id)
	if err != nil {
		t.Fatalf("the messageId is not a chatq message: %v", err)
	}
	if rec.Tenant != "acme" || rec.Sender != acmeTwo || rec.Status != store.Queued {
		t.Errorf("record: tenant %q sender %q status %s, want acme, %s, queued", rec.Tenant, rec.Sender, rec.Status, acmeTwo)
	}
	// An app with one sender needs no source.
	if code, ans := f.post(t, "app_bolt", "bolt_secret", "/whatsappmessage", `{"channel":"whatsapp","destination":"96996999699","payload":{"type":"text","message":"Hi"}}`); code != http.StatusOK {
		t.Errorf("one-sender app without source: %d %v", code, ans)
	}
	for _, tc := range []struct {
		body, want string
		status     int
	}{
		{`{"channel":"whatsapp","destination":"96996999699","payload":{"type":"text","message":"Hi"}}`, "source", http.StatusBadRequest},
		{`{"channel":"whatsapp","source":"` + boltOne + `","destination":"96996999699","payload":{"type":"text","message":"Hi"}}`, "source", http.StatusBadRequest},
		{`{"channel":"whatsapp","source":"` + acmeOne + `","destination":"12","payload":{"type":"text","message":"Hi"}}`, "destination", http.StatusBadRequest},
		{`{"channel":"whatsapp","source":"` + acmeOne + `","destination":"96996999699","payload":{"type":"text"}}`, "payload.message", http.StatusBadRequest},
		{`[1]`, "JSON object", http.StatusBadRequest},
	} {
		code, ans := f.post(t, sbApp, sbSecret, "/whatsappmessage", tc.body)
		msg, _ := ans["message"].(string)
		if code != tc.status || ans["status"] != "error" || !strings.Contains(msg, tc.want) {
			t.Errorf("POST /whatsappmessage %s: %d %v, want %d error naming %s", tc.body, code, ans, tc.status, tc.want)
		}
	}
	if code, ans := f.post(t, sbApp, "bolt_secret", "/whatsappmessage", `{}`); code != http.StatusUnauthorized || ans["status"] != "error" {
		t.Errorf("another app's secret: %d %v, want 401", code, ans)
	}
}

func TestDropInPassThrough(t *testing.T) {
	f := newDropInFixture(t)
	code, ans := f.post(t, sbApp, sbSecret, "/getHSM", `{"channel":"whatsapp","destination":"`+acmeOne+`","getHSM":"true"}`)
	list, _ := ans["templates"].([]any)
	if code != http.StatusOK || ans["status"] != "success" || len(list) == 0 {
		t.Fatalf("POST /getHSM: %d %v, want the sandbox's templates", code, ans)
	}
	code, ans = f.post(t, sbApp, sbSecret, "/submit_template", `{"channel":"whatsapp","destination":"`+acmeOne+`","submit_template":{"elementName":"spring_sale","languageCode":"en_US","category":"MARKETING","templateType":"TEXT","content":"Welcome {{1}}! Your discount code is {{2}}.","example":"Welcome [John]! Your discount code is [12345]."}}`)
	tmpl, _ := ans["template"].(map[string]any)
	if code != http.StatusOK || ans["status"] != "success" || tmpl["elementName"] != "spring_sale" {
		t.Fatalf("POST /submit_template: %d %v", code, ans)
	}
	// The sandbox has it now: the pass-through reached it with the
	// sender's credentials.
	_, ans = f.post(t, sbApp, sbSecret, "/getHSM", `{"channel":"whatsapp","destination":"`+acmeOne+`","getHSM":"true"}`)
	if b, _ := json.Marshal(ans); !strings.Contains(string(b), "spring_sale") {
		t.Errorf("getHSM after submitting: %s, want spring_sale listed", b)
	}
	// ChatArchitect refuses bolt's credentials (the sandbox knows one
	// app): the pass-through answers 502.
	if code, ans := f.post(t, "app_bolt", "bolt_secret", "/getHSM", `{"channel":"whatsapp","destination":"`+boltOne+`","getHSM":"true"}`); code != http.StatusBadGateway || ans["status"] != "error" {
		t.Errorf("getHSM refused upstream: %d %v, want 502", code, ans)
	}
	// A template the upstream refuses is the application's error: 400.
	if code, ans := f.post(t, sbApp, sbSecret, "/submit_template", `{"channel":"whatsapp","destination":"`+acmeOne+`","submit_template":{"elementName":"Bad Name!","languageCode":"en_US","category":"MARKETING","content":"Hi"}}`); code != http.StatusBadRequest || ans["status"] != "error" {
		t.Errorf("submit_template refused upstream: %d %v, want 400", code, ans)
	}
}

func TestDropInWebhook(t *testing.T) {
	f := newDropInFixture(t)
	code, ans := f.post(t, sbApp, sbSecret, "/webhook", `{"channel":"whatsapp","destination":"`+acmeTwo+`","webhook":"https://app.example.com/wa-hook","webhook_separate":"false"}`)
	if code != http.StatusOK || ans["status"] != "success" {
		t.Fatalf("POST /webhook: %d %v", code, ans)
	}
	if s, _ := f.reg.Lookup(acmeTwo); s.WebhookURL != "https://app.example.com/wa-hook" {
		t.Errorf("the sender's webhook URL: %q", s.WebhookURL)
	}
	code, body := f.call(t, walkKey, http.MethodGet, "/v1/senders/"+acmeTwo, "")
	if code != http.StatusOK || !strings.Contains(body, `"webhook_url":"https://app.example.com/wa-hook"`) {
		t.Errorf("GET the sender: %d %s, want its webhook_url", code, body)
	}
	for _, bad := range []string{
		`{"channel":"whatsapp","destination":"` + acmeTwo + `","webhook":"ftp://x"}`,
		`{"channel":"whatsapp","destination":"` + acmeTwo + `"}`,
		`{"channel":"whatsapp","destination":"` + boltOne + `","webhook":"https://app.example.com/x"}`,
		// Forwarding goes to public addresses only, unless allowed.
		`{"channel":"whatsapp","destination":"` + acmeTwo + `","webhook":"http://127.0.0.1:8081/wa"}`,
		`{"channel":"whatsapp","destination":"` + acmeTwo + `","webhook":"http://localhost/wa"}`,
		`{"channel":"whatsapp","destination":"` + acmeTwo + `","webhook":"http://[fd00::1]/wa"}`,
	} {
		if code, ans := f.post(t, sbApp, sbSecret, "/webhook", bad); code != http.StatusBadRequest || ans["status"] != "error" {
			t.Errorf("POST /webhook %s: %d %v, want 400", bad, code, ans)
		}
	}
	_, ans = f.post(t, sbApp, sbSecret, "/webhook", `{"channel":"whatsapp","destination":"`+acmeTwo+`","webhook":"http://10.0.0.7/wa"}`)
	if msg, _ := ans["message"].(string); !strings.Contains(msg, "webhook is refused: 10.0.0.7 is not a public address") || !strings.Contains(msg, "CHATQ_CALLBACK_ALLOW_PRIVATE") {
		t.Errorf("a private webhook URL: %v, want a refusal naming CHATQ_CALLBACK_ALLOW_PRIVATE", ans)
	}
	if s, _ := f.reg.Lookup(acmeTwo); s.WebhookURL != "https://app.example.com/wa-hook" {
		t.Errorf("a refused URL replaced the sender's webhook URL: %q", s.WebhookURL)
	}
}
