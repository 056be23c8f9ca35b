package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/console"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// access is who may call a route.
type access int

const (
	// accessOpen: anyone (CONTRACT.md's open list).
	accessOpen access = iota
	// accessWebhook: whoever knows the secret in the path.
	accessWebhook
	// accessBearer: Authorization: Bearer <API key>.
	accessBearer
	// accessBasic: HTTP Basic auth with an API key as the password.
	accessBasic
	// accessRedirect: a redirect to a guarded route, and nothing else.
	accessRedirect
	// accessApp: HTTP Basic auth with a sender's app_id and app_secret
	// (the drop-in ChatArchitect routes).
	accessApp
)

// walkRoute is one route of the mux and how to reach it.
type walkRoute struct {
	pattern string
	access  access
	// method and path make a request that reaches the pattern; empty means
	// the pattern's own.
	method, path string
	// body is sent with the request: a valid one, so that a request let
	// through by mistake would change something.
	body string
	// limit is the body limit of a route that reads a body.
	limit int64
}

const (
	walkKey    = "ck_live_7fa3c1d9e2b84a06"
	walkSecret = "whsec_5b0e9a7c3d1f"
	walkID     = "01JABCDEFGHJKMNPQRSTVWXYZ0"
	walkText   = `{"destination":"96996999699","payload":{"type":"text","message":"Hi John"}}`
	// walkApp and walkAppSecret are the ChatArchitect app of the walk's
	// stored sender, walkSender.
	walkApp       = "app_walk"
	walkAppSecret = "app_secret_walk_4c1e9b"
	walkSender    = "4915100000009"
	walkSender2   = "4915100000008"
)

// walkRoutes is every route the API registers. TestRouteWalkCoversEveryRoute
// fails when the mux and this table disagree, so a new route cannot be
// added without saying who may call it, and then the walk below proves it.
var walkRoutes = []walkRoute{
	{pattern: "GET /healthz", access: accessOpen},
	{pattern: "GET /readyz", access: accessOpen},
	{pattern: "GET /metrics", access: accessOpen},
	{pattern: "GET /openapi.json", access: accessOpen},
	{pattern: "POST /webhooks/chatarchitect/{secret}", access: accessWebhook, limit: maxWebhookBody,
		body: `{"type":"message-event","payload":{"id":"pid-walk","type":"delivered"}}`},

	{pattern: "POST /v1/messages", access: accessBearer, body: walkText, limit: MaxMessageBody},
	{pattern: "GET /v1/messages/{id}", access: accessBearer},
	{pattern: "DELETE /v1/messages/{id}", access: accessBearer},
	{pattern: "POST /v1/messages/batch", access: accessBearer, body: `{"messages":[` + walkText + `]}`, limit: MaxBatchBody},
	{pattern: "GET /v1/messages", access: accessBearer, path: "/v1/messages?batch_id=walk"},
	{pattern: "DELETE /v1/messages", access: accessBearer, path: "/v1/messages?batch_id=walk"},
	{pattern: "GET /v1/batches/{batch_id}", access: accessBearer},
	{pattern: "GET /v1/dead-letters", access: accessBearer},
	{pattern: "POST /v1/dead-letters/retry", access: accessBearer, body: `{"filter":{}}`, limit: maxOperationBody},
	{pattern: "GET /v1/suppressions", access: accessBearer},
	{pattern: "GET /v1/suppressions/{destination}", access: accessBearer},
	{pattern: "PUT /v1/suppressions/{destination}", access: accessBearer, body: `{"reason":"walk"}`, limit: maxSuppressionBody},
	{pattern: "DELETE /v1/suppressions/{destination}", access: accessBearer},
	{pattern: "GET /v1/templates", access: accessBearer, path: "/v1/templates?refresh=true"},
	{pattern: "GET /v1/stats", access: accessBearer},
	{pattern: "GET /v1/batches", access: accessBearer},
	{pattern: "POST /v1/messages/validate", access: accessBearer, body: `{"messages":[` + walkText + `]}`, limit: MaxBatchBody},
	{pattern: "POST /v1/senders", access: accessBearer, limit: maxSenderBody,
		body: `{"number":"` + walkSender2 + `","app_id":"app_walk2","app_secret":"s","tenant":"walk"}`},
	{pattern: "GET /v1/senders", access: accessBearer},
	{pattern: "GET /v1/senders/{number}", access: accessBearer},
	{pattern: "PATCH /v1/senders/{number}", access: accessBearer, body: `{"rate_burst":5}`, limit: maxSenderBody},
	{pattern: "POST /v1/senders/{number}/pause", access: accessBearer},
	{pattern: "POST /v1/senders/{number}/resume", access: accessBearer},
	{pattern: "DELETE /v1/senders/{number}", access: accessBearer},
	{pattern: "POST /v1/keys", access: accessBearer, body: `{"tenant":"walk","name":"walk"}`, limit: maxKeyBody},
	{pattern: "GET /v1/keys", access: accessBearer},
	{pattern: "DELETE /v1/keys/{id}", access: accessBearer, path: "/v1/keys/key_walk"},
	{pattern: "POST /whatsappmessage", access: accessApp, body: walkText, limit: MaxMessageBody},
	{pattern: "POST /getHSM", access: accessApp, body: `{"channel":"whatsapp","destination":"` + walkSender + `","getHSM":"true"}`, limit: maxDropInBody},
	{pattern: "POST /submit_template", access: accessApp, limit: maxDropInBody,
		body: `{"channel":"whatsapp","destination":"` + walkSender + `","submit_template":{"elementName":"walk","languageCode":"en","category":"UTILITY","content":"Hi"}}`},
	{pattern: "POST /webhook", access: accessApp, limit: maxDropInBody,
		body: `{"channel":"whatsapp","destination":"` + walkSender + `","webhook":"https://app.example.com/hook","webhook_separate":"false"}`},
	// What no route takes: a JSON 405 for another method of a path, behind
	// the key unless the path is open; a JSON 404 behind the key.
	{pattern: "/", access: accessOpen, method: http.MethodPost, path: "/healthz"},
	{pattern: "/", access: accessOpen, method: http.MethodDelete, path: "/readyz"},
	{pattern: "/", access: accessOpen, method: http.MethodPost, path: "/metrics"},
	{pattern: "/", access: accessOpen, method: http.MethodPut, path: "/openapi.json"},
	{pattern: "/", access: accessOpen, method: http.MethodGet, path: "/webhooks/chatarchitect/" + walkSecret},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/messages"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/messages/" + walkID},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/messages/batch"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/batches/walk"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/dead-letters"},
	{pattern: "/", access: accessBearer, method: http.MethodGet, path: "/v1/dead-letters/retry"},
	{pattern: "/", access: accessBearer, method: http.MethodPost, path: "/v1/suppressions"},
	{pattern: "/", access: accessBearer, method: http.MethodPost, path: "/v1/suppressions/96996999699"},
	{pattern: "/", access: accessBearer, method: http.MethodPost, path: "/v1/templates"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/stats"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/batches"},
	{pattern: "/", access: accessBearer, method: http.MethodPatch, path: "/v1/messages/validate"},
	{pattern: "/", access: accessBearer, method: http.MethodPut, path: "/v1/senders"},
	{pattern: "/", access: accessBearer, method: http.MethodPut, path: "/v1/senders/" + walkSender},
	{pattern: "/", access: accessBearer, method: http.MethodGet, path: "/v1/senders/" + walkSender + "/pause"},
	{pattern: "/", access: accessBearer, method: http.MethodDelete, path: "/v1/keys"},
	{pattern: "/", access: accessBearer, method: http.MethodGet, path: "/v1/keys/key_walk"},
	{pattern: "/", access: accessApp, method: http.MethodGet, path: "/whatsappmessage"},
	{pattern: "/", access: accessApp, method: http.MethodGet, path: "/getHSM"},
	{pattern: "/", access: accessBearer, method: http.MethodGet, path: "/v2/anything"},

	{pattern: "/monitoring/", access: accessBasic, method: http.MethodGet, path: "/monitoring/api/queues"},
	{pattern: "/monitoring/", access: accessRedirect, method: http.MethodGet, path: "/monitoring"},
	// The console's files: it signs in with a key, which its API calls carry.
	{pattern: "/console/", access: accessOpen, method: http.MethodGet, path: "/console/campaigns"},
	{pattern: "/console/", access: accessRedirect, method: http.MethodGet, path: "/console"},
}

// request returns the method and path of a request that reaches r.
func (r walkRoute) request() (method, path string) {
	method, path = r.method, r.pattern
	if m, p, ok := strings.Cut(r.pattern, " "); ok {
		method, path = m, p
	}
	if r.path != "" {
		return method, r.path
	}
	return method, strings.NewReplacer(
		"{id}", walkID, "{batch_id}", "walk", "{destination}", "96996999699", "{secret}", walkSecret, "{number}", walkSender2,
	).Replace(path)
}

// walkFixture is the API with every optional part (dashboard, metrics,
// policy, inbound forwarding, circuit breaker) on a real port.
type walkFixture struct {
	url   string
	srv   *Server
	rdb   *redis.Client
	store *store.Store
}

type closedCircuit struct{}

func (closedCircuit) State(context.Context) (ratelimit.CircuitState, error) {
	return ratelimit.CircuitState{State: ratelimit.CircuitClosed}, nil
}

type walkTemplates struct{}

func (walkTemplates) Templates(context.Context) ([]chatarchitect.Template, error) {
	return []chatarchitect.Template{{ElementName: "otp_code", LanguageCode: "en", Status: "APPROVED", Data: "Your code is {{1}}."}}, nil
}

func newWalkFixture(t *testing.T) *walkFixture {
	t.Helper()
	return newWalkFixtureWith(t, policy.Config{Source: walkTemplates{}})
}

func newWalkFixtureWith(t *testing.T, pc policy.Config) *walkFixture {
	t.Helper()
	return newWalkFixtureOf(t, pc, store.Config{})
}

// newWalkFixtureOf is the walk's API with a store tuned by sc.
func newWalkFixtureOf(t *testing.T, pc policy.Config, sc store.Config) *walkFixture {
	t.Helper()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	checker := policy.New(rdb, pc)
	client := enqueue.NewClient(rdb, enqueue.Config{Policy: enqueue.CheckerPolicy(checker)})
	t.Cleanup(func() { _ = client.Close() })
	dashboard := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: asynq.RedisClientOpt{Addr: rs.Addr(), DB: rs.DB()}})
	t.Cleanup(func() { _ = dashboard.Close() })
	q := asynq.NewClientFromRedisClient(rdb)
	st := store.New(rdb, sc)
	ch, err := console.Handler()
	if err != nil {
		t.Fatal(err)
	}
	reg := walkRegistry(t, rdb)
	srv, err := New(Config{
		APIKeys: []string{"ck_live_other_key_000000", walkKey}, WebhookSecret: walkSecret,
		Dashboard: dashboard, Metrics: metrics.New(asynq.NewInspectorFromRedisClient(rdb)), Policy: checker,
		Inbound: callback.NewForwarder(rdb, q, time.Hour), Circuit: closedCircuit{}, Console: ch,
		Senders: reg, Keys: tenants.NewKeys(rdb),
		// Nothing listens there: a pass-through that got through answers 502.
		Upstream: chatarchitect.Config{BaseURL: "http://127.0.0.1:1", Timeout: time.Second},
	}, client, st, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &walkFixture{url: ts.URL, srv: srv, rdb: rdb, store: st}
}

// walkRegistry is a sender registry holding walkSender, of tenant walk.
func walkRegistry(t *testing.T, rdb redis.UniversalClient) *senders.Registry {
	t.Helper()
	reg := walkRegistryOn(t, rdb)
	if _, err := reg.Add(context.Background(), senders.Spec{Number: walkSender, AppID: walkApp, AppSecret: walkAppSecret, Tenant: "walk"}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// walkRegistryOn is a registry of the walk's senders on rdb, of a process
// of its own: it reads what is there and reloads only when asked.
func walkRegistryOn(t *testing.T, rdb redis.UniversalClient) *senders.Registry {
	t.Helper()
	c, err := senders.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return senders.New(rdb, senders.Config{Cipher: c, Defaults: senders.Limits{RatePerSecond: 40, RateBurst: 40, PairBurst: 3}})
}

// TestRouteWalkCoversEveryRoute compares walkRoutes with the routes the
// package registers (the route table's layout, and any registration read
// from its source outside routes()), and checks that each table entry's
// request reaches its pattern.
func TestRouteWalkCoversEveryRoute(t *testing.T) {
	registered, err := registeredPatterns(".")
	if err != nil {
		t.Fatal(err)
	}
	f := newWalkFixture(t)
	for _, r := range f.srv.registrations() {
		registered = append(registered, r.pattern)
	}
	var table []string
	for _, r := range walkRoutes {
		table = append(table, r.pattern)
	}
	slices.Sort(registered)
	slices.Sort(table)
	table = slices.Compact(table)
	if diff := cmp.Diff(registered, table); diff != "" {
		t.Errorf("the routes the code registers (-) and walkRoutes (+) differ: add every new route to walkRoutes with who may call it:\n%s", diff)
	}
	for _, r := range walkRoutes {
		method, path := r.request()
		req := httptest.NewRequest(method, path, nil)
		if _, got := f.srv.mux.Handler(req); got != r.pattern {
			t.Errorf("%s %s reaches %q, not %q", method, path, got, r.pattern)
		}
		if r.body != "" && r.limit == 0 {
			t.Errorf("%s takes a body but walkRoutes gives it no limit", r.pattern)
		}
	}
}

// registeredPatterns reads the patterns of every Handle and HandleFunc
// call in the package's non-test files but routes() (which registers the
// route table): a string literal, or the variable of a range over a
// literal list of strings.
func registeredPatterns(dir string) ([]string, error) {
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var patterns []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		var walkErr error
		// Calls inside a range over a literal list of strings register
		// each of them.
		fromRange := map[*ast.CallExpr]bool{}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				return n.Name.Name != "routes" || n.Recv == nil
			case *ast.RangeStmt:
				v, ok := n.Value.(*ast.Ident)
				lit, isLit := n.X.(*ast.CompositeLit)
				if !ok || !isLit {
					return true
				}
				var list []string
				for _, el := range lit.Elts {
					if s, ok := stringLit(el); ok {
						list = append(list, s)
					}
				}
				ast.Inspect(n.Body, func(m ast.Node) bool {
					if call, ok := handleCall(m); ok {
						if id, ok := call.Args[0].(*ast.Ident); ok && id.Name == v.Name {
							fromRange[call] = true
							patterns = append(patterns, list...)
						}
					}
					return true
				})
			case *ast.CallExpr:
				call, ok := handleCall(n)
				if !ok || fromRange[call] {
					return true
				}
				if s, ok := stringLit(call.Args[0]); ok {
					patterns = append(patterns, s)
					return true
				}
				walkErr = fmt.Errorf("%s: a route whose pattern the walk cannot read: register it with a string literal", fset.Position(n.Pos()))
			}
			return true
		})
		if walkErr != nil {
			return nil, walkErr
		}
	}
	return patterns, nil
}

// handleCall reports whether n is a call of a Handle or HandleFunc method
// (a route registration).
func handleCall(n ast.Node) (*ast.CallExpr, bool) {
	call, ok := n.(*ast.CallExpr)
	if !ok || len(call.Args) != 2 {
		return nil, false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
		return nil, false
	}
	return call, true
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// credential is one way of presenting (or not) a key.
type credential struct {
	name  string
	apply func(r *http.Request)
}

func header(name, value string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set(name, value) }
}

func basicAuth(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

// nearMisses are values that are almost key: one character changed,
// added or removed, another case, trailing white space that HTTP keeps.
// (A trailing ASCII space or tab in a header is not part of its value:
// HTTP drops it before any handler sees it, so the same key arrives.)
func nearMisses(key string) []struct{ name, value string } {
	change := func(i int) string {
		b := []byte(key)
		b[i] ^= 0x01
		return string(b)
	}
	return []struct{ name, value string }{
		{"another key", "ck_live_0000000000000000"},
		{"first character changed", change(0)},
		{"middle character changed", change(len(key) / 2)},
		{"last character changed", change(len(key) - 1)},
		{"one character added", key + "0"},
		{"one character put in front", "0" + key},
		{"last character removed", key[:len(key)-1]},
		{"first character removed", key[1:]},
		{"upper case", strings.ToUpper(key)},
		{"trailing no-break space", key + "\u00a0"},
		{"trailing em space", key + "\u2003"},
		{"key twice", key + key},
	}
}

func bearerMisses(key string) []credential {
	creds := []credential{
		{"no Authorization header", func(*http.Request) {}},
		{"scheme alone", header("Authorization", "Bearer")},
		{"empty token", header("Authorization", "Bearer ")},
		{"key without scheme", header("Authorization", key)},
		{"Basic scheme", header("Authorization", "Basic "+key)},
		{"Basic credentials", basicAuth("", key)},
		{"Token scheme", header("Authorization", "Token "+key)},
		{"scheme with a colon", header("Authorization", "Bearer: "+key)},
		{"tab after the scheme", header("Authorization", "Bearer\t"+key)},
		{"two keys", header("Authorization", "Bearer "+key+",ck_live_other_key_000000")},
		{"X-API-Key header", header("X-API-Key", key)},
		{"access_token query", func(r *http.Request) { r.URL.RawQuery = "access_token=" + key }},
		{"api_key query", func(r *http.Request) { r.URL.RawQuery = "api_key=" + key }},
	}
	for _, m := range nearMisses(key) {
		creds = append(creds, credential{m.name, header("Authorization", "Bearer "+m.value)})
	}
	return creds
}

func basicMisses(key string) []credential {
	creds := []credential{
		{"no Authorization header", func(*http.Request) {}},
		{"bearer key", header("Authorization", "Bearer "+key)},
		{"empty password", basicAuth("ops", "")},
		{"key as the user name", basicAuth(key, "")},
		{"trailing space", basicAuth("ops", key+" ")},
		{"leading space", basicAuth("ops", " "+key)},
		{"garbled base64", header("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("ops:" + key))[1:])},
	}
	for _, m := range nearMisses(key) {
		creds = append(creds, credential{m.name, basicAuth("ops", m.value)})
	}
	return creds
}

func (f *walkFixture) do(t *testing.T, method, path, body string, cred func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	cred(req)
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func (f *walkFixture) keys(t *testing.T) []string {
	t.Helper()
	keys, err := f.rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// TestEveryGuardedRouteRefusesNearMisses walks walkRoutes: each guarded
// route refuses a missing key, a wrong one, every near miss and the wrong
// scheme, and stores nothing; the webhook refuses near misses of its secret
// with a 404 and records nothing. The right credentials then get through,
// so that the walk can fail.
func TestEveryGuardedRouteRefusesNearMisses(t *testing.T) {
	f := newWalkFixture(t)
	ctx := context.Background()
	// A message that the webhook's delivered event names, so that a wrong
	// secret that got through would change it.
	res, err := f.srv.client.Send(ctx, &enqueue.Message{Destination: "96996999691", Payload: &enqueue.Text{Message: "walk"}})
	if err != nil {
		t.Fatal(err)
	}
	id := res.ID
	if _, _, err := f.store.Begin(ctx, id, time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, id, "pid-walk", time.Now()); err != nil {
		t.Fatal(err)
	}
	before := f.keys(t)

	for _, r := range walkRoutes {
		method, path := r.request()
		switch r.access {
		case accessBearer:
			for _, c := range bearerMisses(walkKey) {
				resp, body := f.do(t, method, path, r.body, c.apply)
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"code":"unauthorized"`) ||
					!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s, %s: %d %s, want 401 unauthorized with a Bearer challenge", method, path, c.name, resp.StatusCode, body)
				}
			}
		case accessBasic:
			for _, c := range basicMisses(walkKey) {
				resp, body := f.do(t, method, path, r.body, c.apply)
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
					t.Errorf("%s %s, %s: %d %s, want 401 with a Basic challenge", method, path, c.name, resp.StatusCode, body)
				}
			}
		case accessApp:
			misses := append(basicMisses(walkAppSecret),
				credential{"admin key as the secret", basicAuth(walkApp, walkKey)},
				credential{"secret of another app", basicAuth("app_other", walkAppSecret)},
				credential{"app id near miss", basicAuth(walkApp+"x", walkAppSecret)})
			for _, c := range misses {
				resp, body := f.do(t, method, path, r.body, c.apply)
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"status":"error"`) ||
					!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
					t.Errorf("%s %s, %s: %d %s, want 401 with a Basic challenge", method, path, c.name, resp.StatusCode, body)
				}
			}
		case accessWebhook:
			base := strings.TrimSuffix(path, walkSecret)
			for _, m := range append(nearMisses(walkSecret), struct{ name, value string }{"trailing space", walkSecret + "%20"}) {
				secret := m.value
				if !strings.Contains(secret, "%") {
					secret = escapeSegment(m.value)
				}
				resp, body := f.do(t, method, base+secret, r.body, func(*http.Request) {})
				if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"code":"not_found"`) {
					t.Errorf("webhook, secret %s: %d %s, want 404", m.name, resp.StatusCode, body)
				}
			}
			for _, p := range []string{base, base + walkSecret + "/x", strings.ToUpper(base) + walkSecret} {
				if resp, body := f.do(t, method, p, r.body, func(*http.Request) {}); resp.StatusCode == http.StatusOK {
					t.Errorf("webhook at %s: %d %s, want a refusal", p, resp.StatusCode, body)
				}
			}
		}
	}
	if diff := cmp.Diff(before, f.keys(t)); diff != "" {
		t.Errorf("refused requests changed Redis (-before +after):\n%s", diff)
	}
	if rec, err := f.store.Get(ctx, id); err != nil || rec.Status != store.Submitted {
		t.Errorf("after webhooks with wrong secrets: %v %v, want the record still submitted", rec.Status, err)
	}

	// The right credentials get through: the walk can tell.
	for _, r := range walkRoutes {
		method, path := r.request()
		var resp *http.Response
		var body []byte
		switch r.access {
		case accessOpen:
			resp, body = f.do(t, method, path, r.body, func(*http.Request) {})
			want := http.StatusOK
			if r.pattern == "/" {
				want = http.StatusMethodNotAllowed // a wrong method on an open path
			}
			if resp.StatusCode != want {
				t.Errorf("%s %s without a key: %d %s, want %d", method, path, resp.StatusCode, body, want)
			}
			continue
		case accessRedirect:
			resp, _ = f.do(t, method, path, r.body, func(*http.Request) {})
			if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != path+"/" {
				t.Errorf("%s %s: %d to %q, want the mux's 307 to %s/", method, path, resp.StatusCode, resp.Header.Get("Location"), path)
			}
			continue
		case accessWebhook:
			resp, body = f.do(t, method, path, r.body, func(*http.Request) {})
		case accessBearer:
			resp, body = f.do(t, method, path, r.body, header("Authorization", "bearer  "+walkKey))
		case accessBasic:
			resp, body = f.do(t, method, path, r.body, basicAuth("anyone", walkKey))
		case accessApp:
			resp, body = f.do(t, method, path, r.body, basicAuth(walkApp, walkAppSecret))
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound && r.access == accessWebhook {
			t.Errorf("%s %s with the right credentials: %d %s", method, path, resp.StatusCode, body)
		}
	}
	if rec, err := f.store.Get(ctx, id); err != nil || rec.Status != store.Delivered {
		t.Errorf("after the webhook with the right secret: %v %v, want delivered", rec.Status, err)
	}
}

// escapeSegment escapes the spaces and non-ASCII bytes of a path segment.
func escapeSegment(segment string) string {
	var b strings.Builder
	for _, c := range []byte(segment) {
		if c >= 0x80 || c == ' ' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// TestBodiesAreBounded sends each route that reads a body one byte more
// than its limit (declared in walkRoutes, with the right credentials) and
// expects a 413, whether the body's length is announced or streamed.
func TestBodiesAreBounded(t *testing.T) {
	f := newWalkFixture(t)
	for _, r := range walkRoutes {
		if r.limit == 0 {
			continue
		}
		method, path := r.request()
		// A JSON string as long as the limit allows, then one more byte.
		big := append([]byte(`"`), bytes.Repeat([]byte("x"), int(r.limit)-1)...)
		big = append(big, '"')
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = bytes.NewReader(big)
			if chunked {
				rd = io.MultiReader(rd)
			}
			req, err := http.NewRequestWithContext(context.Background(), method, f.url+path, rd)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+walkKey)
			if r.access == accessApp {
				req.SetBasicAuth(walkApp, walkAppSecret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				Error  struct{ Code string } `json:"error"`
				Status string                `json:"status"` // the drop-in routes answer as ChatArchitect does
			}
			_ = json.Unmarshal(body, &e)
			if r.access == accessApp && e.Status == "error" {
				e.Error.Code = "body_too_large"
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Code != "body_too_large" {
				t.Errorf("%s %s with %d bytes (chunked %v): %d %s, want 413 body_too_large", method, path, len(big), chunked, resp.StatusCode, body)
			}
		}
	}
}

// TestKeysAreComparedInConstantTime guards the comparisons themselves: a
// key check must go through crypto/subtle for every configured key, and
// near misses must fail it.
func TestKeysAreComparedInConstantTime(t *testing.T) {
	src, err := os.ReadFile("server.go")
	if err != nil {
		t.Fatal(err)
	}
	hook, err := os.ReadFile("webhook.go")
	if err != nil {
		t.Fatal(err)
	}
	for file, code := range map[string][]byte{"server.go": src, "webhook.go": hook} {
		if !bytes.Contains(code, []byte("subtle.ConstantTimeCompare(")) {
			t.Errorf("%s compares secrets without crypto/subtle", file)
		}
	}
	s := &Server{cfg: Config{APIKeys: []string{"ck_live_other_key_000000", walkKey}}}
	if !s.validKey(walkKey) || !s.validKey("ck_live_other_key_000000") {
		t.Error("validKey refuses a configured key")
	}
	for _, m := range append(nearMisses(walkKey), struct{ name, value string }{"empty", ""}) {
		if s.validKey(m.value) {
			t.Errorf("validKey accepts the %s", m.name)
		}
	}
}

// TestPrivateCallbackURLsAreRefused checks at the API what the policy's
// own tests check below it: a callback URL on a loopback, private,
// link-local or unique-local address is refused with a 422 naming the
// field, unless private callbacks are allowed (CHATQ_CALLBACK_ALLOW_PRIVATE).
func TestPrivateCallbackURLsAreRefused(t *testing.T) {
	urls := []string{
		"http://127.0.0.1:8080/cb", "http://localhost/cb", "http://10.1.2.3/cb", "http://192.168.0.10/cb",
		"http://172.16.5.4/cb", "http://169.254.169.254/latest/meta-data", "http://[::1]/cb", "http://[fd00::1]/cb",
		"http://0.0.0.0/cb", "http://100.64.0.1/cb",
	}
	post := func(f *walkFixture, i int, u string) (int, string) {
		body := fmt.Sprintf(`{"destination":"9699699%04d","payload":{"type":"text","message":"hi"},"callback_url":%q}`, i, u)
		resp, b := f.do(t, http.MethodPost, "/v1/messages", body, header("Authorization", "Bearer "+walkKey))
		return resp.StatusCode, string(b)
	}
	refusing := newWalkFixture(t)
	for i, u := range urls {
		if code, body := post(refusing, i, u); code != http.StatusUnprocessableEntity ||
			!strings.Contains(body, `"code":"callback_url_refused"`) || !strings.Contains(body, `"field":"callback_url"`) {
			t.Errorf("callback_url %s: %d %s, want 422 callback_url_refused", u, code, body)
		}
	}
	allowing := newWalkFixtureWith(t, policy.Config{Source: walkTemplates{}, AllowPrivateCallbacks: true})
	for i, u := range urls {
		if code, body := post(allowing, i, u); code != http.StatusAccepted {
			t.Errorf("callback_url %s with private callbacks allowed: %d %s, want 202", u, code, body)
		}
	}
}
