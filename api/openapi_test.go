package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/console"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
	"github.com/chatq/chatq/worker"
)

// The OpenAPI document is checked with pb33f/libopenapi-validator: it is
// built for OpenAPI 3.1 (JSON Schema 2020-12: type arrays with "null",
// const, unevaluatedProperties, discriminated oneOf), validates response
// headers as well as bodies, and is kept up. kin-openapi reads 3.1 only in
// part.

const (
	docKey    = "ck_live_doc_9c1e7a3f5b2d"
	docSecret = "whsec_doc_4e8a2c6f"
	// docSender is the stored sender of tenant acme, of the sandbox's app.
	docSender = "15550001234"
)

// docFixture is the API with every optional part on a real port, its own
// Redis, the sandbox as ChatArchitect, and its logs observed.
type docFixture struct {
	url     string
	srv     *Server
	redis   *redistest.Server
	store   *store.Store
	inspect *asynq.Inspector
	sandbox *httptest.Server
	circuit *ratelimit.Circuit
	logs    *observer.ObservedLogs
	http    *http.Client
	// tenantKey is a key of tenant acme.
	tenantKey string
}

func newDocFixture(t *testing.T) *docFixture {
	t.Helper()
	rs := redistest.Start(t)
	if !rs.CanRestart() {
		t.Skip("needs a private redis-server, to answer 503")
	}
	rdb := rs.Client(t)
	sb, err := sandbox.New(sandbox.Config{AppID: "app", AppSecret: "sbx_secret"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	t.Cleanup(func() { sbSrv.Close(); sb.Close() })
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: sbSrv.URL, AppID: "app", AppSecret: "sbx_secret", Source: "15550001234", Timeout: 2 * time.Second}, nil)
	checker := policy.New(rdb, policy.Config{Source: ca})
	client := enqueue.NewClient(rdb, enqueue.Config{Policy: enqueue.CheckerPolicy(checker)})
	t.Cleanup(func() { _ = client.Close() })
	dashboard := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: asynq.RedisClientOpt{Addr: rs.Addr(), DB: rs.DB()}})
	t.Cleanup(func() { _ = dashboard.Close() })
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	st := store.New(rdb, store.Config{})
	circuit := ratelimit.NewCircuit(rdb)
	cipher, err := senders.NewCipher(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	reg := senders.New(rdb, senders.Config{Cipher: cipher, Defaults: senders.Limits{RatePerSecond: 40, RateBurst: 40, PairBurst: 3}})
	if _, err := reg.Add(context.Background(), senders.Spec{Number: docSender, AppID: "app", AppSecret: "sbx_secret", Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	keys := tenants.NewKeys(rdb)
	_, tenantKey, err := keys.Create(context.Background(), "acme", "doc")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := console.Handler()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		APIKeys: []string{docKey}, WebhookSecret: docSecret,
		Dashboard: dashboard, Metrics: metrics.New(asynq.NewInspectorFromRedisClient(rdb)), Policy: checker,
		Inbound: callback.NewForwarder(rdb, asynq.NewClientFromRedisClient(rdb), time.Hour),
		// The workers' view of the circuit breaker and the throttles, in
		// this Redis; circuit opens and closes it.
		Circuit: worker.NewCircuit(rdb, log),
		Console: ch, Senders: reg, SenderStates: ratelimit.NewStates(rdb, ""), Keys: keys,
		Upstream: chatarchitect.Config{BaseURL: sbSrv.URL, Timeout: 2 * time.Second},
	}, client, st, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &docFixture{
		url: ts.URL, srv: srv, redis: rs, store: st, inspect: asynq.NewInspectorFromRedisClient(rdb), sandbox: sbSrv, circuit: circuit, logs: logs,
		http:      &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		tenantKey: tenantKey,
	}
}

// call is one request of the walk below.
type call struct {
	// route is the route of the table the request is for ("GET
	// /v1/messages/{id}"); empty for one that no route takes.
	route        string
	method, path string
	body         string
	// contentType: empty is application/json, "-" none.
	contentType string
	// auth: empty is the bearer key; "none", "basic", "tenant" (the
	// tenant key), "app" (the sender's app credentials) or "app-wrong".
	auth   string
	header map[string]string
	want   int
	// beyond: the server takes the request though the document does not
	// describe it (a batch's bad message is answered in its result).
	beyond bool
}

// docCheck sends calls and holds every answer to the document.
type docCheck struct {
	f   *docFixture
	doc *v3.Document
	v   validator.Validator
	// validated: the routes with an answer checked; statuses: the
	// statuses seen.
	validated map[string]bool
	statuses  map[int]bool
}

func newDocCheck(t *testing.T, f *docFixture) *docCheck {
	t.Helper()
	// The document as GET /openapi.json serves it.
	resp, err := f.http.Get(f.url + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	d, err := libopenapi.NewDocument(served)
	if err != nil {
		t.Fatal(err)
	}
	m, err := d.BuildV3Model()
	if err != nil {
		t.Fatalf("build the document's model: %v", err)
	}
	if got := m.Model.Version; got != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", got)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("the document is not valid OpenAPI: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s: %s", se.FieldPath+" "+se.KeywordLocation, se.Reason)
			}
		}
		t.FailNow()
	}
	return &docCheck{f: f, doc: &m.Model, v: v, validated: map[string]bool{}, statuses: map[int]bool{}}
}

// do sends c, checks its status, and validates the answer against the
// document: against the route's operation, or, for what no route takes,
// against the document's MethodNotAllowed or NotFound answer.
func (d *docCheck) do(t *testing.T, c call) []byte {
	t.Helper()
	name := c.method + " " + c.path
	req, err := http.NewRequestWithContext(context.Background(), c.method, d.f.url+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	switch c.contentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", c.contentType)
	}
	switch c.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+docKey)
	case "basic":
		req.SetBasicAuth("ops", docKey)
	case "tenant":
		req.Header.Set("Authorization", "Bearer "+d.f.tenantKey)
	case "app":
		req.SetBasicAuth("app", "sbx_secret")
	case "app-wrong":
		req.SetBasicAuth("app", "wrong")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := d.f.http.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: read answer: %v", name, err)
	}
	if resp.StatusCode != c.want {
		t.Errorf("%s: %d %s, want %d", name, resp.StatusCode, body, c.want)
		return body
	}
	d.statuses[resp.StatusCode] = true

	// The validator reads the request's path and headers and the answer.
	vreq, _ := http.NewRequestWithContext(context.Background(), c.method, d.f.url+c.path, strings.NewReader(c.body))
	vreq.Header = req.Header.Clone()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var errs []string
	if c.route == "" || resp.StatusCode == http.StatusMethodNotAllowed {
		errs = d.validateAnswer(vreq, resp, body)
	} else {
		if ok, verrs := d.v.ValidateHttpResponse(vreq, resp); !ok {
			for _, e := range verrs {
				errs = append(errs, describe(e.Message, e.Reason, e.SchemaValidationErrors))
			}
		}
		d.validated[c.route] = true
		// A request the server took is one the document allows.
		if resp.StatusCode < 300 && !c.beyond {
			rreq, _ := http.NewRequestWithContext(context.Background(), c.method, d.f.url+c.path, strings.NewReader(c.body))
			rreq.Header = req.Header.Clone()
			if ok, verrs := d.v.ValidateHttpRequest(rreq); !ok {
				for _, e := range verrs {
					errs = append(errs, "request: "+describe(e.Message, e.Reason, e.SchemaValidationErrors))
				}
			}
		}
	}
	dropIn := strings.HasPrefix(c.auth, "app")
	if resp.StatusCode >= 400 && dropIn {
		// The drop-in routes answer errors as ChatArchitect does.
		var e struct{ Status, Message string }
		if err := json.Unmarshal(body, &e); err != nil || e.Status != "error" || e.Message == "" {
			errs = append(errs, `a drop-in error not shaped {"status":"error","message"}`)
		}
	} else if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") == "application/json" {
		// Every error body's code is in the one table, with its status
		// (/readyz's 503 is a readiness answer, not an error).
		var e struct {
			Error *Error `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil {
			errs = append(errs, "error body: "+err.Error())
		} else if e.Error == nil {
			if c.route != "GET /readyz" {
				errs = append(errs, "an error answer without an error body")
			}
		} else if st, ok := errorCodes[e.Error.Code]; !ok || st != resp.StatusCode {
			errs = append(errs, fmt.Sprintf("error code %q with status %d is not in errorCodes (it says %d)", e.Error.Code, resp.StatusCode, st))
		}
	}
	for _, e := range errs {
		t.Errorf("%s: %d %s\n  does not match the document: %s", name, resp.StatusCode, clip(body), e)
	}
	return body
}

func describe(message, reason string, schemaErrs []*liberrors.SchemaValidationFailure) string {
	s := message + ": " + reason
	for _, se := range schemaErrs {
		s += fmt.Sprintf("\n    %s: %s", se.FieldPath+" "+se.KeywordLocation, se.Reason)
	}
	return s
}

// validateAnswer checks an answer that no operation describes against the
// document's answer of its status in components.
func (d *docCheck) validateAnswer(req *http.Request, resp *http.Response, body []byte) []string {
	names := map[int]string{http.StatusMethodNotAllowed: "MethodNotAllowed", http.StatusNotFound: "NotFound", http.StatusUnauthorized: "Unauthorized"}
	name, ok := names[resp.StatusCode]
	if !ok {
		return []string{fmt.Sprintf("the document describes no %d answer outside its routes", resp.StatusCode)}
	}
	r, ok := d.doc.Components.Responses.Get(name)
	if !ok {
		return []string{"components.responses has no " + name}
	}
	var errs []string
	code := strconv.Itoa(resp.StatusCode)
	if ok, verrs := responses.ValidateResponseHeaders(req, resp, r.Headers, req.URL.Path, code); !ok {
		for _, e := range verrs {
			errs = append(errs, describe(e.Message, e.Reason, e.SchemaValidationErrors))
		}
	}
	mt, ok := r.Content.Get(resp.Header.Get("Content-Type"))
	if !ok {
		return append(errs, "components.responses."+name+" has no content of type "+resp.Header.Get("Content-Type"))
	}
	if ok, verrs := schema_validation.NewSchemaValidator().ValidateSchemaBytes(mt.Schema.Schema(), body); !ok {
		for _, e := range verrs {
			errs = append(errs, describe(e.Message, e.Reason, e.SchemaValidationErrors))
		}
	}
	return errs
}

func clip(b []byte) []byte {
	if len(b) > 600 {
		return append(b[:600:600], "..."...)
	}
	return b
}

// tableRoutes names the server's routes as the calls do.
func tableRoutes(s *Server) []string {
	var out []string
	for _, rt := range s.routeTable() {
		out = append(out, cmpOr(rt.method, http.MethodGet)+" "+rt.pattern)
	}
	return out
}

// TestOpenAPIDescribesEveryRoute holds the route table and the document's
// operations to each other: a route added without its documentation (or
// documented without being served) fails here. Routes must be registered
// through the table, which the walk in security_test.go checks too.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	f := newDocFixture(t)
	d := newDocCheck(t, f)
	var documented []string
	for path, item := range d.doc.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	served := tableRoutes(f.srv)
	slices.Sort(documented)
	slices.Sort(served)
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("the routes served (-) and those api/openapi.yaml documents (+) differ:\n%s", diff)
	}
	direct, err := registeredPatterns(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(direct) > 0 {
		t.Errorf("routes registered outside the route table (routeTable in server.go): %v", direct)
	}
	// Every error code of the table is in the document, and only those.
	schema, ok := d.doc.Components.Schemas.Get("ErrorCode")
	if !ok {
		t.Fatal("components.schemas has no ErrorCode")
	}
	var enum, table []string
	for _, n := range schema.Schema().Enum {
		enum = append(enum, n.Value)
	}
	for code := range errorCodes {
		table = append(table, code)
	}
	slices.Sort(enum)
	slices.Sort(table)
	if diff := cmp.Diff(table, enum); diff != "" {
		t.Errorf("errorCodes (-) and the document's ErrorCode (+) differ:\n%s", diff)
	}
}

// TestOpenAPIAnswers drives every route with good and bad requests on the
// real server and validates every answer (status, documented headers,
// body) against the document. It fails when a route has no validated
// answer, or when an error status the server can answer was not seen.
func TestOpenAPIAnswers(t *testing.T) {
	f := newDocFixture(t)
	d := newDocCheck(t, f)
	ctx := context.Background()

	const text = `{"channel":"whatsapp","destination":"96996999699","payload":{"type":"text","message":"Hi John, how are you?"}}`
	msg := func(dest, payload, extra string) string {
		return `{"destination":"` + dest + `","payload":` + payload + extra + `}`
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	muchLater := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	var id struct {
		ID string `json:"id"`
	}
	tooBig := `{"destination":"96996999699","payload":{"type":"text","message":"` + strings.Repeat("x", MaxMessageBody) + `"}}`

	// System routes.
	for _, c := range []call{
		{route: "GET /healthz", method: "GET", path: "/healthz", auth: "none", want: 200},
		{route: "GET /readyz", method: "GET", path: "/readyz", auth: "none", want: 200},
		{route: "GET /metrics", method: "GET", path: "/metrics", auth: "none", want: 200},
		{route: "GET /openapi.json", method: "GET", path: "/openapi.json", auth: "none", want: 200},
		{method: "POST", path: "/healthz", auth: "none", want: 405},
		{method: "PUT", path: "/openapi.json", auth: "none", want: 405},
		{method: "GET", path: "/v2/anything", want: 404},
		{method: "GET", path: "/v2/anything", auth: "none", want: 401},
		{route: "GET /monitoring/", method: "GET", path: "/monitoring/", auth: "basic", want: 200},
		{route: "GET /monitoring/", method: "GET", path: "/monitoring/", auth: "none", want: 401},
	} {
		d.do(t, c)
	}
	// The circuit breaker open: /readyz tells since when, and the next probe.
	if _, err := f.circuit.Open(ctx, ratelimit.Trip{Reason: "Authentication Failed", Code: "http_401", MessageID: "01JDOC", FirstProbe: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if b := d.do(t, call{route: "GET /readyz", method: "GET", path: "/readyz", auth: "none", want: 200}); !strings.Contains(string(b), `"next_probe"`) {
		t.Errorf("GET /readyz with the circuit open: %s, want its since and next_probe", b)
	}
	if _, err := f.circuit.Close(ctx, false); err != nil {
		t.Fatal(err)
	}
	// A 429's Retry-After holds a sender back: /readyz names it, and until
	// when (the document holds until to the one timestamp form).
	held := ratelimit.New(f.redis.Client(t), ratelimit.Config{Sender: docSender, Rate: 10}, nil)
	if _, err := held.Throttle(ctx, time.Hour, ratelimit.Cause{Code: "http_429", Reason: "Too Many Requests"}); err != nil {
		t.Fatal(err)
	}
	if b := d.do(t, call{route: "GET /readyz", method: "GET", path: "/readyz", auth: "none", want: 200}); !strings.Contains(string(b), `"throttles":[{"sender":"`+docSender+`"`) {
		t.Errorf("GET /readyz with a sender throttled: %s, want its throttle", b)
	}
	if _, err := ratelimit.NewThrottles(f.redis.Client(t)).Clear(ctx); err != nil {
		t.Fatal(err)
	}
	// A sender's own circuit lets its trial through: /readyz lists the
	// sender half open.
	own := ratelimit.NewSenderCircuit(f.redis.Client(t), docSender)
	if _, err := own.Open(ctx, ratelimit.Trip{Reason: "Authentication Failed", Code: "http_401", FirstProbe: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := own.HalfOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if b := d.do(t, call{route: "GET /readyz", method: "GET", path: "/readyz", auth: "none", want: 200}); !strings.Contains(string(b), `"number":"`+docSender+`","tenant":"acme","state":"half_open"`) {
		t.Errorf("GET /readyz with a sender's circuit half open: %s, want the sender half_open", b)
	}
	if _, err := own.Close(ctx, false); err != nil {
		t.Fatal(err)
	}

	// Messages, one of each payload type.
	const sendRoute = "POST /v1/messages"
	payloads := []string{
		`{"type":"text","message":"Hi","previewUrl":false}`,
		`{"type":"image","originalUrl":"https://example.com/a.jpg","previewUrl":"https://example.com/a_s.jpg","caption":"A"}`,
		`{"type":"audio","url":"https://example.com/a.mp3"}`,
		`{"type":"video","url":"https://example.com/a.mp4","caption":"V"}`,
		`{"type":"file","url":"https://example.com/a.pdf","filename":"a.pdf"}`,
		`{"type":"location","latitude":52.52,"longitude":13.40,"name":"Berlin"}`,
		`{"type":"contact","contact":{"name":{"formattedName":"John Doe"},"phones":[{"phone":"+4915112345678","type":"CELL"}]}}`,
		`{"type":"list","title":"Menu","body":"Pick one","msgid":"l1","globalButtons":[{"type":"text","title":"Open"}],"items":[{"title":"Main","options":[{"type":"text","title":"Soup"}]}]}`,
		`{"type":"quick_reply","content":{"type":"text","text":"Yes or no?"},"options":[{"type":"text","title":"Yes"},{"type":"text","title":"No"}]}`,
		`{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["123456"]}}`,
	}
	for _, p := range payloads {
		d.do(t, call{route: sendRoute, method: "POST", path: "/v1/messages", body: msg("96996999699", p, `,"batch_id":"doc"`), want: 202})
	}
	scheduled := d.do(t, call{route: sendRoute, method: "POST", path: "/v1/messages", header: map[string]string{"Idempotency-Key": "doc-1"},
		body: msg("96996999698", payloads[0], `,"send_at":"`+later+`","expires_at":"`+muchLater+`","priority":"bulk","metadata":{"order":"1"},"callback_url":"https://93.184.215.14/hook","batch_id":"doc"`), want: 202})
	if err := json.Unmarshal(scheduled, &id); err != nil || id.ID == "" {
		t.Fatalf("POST /v1/messages: %s", scheduled)
	}
	for _, c := range []call{
		{route: sendRoute, method: "POST", path: "/v1/messages", header: map[string]string{"Idempotency-Key": "doc-1"},
			body: msg("96996999698", payloads[0], `,"send_at":"`+later+`","expires_at":"`+muchLater+`","priority":"bulk","metadata":{"order":"1"},"callback_url":"https://93.184.215.14/hook","batch_id":"doc"`), want: 200},
		{route: sendRoute, method: "POST", path: "/v1/messages", header: map[string]string{"Idempotency-Key": "doc-1"}, body: text, want: 409},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: `{"destination":"96996999699"}`, want: 400},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: msg("12", payloads[0], ""), want: 400},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: text, auth: "none", want: 401},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: text, contentType: "text/plain", want: 415},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: tooBig, want: 413},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: msg("96996999699", `{"type":"template","template":{"elementName":"no_such_template","languageCode":"en"}}`, ""), want: 422},
		{method: "PATCH", path: "/v1/messages", want: 405},
		{method: "PATCH", path: "/v1/messages", auth: "none", want: 401},
	} {
		d.do(t, c)
	}

	// Batches.
	const batchRoute = "POST /v1/messages/batch"
	for _, c := range []call{
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{"messages":[` + msg("96996999697", payloads[0], `,"batch_id":"doc","idempotency_key":"doc-b1"`) + `,{"destination":"x"}]}`, want: 200, beyond: true},
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{"messages":[` + msg("96996999697", payloads[0], `,"batch_id":"doc","idempotency_key":"doc-b1"`) + `]}`, want: 200},
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{"messages":[]}`, want: 400},
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{"messages":[]}`, contentType: "-", want: 415},
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{"messages":[` + strings.Repeat(`"`+strings.Repeat("x", 1<<20)+`",`, MaxBatchBody>>20) + `1]}`, want: 413},
		{route: batchRoute, method: "POST", path: "/v1/messages/batch", body: `{}`, auth: "none", want: 401},
		{method: "GET", path: "/v1/messages/batch/x", want: 404},
	} {
		d.do(t, c)
	}

	// One message, and campaigns.
	for _, c := range []call{
		{route: "GET /v1/messages/{id}", method: "GET", path: "/v1/messages/" + id.ID, want: 200},
		{route: "GET /v1/messages/{id}", method: "GET", path: "/v1/messages/01JNOSUCHMESSAGE0000000000", want: 404},
		{route: "GET /v1/messages/{id}", method: "GET", path: "/v1/messages/" + id.ID, auth: "none", want: 401},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages?batch_id=doc&limit=2", want: 200},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages?batch_id=doc&status=scheduled,queued&destination=96996999698", want: 200},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages", want: 400},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages?batch_id=doc&cursor=nonsense", want: 400},
		{route: "GET /v1/batches/{batch_id}", method: "GET", path: "/v1/batches/doc", want: 200},
		{route: "GET /v1/batches/{batch_id}", method: "GET", path: "/v1/batches/none", want: 404},
		{route: "GET /v1/batches/{batch_id}", method: "GET", path: "/v1/batches/doc?x=1", want: 400},
		{route: "DELETE /v1/messages/{id}", method: "DELETE", path: "/v1/messages/" + id.ID, want: 200},
		{route: "DELETE /v1/messages/{id}", method: "DELETE", path: "/v1/messages/" + id.ID, want: 409},
		{route: "DELETE /v1/messages/{id}", method: "DELETE", path: "/v1/messages/01JNOSUCHMESSAGE0000000000", want: 404},
		{route: "DELETE /v1/messages", method: "DELETE", path: "/v1/messages?batch_id=doc", want: 200},
		{route: "DELETE /v1/messages", method: "DELETE", path: "/v1/messages?batch_id=none", want: 404},
		{route: "DELETE /v1/messages", method: "DELETE", path: "/v1/messages", want: 400},
	} {
		d.do(t, c)
	}
	// The history of a canceled message, its record in full.
	d.do(t, call{route: "GET /v1/messages/{id}", method: "GET", path: "/v1/messages/" + id.ID, want: 200})

	// Dead letters: a message that a worker gave up on.
	dead := d.do(t, call{route: sendRoute, method: "POST", path: "/v1/messages", body: msg("96996999696", payloads[0], `,"batch_id":"dead"`), want: 202})
	if err := json.Unmarshal(dead, &id); err != nil {
		t.Fatal(err)
	}
	rec, err := f.store.Get(ctx, id.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.inspect.ArchiveTask(rec.Queue, id.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.store.Move(ctx, id.ID, store.Change{Status: store.Dead, At: time.Now(),
		Error: &store.ErrorInfo{Class: "permanent", Code: "1002", Message: "Invalid Destination", At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []call{
		{route: "GET /v1/dead-letters", method: "GET", path: "/v1/dead-letters?class=permanent&newer_than=1h&limit=10", want: 200},
		{route: "GET /v1/dead-letters", method: "GET", path: "/v1/dead-letters?class=doomed", want: 400},
		{route: "POST /v1/dead-letters/retry", method: "POST", path: "/v1/dead-letters/retry", body: `{"ids":["` + id.ID + `","01JNOSUCHMESSAGE0000000000"]}`, want: 200},
		{route: "POST /v1/dead-letters/retry", method: "POST", path: "/v1/dead-letters/retry", body: `{"filter":{"class":"retryable"}}`, want: 200},
		{route: "POST /v1/dead-letters/retry", method: "POST", path: "/v1/dead-letters/retry", body: `{}`, want: 400},
		{route: "POST /v1/dead-letters/retry", method: "POST", path: "/v1/dead-letters/retry", body: `{}`, contentType: "text/plain", want: 415},
		{route: "POST /v1/dead-letters/retry", method: "POST", path: "/v1/dead-letters/retry", body: `{"ids":["` + strings.Repeat("x", maxOperationBody) + `"]}`, want: 413},
		{method: "GET", path: "/v1/dead-letters/retry", want: 405},
	} {
		d.do(t, c)
	}

	// Suppressions and the policy's refusals.
	const sup = "/v1/suppressions/4915112345670"
	for _, c := range []call{
		{route: "PUT /v1/suppressions/{destination}", method: "PUT", path: sup, body: `{"reason":"asked us to stop"}`, want: 200},
		{route: "PUT /v1/suppressions/{destination}", method: "PUT", path: "/v1/suppressions/4915112345671", contentType: "-", want: 200},
		{route: "PUT /v1/suppressions/{destination}", method: "PUT", path: sup, body: `{"why":"x"}`, want: 400},
		{route: "PUT /v1/suppressions/{destination}", method: "PUT", path: sup, body: `{"reason":"x"}`, contentType: "text/plain", want: 415},
		{route: "PUT /v1/suppressions/{destination}", method: "PUT", path: sup, body: `{"reason":"` + strings.Repeat("x", maxSuppressionBody) + `"}`, want: 413},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: msg("4915112345670", payloads[0], ""), want: 422},
		{route: "GET /v1/suppressions/{destination}", method: "GET", path: sup, want: 200},
		{route: "GET /v1/suppressions/{destination}", method: "GET", path: "/v1/suppressions/4915112345679", want: 404},
		{route: "GET /v1/suppressions/{destination}", method: "GET", path: "/v1/suppressions/abc", want: 400},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?limit=1", want: 200},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?tenant=acme", want: 200},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?tenant=Bad!", want: 400},
		{route: "GET /v1/dead-letters", method: "GET", path: "/v1/dead-letters?tenant=acme", want: 200},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?limit=0", want: 400},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?cursor=x", want: 400},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions?page=2", want: 400},
		{route: "DELETE /v1/suppressions/{destination}", method: "DELETE", path: sup, want: 200},
		{route: "DELETE /v1/suppressions/{destination}", method: "DELETE", path: sup, want: 404},
		{route: "DELETE /v1/suppressions/{destination}", method: "DELETE", path: "/v1/suppressions/abc", want: 400},
		{method: "POST", path: sup, want: 405},
	} {
		d.do(t, c)
	}

	// The console's routes, with an admin key and with a tenant key.
	for _, c := range []call{
		{route: "GET /v1/stats", method: "GET", path: "/v1/stats?minutes=5", want: 200},
		{route: "GET /v1/stats", method: "GET", path: "/v1/stats", auth: "tenant", want: 200},
		{route: "GET /v1/stats", method: "GET", path: "/v1/stats?minutes=999", want: 400},
		{route: "GET /v1/stats", method: "GET", path: "/v1/stats", auth: "none", want: 401},
		{route: "GET /v1/batches", method: "GET", path: "/v1/batches?limit=1", want: 200},
		{route: "GET /v1/batches", method: "GET", path: "/v1/batches", auth: "tenant", want: 200},
		{route: "GET /v1/batches", method: "GET", path: "/v1/batches?tenant=other", auth: "tenant", want: 403},
		{route: "GET /v1/batches", method: "GET", path: "/v1/batches?limit=0", want: 400},
		{route: "POST /v1/messages/validate", method: "POST", path: "/v1/messages/validate",
			body: `{"messages":[` + msg("96996999699", payloads[0], "") + `,{"destination":"x"}]}`, want: 200, beyond: true},
		{route: "POST /v1/messages/validate", method: "POST", path: "/v1/messages/validate", body: `{"messages":[` + msg("96996999699", payloads[0], "") + `]}`, want: 200},
		{route: "POST /v1/messages/validate", method: "POST", path: "/v1/messages/validate", body: `{"messages":[]}`, want: 400},
		{route: "POST /v1/messages/validate", method: "POST", path: "/v1/messages/validate", body: `{}`, contentType: "text/plain", want: 415},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages?destination=96996999699&limit=1", want: 200},
		{route: "GET /v1/messages", method: "GET", path: "/v1/messages?batch_id=doc&tenant=other", auth: "tenant", want: 403},
		{route: "GET /v1/dead-letters", method: "GET", path: "/v1/dead-letters", auth: "tenant", want: 200},
		{route: "GET /console/", method: "GET", path: "/console/", auth: "none", want: 200},
		{method: "PATCH", path: "/v1/stats", want: 405},
	} {
		d.do(t, c)
	}
	// A tenant key's message names its sender, or none.
	for _, c := range []call{
		{route: sendRoute, method: "POST", path: "/v1/messages", auth: "tenant", body: msg("96996999695", payloads[0], `,"sender":"`+docSender+`"`), want: 202},
		{route: sendRoute, method: "POST", path: "/v1/messages", auth: "tenant", body: msg("96996999695", payloads[0], `,"sender":"4915100000001"`), want: 422},
	} {
		d.do(t, c)
	}

	// Senders and tenant keys: admin keys alone.
	const other = "4915100000077"
	senderBody := `{"number":"` + other + `","app_id":"app_other","app_secret":"s3cret","tenant":"beta","rate_per_second":5,"pair_interval":"6s"}`
	for _, c := range []call{
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: senderBody, want: 201},
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: senderBody, want: 409},
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: `{"number":"1"}`, want: 400},
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: senderBody, auth: "tenant", want: 403},
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: senderBody, contentType: "text/plain", want: 415},
		{route: "POST /v1/senders", method: "POST", path: "/v1/senders", body: `{"number":"` + strings.Repeat("1", maxSenderBody) + `"}`, want: 413},
		{route: "GET /v1/senders", method: "GET", path: "/v1/senders", want: 200},
		{route: "GET /v1/senders", method: "GET", path: "/v1/senders?tenant=beta", want: 200},
		{route: "GET /v1/senders", method: "GET", path: "/v1/senders", auth: "none", want: 401},
		{route: "GET /v1/senders/{number}", method: "GET", path: "/v1/senders/" + other, want: 200},
		{route: "GET /v1/senders/{number}", method: "GET", path: "/v1/senders/4915100000078", want: 404},
		{route: "PATCH /v1/senders/{number}", method: "PATCH", path: "/v1/senders/" + other, body: `{"rate_burst":3,"rate_per_second":null}`, want: 200},
		{route: "PATCH /v1/senders/{number}", method: "PATCH", path: "/v1/senders/" + other, body: `{"number":"1"}`, want: 400},
		{route: "PATCH /v1/senders/{number}", method: "PATCH", path: "/v1/senders/4915100000078", body: `{"rate_burst":3}`, want: 404},
		{route: "POST /v1/senders/{number}/pause", method: "POST", path: "/v1/senders/" + other + "/pause", want: 200},
		{route: "POST /v1/senders/{number}/resume", method: "POST", path: "/v1/senders/" + other + "/resume", want: 200},
		{route: "POST /v1/senders/{number}/resume", method: "POST", path: "/v1/senders/4915100000078/resume", want: 404},
		{route: "DELETE /v1/senders/{number}", method: "DELETE", path: "/v1/senders/" + other, want: 204},
		{route: "DELETE /v1/senders/{number}", method: "DELETE", path: "/v1/senders/" + other, want: 404},
		{method: "PUT", path: "/v1/senders/" + other, want: 405},
		{route: "POST /v1/keys", method: "POST", path: "/v1/keys", body: `{"tenant":"beta","name":"crm"}`, want: 201},
		{route: "POST /v1/keys", method: "POST", path: "/v1/keys", body: `{"tenant":"Beta!","name":"crm"}`, want: 400},
		{route: "POST /v1/keys", method: "POST", path: "/v1/keys", body: `{"tenant":"beta","name":"crm"}`, auth: "tenant", want: 403},
		{route: "GET /v1/keys", method: "GET", path: "/v1/keys", want: 200},
		{route: "DELETE /v1/keys/{id}", method: "DELETE", path: "/v1/keys/key_nosuchkey", want: 404},
		{route: "GET /v1/templates", method: "GET", path: "/v1/templates", auth: "tenant", want: 403},
	} {
		d.do(t, c)
	}
	var key struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(d.do(t, call{route: "POST /v1/keys", method: "POST", path: "/v1/keys", body: `{"tenant":"beta","name":"gone"}`, want: 201}), &key); err != nil {
		t.Fatal(err)
	}
	d.do(t, call{route: "DELETE /v1/keys/{id}", method: "DELETE", path: "/v1/keys/" + key.ID, want: 204})

	// The drop-in ChatArchitect routes, with the sender's app credentials.
	for _, c := range []call{
		{route: "POST /whatsappmessage", method: "POST", path: "/whatsappmessage", auth: "app", body: text, want: 200},
		{route: "POST /whatsappmessage", method: "POST", path: "/whatsappmessage", auth: "app", body: `{"destination":"x"}`, want: 400},
		{route: "POST /whatsappmessage", method: "POST", path: "/whatsappmessage", auth: "app-wrong", body: text, want: 401},
		{route: "POST /whatsappmessage", method: "POST", path: "/whatsappmessage", auth: "app", body: text, contentType: "text/plain", want: 415},
		{route: "POST /getHSM", method: "POST", path: "/getHSM", auth: "app", body: `{"channel":"whatsapp","destination":"` + docSender + `","getHSM":"true"}`, want: 200},
		{route: "POST /getHSM", method: "POST", path: "/getHSM", auth: "app", body: `[]`, want: 400},
		{route: "POST /submit_template", method: "POST", path: "/submit_template", auth: "app",
			body: `{"channel":"whatsapp","destination":"` + docSender + `","submit_template":{"elementName":"doc_hello","languageCode":"en","category":"UTILITY","templateType":"TEXT","content":"Hello","example":"Hello"}}`, want: 200},
		{route: "POST /submit_template", method: "POST", path: "/submit_template", auth: "app-wrong", body: `{}`, want: 401},
		{route: "POST /webhook", method: "POST", path: "/webhook", auth: "app",
			body: `{"channel":"whatsapp","destination":"` + docSender + `","webhook":"https://93.184.215.14/hook","webhook_separate":"false"}`, want: 200},
		{route: "POST /webhook", method: "POST", path: "/webhook", auth: "app", body: `{"channel":"whatsapp","destination":"` + docSender + `","webhook":"ftp://x"}`, want: 400},
		{method: "GET", path: "/whatsappmessage", auth: "app", want: 405},
	} {
		d.do(t, c)
	}

	// Templates, from the sandbox; then the sandbox is gone.
	d.do(t, call{route: "GET /v1/templates", method: "GET", path: "/v1/templates", want: 200})
	d.do(t, call{route: "GET /v1/templates", method: "GET", path: "/v1/templates?refresh=true", want: 200})
	f.sandbox.Close()
	d.do(t, call{route: "GET /v1/templates", method: "GET", path: "/v1/templates?refresh=true", want: 502})

	// The webhook.
	hook := "/webhooks/chatarchitect/" + docSecret
	for _, c := range []call{
		{route: "POST /webhooks/chatarchitect/{secret}", method: "POST", path: hook, auth: "none", contentType: "text/plain",
			body: `{"app":"chatq","timestamp":1764064800000,"type":"message-event","payload":{"id":"pid-none","type":"delivered","destination":"96996999699","payload":{"ts":1764064800}}}`, want: 200},
		{route: "POST /webhooks/chatarchitect/{secret}", method: "POST", path: hook, auth: "none", body: `{not json`, want: 400},
		{route: "POST /webhooks/chatarchitect/{secret}", method: "POST", path: "/webhooks/chatarchitect/wrong", auth: "none", body: `{}`, want: 404},
		{route: "POST /webhooks/chatarchitect/{secret}", method: "POST", path: hook, auth: "none", body: `"` + strings.Repeat("x", maxWebhookBody) + `"`, want: 413},
		{method: "GET", path: hook, auth: "none", want: 405},
	} {
		d.do(t, c)
	}

	// Redis gone.
	f.redis.Stop(t)
	for _, c := range []call{
		{route: "GET /readyz", method: "GET", path: "/readyz", auth: "none", want: 503},
		{route: "GET /v1/messages/{id}", method: "GET", path: "/v1/messages/" + id.ID, want: 503},
		{route: sendRoute, method: "POST", path: "/v1/messages", body: text, want: 503},
		{route: "GET /v1/suppressions", method: "GET", path: "/v1/suppressions", want: 503},
	} {
		d.do(t, c)
	}

	for _, r := range tableRoutes(f.srv) {
		if !d.validated[r] {
			t.Errorf("%s: no answer was validated against the document; add calls for it to TestOpenAPIAnswers", r)
		}
	}
	for _, st := range []int{400, 401, 403, 404, 405, 409, 413, 415, 422, 502, 503} {
		if !d.statuses[st] {
			t.Errorf("no %d answer was validated", st)
		}
	}
}

// TestRequestID: every answer carries X-Request-Id (open routes, errors,
// what no route takes): the client's own when it is 1 to 128 printable
// characters, a new one otherwise; and the log lines of the request name it.
func TestRequestID(t *testing.T) {
	f := newDocFixture(t)
	get := func(method, path, id string, auth bool) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, f.url+path, nil)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+docKey)
		}
		resp, err := f.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	long := strings.Repeat("r", 128)
	for _, tt := range []struct {
		name, method, path, id string
		auth                   bool
		keep                   bool
	}{
		{"open route", "GET", "/healthz", "req-1", false, true},
		{"401", "GET", "/v1/messages/x", "req 2 with spaces", false, true},
		{"404", "GET", "/v1/messages/x", "req-3", true, true},
		{"405", "POST", "/readyz", "req-4", false, true},
		{"dashboard 401", "GET", "/monitoring/", "req-5", false, true},
		{"128 characters", "GET", "/healthz", long, false, true},
		{"129 characters", "GET", "/healthz", long + "r", false, false},
		{"not ASCII", "GET", "/healthz", "réq", false, false},
		{"none", "GET", "/healthz", "", false, false},
	} {
		got := get(tt.method, tt.path, tt.id, tt.auth)
		switch {
		case tt.keep && got != tt.id:
			t.Errorf("%s: X-Request-Id %q, want the request's %q", tt.name, got, tt.id)
		case !tt.keep && (got == "" || got == tt.id || !validRequestID(got)):
			t.Errorf("%s: X-Request-Id %q, want a new one", tt.name, got)
		}
	}
	for _, id := range []string{"req\x01", "req\t1", "req\x7f"} {
		if validRequestID(id) {
			t.Errorf("request id %q is kept, want it replaced", id)
		}
	}
	if a, b := get("GET", "/healthz", "", false), get("GET", "/healthz", "", false); a == b {
		t.Errorf("two requests got the same new id %q", a)
	}

	// A request that logs: every line names its id.
	req, _ := http.NewRequestWithContext(context.Background(), "PUT", f.url+"/v1/suppressions/4915112345670", strings.NewReader(`{"reason":"stop"}`))
	req.Header.Set("Authorization", "Bearer "+docKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "req-logged")
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lines := f.logs.FilterMessage("recipient suppressed by an operator").AllUntimed()
	if len(lines) != 1 {
		t.Fatalf("%d log lines of the suppression, want 1", len(lines))
	}
	if got := lines[0].ContextMap()["request_id"]; got != "req-logged" {
		t.Errorf("log line %q has request_id %v, want req-logged", lines[0].Message, got)
	}
	// An error's log line too: Redis gone, the warning of a 503.
	f.redis.Stop(t)
	req, _ = http.NewRequestWithContext(context.Background(), "GET", f.url+"/v1/messages/x", nil)
	req.Header.Set("Authorization", "Bearer "+docKey)
	req.Header.Set("X-Request-Id", "req-503")
	resp, err = f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("with Redis gone: %d, want 503", resp.StatusCode)
	}
	lines = f.logs.FilterMessage("redis unavailable").AllUntimed()
	if len(lines) == 0 {
		t.Fatal("no log line of the 503")
	}
	for _, l := range lines {
		if got := l.ContextMap()["request_id"]; got != "req-503" {
			t.Errorf("log line %q has request_id %v, want req-503", l.Message, got)
		}
	}
}
