package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
)

// rig is a Redis, a sandbox and an enqueue client, for workers that
// recover each other's messages.
type rig struct {
	redis   *redistest.Server
	sandbox *sandbox.Server
	ca      *chatarchitect.Client
	client  *enqueue.Client
	store   *store.Store
	log     *zap.Logger
}

func newRig(tb testing.TB, opts ...redistest.Options) *rig {
	tb.Helper()
	log := zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel))
	srv := redistest.Start(tb, opts...)
	rdb := srv.Client(tb)
	sb, err := sandbox.New(sandbox.Config{AppID: "app", AppSecret: "secret"}, log.Named("sandbox"))
	if err != nil {
		tb.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	tb.Cleanup(func() { sbSrv.Close(); sb.Close() })
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: sbSrv.URL, AppID: "app", AppSecret: "secret", Source: "15550001234", Timeout: 2 * time.Second}, nil)
	return &rig{redis: srv, sandbox: sb, ca: ca, log: log,
		client: enqueue.NewClient(rdb, enqueue.Config{MaxRetry: 3}),
		store:  store.New(rdb, store.Config{DueGrace: 300 * time.Millisecond})}
}

// fast is a configuration whose recovery works in fractions of a second.
func fast() Config {
	return Config{Concurrency: 4, SweepInterval: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond,
		SendLease: 300 * time.Millisecond, DueGrace: 300 * time.Millisecond, ShutdownTimeout: 2 * time.Second,
		Retry: Policy{MaxRetry: 3, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond}}
}

func (g *rig) worker(tb testing.TB, sender Sender, cfg Config) *Worker {
	tb.Helper()
	w := New(g.store.Redis(), cfg, sender, g.log.Named("worker"))
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Shutdown)
	return w
}

func (g *rig) send(tb testing.TB, dest string) string {
	tb.Helper()
	rec, err := g.client.Send(context.Background(), &enqueue.Message{Destination: dest, Payload: &enqueue.Text{Message: "code " + dest}})
	if err != nil {
		tb.Fatal(err)
	}
	return rec.ID
}

// waitStatus polls until record id has status want and returns it.
func (g *rig) waitStatus(tb testing.TB, id string, want store.Status, timeout time.Duration) *store.Record {
	tb.Helper()
	var r *store.Record
	poll.Until(tb, timeout, fmt.Sprintf("message %s %s", id, want), func() (bool, string) {
		var err error
		if r, err = g.store.Get(context.Background(), id); err != nil {
			tb.Fatal(err)
		}
		b, _ := json.Marshal(r)
		return r.Status == want, string(b)
	})
	return r
}

// hangingSender takes the message and never answers, like a worker frozen
// or killed with the request on the wire, until the test ends.
type hangingSender struct {
	calls   atomic.Int64
	release chan struct{}
}

func (s *hangingSender) Send(ctx context.Context, _ string, _ json.RawMessage) (string, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return "", errors.New("the worker was gone")
}

// possibleDuplicates sums chatq_possible_duplicates_total as m serves it.
func possibleDuplicates(tb testing.TB, m *metrics.Metrics) float64 {
	tb.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sum := 0.0
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
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

// A worker that dies with a send on the wire (here: it stops beating,
// its handler hangs) loses nothing: once its heartbeat lapses, the worker
// holding the sweeper's lease hands the message to a new task, which a
// live worker sends, counted as a possible duplicate and noted in the
// history. asynq alone would wait for the task's lease (30s), which the
// frozen worker's asynq server keeps extending.
func TestLostWorkersSendIsHandedOn(t *testing.T) {
	g := newRig(t)
	hang := &hangingSender{release: make(chan struct{})}
	lost := g.worker(t, hang, fast())
	t.Cleanup(func() { close(hang.release) }) // before the worker's Shutdown
	id := g.send(t, "4420799000019")
	poll.Until(t, 10*time.Second, "the send is on the wire", func() (bool, string) { return hang.calls.Load() == 1, "" })
	// The worker is lost: its heartbeat and sweeper stop, and it takes no
	// more tasks.
	lost.stop()
	lost.srv.Stop()

	m := metrics.New(asynq.NewInspectorFromRedisClient(g.store.Redis()))
	cfg := fast()
	cfg.Metrics = m
	g.worker(t, g.ca, cfg)
	r := g.waitStatus(t, id, store.Submitted, 20*time.Second)

	if r.TaskID != id+"-1" {
		t.Errorf("sent by task %q, want a new one, %s-1", r.TaskID, id)
	}
	var notes []string
	for _, h := range r.History {
		if h.Note != "" {
			notes = append(notes, h.Note)
		}
	}
	if want := "sent again: the previous attempt's outcome was not recorded (worker lost)"; len(notes) != 1 || notes[0] != want {
		t.Errorf("history notes %q, want %q", notes, want)
	}
	if n := possibleDuplicates(t, m); n != 1 {
		t.Errorf("%v possible duplicates counted, want 1", n)
	}
	if n := hang.calls.Load(); n != 1 {
		t.Errorf("the lost worker took the message up %d times, want once", n)
	}
	if st := g.sandbox.Stats(); st.Accepted != 1 {
		t.Errorf("the sandbox accepted %d sends, want 1", st.Accepted)
	}
}

// A message whose task was never written (its producer died in between)
// is given one by the sweeper, a grace after its creation; an ended one is
// not.
func TestRecordWithoutTaskIsSent(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	now := time.Now().UTC()
	for _, id := range []string{"orphan", "canceled"} {
		r := &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "transactional",
			Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: now}},
			CreatedAt: now, UpdatedAt: now, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional"}
		if _, err := g.store.Create(ctx, []*store.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.store.Cancel(ctx, "canceled", now); err != nil {
		t.Fatal(err)
	}
	g.worker(t, g.ca, fast())
	r := g.waitStatus(t, "orphan", store.Submitted, 20*time.Second)
	if r.TaskID != "orphan-1" {
		t.Errorf("sent by task %q, want orphan-1", r.TaskID)
	}
	inspector := asynq.NewInspectorFromRedisClient(g.store.Redis())
	for _, task := range []string{"canceled", "canceled-1"} {
		if _, err := inspector.GetTaskInfo("transactional", task); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("task %s of a canceled record: %v, want none", task, err)
		}
	}
}

// A task that asynq archives while its record is pending (its worker died
// on the last retry and the recoverer archived it, or an operator archived
// it from the dashboard) ends its record as a dead letter, code archived;
// a record already submitted is left alone.
func TestArchivedTasksOfPendingRecordsBecomeDeadLetters(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	inspector := asynq.NewInspectorFromRedisClient(g.store.Redis())
	ids := []string{g.send(t, "4420799000019"), g.send(t, "4420799000029"), g.send(t, "4420799000039")}
	// The first was taken up by a worker that then vanished; the second
	// was accepted upstream before its task was archived; the third still
	// waited in its queue.
	if _, _, err := g.store.Begin(ctx, ids[0], time.Now(), store.Owner{Task: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.store.Begin(ctx, ids[1], time.Now(), store.Owner{Task: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.store.Submit(ctx, ids[1], "p1", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := inspector.ArchiveTask("transactional", id); err != nil {
			t.Fatal(err)
		}
	}
	// The producer's grace (30s) has passed.
	if err := g.store.Postpone(ctx, ids[2], time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := fast()
	cfg.Queues = map[string]int{"bulk": 1} // none of these tasks' queues
	g.worker(t, g.ca, cfg)
	for _, id := range []string{ids[0], ids[2]} {
		r := g.waitStatus(t, id, store.Dead, 20*time.Second)
		if r.LastError == nil || r.LastError.Code != "archived" {
			t.Errorf("%s: last error %+v, want code archived", id, r.LastError)
		}
	}
	if r, _ := g.store.Get(ctx, ids[1]); r.Status != store.Submitted {
		t.Errorf("submitted message moved to %s", r.Status)
	}
}

// failingSender refuses every send as a server error.
type failingSender struct{ calls atomic.Int64 }

func (s *failingSender) Send(context.Context, string, json.RawMessage) (string, error) {
	s.calls.Add(1)
	return "", &chatarchitect.APIError{StatusCode: 500, Class: chatarchitect.ClassRetryable, Reason: "internal error"}
}

// The retry budget is the record's: a message handed a new task (its task
// was lost) does not start its retries again.
func TestRetryBudgetOutlivesTheTask(t *testing.T) {
	g := newRig(t)
	inspector := asynq.NewInspectorFromRedisClient(g.store.Redis())
	id := g.send(t, "4420799000019")
	fail := &failingSender{}
	cfg := fast()
	cfg.Retry = Policy{MaxRetry: 2, BaseDelay: 2 * time.Second, MaxDelay: 2 * time.Second}
	g.worker(t, fail, cfg)
	g.waitStatus(t, id, store.Retrying, 10*time.Second)
	// The task is lost while it waits for its retry.
	if err := inspector.DeleteTask("transactional", id); err != nil {
		t.Fatal(err)
	}
	r := g.waitStatus(t, id, store.Dead, 30*time.Second)
	if n := fail.calls.Load(); n != 3 {
		t.Errorf("%d attempts, want 3 (MaxRetry 2)", n)
	}
	if last := r.History[len(r.History)-1]; last.Note != "gave up after 3 attempts" {
		t.Errorf("last history entry %+v, want gave up after 3 attempts", last)
	}
	if r.TaskID == id {
		t.Errorf("the message kept its lost task %s", id)
	}
}

// A message handed back without a task (a hold whose task had no retries
// left) waits until it may go, then gets a new task.
func TestDeferredMessageGetsATaskWhenDue(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	id := g.send(t, "4420799000019")
	inspector := asynq.NewInspectorFromRedisClient(g.store.Redis())
	if err := inspector.DeleteTask("transactional", id); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(time.Second)
	if err := g.store.Defer(ctx, id, due); err != nil {
		t.Fatal(err)
	}
	g.worker(t, g.ca, fast())
	r := g.waitStatus(t, id, store.Submitted, 20*time.Second)
	if r.UpdatedAt.Before(due.Truncate(time.Millisecond)) {
		t.Errorf("sent at %s, before it was due at %s", r.UpdatedAt, due)
	}
}

// outageSender has ChatArchitect accept the message while Redis goes away
// and the task's context ends, as asynq ends it once Redis has been away
// longer than the task's lease.
type outageSender struct {
	calls  atomic.Int64
	outage func()
}

func (s *outageSender) Send(context.Context, string, json.RawMessage) (string, error) {
	if s.calls.Add(1) == 1 {
		s.outage()
	}
	return "pid-outage", nil
}

// TestAcceptanceDuringARedisOutageIsRecorded is a regression test: a send
// ChatArchitect accepted while Redis was away longer than the task's lease
// was never recorded (the handler gave up when asynq ended its context),
// so the message stayed "sending" and was sent again, uncounted.
func TestAcceptanceDuringARedisOutageIsRecorded(t *testing.T) {
	g := newRig(t, redistest.Options{AOF: true})
	if !g.redis.CanRestart() {
		t.Skip("needs a private redis-server")
	}
	id := g.send(t, "4420799000019")
	h := NewHandler(g.store, nil, Policy{MaxRetry: 3, BaseDelay: time.Second, MaxDelay: time.Second}, "w1", g.log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.unrecorded.run(ctx)
	taskCtx, lapse := context.WithCancel(ctx)
	sender := &outageSender{outage: func() { g.redis.Stop(t); lapse() }}
	h.sender = sender
	task := asynq.NewTask(enqueue.TaskSend, []byte(id))
	_ = h.ProcessTask(taskCtx, task)

	g.redis.Restart(t)
	// asynq runs the task again once Redis is back: it sends nothing.
	if err := h.ProcessTask(ctx, task); err != nil {
		t.Errorf("the task run again: %v", err)
	}
	r := g.waitStatus(t, id, store.Submitted, 20*time.Second)
	if r.ProviderMessageID == nil || *r.ProviderMessageID != "pid-outage" {
		t.Errorf("provider id %v, want pid-outage", r.ProviderMessageID)
	}
	if n := sender.calls.Load(); n != 1 {
		t.Errorf("sent %d times, want once", n)
	}
}

// Status callbacks whose task was never written (the process died between
// the change and the enqueue) are found on the due index by the worker
// that sweeps it, and delivered.
func TestStrandedCallbacksAreDelivered(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	var got atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	t.Cleanup(sink.Close)
	// No notifier: the notice waits without a task.
	st := store.New(g.store.Redis(), store.Config{NoticeGrace: 300 * time.Millisecond})
	now := time.Now().UTC()
	r := &store.Record{ID: "cb", Destination: "96996999699", Type: "text", Priority: "transactional", CallbackURL: sink.URL,
		Status: store.Canceled, History: []store.HistoryEntry{{Status: store.Canceled, At: now}},
		CreatedAt: now, UpdatedAt: now, Queue: "transactional"}
	if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
		t.Fatal(err)
	}
	d, err := callback.New(st, asynq.NewClientFromRedisClient(g.store.Redis()), callback.Config{Secret: "s", AllowPrivate: true}, g.log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fast()
	cfg.Conversation = &Conversation{Callbacks: d}
	g.worker(t, g.ca, cfg)
	poll.Until(t, 20*time.Second, "the callback delivered", func() (bool, string) { return got.Load() == 1, "" })
}

// takeWithoutHandler does to message id's task what asynq's dequeue does
// (pending to active, with a 30s lease) when no handler gets the task: a
// dequeue whose answer timed out (Redis or the worker stalled longer than
// the client's read timeout; the script ran, asynq logs a dequeue error
// and forgets the task), or a server that lost track of the handler. No
// asynq heartbeat renews the lease.
var takeWithoutHandler = redis.NewScript(`
if redis.call('LREM', KEYS[1], 0, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], 'state', 'active')
redis.call('HDEL', KEYS[4], 'pending_since')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1`)

// A message whose task asynq holds active with no handler of a live
// worker on it is handed a new task once no asynq heartbeat has renewed
// the task's lease for two of asynq's beats, not only when the lease
// lapses 30s after it was taken.
func TestActiveTaskWithoutHandlerIsHandedOn(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	id := g.send(t, "4420799000027")
	q := "asynq:{" + enqueue.QueueFor(enqueue.Transactional) + "}:"
	n, err := takeWithoutHandler.Run(ctx, g.store.Redis(), []string{q + "pending", q + "active", q + "lease", q + "t:" + id},
		id, time.Now().Add(30*time.Second).Unix()).Int()
	if err != nil || n != 1 {
		t.Fatalf("take the task without a handler: %v, %d", err, n)
	}
	// The sweeper looks at the message now, not 30s after its creation.
	if err := g.store.Postpone(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	g.worker(t, g.ca, fast())
	r := g.waitStatus(t, id, store.Submitted, 20*time.Second)
	if r.TaskID != id+"-1" {
		t.Errorf("sent by task %q, want a new one, %s-1", r.TaskID, id)
	}
	if st := g.sandbox.Stats(); st.Accepted != 1 {
		t.Errorf("the sandbox accepted %d sends, want 1", st.Accepted)
	}
}

// Right after Redis was away, no asynq server has renewed its leases yet:
// the sweeper then hands on a task only once its lease lapsed, and judges
// unrenewed leases again once the servers had time to beat.
func TestUnrenewedLeaseRightAfterAnOutageIsNotJudged(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	id := g.send(t, "4420799000035")
	q := "asynq:{" + enqueue.QueueFor(enqueue.Transactional) + "}:"
	// Taken 15s ago, never renewed since.
	n, err := takeWithoutHandler.Run(ctx, g.store.Redis(), []string{q + "pending", q + "active", q + "lease", q + "t:" + id},
		id, time.Now().Add(15*time.Second).Unix()).Int()
	if err != nil || n != 1 {
		t.Fatalf("take the task without a handler: %v, %d", err, n)
	}
	w := New(g.store.Redis(), fast(), g.ca, g.log.Named("worker")) // not started: the test sweeps
	taskOf := func() string {
		t.Helper()
		if err := g.store.Postpone(ctx, id, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := w.recovery.sweep(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := g.store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.TaskID
	}

	w.recovery.failed.Store(time.Now().UnixNano())
	if task := taskOf(); task != id {
		t.Errorf("right after an outage, the message was handed task %q, want it kept on %s", task, id)
	}
	w.recovery.failed.Store(time.Now().Add(-unrenewed).UnixNano())
	if task := taskOf(); task != id+"-1" {
		t.Errorf("the message has task %q, want a new one, %s-1", task, id)
	}
}

// A backlog waiting in asynq (a campaign's, or one left by a stopped
// worker) comes due on the index all at once: the sweeper reads the tasks'
// states in one round trip and looks at them again later, a few commands a
// message, not a full look each, and nothing about them changes.
func TestABacklogCostsTheSweeperFewCommands(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	const n = 200
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = &enqueue.Message{Destination: fmt.Sprintf("44207990%05d", i), Payload: &enqueue.Text{Message: "backlog"}}
	}
	res, err := g.client.SendBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	rdb := g.store.Redis().(*redis.Client)
	now := time.Now()
	for _, r := range res {
		if err := g.store.Postpone(ctx, r.Record.ID, now); err != nil {
			t.Fatal(err)
		}
	}
	w := New(rdb, fast(), g.ca, g.log.Named("worker")) // not started: the test sweeps
	redistest.Commands(t, rdb)
	seen, err := w.recovery.sweep(ctx)
	if err != nil || seen != n {
		t.Fatalf("sweep: %d entries, %v; want %d", seen, err, n)
	}
	// The records, their tasks' states, and one command for every later
	// look; a few more for the sweep's own reads.
	if c := redistest.Commands(t, rdb); redistest.Total(c) > 2*n+20 {
		t.Errorf("sweeping a backlog of %d ran %d commands, want %d at most: %v", n, redistest.Total(c), 2*n+20, c)
	}
	for _, r := range res {
		rec, err := g.store.Get(ctx, r.Record.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != store.Queued || rec.TaskID != r.Record.ID {
			t.Fatalf("%s after the sweep: %s, task %s; want queued on its first task", rec.ID, rec.Status, rec.TaskID)
		}
	}
	if due, err := g.store.Due(ctx, time.Now(), n); err != nil || len(due) != 0 {
		t.Errorf("%d entries still due (%v): a backlog is looked at again later", len(due), err)
	}
}
