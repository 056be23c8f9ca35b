package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/lanetest"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// fixture is a Client on a Redis of its own, and what a test inspects it
// with.
type fixture struct {
	client  *enqueue.Client
	rdb     *redis.Client
	inspect *asynq.Inspector
}

func setup(tb testing.TB) *fixture {
	tb.Helper()
	rdb := redistest.Start(tb).Client(tb)
	client := enqueue.NewClient(rdb, enqueue.Config{})
	tb.Cleanup(func() { _ = client.Close() })
	// The inspector shares rdb, which the test's cleanup closes.
	return &fixture{client: client, rdb: rdb, inspect: asynq.NewInspectorFromRedisClient(rdb)}
}

// tasks returns how many tasks the queue holds, in any state, once the
// lanes are moved.
func (f *fixture) tasks(tb testing.TB, queue string) int {
	tb.Helper()
	lanetest.Move(tb, f.client, store.New(f.rdb, store.Config{}))
	queues, err := f.inspect.Queues()
	if err != nil {
		tb.Fatalf("list queues: %v", err)
	}
	if !slices.Contains(queues, queue) {
		return 0
	}
	info, err := f.inspect.GetQueueInfo(queue)
	if err != nil {
		tb.Fatalf("queue %s: %v", queue, err)
	}
	return info.Size
}

// task returns the task of a record, failing tb if there is none.
func (f *fixture) task(tb testing.TB, queue, id string) *asynq.TaskInfo {
	tb.Helper()
	lanetest.Move(tb, f.client, store.New(f.rdb, store.Config{}))
	info, err := f.inspect.GetTaskInfo(queue, id)
	if err != nil {
		tb.Fatalf("task %s in queue %s: %v", id, queue, err)
	}
	return info
}

// asynqKeysHolding returns the asynq keys whose contents include s, so that
// a test can tell that a message body never reached the queue.
func asynqKeysHolding(tb testing.TB, rdb *redis.Client, s string) []string {
	tb.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "asynq:*").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var found []string
	for _, k := range keys {
		var vals []string
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			vals = []string{rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = rdb.SMembers(ctx, k).Val()
		case "zset":
			vals = rdb.ZRange(ctx, k, 0, -1).Val()
		default:
			tb.Fatalf("key %s has unexpected type %s", k, typ)
		}
		if strings.Contains(k, s) || slices.ContainsFunc(vals, func(v string) bool { return strings.Contains(v, s) }) {
			found = append(found, k)
		}
	}
	return found
}

func textMessage(dest, text string) *enqueue.Message {
	return &enqueue.Message{Destination: dest, Payload: &enqueue.Text{Message: text}}
}

func TestSendStoresRecordAndTask(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	const body = "Your code is 918273, do not share it"
	tests := []struct {
		priority  enqueue.Priority
		wantQueue string
	}{
		{"", "transactional"},
		{enqueue.Transactional, "transactional"},
		{enqueue.Bulk, "bulk"},
	}
	for i, tt := range tests {
		// A recipient each: the second message to one would wait for its
		// turn after the first, without a task (Conversation order).
		dest := fmt.Sprintf("9699699969%d", i)
		m := textMessage(dest, body)
		m.Priority = tt.priority
		m.Metadata = map[string]string{"order_id": "1234"}
		rec, err := f.client.Send(ctx, m)
		if err != nil {
			t.Fatalf("Send (%q): %v", tt.priority, err)
		}
		if rec.ID == "" || rec.Status != store.Queued || rec.Type != "text" || rec.Priority != tt.wantQueue || rec.Destination != dest {
			t.Errorf("record = %+v, want a queued text record of priority %s", rec, tt.wantQueue)
		}

		got, err := f.client.Get(ctx, rec.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if diff := cmp.Diff(rec, got); diff != "" {
			t.Errorf("Get differs from what Send returned (-send +get):\n%s", diff)
		}
		if !strings.Contains(string(got.Payload), body) {
			t.Errorf("the record holds payload %s, want the body", got.Payload)
		}

		task := f.task(t, tt.wantQueue, rec.ID)
		if task.Type != enqueue.TaskSend || enqueue.RecordOf(task.ID, task.Payload) != rec.ID || task.Queue != tt.wantQueue || task.State != asynq.TaskStatePending {
			t.Errorf("task = type %q id %q payload %q queue %q state %v, want %q of record %s, %q pending",
				task.Type, task.ID, task.Payload, task.Queue, task.State, enqueue.TaskSend, rec.ID, tt.wantQueue)
		}
		if task.MaxRetry != 8 {
			t.Errorf("task MaxRetry = %d, want the default 8", task.MaxRetry)
		}
		// The id is found where tasks live, so the body would be too.
		if keys := asynqKeysHolding(t, f.rdb, rec.ID); len(keys) == 0 {
			t.Fatalf("no asynq key holds the task id %s: the body check below would prove nothing", rec.ID)
		}
	}
	if keys := asynqKeysHolding(t, f.rdb, body); len(keys) > 0 {
		t.Errorf("the message body appears in asynq keys %v", keys)
	}
	if keys := asynqKeysHolding(t, f.rdb, "order_id"); len(keys) > 0 {
		t.Errorf("the metadata appears in asynq keys %v", keys)
	}
	if got := f.tasks(t, "transactional") + f.tasks(t, "bulk"); got != len(tests) {
		t.Errorf("%d tasks, want %d", got, len(tests))
	}
}

func TestSendScheduled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	sendAt := time.Now().Add(time.Hour)
	m := textMessage("96996999699", "see you tomorrow")
	m.SendAt = sendAt
	m.ExpiresAt = sendAt.Add(time.Minute)
	rec, err := f.client.Send(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != store.Scheduled || rec.SendAt == nil || rec.SendAt.Sub(sendAt).Abs() >= time.Millisecond {
		t.Fatalf("record status %s send_at %v, want scheduled at %v", rec.Status, rec.SendAt, sendAt)
	}
	got, err := f.client.Get(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, got); diff != "" {
		t.Errorf("Get differs from what Send returned (-send +get):\n%s", diff)
	}
	if diff := cmp.Diff([]store.Status{store.Scheduled}, historyStatuses(rec)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	task := f.task(t, "transactional", rec.ID)
	if task.State != asynq.TaskStateScheduled {
		t.Errorf("task state %v, want scheduled", task.State)
	}
	// asynq keeps whole seconds.
	if d := task.NextProcessAt.Sub(sendAt); d < -time.Second || d > time.Second {
		t.Errorf("task runs at %v, want %v", task.NextProcessAt, sendAt)
	}
}

func historyStatuses(r *enqueue.Record) []store.Status {
	var out []store.Status
	for _, h := range r.History {
		out = append(out, h.Status)
	}
	return out
}

func TestSendRefusesInvalidMessage(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for _, m := range []*enqueue.Message{nil, textMessage("123", "hi"), textMessage("96996999699", "")} {
		_, err := f.client.Send(ctx, m)
		var ve *enqueue.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("Send(%+v) = %v, want a *ValidationError", m, err)
		}
	}
	if keys := f.rdb.Keys(ctx, "*").Val(); len(keys) > 0 {
		t.Errorf("invalid messages left keys %v", keys)
	}
}

func TestSendIdempotency(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	send := func(m *enqueue.Message) enqueue.Result {
		t.Helper()
		res, err := f.client.SendBatch(ctx, []*enqueue.Message{m})
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	m := textMessage("96996999699", "Your order 1234 is confirmed")
	m.IdempotencyKey = "order-1234-confirmation"
	first := send(m)
	if first.Err != nil || !first.Created {
		t.Fatalf("first send: %+v", first)
	}

	again := *m
	again.Payload = &enqueue.Text{Message: "Your order 1234 is confirmed"}
	second := send(&again)
	if second.Err != nil || second.Created || second.Record.ID != first.Record.ID {
		t.Fatalf("repeat: created %v id %v err %v, want the first record %s", second.Created, second.Record, second.Err, first.Record.ID)
	}
	if n := f.tasks(t, "transactional"); n != 1 {
		t.Errorf("%d tasks after a repeated send, want 1", n)
	}

	changes := map[string]func(m *enqueue.Message){
		"other text":        func(m *enqueue.Message) { m.Payload = &enqueue.Text{Message: "Your order 1235 is confirmed"} },
		"other destination": func(m *enqueue.Message) { m.Destination = "96996999698" },
		"other priority":    func(m *enqueue.Message) { m.Priority = enqueue.Bulk },
	}
	for name, change := range changes {
		other := *m
		change(&other)
		_, err := f.client.Send(ctx, &other)
		if !errors.Is(err, enqueue.ErrIdempotencyConflict) {
			t.Errorf("%s with the same key: %v, want ErrIdempotencyConflict", name, err)
		}
	}
	if n := f.tasks(t, "transactional") + f.tasks(t, "bulk"); n != 1 {
		t.Errorf("%d tasks after conflicts, want 1", n)
	}

	// Without a key, the same message is a new one each time.
	a, errA := f.client.Send(ctx, textMessage("96996999699", "hi"))
	b, errB := f.client.Send(ctx, textMessage("96996999699", "hi"))
	if errA != nil || errB != nil || a.ID == b.ID {
		t.Errorf("two sends without a key: %v %v, ids %v %v, want two records", errA, errB, a, b)
	}
}

// batch returns n bulk messages to distinct numbers.
func batch(n int, keyPrefix string) []*enqueue.Message {
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = &enqueue.Message{
			Destination: fmt.Sprintf("9199%08d", i),
			Payload:     &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "black_friday", LanguageCode: "en", Params: []string{fmt.Sprint(i)}}},
			Priority:    enqueue.Bulk,
			BatchID:     "black-friday-2026",
		}
		if keyPrefix != "" {
			msgs[i].IdempotencyKey = fmt.Sprintf("%s-%d", keyPrefix, i)
		}
	}
	return msgs
}

// A queued message's task is its record's id and nothing more, whatever
// its queue (the longest: a bulk shard's) and whether it is scheduled:
// asynq's message then stays within 64 bytes, so Redis keeps the task's
// hash in its compact encoding, about 240 bytes less per queued message
// than a task that also named its recipient.
func TestAQueuedMessagesTaskIsItsRecordsIdAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	client := enqueue.NewClient(rdb, enqueue.Config{BulkShards: 64})
	t.Cleanup(func() { _ = client.Close() })
	inspect := asynq.NewInspectorFromRedisClient(rdb)
	later := time.Now().Add(time.Hour)
	for i, c := range []struct {
		priority enqueue.Priority
		sendAt   time.Time
	}{
		{enqueue.Transactional, time.Time{}},
		{enqueue.Bulk, time.Time{}},
		{enqueue.Transactional, later},
	} {
		full := textMessage(fmt.Sprintf("449669996990%d", i), strings.Repeat("y", 200))
		full.Tenant, full.Sender, full.Priority, full.SendAt = "acme", "15550001234", c.priority, c.sendAt
		rec, err := client.Send(ctx, full)
		if err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
		lanetest.Move(t, client, store.New(rdb, store.Config{}))
		queue := rec.Queue
		task, err := inspect.GetTaskInfo(queue, rec.ID)
		if err != nil {
			t.Fatalf("task of %s in %s: %v", rec.ID, queue, err)
		}
		if len(task.Payload) != 0 || enqueue.RecordOf(task.ID, task.Payload) != rec.ID {
			t.Errorf("task %s of queue %s has payload %q, want none: its id names the record", task.ID, queue, task.Payload)
		}
		if !srv.Real() {
			continue // miniredis has no encodings to tell
		}
		key := "asynq:{" + queue + "}:t:" + rec.ID
		if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
			t.Errorf("%s is kept as %q, want the compact listpack (%d bytes of task message)", key, enc, len(rdb.HGet(ctx, key, "msg").Val()))
		}
	}
}

// A task names its record by its id; the sweeper's tasks are the record's
// id and a number; a task written by an earlier chatq names it in its
// payload, alone or before its route.
func TestRecordOf(t *testing.T) {
	const id = "01KB0000000000000000000000"
	for _, c := range []struct {
		task    string
		payload string
	}{
		{id, ""},
		{id + "-3", ""},
		{id, id},
		{id + "-2", id + "\nacme\n15550001234\n4477100000011\ntemplate"},
		{id, id + "\n\n\n4477100000011\ntext"},
	} {
		if got := enqueue.RecordOf(c.task, []byte(c.payload)); got != id {
			t.Errorf("task %q with payload %q names record %q, want %s", c.task, c.payload, got, id)
		}
	}
}

func TestSendBatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	msgs := batch(1000, "")
	invalid := map[int]string{
		250: "destination",
		500: "payload.template.elementName",
		750: "priority",
	}
	msgs[250].Destination = "call me"
	msgs[500].Payload = &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "Black Friday", LanguageCode: "en"}}
	msgs[750].Priority = "urgent"

	res, err := f.client.SendBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(res), len(msgs))
	}
	ids := map[string]bool{}
	for i, r := range res {
		if field, bad := invalid[i]; bad {
			var ve *enqueue.ValidationError
			if !errors.As(r.Err, &ve) || ve.Field != field || r.Record != nil {
				t.Errorf("result %d = %+v, want a validation error on %s", i, r, field)
			}
			continue
		}
		if r.Err != nil || !r.Created || r.Record == nil {
			t.Fatalf("result %d = %+v, want a new record", i, r)
		}
		if r.Record.Destination != msgs[i].Destination || r.Record.Status != store.Queued || r.Record.BatchID == nil || *r.Record.BatchID != "black-friday-2026" {
			t.Errorf("result %d is record %+v, want the queued record of %s", i, r.Record, msgs[i].Destination)
		}
		ids[r.Record.ID] = true
	}
	want := len(msgs) - len(invalid)
	if len(ids) != want {
		t.Errorf("%d distinct ids, want %d", len(ids), want)
	}
	if n := f.tasks(t, "bulk"); n != want {
		t.Errorf("%d tasks, want %d", n, want)
	}
	if n := f.tasks(t, "transactional"); n != 0 {
		t.Errorf("%d transactional tasks, want 0", n)
	}
	if keys := f.rdb.Keys(ctx, "chatq:m:*").Val(); len(keys) != want {
		t.Errorf("%d records stored, want %d", len(keys), want)
	}
}

func TestSendBatchRetryIsSafe(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	first, err := f.client.SendBatch(ctx, batch(1000, "campaign-7"))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.tasks(t, "bulk"); n != 1000 {
		t.Fatalf("%d tasks after the first batch, want 1000", n)
	}
	// The application did not hear back and sends the batch again.
	second, err := f.client.SendBatch(ctx, batch(1000, "campaign-7"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].Err != nil || !first[i].Created {
			t.Fatalf("first batch, item %d: %+v", i, first[i])
		}
		if second[i].Err != nil || second[i].Created || second[i].Record.ID != first[i].Record.ID {
			t.Fatalf("second batch, item %d: created %v err %v, want record %s again", i, second[i].Created, second[i].Err, first[i].Record.ID)
		}
	}
	if n := f.tasks(t, "bulk"); n != 1000 {
		t.Errorf("%d tasks after the retried batch, want 1000", n)
	}
	if keys := f.rdb.Keys(ctx, "chatq:m:*").Val(); len(keys) != 1000 {
		t.Errorf("%d records after the retried batch, want 1000", len(keys))
	}
}

func BenchmarkSend(b *testing.B) {
	f := setup(b)
	ctx := context.Background()
	m := textMessage("96996999699", "Your code is 123456")
	for b.Loop() {
		if _, err := f.client.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkSendBatch1000(b *testing.B) {
	f := setup(b)
	ctx := context.Background()
	msgs := batch(1000, "")
	for b.Loop() {
		res, err := f.client.SendBatch(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		if res[999].Err != nil {
			b.Fatal(res[999].Err)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}

// A message keeps its place in its conversation's order unless it opts
// out or is scheduled for later.
func TestMessagesAreOrderedUnlessTheyOptOutOrAreScheduled(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	no := false
	later := textMessage("96996999611", "later")
	later.SendAt = time.Now().Add(time.Hour)
	unordered := textMessage("96996999612", "unordered")
	unordered.Ordered = &no
	for _, tt := range []struct {
		m    *enqueue.Message
		want bool
	}{
		{textMessage("96996999610", "hi"), true},
		{later, false},
		{unordered, false},
	} {
		rec, err := f.client.Send(ctx, tt.m)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := f.client.Get(ctx, rec.ID); rec.Ordered != tt.want || got.Ordered != tt.want {
			t.Errorf("%s: ordered %v (stored %v), want %v", tt.m.Destination, rec.Ordered, got.Ordered, tt.want)
		}
	}
}
