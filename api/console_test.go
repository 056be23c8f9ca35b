package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/console"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/stats"
	"github.com/chatq/chatq/internal/store"
)

// consoleFixture is the API as chatq api serves it to the console: status
// changes counted, the console mounted.
func consoleFixture(tb testing.TB) (*fixture, *stats.Counter) {
	tb.Helper()
	rdb := redistest.Start(tb).Client(tb)
	log := zaptest.NewLogger(tb)
	counter := stats.New(rdb, log)
	client := enqueue.NewClient(rdb, enqueue.Config{Counter: counter})
	st := store.New(rdb, store.Config{Counter: counter})
	ch, err := console.Handler()
	if err != nil {
		tb.Fatal(err)
	}
	h, err := api.New(api.Config{APIKeys: []string{apiKey}, WebhookSecret: webhookSecret, Console: ch}, client, st, log)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(h)
	tb.Cleanup(ts.Close)
	return &fixture{url: ts.URL, client: client, rdb: rdb, store: st, inspect: asynq.NewInspectorFromRedisClient(rdb),
		http: &http.Client{Timeout: 10 * time.Second}}, counter
}

type queueSize struct {
	Queue   string `json:"queue"`
	Size    int    `json:"size"`
	Pending int    `json:"pending"`
}

type statsAnswer struct {
	Minutes []struct {
		At     time.Time      `json:"at"`
		Counts map[string]int `json:"counts"`
	} `json:"minutes"`
	Queues []queueSize `json:"queues"`
}

func TestStatsRoute(t *testing.T) {
	t.Parallel()
	f, counter := consoleFixture(t)
	ids := f.sendBatch(t, "spring", 3)
	if res := f.do(t, request{method: http.MethodDelete, path: "/v1/messages/" + ids[0]}); res.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", res.status, res.body)
	}
	if err := counter.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := f.do(t, request{method: http.MethodGet, path: "/v1/stats"})
	if res.status != http.StatusOK {
		t.Fatalf("GET /v1/stats: %d %s", res.status, res.body)
	}
	a := decode[statsAnswer](t, res)
	if len(a.Minutes) != 60 {
		t.Errorf("%d minutes, want the last hour's 60", len(a.Minutes))
	}
	got := map[string]int{}
	for _, m := range a.Minutes {
		for st, n := range m.Counts {
			got[st] += n
		}
	}
	if diff := gocmp.Diff(map[string]int{"queued": 3, "canceled": 1}, got); diff != "" {
		t.Errorf("status changes of the last hour (-want +got):\n%s", diff)
	}
	// A canceled message's task waits for a worker, which drops it.
	if diff := gocmp.Diff([]queueSize{{Queue: "bulk", Size: 3, Pending: 3}}, a.Queues); diff != "" {
		t.Errorf("queues (-want +got):\n%s", diff)
	}
	if res := f.do(t, request{method: http.MethodGet, path: "/v1/stats?minutes=5"}); len(decode[statsAnswer](t, res).Minutes) != 5 {
		t.Errorf("minutes=5: %s", res.body)
	}
}

func TestListBatchesRoute(t *testing.T) {
	t.Parallel()
	f, _ := consoleFixture(t)
	f.sendBatch(t, "spring", 2)
	f.sendBatch(t, "autumn", 1)
	var got []string
	path := "/v1/batches?limit=1"
	for range 5 {
		res := f.do(t, request{method: http.MethodGet, path: path})
		if res.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, res.status, res.body)
		}
		p := decode[struct {
			Batches []struct {
				ID            string    `json:"batch_id"`
				LastCreatedAt time.Time `json:"last_created_at"`
			} `json:"batches"`
			NextCursor *string `json:"next_cursor"`
		}](t, res)
		for _, b := range p.Batches {
			if b.LastCreatedAt.IsZero() {
				t.Errorf("batch %s without last_created_at", b.ID)
			}
			got = append(got, b.ID)
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/batches?limit=1&cursor=" + *p.NextCursor
	}
	if diff := gocmp.Diff([]string{"autumn", "spring"}, got); diff != "" {
		t.Errorf("campaigns, latest first (-want +got):\n%s", diff)
	}
}

func TestListMessagesOfARecipientRoute(t *testing.T) {
	t.Parallel()
	f, _ := consoleFixture(t)
	ids := f.sendBatch(t, "spring", 2) // to 4420700000 and 4420700001
	res := f.post(t, "/v1/messages", `{"destination":"+4420700001","payload":{"type":"text","message":"hi"}}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", res.status, res.body)
	}
	solo := decode[store.Record](t, res).ID
	res = f.do(t, request{method: http.MethodGet, path: "/v1/messages?destination=4420700001"})
	if res.status != http.StatusOK {
		t.Fatalf("by recipient: %d %s", res.status, res.body)
	}
	var got []string
	for _, r := range decode[messagePage](t, res).Messages {
		got = append(got, r.ID)
	}
	if diff := gocmp.Diff([]string{solo, ids[1]}, got); diff != "" {
		t.Errorf("the recipient's messages, newest first (-want +got):\n%s", diff)
	}
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/messages?status=queued"}), http.StatusBadRequest, "invalid_request", "batch_id")
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/messages?destination=12ab"}), http.StatusBadRequest, "invalid_request", "destination")
}

func TestValidateRoute(t *testing.T) {
	t.Parallel()
	f, _ := consoleFixture(t)
	res := f.post(t, "/v1/messages/validate", `{"messages":[
		{"destination":"4420700001","payload":{"type":"text","message":"hi"},"batch_id":"dry"},
		{"destination":"12ab","payload":{"type":"text","message":"hi"},"batch_id":"dry"},
		{"destination":"4420700003","payload":{"type":"text"},"batch_id":"dry"},
		{"destination":"4420700004","payload":{"type":"text","message":"hi","colour":"red"},"batch_id":"dry"}]}`)
	if res.status != http.StatusOK {
		t.Fatalf("validate: %d %s", res.status, res.body)
	}
	type item struct {
		Index int  `json:"index"`
		Valid bool `json:"valid"`
		Error *struct {
			Code  string `json:"code"`
			Field string `json:"field"`
		} `json:"error"`
	}
	got := decode[struct {
		Results []item `json:"results"`
	}](t, res).Results
	var summary []string
	for _, it := range got {
		s := "valid"
		if !it.Valid {
			s = it.Error.Code + " " + it.Error.Field
		}
		summary = append(summary, s)
	}
	want := []string{"valid", "invalid_request destination", "invalid_request payload.message", "invalid_request payload.colour"}
	if diff := gocmp.Diff(want, summary); diff != "" {
		t.Errorf("each row's verdict (-want +got):\n%s", diff)
	}
	// Nothing was stored nor queued.
	wantError(t, f.do(t, request{method: http.MethodGet, path: "/v1/batches/dry"}), http.StatusNotFound, "not_found", "")
	if n := f.tasks(t); n != 0 {
		t.Errorf("%d tasks queued by a validation", n)
	}

	for _, tt := range []struct{ body, field string }{
		{`{"messages":[]}`, "messages"},
		{`{"messages":[{}],"dry":true}`, "body"},
		{`[]`, "body"},
	} {
		wantError(t, f.post(t, "/v1/messages/validate", tt.body), http.StatusBadRequest, "invalid_request", tt.field)
	}
}

func TestConsoleRoutesRefuseBadInput(t *testing.T) {
	t.Parallel()
	f, _ := consoleFixture(t)
	for _, tt := range []struct {
		method, path string
		status       int
		code, field  string
	}{
		{http.MethodGet, "/v1/stats?minutes=0", http.StatusBadRequest, "invalid_request", "minutes"},
		{http.MethodGet, "/v1/stats?minutes=111", http.StatusBadRequest, "invalid_request", "minutes"},
		{http.MethodGet, "/v1/stats?minute=5", http.StatusBadRequest, "invalid_request", "minute"},
		{http.MethodGet, "/v1/batches?limit=0", http.StatusBadRequest, "invalid_request", "limit"},
		{http.MethodGet, "/v1/batches?cursor=nonsense", http.StatusBadRequest, "invalid_request", "cursor"},
		{http.MethodPost, "/v1/stats", http.StatusMethodNotAllowed, "method_not_allowed", ""},
		{http.MethodDelete, "/v1/batches", http.StatusMethodNotAllowed, "method_not_allowed", ""},
	} {
		wantError(t, f.do(t, request{method: tt.method, path: tt.path}), tt.status, tt.code, tt.field)
	}
	for _, path := range []string{"/v1/stats", "/v1/batches"} {
		wantError(t, f.do(t, request{method: http.MethodGet, path: path, noAuth: true}), http.StatusUnauthorized, "unauthorized", "")
	}
	// The console's own files need no key: it asks for one.
	res := f.do(t, request{method: http.MethodGet, path: "/console/campaigns", noAuth: true})
	if res.status != http.StatusOK || res.header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /console/campaigns: %d, CSP %q", res.status, res.header.Get("Content-Security-Policy"))
	}
	if res := f.do(t, request{method: http.MethodGet, path: "/console", noAuth: true}); res.status != http.StatusOK {
		t.Errorf("GET /console: %d, want the console after a redirect", res.status)
	}
}
