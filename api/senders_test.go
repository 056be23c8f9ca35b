package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
)

func TestSenderRoutes(t *testing.T) {
	f := newWalkFixture(t)
	add := `{"number":"+4915100000201","app_id":"app_acme","app_secret":"s3cr3t-acme","tenant":"acme","rate_per_second":5,"pair_interval":"10s","default":true}`
	code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders", add)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/senders: %d %s", code, body)
	}
	var v SenderView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(body, "s3cr3t") || strings.Contains(body, "app_secret") {
		t.Errorf("the answer shows the app secret: %s", body)
	}
	if v.Number != "4915100000201" || v.Tenant != "acme" || v.Portfolio != v.Number || !v.Default || v.State != StateActive ||
		v.RatePerSecond != 5 || v.RateBurst != 5 || v.PairInterval != "10s" || v.PairBurst != 3 || v.Source != "api" ||
		!strings.HasPrefix(v.WebhookPath, "/webhooks/chatarchitect/") || v.WebhookURL != nil {
		t.Errorf("added sender: %s", body)
	}
	// Its webhook path opens the webhook route.
	resp, hb := f.do(t, http.MethodPost, v.WebhookPath, `{"type":"message-event","payload":{"id":"pid-x","type":"delivered"}}`, func(*http.Request) {})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST %s (the sender's webhook path): %d %s, want 200", "its webhook path", resp.StatusCode, hb)
	}
	if code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders", add); code != http.StatusConflict || !strings.Contains(body, `"field":"number"`) {
		t.Errorf("the same number again: %d %s, want 409 naming number", code, body)
	}
	for _, tc := range []struct{ body, field string }{
		{`{"app_id":"a","app_secret":"s","tenant":"acme"}`, "number"},
		{`{"number":"4915100000202","app_secret":"s","tenant":"acme"}`, "app_id"},
		{`{"number":"4915100000202","app_id":"a","tenant":"acme"}`, "app_secret"},
		{`{"number":"4915100000202","app_id":"a","app_secret":"s"}`, "tenant"},
		{`{"number":"4915100000202","app_id":"a","app_secret":"s","tenant":"acme","rate_per_second":-1}`, "rate_per_second"},
		{`{"number":"4915100000202","app_id":"a","app_secret":"s","tenant":"acme","rate_burst":"ten"}`, "rate_burst"},
		{`{"number":"4915100000202","app_id":"a","app_secret":"s","tenant":"acme","pair_interval":"soon"}`, "pair_interval"},
		{`{"number":"4915100000202","app_id":"a","app_secret":"s","tenant":"acme","colour":"red"}`, "colour"},
	} {
		if code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders", tc.body); code != http.StatusBadRequest || !strings.Contains(body, `"field":"`+tc.field+`"`) {
			t.Errorf("POST /v1/senders %s: %d %s, want 400 naming %s", tc.body, code, body, tc.field)
		}
	}
	path := "/v1/senders/4915100000201"
	if code, body := f.call(t, walkKey, http.MethodPatch, path, `{"rate_burst":9,"rate_per_second":null,"portfolio":"eu"}`); code != http.StatusOK ||
		!strings.Contains(body, `"rate_burst":9`) || !strings.Contains(body, `"rate_per_second":40`) || !strings.Contains(body, `"portfolio":"eu"`) {
		t.Errorf("PATCH %s: %d %s", path, code, body)
	}
	for _, bad := range []string{`{"number":"4915100000299"}`, `{"rate_burst":0}`, `{"tenant":null}`, `{"paused":true}`} {
		if code, body := f.call(t, walkKey, http.MethodPatch, path, bad); code != http.StatusBadRequest {
			t.Errorf("PATCH %s: %d %s, want 400", bad, code, body)
		}
	}
	if code, body := f.call(t, walkKey, http.MethodPost, path+"/pause", ""); code != http.StatusOK || !strings.Contains(body, `"state":"paused"`) {
		t.Errorf("pause: %d %s", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodGet, "/v1/senders?tenant=acme", ""); code != http.StatusOK ||
		!strings.Contains(body, `"number":"4915100000201"`) || strings.Contains(body, walkSender) {
		t.Errorf("GET /v1/senders?tenant=acme: %d %s", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodPost, path+"/resume", ""); code != http.StatusOK || !strings.Contains(body, `"state":"active"`) {
		t.Errorf("resume: %d %s", code, body)
	}
	// Flow control's view of a sender that is not paused shows in state.
	f.srv.cfg.SenderStates = stateStub(StateCircuitOpen)
	if code, body := f.call(t, walkKey, http.MethodGet, path, ""); code != http.StatusOK || !strings.Contains(body, `"state":"circuit_open"`) {
		t.Errorf("GET with an open circuit: %d %s", code, body)
	}
	f.srv.cfg.SenderStates = nil
	if code, body := f.call(t, walkKey, http.MethodDelete, path, ""); code != http.StatusNoContent {
		t.Errorf("DELETE: %d %s", code, body)
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		if code, body := f.call(t, walkKey, m, path, ""); code != http.StatusNotFound {
			t.Errorf("%s of a removed sender: %d %s, want 404", m, code, body)
		}
	}
	// Tenant keys do not manage senders or keys.
	key := f.createKey(t, "walk")
	for _, r := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/senders", add}, {http.MethodGet, "/v1/senders", ""}, {http.MethodPost, "/v1/keys", `{"tenant":"walk","name":"x"}`},
		{http.MethodGet, "/v1/keys", ""},
	} {
		if code, body := f.call(t, key, r.method, r.path, r.body); code != http.StatusForbidden || !strings.Contains(body, "admin key") {
			t.Errorf("%s %s with a tenant key: %d %s, want 403", r.method, r.path, code, body)
		}
	}
}

type stateStub string

func (s stateStub) States(_ context.Context, numbers []string) ([]string, error) {
	out := make([]string, len(numbers))
	for i := range out {
		out[i] = string(s)
	}
	return out, nil
}

func TestKeyRoutes(t *testing.T) {
	f := newWalkFixture(t)
	code, body := f.call(t, walkKey, http.MethodPost, "/v1/keys", `{"tenant":"acme","name":"crm-prod"}`)
	var k struct{ ID, Key string }
	if err := json.Unmarshal([]byte(body), &k); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /v1/keys: %d %s", code, body)
	}
	code, list := f.call(t, walkKey, http.MethodGet, "/v1/keys", "")
	if code != http.StatusOK || !strings.Contains(list, k.ID) || strings.Contains(list, k.Key) || strings.Contains(list, "hash") {
		t.Errorf("GET /v1/keys: %d %s, want the key listed without its secret", code, list)
	}
	// The key works: a tenant without a sender is told so.
	if code, body := f.call(t, k.Key, http.MethodPost, "/v1/messages", walkText); code != http.StatusUnprocessableEntity || !strings.Contains(body, "unknown_sender") {
		t.Errorf("POST /v1/messages, tenant without sender: %d %s, want 422 unknown_sender", code, body)
	}
	if code, body := f.call(t, k.Key, http.MethodGet, "/v1/dead-letters", ""); code != http.StatusOK {
		t.Errorf("GET /v1/dead-letters with a tenant key: %d %s", code, body)
	}
	for _, bad := range []struct{ body, field string }{{`{"name":"x"}`, "tenant"}, {`{"tenant":"Acme Corp","name":"x"}`, "tenant"}, {`{"tenant":"acme"}`, "name"}} {
		if code, body := f.call(t, walkKey, http.MethodPost, "/v1/keys", bad.body); code != http.StatusBadRequest || !strings.Contains(body, `"field":"`+bad.field+`"`) {
			t.Errorf("POST /v1/keys %s: %d %s, want 400 naming %s", bad.body, code, body, bad.field)
		}
	}
	if code, body := f.call(t, walkKey, http.MethodDelete, "/v1/keys/"+k.ID, ""); code != http.StatusNoContent {
		t.Fatalf("DELETE /v1/keys: %d %s", code, body)
	}
	if code, body := f.call(t, k.Key, http.MethodGet, "/v1/dead-letters", ""); code != http.StatusUnauthorized {
		t.Errorf("a revoked key: %d %s, want 401", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodDelete, "/v1/keys/"+k.ID, ""); code != http.StatusNotFound {
		t.Errorf("revoking twice: %d %s, want 404", code, body)
	}
}

// Without CHATQ_SECRETS_KEY the API runs as before, from the environment's
// sender, and adding a sender answers 409 naming the variable.
func TestSendersWithoutSecretsKey(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	reg := senders.New(rdb, senders.Config{Env: &senders.Sender{Number: "15550001234", AppID: "app", AppSecret: "sec"}})
	if err := reg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	client := enqueue.NewClient(rdb, enqueue.Config{})
	srv, err := New(Config{APIKeys: []string{walkKey}, WebhookSecret: walkSecret, Senders: reg}, client, store.New(rdb, store.Config{}), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	f := &walkFixture{url: ts.URL, srv: srv, rdb: rdb}
	code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders", `{"number":"4915100000201","app_id":"a","app_secret":"s","tenant":"acme"}`)
	if code != http.StatusConflict || !strings.Contains(body, "CHATQ_SECRETS_KEY") {
		t.Errorf("POST /v1/senders without a key: %d %s, want 409 naming CHATQ_SECRETS_KEY", code, body)
	}
	code, body = f.call(t, walkKey, http.MethodPost, "/v1/messages", walkText)
	if code != http.StatusAccepted || !strings.Contains(body, `"tenant":"default"`) || !strings.Contains(body, `"sender":"15550001234"`) {
		t.Errorf("POST /v1/messages: %d %s, want the environment's sender of tenant default", code, body)
	}
	code, body = f.call(t, walkKey, http.MethodGet, "/v1/senders/15550001234", "")
	if code != http.StatusOK || !strings.Contains(body, `"source":"environment"`) || strings.Contains(body, `"sec"`) ||
		!strings.Contains(body, `"webhook_path":"/webhooks/chatarchitect/`+walkSecret+`"`) {
		t.Errorf("GET the environment's sender: %d %s", code, body)
	}
	for _, r := range []struct{ method, path string }{
		{http.MethodPatch, "/v1/senders/15550001234"}, {http.MethodDelete, "/v1/senders/15550001234"}, {http.MethodPost, "/v1/senders/15550001234/pause"},
	} {
		if code, body := f.call(t, walkKey, r.method, r.path, `{"rate_burst":3}`); code != http.StatusConflict || !strings.Contains(body, "CHATQ_CA_") {
			t.Errorf("%s %s: %d %s, want 409: it changes in the environment", r.method, r.path, code, body)
		}
	}
}

// Several API processes share one deployment: a sender added through one
// is known to the others at once, though their registries reload only
// every half second (the walk's never does on its own).
func TestASenderAddedThroughAnotherProcessIsKnownAtOnce(t *testing.T) {
	f := newWalkFixture(t)
	code, body := f.call(t, walkKey, http.MethodPost, "/v1/keys", `{"tenant":"zeta","name":"crm"}`)
	var k struct{ Key string }
	if err := json.Unmarshal([]byte(body), &k); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /v1/keys: %d %s", code, body)
	}
	// The other process: its own registry on the same Redis.
	other := walkRegistryOn(t, f.rdb)
	var added []senders.Sender
	for _, sp := range []senders.Spec{
		{Number: "4915100000401", AppID: walkApp, AppSecret: walkAppSecret, Tenant: "walk"},
		{Number: "4915100000402", AppID: walkApp, AppSecret: walkAppSecret, Tenant: "zeta"},
	} {
		x, err := other.Add(context.Background(), sp)
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, x)
	}
	// Its webhook URL takes ChatArchitect's events at once.
	event := `{"type":"message-event","payload":{"id":"pid-x","type":"delivered"}}`
	if resp, b := f.do(t, http.MethodPost, added[0].WebhookPath(), event, func(*http.Request) {}); resp.StatusCode != http.StatusOK {
		t.Errorf("POST {the new sender's webhook path}: %d %s, want 200", resp.StatusCode, b)
	}
	if resp, b := f.do(t, http.MethodPost, "/webhooks/chatarchitect/nobodys-secret", event, func(*http.Request) {}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST a webhook path nobody has: %d %s, want 404", resp.StatusCode, b)
	}

	named := `{"destination":"96996999699","sender":"4915100000401","payload":{"type":"text","message":"Hi"}}`
	if code, body := f.call(t, walkKey, http.MethodPost, "/v1/messages", named); code != http.StatusAccepted {
		t.Errorf("POST /v1/messages naming the new sender: %d %s, want 202", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodGet, "/v1/senders/4915100000401", ""); code != http.StatusOK {
		t.Errorf("GET /v1/senders/{the new sender}: %d %s, want 200", code, body)
	}
	// Tenant zeta had no sender here: its first is chosen.
	code, body = f.call(t, k.Key, http.MethodPost, "/v1/messages", walkText)
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/messages of the tenant's first sender: %d %s, want 202", code, body)
	}
	var m struct{ ID string }
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	if rec, err := f.store.Get(context.Background(), m.ID); err != nil || rec.Sender != "4915100000402" {
		t.Errorf("the message's sender: %v %+v, want 4915100000402", err, rec)
	}
	// A number nobody added is still refused, and named.
	unknown := `{"destination":"96996999699","sender":"4915100000499","payload":{"type":"text","message":"Hi"}}`
	if code, body := f.call(t, walkKey, http.MethodPost, "/v1/messages", unknown); code != http.StatusUnprocessableEntity || !strings.Contains(body, "unknown_sender") {
		t.Errorf("POST /v1/messages naming nobody's number: %d %s, want 422 unknown_sender", code, body)
	}
}

// getCounter counts the GET commands a client sends.
type getCounter struct{ n atomic.Int64 }

func (g *getCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *getCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "get" {
			g.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (g *getCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "get" {
				g.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// A batch's messages naming numbers the registry does not know refresh it
// once, however many they are: each refresh reads Redis, and a batch of a
// thousand such messages read it a thousand times. A sender another
// process added is still found by the messages that follow the first miss.
func TestABatchOfUnknownSendersRefreshesTheRegistryOnce(t *testing.T) {
	f := newWalkFixture(t)
	gets := &getCounter{}
	f.rdb.AddHook(gets)
	batch := func(n int, senders ...string) (int, string) {
		t.Helper()
		var msgs []string
		for i := range n {
			msgs = append(msgs, fmt.Sprintf(`{"destination":"969969996%02d","sender":%q,"payload":{"type":"text","message":"Hi"}}`, i, senders[i%len(senders)]))
		}
		gets.n.Store(0)
		code, body := f.call(t, walkKey, http.MethodPost, "/v1/messages/batch", `{"messages":[`+strings.Join(msgs, ",")+`]}`)
		if code != http.StatusOK {
			t.Fatalf("POST /v1/messages/batch: %d %s", code, body)
		}
		return int(gets.n.Load()), body
	}
	one, _ := batch(1, "4915100000499")
	many, body := batch(50, "4915100000499")
	if many > one {
		t.Errorf("a batch of 50 messages naming an unknown sender made %d GETs, one such message %d: want no more", many, one)
	}
	if got := strings.Count(body, "unknown_sender"); got != 50 {
		t.Errorf("%d of 50 messages refused as unknown_sender, want all: %s", got, body)
	}

	if _, err := walkRegistryOn(t, f.rdb).Add(context.Background(), senders.Spec{Number: "4915100000403", AppID: walkApp, AppSecret: walkAppSecret, Tenant: "walk"}); err != nil {
		t.Fatal(err)
	}
	_, body = batch(4, "4915100000499", "4915100000403")
	var res struct {
		Results []struct {
			ID    string
			Error *struct{ Code string }
		}
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil || len(res.Results) != 4 {
		t.Fatalf("the batch's answer: %v %s", err, body)
	}
	for i, r := range res.Results {
		if known := i%2 == 1; known != (r.ID != "") {
			t.Errorf("message %d (sender known: %v) answered %+v", i, known, r)
		}
	}
}
