package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// sendBatch posts messages to numbers 4420700000+i of a batch and returns
// their ids.
func (f *fixture) sendBatch(tb testing.TB, batch string, n int) []string {
	tb.Helper()
	var ids []string
	for i := range n {
		// Unordered: batches share recipients, and each message is
		// settled on its own, whatever the one before it to its recipient.
		res := f.post(tb, "/v1/messages", fmt.Sprintf(`{"destination":"44207%05d","payload":{"type":"text","message":"hi"},"batch_id":%q,"priority":"bulk","ordered":false}`, i, batch))
		if res.status != http.StatusAccepted {
			tb.Fatalf("send: %d %s", res.status, res.body)
		}
		ids = append(ids, decode[store.Record](tb, res).ID)
	}
	// Their tasks written, as the worker's feeder would.
	f.moveLanes(tb)
	return ids
}

// kill makes a message a dead letter as a worker does: its task archived,
// its record dead with that error.
func (f *fixture) kill(tb testing.TB, id, class, code string) {
	tb.Helper()
	ctx := context.Background()
	rec, err := f.store.Get(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.inspect.ArchiveTask(rec.Queue, id); err != nil {
		tb.Fatalf("archive %s: %v", id, err)
	}
	if _, _, err := f.store.Move(ctx, id, store.Change{Status: store.Dead,
		Error: &store.ErrorInfo{Class: class, Code: code, Message: "refused", At: time.Now()}}); err != nil {
		tb.Fatal(err)
	}
}

type messagePage struct {
	Messages   []store.Record `json:"messages"`
	NextCursor *string        `json:"next_cursor"`
}

func TestListMessagesRoute(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ids := f.sendBatch(t, "spring", 5)
	f.sendBatch(t, "autumn", 1)
	if _, err := f.store.Cancel(context.Background(), ids[1], time.Now()); err != nil {
		t.Fatal(err)
	}

	// Page through the batch two at a time: newest first, every one once.
	var got []string
	path := "/v1/messages?batch_id=spring&limit=2"
	for range 10 {
		res := f.do(t, request{method: http.MethodGet, path: path})
		if res.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, res.status, res.body)
		}
		p := decode[messagePage](t, res)
		if len(p.Messages) > 2 {
			t.Fatalf("page of %d for limit 2", len(p.Messages))
		}
		for _, r := range p.Messages {
			got = append(got, r.ID)
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/messages?batch_id=spring&limit=2&cursor=" + *p.NextCursor
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("listing (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"batch_id=spring&status=canceled", []string{ids[1]}},
		{"batch_id=spring&status=queued,canceled&destination=%2B4420700001", []string{ids[1]}},
		{"batch_id=spring&destination=4420700003", []string{ids[3]}},
		{"batch_id=spring&status=read", nil},
		{"batch_id=winter", nil},
	} {
		res := f.do(t, request{method: http.MethodGet, path: "/v1/messages?" + tt.query})
		p := decode[messagePage](t, res)
		var got []string
		for _, r := range p.Messages {
			got = append(got, r.ID)
		}
		if diff := gocmp.Diff(tt.want, got); res.status != http.StatusOK || diff != "" || p.NextCursor != nil {
			t.Errorf("?%s: %d, next %v (-want +got):\n%s", tt.query, res.status, p.NextCursor, diff)
		}
		if p.Messages == nil {
			t.Errorf("?%s: messages is null, want []", tt.query)
		}
	}
	if strings.Contains(string(f.do(t, request{method: http.MethodGet, path: "/v1/messages?batch_id=spring"}).body), `"message":"hi"`) {
		t.Error("a listing shows message bodies")
	}

	for _, tt := range []struct{ query, field string }{
		{"", "batch_id"},
		{"status=queued", "batch_id"},
		{"batch_id=spring&status=lost", "status"},
		{"batch_id=spring&destination=12ab", "destination"},
		{"batch_id=spring&limit=0", "limit"},
		{"batch_id=spring&limit=1001", "limit"},
		{"batch_id=spring&cursor=nope", "cursor"},
		{"batch=spring", "batch"},
		{"waiting=later", "waiting"},
	} {
		wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/messages?" + tt.query}), http.StatusBadRequest, "invalid_request", tt.field)
	}
}

// ?waiting= lists what waits for that reason now, with its wait on each
// record; narrowed by a campaign.
func TestListMessagesWaitingRoute(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	ids := f.sendBatch(t, "spring", 3)
	other := f.sendBatch(t, "autumn", 1)
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for _, id := range []string{ids[0], ids[2], other[0]} {
		r, err := f.store.Peek(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.store.Wait(ctx, r, "", store.Waiting{Reason: store.WaitDailyLimit, Since: time.Now(), Until: &until}, until, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"waiting=daily_limit", []string{other[0], ids[2], ids[0]}},
		{"waiting=daily_limit&batch_id=spring", []string{ids[2], ids[0]}},
		{"waiting=pair_rate", nil},
	} {
		res := f.do(t, request{method: http.MethodGet, path: "/v1/messages?" + tt.query})
		p := decode[messagePage](t, res)
		var got []string
		for _, r := range p.Messages {
			got = append(got, r.ID)
			if r.Waiting == nil || r.Waiting.Reason != store.WaitDailyLimit || r.Waiting.Until == nil || !r.Waiting.Until.Equal(until) || r.Status != store.Queued {
				t.Errorf("?%s: %s is %s waiting %+v, want queued waiting for daily_limit until %s", tt.query, r.ID, r.Status, r.Waiting, until)
			}
		}
		if diff := gocmp.Diff(tt.want, got); res.status != http.StatusOK || diff != "" {
			t.Errorf("?%s: %d (-want +got):\n%s", tt.query, res.status, diff)
		}
	}
}

func TestBatchRoutes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	ids := f.sendBatch(t, "spring", 4)
	if _, _, err := f.store.Begin(ctx, ids[0], time.Now(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Submit(ctx, ids[0], "pid-0", time.Now()); err != nil {
		t.Fatal(err)
	}

	type counts struct {
		BatchID  string         `json:"batch_id"`
		Total    int            `json:"total"`
		Counts   map[string]int `json:"counts"`
		Billable map[string]int `json:"billable"`
	}
	res := f.do(t, request{method: http.MethodGet, path: "/v1/batches/spring"})
	c := decode[counts](t, res)
	if res.status != http.StatusOK || c.BatchID != "spring" || c.Total != 4 || c.Counts["queued"] != 3 || c.Counts["submitted"] != 1 || len(c.Counts) != 13 ||
		len(c.Billable) != 3 || c.Billable["marketing"] != 0 {
		t.Errorf("GET /v1/batches/spring: %d %s", res.status, res.body)
	}
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/batches/winter"}), http.StatusNotFound, "not_found", "")

	res = f.do(t, request{method: http.MethodDelete, path: "/v1/messages?batch_id=spring"})
	if diff := gocmp.Diff(map[string]any{"batch_id": "spring", "canceled": 3.0, "too_late": 1.0}, decode[map[string]any](t, res)); res.status != http.StatusOK || diff != "" {
		t.Errorf("DELETE /v1/messages?batch_id=spring: %d (-want +got):\n%s", res.status, diff)
	}
	c = decode[counts](t, f.do(t, request{method: http.MethodGet, path: "/v1/batches/spring"}))
	if c.Counts["canceled"] != 3 || c.Counts["submitted"] != 1 {
		t.Errorf("counts after the cancel: %+v", c)
	}
	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages"}), http.StatusBadRequest, "invalid_request", "batch_id")
	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages?batch_id=spring&status=queued"}), http.StatusBadRequest, "invalid_request", "status")
	wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages?batch_id=winter"}), http.StatusNotFound, "not_found", "")
}

type deadPage struct {
	DeadLetters []struct {
		store.Record
		DiedAt time.Time `json:"died_at"`
	} `json:"dead_letters"`
	NextCursor *string `json:"next_cursor"`
}

func deadIDs(p deadPage) []string {
	var ids []string
	for _, d := range p.DeadLetters {
		ids = append(ids, d.ID)
	}
	return ids
}

func TestDeadLetterRoutes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ids := f.sendBatch(t, "spring", 4)
	other := f.sendBatch(t, "autumn", 1)[0]
	f.kill(t, ids[0], "retryable", "http_500")
	f.kill(t, ids[1], "retryable", "http_500")
	f.kill(t, ids[2], "permanent", "http_400")
	f.kill(t, other, "retryable", "http_503")

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{other, ids[2], ids[1], ids[0]}},
		{"class=retryable&batch_id=spring", []string{ids[1], ids[0]}},
		{"code=http_400&queue=bulk", []string{ids[2]}},
		{"queue=transactional", nil},
		{"newer_than=1h", []string{other, ids[2], ids[1], ids[0]}},
		{"older_than=1h", nil},
	} {
		res := f.do(t, request{method: http.MethodGet, path: "/v1/dead-letters?" + tt.query})
		p := decode[deadPage](t, res)
		if diff := gocmp.Diff(tt.want, deadIDs(p)); res.status != http.StatusOK || diff != "" {
			t.Errorf("?%s: %d (-want +got):\n%s", tt.query, res.status, diff)
		}
	}
	p := decode[deadPage](t, f.do(t, request{method: http.MethodGet, path: "/v1/dead-letters?limit=1"}))
	if len(p.DeadLetters) != 1 || p.NextCursor == nil || p.DeadLetters[0].LastError == nil || p.DeadLetters[0].DiedAt.IsZero() {
		t.Errorf("first page of one: %+v", p)
	}

	for _, tt := range []struct{ query, field string }{
		{"class=fatal", "class"},
		{"queue=callbacks", "queue"},
		{"older_than=2d", "older_than"},
		{"cursor=nope", "cursor"},
		{"status=dead", "status"},
	} {
		wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/dead-letters?" + tt.query}), http.StatusBadRequest, "invalid_request", tt.field)
	}

	// By ids: one dead, one alive, one unknown.
	res := f.post(t, "/v1/dead-letters/retry", fmt.Sprintf(`{"ids":[%q,%q,"01NOSUCH"]}`, ids[2], ids[3]))
	want := map[string]any{"retried": 1.0, "not_dead": 1.0, "not_found": 1.0, "results": []any{
		map[string]any{"id": ids[2], "outcome": "retried", "status": "queued"},
		map[string]any{"id": ids[3], "outcome": "not_dead", "status": "queued"},
		map[string]any{"id": "01NOSUCH", "outcome": "not_found"},
	}}
	if diff := gocmp.Diff(want, decode[map[string]any](t, res)); res.status != http.StatusOK || diff != "" {
		t.Errorf("retry by ids: %d (-want +got):\n%s", res.status, diff)
	}
	// By filter: what the outage killed in the spring campaign.
	res = f.post(t, "/v1/dead-letters/retry", `{"filter":{"class":"retryable","batch_id":"spring"}}`)
	if diff := gocmp.Diff(map[string]any{"retried": 2.0, "not_dead": 0.0, "not_found": 0.0}, decode[map[string]any](t, res)); res.status != http.StatusOK || diff != "" {
		t.Errorf("retry by filter: %d (-want +got):\n%s", res.status, diff)
	}
	for _, id := range ids[:3] {
		rec, err := f.store.Get(context.Background(), id)
		if err != nil || rec.Status != store.Queued {
			t.Errorf("%s after the retries: %v %+v", id, err, rec)
		}
	}
	p = decode[deadPage](t, f.do(t, request{method: http.MethodGet, path: "/v1/dead-letters"}))
	if diff := gocmp.Diff([]string{other}, deadIDs(p)); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	// Everything: an empty filter.
	res = f.post(t, "/v1/dead-letters/retry", `{"filter":{}}`)
	if r := decode[map[string]any](t, res); res.status != http.StatusOK || r["retried"] != 1.0 {
		t.Errorf("retry of everything: %d %s", res.status, res.body)
	}

	for _, tt := range []struct{ body, field string }{
		{`{}`, "ids"},
		{`{"ids":[]}`, "ids"},
		{`{"ids":[""]}`, "ids[0]"},
		{`{"ids":["a"],"filter":{}}`, "ids"},
		{`{"filter":{"class":"fatal"}}`, "filter.class"},
		{`{"filter":{"older_than":"soon"}}`, "filter.older_than"},
		{`{"filter":{"status":"dead"}}`, "body"},
		{`{"id":"a"}`, "body"},
		{`{"ids":["a"]} {}`, "body"},
		{`[]`, "body"},
	} {
		wantError(t, f.post(t, "/v1/dead-letters/retry", tt.body), http.StatusBadRequest, "invalid_request", tt.field)
	}
	var many []string
	for i := range 1001 {
		many = append(many, fmt.Sprintf("%q", fmt.Sprint("id", i)))
	}
	wantError(t, f.post(t, "/v1/dead-letters/retry", `{"ids":[`+strings.Join(many, ",")+`]}`), http.StatusBadRequest, "invalid_request", "ids")
	wantError(t, f.do(t, request{method: http.MethodPost, path: "/v1/dead-letters/retry", body: []byte(`{"ids":["a"]}`), contentType: "text/plain"}),
		http.StatusUnsupportedMediaType, "unsupported_media_type", "")
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/dead-letters/retry"}), http.StatusMethodNotAllowed, "method_not_allowed", "")
	wantError(t, f.do(t, request{method: http.MethodPost, path: "/v1/dead-letters", body: []byte(`{}`)}), http.StatusMethodNotAllowed, "method_not_allowed", "")
}

func TestOperationRoutesNeedTheKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, r := range []request{
		{method: http.MethodGet, path: "/v1/messages?batch_id=spring"},
		{method: http.MethodDelete, path: "/v1/messages?batch_id=spring"},
		{method: http.MethodGet, path: "/v1/batches/spring"},
		{method: http.MethodGet, path: "/v1/dead-letters"},
		{method: http.MethodPost, path: "/v1/dead-letters/retry", body: []byte(`{"filter":{}}`)},
		{method: http.MethodPut, path: "/v1/dead-letters"},
	} {
		r.noAuth = true
		wantError(t, f.do(t, r), http.StatusUnauthorized, "unauthorized", "")
	}
}

// circuitStub is a circuit breaker in a fixed state.
type circuitStub struct{ state ratelimit.CircuitState }

func (c circuitStub) State(context.Context) (ratelimit.CircuitState, error) { return c.state, nil }

// /metrics tells the circuit breaker's state as Redis knows it, in
// Prometheus's text format.
func TestMetricsShowTheCircuit(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	client := enqueue.NewClient(rdb, enqueue.Config{})
	t.Cleanup(func() { _ = client.Close() })
	h, err := api.New(api.Config{APIKeys: []string{apiKey}, WebhookSecret: webhookSecret, Metrics: metrics.New(nil),
		Circuit: circuitStub{ratelimit.CircuitState{State: ratelimit.CircuitOpen}}}, client, store.New(rdb, store.Config{}), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	fam := families["chatq_circuit_open"]
	if fam == nil || len(fam.Metric) != 1 || fam.Metric[0].GetGauge().GetValue() != 1 {
		t.Errorf("chatq_circuit_open = %v, want 1", fam)
	}
}

// A message refused for its idempotency key (409) joins no campaign: the
// first message of that key, in another campaign, is neither counted, listed
// nor canceled with it, even through an index entry that names it.
func TestIdempotencyConflictLeavesOtherCampaignsAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t)
	first := `{"destination":"442070000001","payload":{"type":"text","message":"spring sale"},"batch_id":"spring","idempotency_key":"promo-1"}`
	res := f.post(t, "/v1/messages/batch", `{"messages":[`+first+`]}`)
	items := decode[struct {
		Results []struct {
			ID string `json:"id"`
		} `json:"results"`
	}](t, res).Results
	if res.status != http.StatusOK || len(items) != 1 || items[0].ID == "" {
		t.Fatalf("first batch: %d %s", res.status, res.body)
	}
	id := items[0].ID

	other := `{"destination":"442070000002","payload":{"type":"text","message":"autumn sale"},"batch_id":"autumn","idempotency_key":"promo-1"}`
	wantError(t, f.post(t, "/v1/messages", other), http.StatusConflict, "idempotency_conflict", "idempotency_key")
	res = f.post(t, "/v1/messages/batch", `{"messages":[`+other+`]}`)
	if res.status != http.StatusOK || !strings.Contains(string(res.body), `"idempotency_conflict"`) {
		t.Fatalf("conflicting batch: %d %s", res.status, res.body)
	}

	check := func(when string) {
		t.Helper()
		wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/batches/autumn"}), http.StatusNotFound, "not_found", "")
		wantError(t, f.do(t, request{method: http.MethodDelete, path: "/v1/messages?batch_id=autumn"}), http.StatusNotFound, "not_found", "")
		if p := decode[messagePage](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages?batch_id=autumn"})); len(p.Messages) != 0 {
			t.Errorf("%s: autumn lists %d messages, want none", when, len(p.Messages))
		}
		rec := decode[store.Record](t, f.do(t, request{method: http.MethodGet, path: "/v1/messages/" + id}))
		if rec.Status != store.Queued || rec.BatchID == nil || *rec.BatchID != "spring" {
			t.Errorf("%s: spring's message is %s in batch %v, want queued in spring", when, rec.Status, rec.BatchID)
		}
	}
	check("after the conflicts")

	// An index entry that names another campaign's message (as earlier
	// versions left) is not acted on either.
	if err := f.rdb.ZAdd(ctx, "chatq:batch:{autumn}", redis.Z{Score: float64(time.Now().UnixMilli()), Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	check("with a stale index entry")
	c := decode[struct {
		Total int `json:"total"`
	}](t, f.do(t, request{method: http.MethodGet, path: "/v1/batches/spring"}))
	if c.Total != 1 {
		t.Errorf("spring counts %d messages, want 1", c.Total)
	}
}
