package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// bundle is a sandbox, a Redis, an enqueue client and, when asked, the API
// receiving the sandbox's webhooks.
type bundle struct {
	rdb     *redis.Client
	sandbox *sandbox.Server
	ca      *chatarchitect.Client
	client  *enqueue.Client
	store   *store.Store
	log     *zap.Logger
}

func setup(tb testing.TB, sbCfg sandbox.Config, webhooks bool) *bundle {
	tb.Helper()
	log := zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
	rdb := redistest.Start(tb).Client(tb)
	sbCfg.AppID, sbCfg.AppSecret = "app", "secret"
	sb, err := sandbox.New(sbCfg, log.Named("sandbox"))
	if err != nil {
		tb.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	tb.Cleanup(func() { sbSrv.Close(); sb.Close() })
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: sbSrv.URL, AppID: "app", AppSecret: "secret", Source: "15550001234", Timeout: 2 * time.Second}, nil)
	b := &bundle{rdb: rdb, sandbox: sb, ca: ca, store: store.New(rdb, store.Config{}), log: log,
		client: enqueue.NewClient(rdb, enqueue.Config{MaxRetry: 3})}
	tb.Cleanup(func() { b.client.Close() })
	if webhooks {
		a, err := api.New(api.Config{APIKeys: []string{"k"}, WebhookSecret: "hook"}, b.client, b.store, log.Named("api"))
		if err != nil {
			tb.Fatal(err)
		}
		apiSrv := httptest.NewServer(a)
		tb.Cleanup(apiSrv.Close)
		if err := ca.RegisterWebhook(context.Background(), apiSrv.URL+"/webhooks/chatarchitect/hook"); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

func (b *bundle) worker(tb testing.TB, sender worker.Sender, cfg worker.Config) *worker.Worker {
	tb.Helper()
	if cfg.Retry.BaseDelay == 0 {
		cfg.Retry = worker.Policy{MaxRetry: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	}
	w := worker.New(b.rdb, cfg, sender, b.log.Named("worker"))
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Shutdown)
	return w
}

func text(dest, body string) *enqueue.Message {
	return &enqueue.Message{Destination: dest, Payload: &enqueue.Text{Message: body}, Priority: enqueue.Bulk}
}

// waitAll polls until every record satisfies done, or fails the test.
func (b *bundle) waitAll(tb testing.TB, ids []string, timeout time.Duration, done func(*store.Record) bool) []*store.Record {
	tb.Helper()
	var recs []*store.Record
	poll.Until(tb, timeout, "every message done", func() (bool, string) {
		var err error
		if recs, err = b.store.GetMany(context.Background(), ids); err != nil {
			tb.Fatal(err)
		}
		pending := 0
		var example *store.Record
		for _, r := range recs {
			if r == nil || !done(r) {
				pending++
				example = r
			}
		}
		one, _ := json.Marshal(example)
		return pending == 0, fmt.Sprintf("%d of %d not done; one of them: %s", pending, len(ids), one)
	})
	return recs
}

// slowSender delays the recording of every acceptance, so that the
// sandbox's webhooks overtake the worker.
type slowSender struct {
	next  worker.Sender
	delay time.Duration
}

func (s slowSender) Send(ctx context.Context, dest string, payload json.RawMessage) (string, error) {
	id, err := s.next.Send(ctx, dest, payload)
	if err == nil {
		time.Sleep(s.delay)
	}
	return id, err
}

func TestWebhooksBeforeTheProviderIDIsStoredAreApplied(t *testing.T) {
	b := setup(t, sandbox.Config{}, true)
	b.worker(t, slowSender{b.ca, 300 * time.Millisecond}, worker.Config{Concurrency: 10})
	var ids []string
	for i := range 20 {
		rec, err := b.client.Send(context.Background(), text(fmt.Sprintf("4477009%04d9", i), "early"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	recs := b.waitAll(t, ids, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Read })
	for _, r := range recs {
		want := []store.Status{store.Queued, store.Sending}
		for _, h := range r.History[:2] {
			if h.Status != want[0] {
				t.Errorf("%s: history starts %v", r.ID, r.History)
			}
			want = want[1:]
		}
		if r.WhatsAppMessageID == nil || r.ProviderMessageID == nil {
			t.Errorf("%s: ids not both stored: %v %v", r.ID, r.ProviderMessageID, r.WhatsAppMessageID)
		}
	}
}

func TestDuplicatedAndReorderedWebhooksEndInTheSameStatuses(t *testing.T) {
	b := setup(t, sandbox.Config{DuplicateRatio: 0.5, ReorderRatio: 0.5, WebhookDelay: 5 * time.Millisecond}, true)
	b.worker(t, b.ca, worker.Config{Concurrency: 20})
	want := map[string]store.Status{}
	var ids []string
	for i := range 60 {
		dest, st := fmt.Sprintf("4478009%04d9", i), store.Read
		switch i % 6 {
		case 1:
			dest, st = fmt.Sprintf("447801%02d0001", i), store.Failed
		case 2:
			dest, st = fmt.Sprintf("447802%02d0005", i), store.Delivered
		}
		rec, err := b.client.Send(context.Background(), text(dest, "chaos"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
		want[rec.ID] = st
	}
	b.waitAll(t, ids, 30*time.Second, func(r *store.Record) bool { return r.Status == want[r.ID] })
	// Nothing moves afterwards either: let the late duplicates land.
	time.Sleep(300 * time.Millisecond)
	b.waitAll(t, ids, time.Second, func(r *store.Record) bool { return r.Status == want[r.ID] })
}

func TestHardStopMidRunLosesNothing(t *testing.T) {
	const n, concurrency = 1000, 20
	b := setup(t, sandbox.Config{Latency: 20 * time.Millisecond}, false)
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = text(fmt.Sprintf("4479%07d9", i), fmt.Sprintf("message %d", i))
	}
	res, err := b.client.SendBatch(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		ids[i] = r.Record.ID
	}
	// The first worker is stopped with sends on the wire and no time to
	// finish them: asynq hands their tasks back unacknowledged.
	m := metrics.New(asynq.NewInspectorFromRedisClient(b.rdb))
	first := b.worker(t, b.ca, worker.Config{Concurrency: concurrency, ShutdownTimeout: time.Millisecond, Metrics: m})
	poll.Until(t, 30*time.Second, "the first worker gets going", func() (bool, string) { return b.sandbox.Stats().Accepted >= n/3, "" })
	first.Shutdown()
	acceptedAtStop := b.sandbox.Stats().Accepted

	b.worker(t, b.ca, worker.Config{Concurrency: concurrency, Metrics: m})
	b.waitAll(t, ids, 60*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted })

	st := b.sandbox.Stats()
	counted := possibleDuplicates(t, m)
	t.Logf("hard stop after %d of %d accepted: %d sent twice (bound: %d in flight, %v counted as possible); %d accepted in all",
		acceptedAtStop, n, st.Duplicates, concurrency, counted, st.Accepted)
	// Every duplicate is one chatq owns up to.
	if float64(st.Duplicates) > counted {
		t.Errorf("%d duplicates, but only %v counted as possible (chatq_possible_duplicates_total)", st.Duplicates, counted)
	}
	if st.Duplicates > concurrency {
		t.Errorf("%d duplicates, more than the %d sends that can be in flight", st.Duplicates, concurrency)
	}
	if st.Accepted-st.Duplicates != n {
		t.Errorf("%d distinct messages reached the sandbox, want %d", st.Accepted-st.Duplicates, n)
	}
}

// possibleDuplicates sums chatq_possible_duplicates_total as m serves it.
func possibleDuplicates(tb testing.TB, m *metrics.Metrics) float64 {
	tb.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sum := 0.0
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if !strings.HasPrefix(line, "chatq_possible_duplicates_total") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			tb.Fatal(err)
		}
		sum += v
	}
	return sum
}
