package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// A send's take-up, its acceptance and each of its four webhooks read the
// record once and write it once: no command per field changed, and no
// expiry written again within the record's slack.
func TestASendAndItsWebhooksCostFewCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	now := time.Now()
	r := newRecord("cheap", "96996999601", "transactional", "", now)
	// A 101-character text, as the bench queues: its payload is kept in
	// the record's hash, in three parts.
	r.Payload = []byte(`{"type":"text","message":"` + strings.Repeat("x", 101) + `"}`)
	// In its conversation's line, alone, as a campaign's message is.
	r.Ordered = true
	warm := newRecord("warm", "96996999602", "transactional", "", now)
	createAll(t, st, r, warm)
	// The scripts loaded, as in a store that ran a while.
	if _, _, err := st.Begin(ctx, "warm", now, store.Owner{}); err != nil {
		t.Fatal(err)
	}

	rec, err := st.Peek(ctx, "cheap")
	if err != nil || rec == nil {
		t.Fatalf("peek: %v %v", rec, err)
	}
	if string(rec.Payload) != string(r.Payload) {
		t.Fatalf("peek: payload %s, want %s", rec.Payload, r.Payload)
	}
	replies := &replyHook{}
	rdb.AddHook(replies)
	redistest.Commands(t, rdb)
	if o, err := st.Take(ctx, rec, now, store.Owner{Worker: "w1", Task: "cheap"}); err != nil || o != store.Changed {
		t.Fatalf("take: %s %v", o, err)
	}
	// The due entry, then the script: its one read and its one write. The
	// payload came with the look before the send, so the take-up neither
	// reads it again nor sends it back.
	if c := redistest.Commands(t, rdb); redistest.Total(c) > 4 {
		t.Errorf("the take-up ran %d commands, want 4 at most: %v", redistest.Total(c), c)
	}
	if got := replies.last; len(got) == 0 || got[len(got)-1] != "" {
		t.Errorf("the take-up answered %q, want no payload at its end", got)
	}
	if string(rec.Payload) != string(r.Payload) {
		t.Errorf("after the take-up: payload %s, want %s", rec.Payload, r.Payload)
	}
	if _, err := st.Accept(ctx, rec, "pid-cheap", now); err != nil {
		t.Fatalf("accept: %v", err)
	}
	// The script (read, drop the wait fields if any, write), the due
	// entry, the provider id's mapping and its parking lot, and the line
	// left (its script, and the head's GETDEL: nothing waits behind).
	if c := redistest.Commands(t, rdb); redistest.Total(c) > 8 {
		t.Errorf("the acceptance ran %d commands, want 8 at most: %v", redistest.Total(c), c)
	}
	for i, s := range []store.Status{store.Enqueued, store.Sent, store.Delivered, store.Read} {
		ev := store.Event{ID: "pid-cheap", Status: s, At: now.Add(time.Duration(i+1) * time.Second), Key: string(s)}
		if res, err := st.ApplyEvent(ctx, ev); err != nil || res.Outcome != store.Changed {
			t.Fatalf("%s: %+v %v", s, res, err)
		}
		// The script's read and write, and for the first the provider
		// id's mapping, which the store remembers after.
		most := int64(3)
		if i == 0 {
			most = 4
		}
		if c := redistest.Commands(t, rdb); redistest.Total(c) > most {
			t.Errorf("the %s webhook ran %d commands, want %d at most: %v", s, redistest.Total(c), most, c)
		}
	}
	got, err := st.Get(ctx, "cheap")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.Read || got.Attempts != 1 || got.OnWire || got.ProviderMessageID == nil || *got.ProviderMessageID != "pid-cheap" {
		t.Errorf("record after its life: status %s, attempts %d, on the wire %v, provider id %v", got.Status, got.Attempts, got.OnWire, got.ProviderMessageID)
	}
	if want := []string{"queued", "sending", "submitted", "enqueued", "sent", "delivered", "read"}; strings.Join(statuses(got), " ") != strings.Join(want, " ") {
		t.Errorf("history %v, want %v", statuses(got), want)
	}
	// Kept for the TTL (720h) from its last change, and no more than the
	// slack (an hour) beyond.
	ttl := rdb.PTTL(ctx, "chatq:m:{cheap}").Val()
	if ttl < 720*time.Hour-time.Minute || ttl > 721*time.Hour {
		t.Errorf("the record expires in %s, want between 720h and 721h", ttl)
	}
	if string(got.Payload) != string(r.Payload) {
		t.Errorf("payload after its life %q, want %q", got.Payload, r.Payload)
	}
}

// replyHook keeps the answer of the last script a pipeline ran.
type replyHook struct{ last []any }

func (h *replyHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *replyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *replyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if c, ok := c.(*redis.Cmd); ok && c.Name() == "evalsha" {
				h.last, _ = c.Val().([]any)
			}
		}
		return err
	}
}
