package callback

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

const secret = "test-secret"

// sink is a receiver that answers with the codes it is given, then 200.
type sink struct {
	srv *httptest.Server

	mu      sync.Mutex
	answers []int
	got     []string // status (or type) of each accepted body
	bodies  [][]byte
}

func newSink(tb testing.TB, answers ...int) *sink {
	s := &sink{answers: answers}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), body, 0, time.Now()); err != nil {
			tb.Errorf("bad signature: %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.answers) > 0 {
			code := s.answers[0]
			s.answers = s.answers[1:]
			if code != http.StatusOK {
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(code)
				return
			}
		}
		var v struct{ Status, Type string }
		_ = json.Unmarshal(body, &v)
		if v.Status == "" {
			v.Status = v.Type // an inbound event
		}
		s.got = append(s.got, v.Status)
		s.bodies = append(s.bodies, body)
	}))
	tb.Cleanup(s.srv.Close)
	return s
}

func (s *sink) statuses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

type bundle struct {
	st *store.Store
	q  *asynq.Client
	d  *Deliverer
}

func setup(tb testing.TB, cfg Config) *bundle {
	tb.Helper()
	rdb := redistest.Start(tb).Client(tb)
	st := store.New(rdb, store.Config{NoticeGrace: time.Second})
	q := asynq.NewClientFromRedisClient(rdb)
	cfg.Secret = secret
	d, err := New(st, q, cfg, zaptest.NewLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return &bundle{st: st, q: q, d: d}
}

// sweep hands a task to the notices the due index has due at at, as the
// worker that sweeps it does, and returns how many it enqueued.
func (b *bundle) sweep(tb testing.TB, at time.Time) int {
	tb.Helper()
	ctx := context.Background()
	entries, err := b.st.Due(ctx, at, 100)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if e.Notices {
			ids = append(ids, e.ID)
		}
	}
	b.d.now = func() time.Time { return at }
	defer func() { b.d.now = time.Now }()
	n, err := b.d.Sweep(ctx, ids)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// message creates a record with a callback URL and moves it through
// statuses.
func (b *bundle) message(tb testing.TB, id, url string, steps ...store.Status) {
	tb.Helper()
	ctx := context.Background()
	now := time.Now()
	r := &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "bulk", CallbackURL: url,
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: now}}, CreatedAt: now, UpdatedAt: now, Queue: "bulk"}
	if _, err := b.st.Create(ctx, []*store.Record{r}); err != nil {
		tb.Fatal(err)
	}
	for _, s := range steps {
		var err error
		switch s {
		case store.Sending:
			_, _, err = b.st.Begin(ctx, id, now, store.Owner{})
		case store.Submitted:
			_, err = b.st.Submit(ctx, id, "pid-"+id, now)
		default:
			_, err = b.st.ApplyEvent(ctx, store.Event{ID: "pid-" + id, Status: s, At: now, Key: string(s)})
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func task(id string, seq int64) *asynq.Task {
	b, _ := json.Marshal(statusTask{ID: id, Seq: seq})
	return asynq.NewTask(TaskStatus, b)
}

func TestStatusNoticesAreDeliveredInOrderAndRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{AllowPrivate: true})
	ctx := context.Background()
	s := newSink(t, http.StatusServiceUnavailable, http.StatusOK, http.StatusInternalServerError)
	b.message(t, "m1", s.srv.URL, store.Sending, store.Submitted, store.Delivered)

	// First try: the receiver refuses the first notice; nothing is lost,
	// and asynq is told to retry after the receiver's Retry-After.
	err := b.d.deliverStatus(ctx, task("m1", 4))
	var re *retryError
	if !errors.As(err, &re) || re.RetryDelay() != 3*time.Second {
		t.Fatalf("first delivery: %v, want a retry in 3s", err)
	}
	// The sweeper leaves the message to that retry, unless it does not
	// come.
	start := time.Now()
	for _, tt := range []struct {
		at   time.Duration
		want int
	}{{2 * time.Second, 0}, {5 * time.Second, 1}} {
		if n := b.sweep(t, start.Add(tt.at)); n != tt.want {
			t.Errorf("sweep %s after the failure: %d, want %d", tt.at, n, tt.want)
		}
	}
	// Second try: one notice goes, the next is refused.
	if err := b.d.deliverStatus(ctx, task("m1", 4)); err == nil {
		t.Fatal("second delivery succeeded despite a 500")
	}
	if err := b.d.deliverStatus(ctx, task("m1", 4)); err != nil {
		t.Fatalf("third delivery: %v", err)
	}
	if diff := cmp.Diff([]string{"queued", "sending", "submitted", "delivered"}, s.statuses()); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	// A task whose notice went with an earlier one has nothing to do.
	if err := b.d.deliverStatus(ctx, task("m1", 2)); err != nil {
		t.Errorf("late task: %v", err)
	}
	if len(s.statuses()) != 4 {
		t.Errorf("a late task delivered again: %v", s.statuses())
	}
}

func TestBackoffStartsWithinSeconds(t *testing.T) {
	t.Parallel()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for n, w := range want {
		if got := backoff(n); got != w {
			t.Errorf("backoff(%d) = %s, want %s", n, got, w)
		}
	}
	if got := backoff(40); got != MaxDelay {
		t.Errorf("backoff(40) = %s, want the cap %s", got, MaxDelay)
	}
}

func TestPrivateAddressesAreRefusedAtDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	s := newSink(t)
	// A name that resolves to loopback: what a DNS rebinding would do.
	u, err := url.Parse(s.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b.message(t, "m2", "http://localhost:"+u.Port()+"/cb")
	err = b.d.deliverStatus(context.Background(), task("m2", 1))
	if !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("delivery to loopback: %v, want ErrPrivateAddress", err)
	}
	if got := s.statuses(); len(got) != 0 {
		t.Errorf("the receiver got %v", got)
	}
}

func TestOldNoticesAreGivenUp(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{AllowPrivate: true, GiveUpAfter: time.Hour})
	s := newSink(t)
	b.message(t, "m3", s.srv.URL, store.Sending)
	b.d.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if err := b.d.deliverStatus(context.Background(), task("m3", 2)); err != nil {
		t.Fatal(err)
	}
	if got := s.statuses(); len(got) != 0 {
		t.Errorf("given-up notices were delivered: %v", got)
	}
	if n, _ := b.st.NextNotice(context.Background(), "m3"); n != nil {
		t.Errorf("notice %d still pending", n.Seq)
	}
}

func TestSweepHandsStrandedNoticesATask(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{AllowPrivate: true})
	s := newSink(t)
	// The store has no notifier: as if the process died before enqueueing.
	b.message(t, "m4", s.srv.URL, store.Sending)
	if n := b.sweep(t, time.Now().Add(500*time.Millisecond)); n != 0 {
		t.Fatalf("sweep before the grace: %d tasks", n)
	}
	if n := b.sweep(t, time.Now().Add(2*time.Second)); n != 1 {
		t.Fatalf("sweep: %d tasks, want 1", n)
	}
	// The next sweep finds the task still waiting: no second one.
	if n := b.sweep(t, time.Now().Add(time.Minute)); n != 0 {
		t.Errorf("second sweep: %d tasks, want 0", n)
	}
	info, err := asynq.NewInspectorFromRedisClient(b.st.Redis()).GetTaskInfo(Queue, "cb:m4:sweep")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.d.deliverStatus(context.Background(), asynq.NewTask(TaskStatus, info.Payload)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"queued", "sending"}, s.statuses()); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
}

func TestInboundEventsAreForwardedOnce(t *testing.T) {
	t.Parallel()
	s := newSink(t, http.StatusBadGateway)
	b := setup(t, Config{InboundURL: s.srv.URL})
	ctx := context.Background()
	f := NewForwarder(b.st.Redis(), b.q, time.Hour)
	in := &Inbound{Type: InboundMessage, Phone: "96996999699", At: time.Now(), Webhook: json.RawMessage(`{"type":"message"}`),
		Message: &InboundText{ID: "wamid.1", Type: "text", Text: "hello"}}
	for range 2 { // the upstream repeats its webhooks
		if err := f.Forward(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	ins := asynq.NewInspectorFromRedisClient(b.st.Redis())
	tasks, err := ins.ListPendingTasks(Queue)
	if err != nil || len(tasks) != 1 {
		t.Fatalf("pending tasks: %d %v", len(tasks), err)
	}
	if string(tasks[0].Payload) == "" || json.Valid(tasks[0].Payload) {
		t.Errorf("task payload %q is not a bare key", tasks[0].Payload)
	}
	task := asynq.NewTask(TaskInbound, tasks[0].Payload)
	if err := b.d.deliverInbound(ctx, task); err == nil {
		t.Fatal("a 502 counted as delivered")
	}
	if err := b.d.deliverInbound(ctx, task); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	var got Inbound
	err = json.Unmarshal(s.bodies[0], &got)
	s.mu.Unlock()
	if err != nil || got.Message == nil || got.Message.Text != "hello" || got.Phone != "96996999699" {
		t.Errorf("forwarded %+v %v", got, err)
	}
}

func TestStatusBodiesAreTheRecordAsOfEachChange(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{AllowPrivate: true})
	ctx := context.Background()
	s := newSink(t)
	b.message(t, "m5", s.srv.URL)
	// snapshot is the record's JSON right after a change: the body its
	// callback must have.
	var want []string
	snapshot := func() {
		t.Helper()
		r, err := b.st.Get(ctx, "m5")
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(body))
	}
	at := time.Now()
	next := func() time.Time { at = at.Add(time.Second); return at }
	event := func(st store.Status, wid string) {
		t.Helper()
		if _, err := b.st.ApplyEvent(ctx, store.Event{ID: "pid-m5", Status: st, WhatsAppID: wid, At: next(), Key: string(st) + at.String()}); err != nil {
			t.Fatal(err)
		}
	}
	snapshot()
	for range 3 { // failed attempts make a longer history
		if _, _, err := b.st.Begin(ctx, "m5", next(), store.Owner{}); err != nil {
			t.Fatal(err)
		}
		snapshot()
		e := &store.ErrorInfo{Class: "transient", Code: "500", Message: "upstream error", At: next()}
		if _, _, err := b.st.Move(ctx, "m5", store.Change{Status: store.Retrying, At: at, Failed: true, Error: e}); err != nil {
			t.Fatal(err)
		}
		snapshot()
		if err := b.st.Note(ctx, "m5", next(), "waiting for the sender's rate"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.st.Begin(ctx, "m5", next(), store.Owner{}); err != nil {
		t.Fatal(err)
	}
	snapshot()
	if _, err := b.st.Submit(ctx, "m5", "pid-m5", next()); err != nil {
		t.Fatal(err)
	}
	snapshot()
	event(store.Enqueued, "wamid.m5")
	snapshot()
	event(store.Delivered, "")
	snapshot()
	event(store.Delivered, "") // repeated: kept in the history, no callback
	event(store.Read, "")
	snapshot()

	if err := b.d.deliverStatus(ctx, task("m5", int64(len(want)))); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bodies) != len(want) {
		t.Fatalf("%d callbacks, want %d", len(s.bodies), len(want))
	}
	for i, body := range s.bodies {
		if diff := cmp.Diff(want[i], string(body)); diff != "" {
			t.Errorf("callback %d (-the record after its change +the body):\n%s", i+1, diff)
		}
	}
}

func TestNoticesOfAGoneRecordAreGivenUp(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{AllowPrivate: true})
	ctx := context.Background()
	s := newSink(t)
	b.message(t, "m6", s.srv.URL, store.Sending)
	// The record expired (or was evicted) before its notices went.
	if err := b.st.Redis().Del(ctx, "chatq:m:{m6}").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.d.deliverStatus(ctx, task("m6", 2)); err != nil {
		t.Fatal(err)
	}
	if got := s.statuses(); len(got) != 0 {
		t.Errorf("callbacks of a gone record were delivered: %v", got)
	}
	if n, err := b.st.NextNotice(ctx, "m6"); n != nil || err != nil {
		t.Errorf("notice still pending: %+v %v", n, err)
	}
}
