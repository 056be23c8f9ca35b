package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// gateSender fails every send whose payload holds marker until it is
// opened.
type gateSender struct {
	next   worker.Sender
	marker string
	open   atomic.Bool
}

func (s *gateSender) Send(ctx context.Context, dest string, payload json.RawMessage) (string, error) {
	if !s.open.Load() && strings.Contains(string(payload), s.marker) {
		return "", errors.New("upstream unavailable")
	}
	return s.next.Send(ctx, dest, payload)
}

// labels returns the texts the sandbox accepted for dest, in order.
func labels(tb testing.TB, sb *sandbox.Server, dest string) []string {
	tb.Helper()
	var msgs []struct {
		Payload struct {
			Message string `json:"message"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(sandboxDo(tb, sb, "GET", "/sandbox/messages?destination="+dest, ""), &msgs); err != nil {
		tb.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Payload.Message
	}
	return out
}

func (b *bundle) record(tb testing.TB, id string) *store.Record {
	tb.Helper()
	r, err := b.store.Get(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// While the first message of a conversation retries, the next one waits
// for its turn; a message that opted out of the order, and a
// transactional one (another line), go at once. Once the first is sent,
// the next follows it.
func TestOnlyTheOrderedMessagesOfTheLineWaitForARetryingOne(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	client := enqueue.NewClient(b.rdb, enqueue.Config{MaxRetry: 100})
	gate := &gateSender{next: b.ca, marker: "first"}
	b.worker(t, gate, worker.Config{Concurrency: 10, Retry: worker.Policy{MaxRetry: 100, BaseDelay: 100 * time.Millisecond, MaxDelay: 200 * time.Millisecond}})
	const dest = "447100000031"
	unordered := text(dest, "unordered")
	no := false
	unordered.Ordered = &no
	urgent := text(dest, "transactional")
	urgent.Priority = enqueue.Transactional
	ids := b.sendAll(t, client, []*enqueue.Message{text(dest, "first"), text(dest, "second"), unordered, urgent})

	b.waitAll(t, ids[2:], 10*time.Second, submitted)
	poll.Until(t, 10*time.Second, "the first retrying", func() (bool, string) {
		r := b.record(t, ids[0])
		return r.Status == store.Retrying && r.Attempts >= 2, string(r.Status)
	})
	if r := b.record(t, ids[1]); !waitingFor(r, store.WaitConversationOrder) || r.Attempts != 0 {
		t.Fatalf("the second: %s, %d attempts, waiting %+v; want waiting for its turn, unsent", r.Status, r.Attempts, r.Waiting)
	}

	gate.open.Store(true)
	b.waitAll(t, ids[:2], 10*time.Second, submitted)
	got := labels(t, b.sandbox, dest)
	if len(got) != 4 || got[2] != "first" || got[3] != "second" {
		t.Errorf("the sandbox got %v, want the unordered and transactional ones, then first, second", got)
	}
	if r := b.record(t, ids[1]); !sendingOnce(r) {
		t.Errorf("the second's history %+v, want one sending", r.History)
	}
}

// A canceled first message lets the next go; and a release lost (the
// first message ended without it, as when its worker dies right after
// recording its outcome) is made up for by the sweeper's check of the
// line, once the next message's recheck comes due.
func TestCanceledFirstReleasesTheNextAndALostReleaseIsRecovered(t *testing.T) {
	t.Parallel()
	b := setup(t, sandbox.Config{}, false)
	ctx := context.Background()
	const dest, other = "447100000032", "447100000033"
	ids := b.sendAll(t, b.client, []*enqueue.Message{text(dest, "canceled"), text(dest, "after the canceled"),
		text(other, "ended"), text(other, "after the lost release")})
	if _, err := b.store.Cancel(ctx, ids[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	// The first to other ends without releasing the next.
	if _, _, err := b.store.Move(ctx, ids[2], store.Change{Status: store.Expired, Note: "ended without a release"}); err != nil {
		t.Fatal(err)
	}
	b.worker(t, b.ca, worker.Config{Concurrency: 10})
	b.waitAll(t, ids[1:2], 10*time.Second, submitted)

	// Nothing lets the last one go until its recheck.
	if r := b.record(t, ids[3]); !waitingFor(r, store.WaitConversationOrder) {
		t.Fatalf("after the lost release: %s waiting %+v, want waiting for its turn", r.Status, r.Waiting)
	}
	// Its recheck is due a minute after it started waiting: brought
	// forward here.
	if err := b.store.Postpone(ctx, ids[3], time.Now()); err != nil {
		t.Fatal(err)
	}
	recs := b.waitAll(t, ids[3:], 10*time.Second, submitted)
	if !sendingOnce(recs[0]) {
		t.Errorf("history %+v, want one sending", recs[0].History)
	}
	if got := labels(t, b.sandbox, dest); len(got) != 1 || got[0] != "after the canceled" {
		t.Errorf("%s got %v, want only the message after the canceled one", dest, got)
	}
}
