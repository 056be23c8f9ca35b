package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/store"
)

// trips records the round trips a client makes: each command alone, or
// each pipeline, as the commands it carried.
type trips struct {
	mu  sync.Mutex
	got [][]string
}

func (t *trips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *trips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t.add(cmd)
		return next(ctx, cmd)
	}
}

func (t *trips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t.add(cmds...)
		return next(ctx, cmds)
	}
}

func (t *trips) add(cmds ...redis.Cmder) {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Name()
	}
	t.mu.Lock()
	t.got = append(t.got, names)
	t.mu.Unlock()
}

func (t *trips) take() [][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	got := t.got
	t.got = nil
	return got
}

// A marketing template's send, by the handler of a worker with the
// conversation policy and flow control on, makes five round trips to
// Redis: its record (its payload with it, which names the template), the
// checks before the send (the recipient's suppression, their marketing cap,
// the template's state), the reservation of its slots, its take-up and its
// acceptance. Each check used to make a round trip of its own, and the
// template's name cost a read of the whole record.
func TestATemplateSendReadsItsChecksInOneRoundTrip(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	checker := policy.New(g.store.Redis(), policy.Config{Source: g.ca})
	if _, err := checker.Templates.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	producer := enqueue.NewClient(g.store.Redis(), enqueue.Config{MaxRetry: 3, Policy: enqueue.CheckerPolicy(checker)})
	t.Cleanup(func() { producer.Close() })

	counted := redis.NewClient(&redis.Options{Addr: g.redis.Addr()})
	t.Cleanup(func() { counted.Close() })
	hook := &trips{}
	counted.AddHook(hook)
	w := New(counted, Config{
		Conversation: &Conversation{Policy: policy.New(counted, policy.Config{Source: g.ca})},
		Flow: FlowConfig{Limits: ratelimit.Config{Sender: "15550001234", Rate: 1000, PairInterval: 6 * time.Second, PairBurst: 3},
			StateRefresh: time.Hour},
	}, g.ca, g.log)
	send := func(dest string) (string, [][]string) {
		t.Helper()
		rec, err := producer.Send(ctx, &enqueue.Message{Destination: dest, Priority: enqueue.Transactional,
			Payload: &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "welcome_offer", LanguageCode: "en_US", Params: []string{"Ann", "X1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Category == nil || *rec.Category != store.CategoryMarketing {
			t.Fatalf("the message's category is %v, want marketing", rec.Category)
		}
		hook.take()
		if err := w.handler.ProcessTask(ctx, asynq.NewTask(enqueue.TaskSend, []byte(rec.ID))); err != nil {
			t.Fatalf("send %s: %v", rec.ID, err)
		}
		return rec.ID, hook.take()
	}
	send("4420799000031") // the scripts loaded, the flow's state read
	id, got := send("4420799000032")
	if r, err := g.store.Get(ctx, id); err != nil || r.Status != store.Submitted {
		t.Fatalf("the message is %v (%v), want submitted", r, err)
	}
	if len(got) != 5 {
		t.Errorf("the send made %d round trips, want 5: %q", len(got), got)
	}
	if checks := got[1]; len(checks) != 3 {
		t.Errorf("the checks before the send read %q, want the suppression, the marketing cap and the template's state in one round trip", checks)
	}
}
