package api_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/lanetest"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

const (
	apiKey        = "ck_test_3f9a1c7e5b2d4f60"
	webhookSecret = "whsec-0d8e7f6a5b4c"
)

// fixture is the real API on a real port, with its own Redis.
type fixture struct {
	url     string
	client  *enqueue.Client
	rdb     *redis.Client
	store   *store.Store
	inspect *asynq.Inspector
	http    *http.Client
}

func setup(tb testing.TB) *fixture {
	tb.Helper()
	srv := redistest.Start(tb)
	return newFixture(tb, srv.Client(tb))
}

func newFixture(tb testing.TB, rdb *redis.Client) *fixture {
	tb.Helper()
	client := enqueue.NewClient(rdb, enqueue.Config{})
	tb.Cleanup(func() { _ = client.Close() })
	st := store.New(rdb, store.Config{})
	h, err := api.New(api.Config{APIKeys: []string{"ck_other_key_0001", apiKey}, WebhookSecret: webhookSecret}, client, st, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	return &fixture{
		url: ts.URL, client: client, rdb: rdb, store: st,
		inspect: asynq.NewInspectorFromRedisClient(rdb),
		http:    &http.Client{Timeout: 10 * time.Second},
	}
}

// request is one HTTP call. A zero contentType means application/json;
// "-" sends none.
type request struct {
	method      string
	path        string
	body        []byte
	contentType string
	header      map[string]string
	noAuth      bool
	// chunked hides the body's length, as a streaming client would.
	chunked bool
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (f *fixture) do(tb testing.TB, r request) response {
	tb.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body)
		}
	}
	req, err := http.NewRequestWithContext(context.Background(), r.method, f.url+r.path, body)
	if err != nil {
		tb.Fatal(err)
	}
	switch r.contentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", r.contentType)
	}
	if !r.noAuth {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", r.method, r.path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (f *fixture) post(tb testing.TB, path, body string) response {
	tb.Helper()
	return f.do(tb, request{method: http.MethodPost, path: path, body: []byte(body)})
}

// errorBody is the one shape of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

// wantError checks that res is a JSON error answer with that status, code
// and field.
func wantError(tb testing.TB, res response, status int, code, field string) {
	tb.Helper()
	if res.status != status {
		tb.Errorf("status %d, want %d; body %s", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", ct)
	}
	var e errorBody
	dec := json.NewDecoder(bytes.NewReader(res.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		tb.Fatalf("error answer %s is not {\"error\":{code,message,field}}: %v", res.body, err)
	}
	if e.Error.Code != code || e.Error.Field != field || e.Error.Message == "" {
		tb.Errorf("error = %+v, want code %q field %q and a message", e.Error, code, field)
	}
}

func decode[T any](tb testing.TB, res response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(res.body, &v); err != nil {
		tb.Fatalf("answer %s: %v", res.body, err)
	}
	return v
}

// moveLanes has the senders' lanes moved into asynq, as their feeders
// would: bulk messages get their tasks there.
func (f *fixture) moveLanes(tb testing.TB) {
	tb.Helper()
	lanetest.Move(tb, f.client, f.store)
}

// tasks counts the tasks of both send queues, in any state, once the
// lanes are moved.
func (f *fixture) tasks(tb testing.TB) int {
	tb.Helper()
	f.moveLanes(tb)
	queues, err := f.inspect.Queues()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, q := range []string{"transactional", "bulk"} {
		if !slices.Contains(queues, q) {
			continue
		}
		info, err := f.inspect.GetQueueInfo(q)
		if err != nil {
			tb.Fatal(err)
		}
		n += info.Size
	}
	return n
}

const textBody = `{"channel":"whatsapp","destination":"96996999699","payload":{"type":"text","message":"Hi John, how are you?"}}`

func TestAuth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	near := []byte(apiKey)
	near[len(near)-1]++
	tests := []struct {
		name   string
		header string // "" sends no Authorization header
	}{
		{"no header", ""},
		{"empty bearer", "Bearer "},
		{"wrong key", "Bearer ck_test_wrong"},
		{"one character off", "Bearer " + string(near)},
		{"prefix of the key", "Bearer " + apiKey[:len(apiKey)-1]},
		{"key with a suffix", "Bearer " + apiKey + "x"},
		{"key without scheme", apiKey},
		{"basic scheme", "Basic " + apiKey},
		{"two keys", "Bearer " + apiKey + ",ck_other_key_0001"},
	}
	routes := []struct{ method, path string }{
		{http.MethodPost, "/v1/messages"},
		{http.MethodPost, "/v1/messages/batch"},
		{http.MethodGet, "/v1/messages/01JABCDEF"},
		{http.MethodDelete, "/v1/messages/01JABCDEF"},
		{http.MethodGet, "/v1/nothing-here"},
	}
	for _, tt := range tests {
		for _, rt := range routes {
			t.Run(tt.name+"/"+rt.method+rt.path, func(t *testing.T) {
				t.Parallel()
				req := request{method: rt.method, path: rt.path, body: []byte(textBody), noAuth: true}
				if tt.header != "" {
					req.header = map[string]string{"Authorization": tt.header}
				}
				res := f.do(t, req)
				wantError(t, res, http.StatusUnauthorized, "unauthorized", "")
				if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", got)
				}
			})
		}
	}
	if keys := f.rdb.Keys(context.Background(), "*").Val(); len(keys) > 0 {
		t.Errorf("unauthorized requests left keys %v", keys)
	}

	t.Run("right key", func(t *testing.T) {
		res := f.do(t, request{method: http.MethodGet, path: "/v1/messages/01JABCDEF"})
		wantError(t, res, http.StatusNotFound, "not_found", "")
		res = f.do(t, request{method: http.MethodGet, path: "/v1/messages/01JABCDEF", noAuth: true,
			header: map[string]string{"Authorization": "bearer  ck_other_key_0001"}})
		wantError(t, res, http.StatusNotFound, "not_found", "")
	})
}

func TestPostMessage(t *testing.T) {
	t.Parallel()
	f := setup(t)
	body := `{
		"channel": "whatsapp",
		"destination": "96996999699",
		"payload": {"type": "text", "message": "Hi John, how are you?"},
		"priority": "bulk",
		"callback_url": "https://app.example.com/chatq-events",
		"batch_id": "black-friday-2026",
		"metadata": {"order_id": "1234"}
	}`
	res := f.do(t, request{method: http.MethodPost, path: "/v1/messages", body: []byte(body), contentType: "application/json; charset=utf-8"})
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d, want 202; body %s", res.status, res.body)
	}
	if strings.Contains(string(res.body), "Hi John") {
		t.Errorf("the answer repeats the message body: %s", res.body)
	}
	fields := decode[map[string]any](t, res)
	for _, k := range []string{"id", "destination", "type", "priority", "status", "attempts", "provider_message_id",
		"whatsapp_message_id", "last_error", "history", "batch_id", "metadata", "created_at", "updated_at"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("the record has no %q: %s", k, res.body)
		}
	}
	rec := decode[store.Record](t, res)
	if rec.ID == "" || rec.Destination != "96996999699" || rec.Type != "text" || rec.Priority != "bulk" ||
		rec.Status != store.Queued || rec.Attempts != 0 || rec.ProviderMessageID != nil || rec.WhatsAppMessageID != nil ||
		rec.LastError != nil || rec.BatchID == nil || *rec.BatchID != "black-friday-2026" || rec.CreatedAt.IsZero() {
		t.Errorf("record = %+v", rec)
	}
	if diff := gocmp.Diff(map[string]string{"order_id": "1234"}, rec.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if len(rec.History) != 1 || rec.History[0].Status != store.Queued {
		t.Errorf("history = %+v, want one queued entry", rec.History)
	}

	got := f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + rec.ID})
	if got.status != http.StatusOK {
		t.Fatalf("GET: status %d, body %s", got.status, got.body)
	}
	// A bulk message waits in its sender's lane until the sender's feeder
	// (no worker runs here) writes its task: reading it says so.
	read := decode[map[string]any](t, got)
	if w, _ := read["waiting"].(map[string]any); w["reason"] != "sender_rate" || w["since"] != fields["created_at"] {
		t.Errorf("GET: waiting %v, want sender_rate since its acceptance (in its sender's lane)", read["waiting"])
	}
	read["waiting"] = nil
	if diff := gocmp.Diff(fields, read); diff != "" {
		t.Errorf("GET differs from the POST answer (-post +get):\n%s", diff)
	}
	if n := f.tasks(t); n != 1 {
		t.Errorf("%d tasks, want 1", n)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	send := func(body string, key string) response {
		t.Helper()
		return f.do(t, request{method: http.MethodPost, path: "/v1/messages", body: []byte(body), header: map[string]string{"Idempotency-Key": key}})
	}
	first := send(textBody, "order-1234-confirmation")
	if first.status != http.StatusAccepted {
		t.Fatalf("first: status %d, body %s", first.status, first.body)
	}
	rec := decode[store.Record](t, first)

	if v, ok := first.header["Idempotent-Replayed"]; ok {
		t.Errorf("first answer has Idempotent-Replayed: %v", v)
	}
	again := send(textBody, "order-1234-confirmation")
	if again.status != http.StatusOK {
		t.Fatalf("repeat: status %d, want 200; body %s", again.status, again.body)
	}
	if v := again.header.Get("Idempotent-Replayed"); v != "true" {
		t.Errorf("repeat: Idempotent-Replayed %q, want true", v)
	}
	if diff := gocmp.Diff(decode[map[string]any](t, first), decode[map[string]any](t, again)); diff != "" {
		t.Errorf("repeat answers another record (-first +repeat):\n%s", diff)
	}
	// The key may come in the body instead.
	inBody := strings.Replace(textBody, `{"channel"`, `{"idempotency_key":"order-1234-confirmation","channel"`, 1)
	if res := f.post(t, "/v1/messages", inBody); res.status != http.StatusOK || decode[store.Record](t, res).ID != rec.ID {
		t.Errorf("key in the body: status %d body %s, want 200 and record %s", res.status, res.body, rec.ID)
	}

	other := strings.Replace(textBody, "how are you?", "how are you doing?", 1)
	wantError(t, send(other, "order-1234-confirmation"), http.StatusConflict, "idempotency_conflict", "idempotency_key")
	if n := f.tasks(t); n != 1 {
		t.Errorf("%d tasks, want 1", n)
	}

	// A different key is a different message.
	if res := send(textBody, "order-1235-confirmation"); res.status != http.StatusAccepted {
		t.Errorf("another key: status %d, want 202", res.status)
	}
}

func TestGetUnknown(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, id := range []string{"01JUNKNOWN0000000000000000", "nothing", "%7B%7D"} {
		wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id}), http.StatusNotFound, "not_found", "")
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := setup(t)
	res := f.post(t, "/v1/messages", textBody)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", res.status, res.body)
	}
	id := decode[store.Record](t, res).ID

	del := f.do(t, request{method: http.MethodDelete, path: "/v1/messages/" + id, contentType: "-"})
	if del.status != http.StatusOK {
		t.Fatalf("DELETE: status %d, want 200; body %s", del.status, del.body)
	}
	rec := decode[store.Record](t, del)
	var hist []store.Status
	for _, h := range rec.History {
		hist = append(hist, h.Status)
	}
	if rec.ID != id || rec.Status != store.Canceled || !slices.Equal(hist, []store.Status{store.Queued, store.Canceled}) {
		t.Errorf("after DELETE: id %s status %s history %v, want %s canceled [queued canceled]", rec.ID, rec.Status, hist, id)
	}
	if got := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id})); got.Status != store.Canceled {
		t.Errorf("GET after DELETE: status %s, want canceled", got.Status)
	}

	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages/" + id}), http.StatusConflict, "status_conflict", "")
	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages/01JUNKNOWN"}), http.StatusNotFound, "not_found", "")

	// Too late once the upstream has accepted the message.
	res = f.post(t, "/v1/messages", textBody)
	id = decode[store.Record](t, res).ID
	ctx := context.Background()
	if _, _, err := f.store.Begin(ctx, id, time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, id, "pid-"+id, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages/" + id}), http.StatusConflict, "status_conflict", "")
}

func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const (
		single = "/v1/messages"
		batch  = "/v1/messages/batch"
	)
	msg := func(fields string) string {
		return `{"destination":"96996999699","payload":{"type":"text","message":"hi"}` + fields + `}`
	}
	withPayload := func(payload string) string {
		return `{"destination":"96996999699","payload":` + payload + `}`
	}
	repeat := func(item string, n int) string {
		return `{"messages":[` + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}`
	}
	tests := []struct {
		name        string
		method      string // "" means POST
		path        string
		body        string
		contentType string
		header      map[string]string
		chunked     bool
		wantStatus  int
		wantCode    string
		wantField   string
	}{
		{name: "empty body", path: single, body: ``, wantStatus: 400, wantField: "body"},
		{name: "broken JSON", path: single, body: `{"destination":"96996999699",`, wantStatus: 400, wantField: "body"},
		{name: "not JSON at all", path: single, body: `destination=96996999699`, wantStatus: 400, wantField: "body"},
		{name: "trailing garbage", path: single, body: msg("") + ` garbage`, wantStatus: 400, wantField: "body"},
		{name: "two objects", path: single, body: msg("") + msg(""), wantStatus: 400, wantField: "body"},
		{name: "array body", path: single, body: `[` + msg("") + `]`, wantStatus: 400, wantField: "body"},
		{name: "string body", path: single, body: `"hello"`, wantStatus: 400, wantField: "body"},
		{name: "null body", path: single, body: `null`, wantStatus: 400, wantField: "destination"},
		{name: "empty object", path: single, body: `{}`, wantStatus: 400, wantField: "destination"},
		{name: "missing destination", path: single, body: `{"payload":{"type":"text","message":"hi"}}`, wantStatus: 400, wantField: "destination"},
		{name: "missing payload", path: single, body: `{"destination":"96996999699"}`, wantStatus: 400, wantField: "payload"},
		{name: "null payload", path: single, body: withPayload(`null`), wantStatus: 400, wantField: "payload"},
		{name: "missing payload type", path: single, body: withPayload(`{"message":"hi"}`), wantStatus: 400, wantField: "payload.type"},
		{name: "unknown payload type", path: single, body: withPayload(`{"type":"sticker","url":"https://e.com/s.webp"}`), wantStatus: 400, wantField: "payload.type"},
		{name: "destination as number", path: single, body: `{"destination":96996999699,"payload":{"type":"text","message":"hi"}}`, wantStatus: 400, wantField: "destination"},
		{name: "destination too short", path: single, body: `{"destination":"1234567","payload":{"type":"text","message":"hi"}}`, wantStatus: 400, wantField: "destination"},
		{name: "destination with letters", path: single, body: `{"destination":"9699699969O","payload":{"type":"text","message":"hi"}}`, wantStatus: 400, wantField: "destination"},
		{name: "payload as string", path: single, body: withPayload(`"hi"`), wantStatus: 400, wantField: "payload"},
		{name: "payload as array", path: single, body: withPayload(`[]`), wantStatus: 400, wantField: "payload"},
		{name: "payload type as number", path: single, body: withPayload(`{"type":1,"message":"hi"}`), wantStatus: 400, wantField: "payload.type"},
		{name: "message as number", path: single, body: withPayload(`{"type":"text","message":1}`), wantStatus: 400, wantField: "payload.message"},
		{name: "message as null", path: single, body: withPayload(`{"type":"text","message":null}`), wantStatus: 400, wantField: "payload.message"},
		{name: "text of 4097 characters", path: single, body: withPayload(`{"type":"text","message":"` + strings.Repeat("é", 4097) + `"}`), wantStatus: 400, wantField: "payload.message"},
		{name: "unknown payload field", path: single, body: withPayload(`{"type":"text","mesage":"hi"}`), wantStatus: 400, wantField: "payload.mesage"},
		{name: "unknown top-level field", path: single, body: msg(`,"sendAt":"2026-11-25T10:00:00Z"`), wantStatus: 400, wantField: "sendAt"},
		{name: "channel sms", path: single, body: msg(`,"channel":"sms"`), wantStatus: 400, wantField: "channel"},
		{name: "channel as bool", path: single, body: msg(`,"channel":true`), wantStatus: 400, wantField: "channel"},
		{name: "priority urgent", path: single, body: msg(`,"priority":"urgent"`), wantStatus: 400, wantField: "priority"},
		{name: "priority as number", path: single, body: msg(`,"priority":1`), wantStatus: 400, wantField: "priority"},
		{name: "idempotency_key as number", path: single, body: msg(`,"idempotency_key":1234`), wantStatus: 400, wantField: "idempotency_key"},
		{name: "idempotency_key too long", path: single, body: msg(`,"idempotency_key":"` + strings.Repeat("k", 256) + `"`), wantStatus: 400, wantField: "idempotency_key"},
		{name: "Idempotency-Key header too long", path: single, body: msg(""), header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, wantStatus: 400, wantField: "idempotency_key"},
		{name: "Idempotency-Key header differs from the body", path: single, body: msg(`,"idempotency_key":"a"`), header: map[string]string{"Idempotency-Key": "b"}, wantStatus: 400, wantField: "idempotency_key"},
		{name: "send_at not a time", path: single, body: msg(`,"send_at":"tomorrow"`), wantStatus: 400, wantField: "send_at"},
		{name: "send_at as number", path: single, body: msg(`,"send_at":1764064800`), wantStatus: 400, wantField: "send_at"},
		{name: "expires_at in the past", path: single, body: msg(`,"expires_at":"2020-01-01T00:00:00Z"`), wantStatus: 400, wantField: "expires_at"},
		{name: "callback_url javascript", path: single, body: msg(`,"callback_url":"javascript:alert(1)"`), wantStatus: 400, wantField: "callback_url"},
		{name: "metadata as array", path: single, body: msg(`,"metadata":["a"]`), wantStatus: 400, wantField: "metadata"},
		{name: "metadata value as number", path: single, body: msg(`,"metadata":{"order_id":1234}`), wantStatus: 400, wantField: "metadata"},
		{name: "fallback_template as string", path: single, body: msg(`,"fallback_template":"we_miss_you"`), wantStatus: 400, wantField: "fallback_template"},
		{name: "fallback_template bad name", path: single, body: msg(`,"fallback_template":{"elementName":"We Miss You","languageCode":"en","params":[]}`), wantStatus: 400, wantField: "fallback_template.elementName"},
		{name: "batch_id as object", path: single, body: msg(`,"batch_id":{}`), wantStatus: 400, wantField: "batch_id"},
		{name: "latitude out of range", path: single, body: withPayload(`{"type":"location","latitude":91,"longitude":0}`), wantStatus: 400, wantField: "payload.latitude"},
		{name: "latitude beyond float64", path: single, body: withPayload(`{"type":"location","latitude":1e400,"longitude":0}`), wantStatus: 400, wantField: "payload.latitude"},
		{name: "longitude as string", path: single, body: withPayload(`{"type":"location","latitude":1,"longitude":"77.2"}`), wantStatus: 400, wantField: "payload.longitude"},
		{name: "image ftp URL", path: single, body: withPayload(`{"type":"image","originalUrl":"ftp://e.com/a.jpg"}`), wantStatus: 400, wantField: "payload.originalUrl"},
		{name: "quick_reply with 4 options", path: single, body: withPayload(`{"type":"quick_reply","content":{"type":"text","text":"?"},"options":[{"type":"text","title":"a"},{"type":"text","title":"b"},{"type":"text","title":"c"},{"type":"text","title":"d"}]}`), wantStatus: 400, wantField: "payload.options"},
		{name: "body over 256 KiB", path: single, body: withPayload(`{"type":"text","message":"` + strings.Repeat("x", 256<<10) + `"}`), wantStatus: 413, wantCode: "body_too_large"},
		{name: "body over 256 KiB, chunked", path: single, body: withPayload(`{"type":"text","message":"` + strings.Repeat("x", 256<<10) + `"}`), chunked: true, wantStatus: 413, wantCode: "body_too_large"},
		{name: "text/plain", path: single, body: msg(""), contentType: "text/plain", wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "form content type", path: single, body: msg(""), contentType: "application/x-www-form-urlencoded", wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "no content type", path: single, body: msg(""), contentType: "-", wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "garbled content type", path: single, body: msg(""), contentType: "application/json; charset", wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "wrong method", method: http.MethodPut, path: "/v1/messages/batch", body: msg(""), wantStatus: 405, wantCode: "method_not_allowed"},

		{name: "batch over 16 MiB", path: batch, body: `{"messages":["` + strings.Repeat("x", 16<<20) + `"]}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "batch of 1001", path: batch, body: repeat(msg(""), 1001), wantStatus: 400, wantField: "messages"},
		{name: "empty batch", path: batch, body: `{"messages":[]}`, wantStatus: 400, wantField: "messages"},
		{name: "batch without messages", path: batch, body: `{}`, wantStatus: 400, wantField: "messages"},
		{name: "batch as array", path: batch, body: `[` + msg("") + `]`, wantStatus: 400, wantField: "body"},
		{name: "batch as string", path: batch, body: `"messages"`, wantStatus: 400, wantField: "body"},
		{name: "batch messages as object", path: batch, body: `{"messages":{"0":` + msg("") + `}}`, wantStatus: 400, wantField: "body"},
		{name: "batch unknown field", path: batch, body: `{"messages":[` + msg("") + `],"batch_id":"x"}`, wantStatus: 400, wantField: "body"},
		{name: "batch broken JSON", path: batch, body: `{"messages":[` + msg(""), wantStatus: 400, wantField: "body"},
		{name: "batch trailing garbage", path: batch, body: `{"messages":[` + msg("") + `]} garbage`, wantStatus: 400, wantField: "body"},
		{name: "batch text/plain", path: batch, body: `{"messages":[` + msg("") + `]}`, contentType: "text/plain", wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			method := cmp.Or(tt.method, http.MethodPost)
			res := f.do(t, request{method: method, path: tt.path, body: []byte(tt.body), contentType: tt.contentType, header: tt.header, chunked: tt.chunked})
			wantError(t, res, tt.wantStatus, cmp.Or(tt.wantCode, "invalid_request"), tt.wantField)
		})
	}
	t.Cleanup(func() {
		// Runs after the parallel subtests: nothing of theirs was stored.
		ctx := context.Background()
		if keys := f.rdb.Keys(ctx, "chatq:*").Val(); len(keys) > 0 {
			t.Errorf("malformed requests left keys %v", keys)
		}
		if n := f.tasks(t); n != 0 {
			t.Errorf("malformed requests left %d tasks", n)
		}
	})
}

func TestBatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	items := []string{
		textBody,
		`{"destination":"not-a-number","payload":{"type":"text","message":"hi"}}`,
		`{"destination":"96996999601","payload":{"type":"template","template":{"elementName":"black_friday","languageCode":"en","params":["30%"]}},"priority":"bulk","idempotency_key":"bf-601"}`,
		`{"destination":"96996999699","payload":{"type":"sticker"}}`,
		`"not a message"`,
		`null`,
		`{"destination":"96996999602","payload":{"type":"text","message":"later"},"send_at":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`,
		`{"destination":"96996999603","payload":{"type":"text","message":"hi"},"mesage":"x"}`,
	}
	body := `{"messages":[` + strings.Join(items, ",") + `]}`
	type result struct {
		Index    int    `json:"index"`
		ID       string `json:"id"`
		Status   string `json:"status"`
		Created  *bool  `json:"created"`
		Replayed *bool  `json:"replayed"`
		Error    *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	send := func() []result {
		t.Helper()
		res := f.post(t, "/v1/messages/batch", body)
		if res.status != http.StatusOK {
			t.Fatalf("status %d, want 200; body %s", res.status, res.body)
		}
		out := decode[struct{ Results []result }](t, res).Results
		if len(out) != len(items) {
			t.Fatalf("%d results for %d items: %s", len(out), len(items), res.body)
		}
		return out
	}
	want := []struct {
		status string // "" for an error
		field  string
	}{
		{status: "queued"},
		{field: "destination"},
		{status: "queued"},
		{field: "payload.type"},
		{field: "body"},
		{field: "destination"},
		{status: "scheduled"},
		{field: "mesage"},
	}
	first := send()
	for i, r := range first {
		w := want[i]
		if r.Index != i {
			t.Errorf("result %d has index %d", i, r.Index)
		}
		if w.status == "" {
			if r.Error == nil || r.Error.Code != "invalid_request" || r.Error.Field != w.field || r.Error.Message == "" || r.ID != "" {
				t.Errorf("result %d = %+v error %+v, want an error on %s", i, r, r.Error, w.field)
			}
			continue
		}
		if r.Error != nil || r.ID == "" || r.Status != w.status || r.Created == nil || !*r.Created || r.Replayed != nil {
			t.Errorf("result %d = %+v, want a new %s record", i, r, w.status)
			continue
		}
		rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + r.ID}))
		if string(rec.Status) != w.status {
			t.Errorf("record of result %d: status %s, want %s", i, rec.Status, w.status)
		}
	}
	if n := f.tasks(t); n != 3 {
		t.Errorf("%d tasks, want 3", n)
	}

	// Sent again: the item with an idempotency key answers its first record.
	second := send()
	if second[2].ID != first[2].ID || second[2].Created == nil || *second[2].Created || second[2].Replayed == nil || !*second[2].Replayed {
		t.Errorf("repeated keyed item = %+v, want record %s, not created, replayed", second[2], first[2].ID)
	}
	if second[0].ID == first[0].ID || second[0].Replayed != nil {
		t.Errorf("an item without a key got the same id twice, or is said replayed: %+v", second[0])
	}
	// The new text to the first item's recipient waits for its turn
	// behind the first one (conversation order), without a task; the new
	// scheduled one has its task.
	if n := f.tasks(t); n != 4 {
		t.Errorf("%d tasks after the second batch, want 4", n)
	}
	rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + second[0].ID}))
	if rec.Waiting == nil || rec.Waiting.Reason != store.WaitConversationOrder || !rec.Ordered {
		t.Errorf("the second text to %s waits %+v, want its turn (conversation_order)", rec.Destination, rec.Waiting)
	}
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	hook := func(secret, contentType, body string) response {
		t.Helper()
		return f.do(t, request{method: http.MethodPost, path: "/webhooks/chatarchitect/" + secret, body: []byte(body), contentType: contentType, noAuth: true})
	}
	event := func(id, typ string) string {
		return fmt.Sprintf(`{"type":"message-event","payload":{"id":%q,"type":%q}}`, id, typ)
	}

	for _, secret := range []string{"wrong", webhookSecret + "x", webhookSecret[:len(webhookSecret)-1]} {
		res := hook(secret, "", event("pid-unknown", "delivered"))
		if res.status != http.StatusNotFound {
			t.Errorf("secret %q: status %d, want 404", secret, res.status)
		}
	}
	if keys := f.rdb.Keys(ctx, "*").Val(); len(keys) > 0 {
		t.Errorf("webhooks with a wrong secret left keys %v", keys)
	}

	for _, garbage := range []string{``, `not json`, `{"type":`, `[]`, `{"payload":{}}`, `{"type":"<script>"}`} {
		wantError(t, hook(webhookSecret, "", garbage), http.StatusBadRequest, "invalid_request", "")
	}

	// Valid events answer 200 whatever they name, whatever their
	// Content-Type (ChatArchitect's is not to be trusted).
	for _, tt := range []struct{ contentType, body string }{
		{"", event("pid-unknown", "delivered")},
		{"text/plain", event("pid-unknown-2", "read")},
		{"-", `{"type":"user-event","payload":{"phone":"96996999699","type":"opted-out"}}`},
		{"", `{"type":"billing-event","payload":{"whatever":1}}`},
		{"", `{"type":"template-event","payload":{"id":"t1","elementName":"welcome_offer","languageCode":"en_US","status":"PAUSED","reason":"Low quality"}}`},
		{"", `{"app":"demo","timestamp":1764064800000,"version":2,"type":"message-event","payload":{"id":"wamid.x","gsId":"pid-unknown-3","type":"sent","destination":"96996999699","payload":{"ts":1764064800}}}`},
	} {
		if res := hook(webhookSecret, tt.contentType, tt.body); res.status != http.StatusOK {
			t.Errorf("%s: status %d, want 200; body %s", tt.body, res.status, res.body)
		}
	}

	// A delivery event updates the message's record.
	res := f.post(t, "/v1/messages", textBody)
	id := decode[store.Record](t, res).ID
	if _, _, err := f.store.Begin(ctx, id, time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, id, "pid-"+id, time.Now()); err != nil {
		t.Fatal(err)
	}
	if res := hook(webhookSecret, "", event("pid-"+id, "delivered")); res.status != http.StatusOK {
		t.Fatalf("delivered event: status %d, body %s", res.status, res.body)
	}
	if rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id})); rec.Status != store.Delivered {
		t.Errorf("after a delivered event: status %s, want delivered", rec.Status)
	}
	// Its pricing object is kept on the record; a later one replaces it
	// (even on an event that comes late), a replay changes nothing.
	for _, p := range []struct{ typ, pricing string }{
		{"sent", `{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}`},
		{"read", `{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}`},
		{"read", `{"billable":false,"pricing_model":"PMP","category":"service","type":"free_customer_service"}`},
	} {
		body := fmt.Sprintf(`{"type":"message-event","payload":{"id":"wamid.%s","gsId":"pid-%s","type":%q,"payload":{},"pricing":%s}}`, id, id, p.typ, p.pricing)
		if res := hook(webhookSecret, "", body); res.status != http.StatusOK {
			t.Fatalf("event with pricing: status %d, body %s", res.status, res.body)
		}
	}
	rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id}))
	if want := (&store.Pricing{Billable: true, PricingModel: "PMP", Category: "utility", Type: "regular"}); rec.Pricing == nil || *rec.Pricing != *want {
		t.Errorf("pricing %+v, want %+v", rec.Pricing, want)
	}
	if rec.Category == nil || *rec.Category != "service" {
		t.Errorf("category %v, want service", rec.Category)
	}

	// An event that arrives before the provider id is known waits for it.
	res = f.post(t, "/v1/messages", textBody)
	id = decode[store.Record](t, res).ID
	if res := hook(webhookSecret, "", event("pid-"+id, "read")); res.status != http.StatusOK {
		t.Fatalf("early event: status %d, body %s", res.status, res.body)
	}
	if _, _, err := f.store.Begin(ctx, id, time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, id, "pid-"+id, time.Now()); err != nil {
		t.Fatal(err)
	}
	if rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id})); rec.Status != store.Read {
		t.Errorf("after an early read event: status %s, want read", rec.Status)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		res := f.do(t, request{method: http.MethodGet, path: path, noAuth: true})
		if res.status != http.StatusOK || res.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: status %d type %q, want 200 JSON", path, res.status, res.header.Get("Content-Type"))
		}
		decode[map[string]any](t, res)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a private redis-server")
	}
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	// Fail fast rather than retry a server that is gone.
	opt.MaxRetries, opt.DialerRetries = -1, 1
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	f := newFixture(t, rdb)
	srv.Stop(t)
	wantError(t, f.post(t, "/v1/messages", textBody), http.StatusServiceUnavailable, "unavailable", "")
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/01JABCDEF"}), http.StatusServiceUnavailable, "unavailable", "")
	if res := f.do(t, request{method: http.MethodGet, path: "/readyz", noAuth: true}); res.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down: status %d, want 503", res.status)
	}
	if res := f.do(t, request{method: http.MethodGet, path: "/healthz", noAuth: true}); res.status != http.StatusOK {
		t.Errorf("/healthz with Redis down: status %d, want 200", res.status)
	}
}
