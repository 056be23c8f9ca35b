package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// templateList is getHSM for the tests.
type templateList []chatarchitect.Template

func (l templateList) Templates(context.Context) ([]chatarchitect.Template, error) { return l, nil }

// policyFixture is the API with its conversation policy and inbound
// forwarding.
func policyFixture(tb testing.TB) (*fixture, *policy.Checker) {
	tb.Helper()
	rdb := redistest.Start(tb).Client(tb)
	checker := policy.New(rdb, policy.Config{Source: templateList{
		{ElementName: "otp_code", LanguageCode: "en", Status: "APPROVED", Data: "Your code is {{1}}."},
		{ElementName: "spring_sale", LanguageCode: "en", Status: "APPROVED", Data: "Spring sale: {{1}} off."},
		{ElementName: "autumn_sale", LanguageCode: "en", Status: "APPROVED", Data: "Autumn sale: {{1}} off."},
		{ElementName: "winter_sale", LanguageCode: "en", Status: "APPROVED", Data: "Winter sale: {{1}} off."},
	}})
	q := asynq.NewClientFromRedisClient(rdb)
	client := enqueue.NewClient(rdb, enqueue.Config{Policy: enqueue.CheckerPolicy(checker)})
	tb.Cleanup(func() { _ = client.Close() })
	st := store.New(rdb, store.Config{Notifier: callback.NewNotifier(q, nil)})
	h, err := api.New(api.Config{APIKeys: []string{apiKey}, WebhookSecret: webhookSecret, Policy: checker, Inbound: callback.NewForwarder(rdb, q, time.Hour)},
		client, st, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	return &fixture{url: ts.URL, client: client, rdb: rdb, store: st, inspect: asynq.NewInspectorFromRedisClient(rdb), http: &http.Client{Timeout: 10 * time.Second}}, checker
}

func TestSuppressionRoutes(t *testing.T) {
	t.Parallel()
	f, _ := policyFixture(t)
	const number = "96996990042"
	call := func(method, path, body string) response {
		t.Helper()
		r := request{method: method, path: path}
		if body != "" {
			r.body = []byte(body)
		}
		return f.do(t, r)
	}

	wantError(t, call("GET", "/v1/suppressions/"+number, ""), http.StatusNotFound, "not_found", "")
	wantError(t, call("PUT", "/v1/suppressions/12ab", ""), http.StatusBadRequest, "invalid_request", "destination")
	wantError(t, call("PUT", "/v1/suppressions/"+number, `{"why":"x"}`), http.StatusBadRequest, "invalid_request", "body")
	if res := f.do(t, request{method: "PUT", path: "/v1/suppressions/" + number, noAuth: true}); res.status != http.StatusUnauthorized {
		t.Errorf("PUT without a key: %d", res.status)
	}

	res := call("PUT", "/v1/suppressions/+"+number, `{"reason":"asked by phone"}`)
	got := decode[policy.Suppression](t, res)
	if res.status != http.StatusOK || got.Destination != number || got.Reason != "asked by phone" || got.Source != policy.SourceOperator {
		t.Errorf("PUT: %d %s", res.status, res.body)
	}
	if res := call("PUT", "/v1/suppressions/"+number+"1", ""); res.status != http.StatusOK {
		t.Errorf("PUT without a body: %d %s", res.status, res.body)
	}
	if res := call("GET", "/v1/suppressions/"+number, ""); res.status != http.StatusOK || !strings.Contains(string(res.body), "asked by phone") {
		t.Errorf("GET: %d %s", res.status, res.body)
	}
	list := decode[struct {
		Suppressions []policy.Suppression `json:"suppressions"`
		NextCursor   *string              `json:"next_cursor"`
	}](t, call("GET", "/v1/suppressions?limit=10", ""))
	if len(list.Suppressions) != 2 || list.NextCursor != nil {
		t.Errorf("list: %+v", list)
	}
	wantError(t, call("GET", "/v1/suppressions?limit=0", ""), http.StatusBadRequest, "invalid_request", "limit")

	wantError(t, f.post(t, "/v1/messages", `{"destination":"`+number+`","payload":{"type":"text","message":"hi"}}`),
		http.StatusUnprocessableEntity, "suppressed", "destination")

	if res := call("DELETE", "/v1/suppressions/"+number, ""); res.status != http.StatusOK {
		t.Errorf("DELETE: %d %s", res.status, res.body)
	}
	wantError(t, call("DELETE", "/v1/suppressions/"+number, ""), http.StatusNotFound, "not_found", "")
	if res := f.post(t, "/v1/messages", `{"destination":"`+number+`","payload":{"type":"text","message":"hi"}}`); res.status != http.StatusAccepted {
		t.Errorf("send after DELETE: %d %s", res.status, res.body)
	}
}

func TestTemplatesRouteAndChecks(t *testing.T) {
	t.Parallel()
	f, _ := policyFixture(t)
	res := f.do(t, request{method: "GET", path: "/v1/templates"})
	if res.status != http.StatusOK || !strings.Contains(string(res.body), `"templates":[]`) || !strings.Contains(string(res.body), `"fetched_at":null`) {
		t.Errorf("before any sync: %d %s", res.status, res.body)
	}
	res = f.do(t, request{method: "GET", path: "/v1/templates?refresh=true"})
	if res.status != http.StatusOK || !strings.Contains(string(res.body), `"elementName":"otp_code"`) || !strings.Contains(string(res.body), `"params":1`) {
		t.Errorf("after a refresh: %d %s", res.status, res.body)
	}
	res = f.post(t, "/v1/messages", `{"destination":"96996999699","payload":{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["1","2"]}}}`)
	wantError(t, res, http.StatusUnprocessableEntity, "template_params", "payload.template.params")
	if !strings.Contains(string(res.body), "payload.template.params must hold 1 parameter, not 2") {
		t.Errorf("message does not give the count: %s", res.body)
	}
}

func TestWebhooksTeachThePolicy(t *testing.T) {
	t.Parallel()
	f, checker := policyFixture(t)
	ctx := context.Background()
	hook := func(body string) {
		t.Helper()
		res := f.do(t, request{method: http.MethodPost, path: "/webhooks/chatarchitect/" + webhookSecret, body: []byte(body), noAuth: true})
		if res.status != http.StatusOK {
			t.Fatalf("webhook %s: %d %s", body, res.status, res.body)
		}
	}
	suppressed := func(number string) bool {
		t.Helper()
		s, err := checker.Suppressions.Get(ctx, number)
		if err != nil {
			t.Fatal(err)
		}
		return s != nil
	}

	hook(`{"type":"user-event","payload":{"phone":"96996990001","type":"opted-out"}}`)
	if !suppressed("96996990001") {
		t.Error("opted-out did not suppress")
	}
	hook(`{"type":"user-event","payload":{"phone":"96996990001","type":"opted-in"}}`)
	if suppressed("96996990001") {
		t.Error("opted-in did not lift the suppression")
	}

	// A failed event with an opt-out code, naming its destination.
	hook(`{"type":"message-event","payload":{"id":"pid-x","type":"failed","destination":"96996990002","payload":{"code":131050,"reason":"opted out"}}}`)
	if !suppressed("96996990002") {
		t.Error("a failed 131050 did not suppress")
	}
	// Without a destination: the record tells it.
	rec := decode[store.Record](t, f.post(t, "/v1/messages", `{"destination":"96996990003","payload":{"type":"text","message":"hi"}}`))
	if _, _, err := f.store.Begin(ctx, rec.ID, time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, rec.ID, "pid-"+rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	hook(fmt.Sprintf(`{"type":"message-event","payload":{"id":"pid-%s","type":"failed","payload":{"code":"1012","reason":"User has opted out"}}}`, rec.ID))
	if !suppressed("96996990003") {
		t.Error("a failed 1012 without a destination did not suppress")
	}

	// A closed window, then the user writes.
	hook(`{"type":"message-event","payload":{"id":"pid-y","type":"failed","destination":"96996990004","payload":{"code":131047}}}`)
	if w, _ := checker.Windows.Get(ctx, "96996990004"); !w.KnownClosed(time.Now()) {
		t.Errorf("window after 131047: %+v", w)
	}
	wantError(t, f.post(t, "/v1/messages", `{"destination":"96996990004","payload":{"type":"text","message":"hi"}}`),
		http.StatusUnprocessableEntity, "window_closed", "destination")
	hook(`{"app":"demo","timestamp":` + fmt.Sprint(time.Now().UnixMilli()) + `,"version":2,"type":"message","payload":{"id":"wamid.in1","source":"96996990004","type":"text","payload":{"text":"hello"},"sender":{"phone":"96996990004","name":"Ann"}}}`)
	if w, _ := checker.Windows.Get(ctx, "96996990004"); !w.Open(time.Now()) {
		t.Errorf("window after an inbound message: %+v", w)
	}
	if res := f.post(t, "/v1/messages", `{"destination":"96996990004","payload":{"type":"text","message":"hi"}}`); res.status != http.StatusAccepted {
		t.Errorf("free-form after the user wrote: %d %s", res.status, res.body)
	}

	// The inbound message and the two user events wait in the callbacks
	// queue, by key only.
	tasks, err := f.inspect.ListPendingTasks(callback.Queue)
	if err != nil {
		t.Fatal(err)
	}
	inbound := 0
	for _, task := range tasks {
		if task.Type == callback.TaskInbound {
			inbound++
			if strings.Contains(string(task.Payload), "hello") {
				t.Errorf("an inbound text is in a task payload: %s", task.Payload)
			}
		}
	}
	if inbound != 3 {
		t.Errorf("%d inbound events forwarded, want 3", inbound)
	}
}

// TestUserEventWebhooksApplyByTheirOwnTime is a regression test: a late
// retry of an older opted-in webhook lifted a newer opt-out, and a webhook
// lifted a suppression an operator had added.
func TestUserEventWebhooksApplyByTheirOwnTime(t *testing.T) {
	t.Parallel()
	f, _ := policyFixture(t)
	hook := func(phone, typ string, at time.Time) {
		t.Helper()
		body := fmt.Sprintf(`{"app":"demo","timestamp":%d,"version":2,"type":"user-event","payload":{"phone":"%s","type":"%s"}}`, at.UnixMilli(), phone, typ)
		res := f.do(t, request{method: http.MethodPost, path: "/webhooks/chatarchitect/" + webhookSecret, body: []byte(body), noAuth: true})
		if res.status != http.StatusOK {
			t.Fatalf("webhook %s: %d %s", body, res.status, res.body)
		}
	}
	suppressed := func(phone string) bool {
		t.Helper()
		res := f.do(t, request{method: http.MethodGet, path: "/v1/suppressions/" + phone})
		if res.status != http.StatusOK && res.status != http.StatusNotFound {
			t.Fatalf("GET /v1/suppressions/%s: %d %s", phone, res.status, res.body)
		}
		return res.status == http.StatusOK
	}
	ten := time.Now().Add(-time.Hour).Truncate(time.Millisecond)

	hook("96996991001", "opted-out", ten)
	hook("96996991001", "opted-in", ten.Add(-time.Hour))
	if !suppressed("96996991001") {
		t.Fatal("an opted-in an hour older than the opt-out, arriving after it, lifted the suppression")
	}
	wantError(t, f.post(t, "/v1/messages", `{"destination":"96996991001","payload":{"type":"text","message":"hi"}}`),
		http.StatusUnprocessableEntity, "suppressed", "destination")
	hook("96996991001", "opted-in", ten.Add(time.Minute))
	if suppressed("96996991001") {
		t.Fatal("a newer opted-in did not lift the suppression")
	}

	if res := f.do(t, request{method: http.MethodPut, path: "/v1/suppressions/96996991002", body: []byte(`{"reason":"asked by phone"}`)}); res.status != http.StatusOK {
		t.Fatalf("PUT: %d %s", res.status, res.body)
	}
	hook("96996991002", "opted-in", time.Now())
	if !suppressed("96996991002") {
		t.Fatal("an opted-in webhook lifted a suppression an operator added")
	}
	if res := f.do(t, request{method: http.MethodDelete, path: "/v1/suppressions/96996991002"}); res.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", res.status, res.body)
	}
	if suppressed("96996991002") {
		t.Fatal("the operator's DELETE did not lift the suppression")
	}
}

func TestSuppressionRoutesOfATenant(t *testing.T) {
	t.Parallel()
	f, checker := policyFixture(t)
	const number = "96996990043"
	if res := f.do(t, request{method: "PUT", path: "/v1/suppressions/" + number + "?tenant=acme"}); res.status != http.StatusOK {
		t.Fatalf("PUT for acme: %d %s", res.status, res.body)
	}
	if sup, err := checker.ForTenant("acme").Suppressions.Get(context.Background(), number); err != nil || sup == nil {
		t.Errorf("acme's list: %v, %v; want the number on it", sup, err)
	}
	// Tenant default's list, and so its messages, know nothing of it.
	wantError(t, f.do(t, request{method: "GET", path: "/v1/suppressions/" + number}), http.StatusNotFound, "not_found", "")
	if res := f.post(t, "/v1/messages", `{"destination":"`+number+`","payload":{"type":"text","message":"hi"}}`); res.status != http.StatusAccepted {
		t.Errorf("a message of tenant default to acme's suppressed number: %d %s", res.status, res.body)
	}
	wantError(t, f.do(t, request{method: "GET", path: "/v1/suppressions?tenant=Not%20A%20Tenant"}), http.StatusBadRequest, "invalid_request", "tenant")
}

// A message that fails by webhook because WhatsApp paused its template
// (132015) or disabled it (132016) teaches chatq the template's state for
// the message's sender, as a refused send does: the template's waiting
// messages then wait for its approval, or end; a failure that came before
// the acceptance was recorded (parked) too. Other failures, and other
// payloads, teach nothing of templates.
func TestAFailedMessageTeachesItsTemplatesState(t *testing.T) {
	t.Parallel()
	f, _ := policyFixture(t)
	ctx := context.Background()
	taken := func(payload string) *store.Record {
		t.Helper()
		res := f.post(t, "/v1/messages", `{"destination":"96996990101","payload":`+payload+`}`)
		if res.status != http.StatusAccepted {
			t.Fatalf("send %s: %d %s", payload, res.status, res.body)
		}
		rec := decode[store.Record](t, res)
		if _, _, err := f.store.Begin(ctx, rec.ID, time.Now(), store.Owner{}); err != nil {
			t.Fatal(err)
		}
		return &rec
	}
	accept := func(rec *store.Record) {
		t.Helper()
		if _, err := f.store.Submit(ctx, rec.ID, "pid-"+rec.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	submitted := func(payload string) *store.Record {
		t.Helper()
		rec := taken(payload)
		accept(rec)
		return rec
	}
	failed := func(rec *store.Record, code string) {
		t.Helper()
		body := fmt.Sprintf(`{"type":"message-event","payload":{"id":"pid-%s","type":"failed","payload":{"code":%s,"reason":"low quality"}}}`, rec.ID, code)
		res := f.do(t, request{method: http.MethodPost, path: "/webhooks/chatarchitect/" + webhookSecret, body: []byte(body), noAuth: true})
		if res.status != http.StatusOK {
			t.Fatalf("webhook: %d %s", res.status, res.body)
		}
	}
	state := func(rec *store.Record, name string) store.TemplateState {
		t.Helper()
		st, err := f.store.TemplateStateOf(ctx, rec.Sender, name)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	template := func(name string) string {
		return `{"type":"template","template":{"elementName":"` + name + `","languageCode":"en","params":["1"]}}`
	}

	other := submitted(template("spring_sale"))
	failed(other, "131026")
	if st := state(other, "spring_sale"); st != store.TemplateActive {
		t.Errorf("after an undeliverable failure: template %s, want active", st)
	}
	text := submitted(`{"type":"text","message":"hi"}`)
	failed(text, "132015")

	paused := submitted(template("spring_sale"))
	failed(paused, "132015")
	if st := state(paused, "spring_sale"); st != store.TemplatePaused {
		t.Errorf("after a failed 132015: template %s, want paused", st)
	}
	disabled := submitted(template("autumn_sale"))
	failed(disabled, `"132016"`)
	if st := state(disabled, "autumn_sale"); st != store.TemplateDisabled {
		t.Errorf("after a failed 132016: template %s, want disabled", st)
	}
	if st := state(paused, "spring_sale"); st != store.TemplatePaused {
		t.Errorf("another template's failure changed spring_sale: %s", st)
	}
	early := taken(template("winter_sale"))
	failed(early, "132015") // parked: its acceptance is not recorded yet
	accept(early)
	if st := state(early, "winter_sale"); st != store.TemplatePaused {
		t.Errorf("after a parked failed 132015: template %s, want paused", st)
	}
	if got, err := f.store.Get(ctx, early.ID); err != nil || got.Status != store.Failed {
		t.Errorf("the early failure: %v %v, want failed", got, err)
	}
}
