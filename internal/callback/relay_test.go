package callback_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
)

const (
	relaySecret = "relay-secret"
	appSender   = "4915100000001"
)

// app is an application's webhook receiver: it keeps what it was sent,
// answering the codes it is given first, then 200.
type app struct {
	srv     *httptest.Server
	mu      sync.Mutex
	answers []int
	bodies  [][]byte
	ids     []string
}

func newApp(t *testing.T) *app {
	a := &app{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := callback.Verify(relaySecret, r.Header.Get(callback.SignatureHeader), body, time.Minute, time.Now()); err != nil {
			t.Errorf("a forwarded webhook's signature: %v", err)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.answers) > 0 {
			code := a.answers[0]
			a.answers = a.answers[1:]
			w.WriteHeader(code)
			return
		}
		a.bodies = append(a.bodies, body)
		a.ids = append(a.ids, r.Header.Get("Chatq-Event-Id"))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) got() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.bodies...)
}

type relayBundle struct {
	st    *store.Store
	relay *callback.Relay
	mux   *asynq.ServeMux
	insp  *asynq.Inspector
	app   *app
}

// relaySetup returns a relay and its deliverer on a fresh Redis, with one
// sender whose application registered the URL of an app receiver.
func relaySetup(t *testing.T, allowPrivate bool) *relayBundle {
	t.Helper()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	cipher, err := senders.NewCipher(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	reg := senders.New(rdb, senders.Config{Cipher: cipher})
	if _, err := reg.Add(ctx, senders.Spec{Number: appSender, AppID: "acme-app", AppSecret: "s", Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	a := newApp(t)
	if err := reg.SetWebhookURL(ctx, appSender, a.srv.URL+"/hooks?token=app-own"); err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, store.Config{})
	q := asynq.NewClientFromRedisClient(rdb)
	d, err := callback.New(st, q, callback.Config{Secret: relaySecret, AllowPrivate: allowPrivate, WebhookURLs: senders.WebhookURLs{Redis: rdb}},
		zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	mux := asynq.NewServeMux()
	d.Register(mux)
	return &relayBundle{st: st, relay: callback.NewRelay(rdb, q, 0), mux: mux, insp: asynq.NewInspectorFromRedisClient(rdb), app: a}
}

// work runs the relay tasks waiting in the callbacks queue once each, as a
// worker would, and returns the first error. A task that fails stays, as
// for asynq's retry.
func (b *relayBundle) work(t *testing.T) error {
	t.Helper()
	tasks, err := b.insp.ListPendingTasks(callback.Queue)
	if err != nil {
		t.Fatal(err)
	}
	var first error
	for _, ti := range tasks {
		if ti.Type != callback.TaskRelay {
			t.Fatalf("a %s task in the callbacks queue", ti.Type)
		}
		if err := b.mux.ProcessTask(context.Background(), asynq.NewTask(ti.Type, ti.Payload)); err != nil {
			first = cmp.Or(first, err)
			continue
		}
		if err := b.insp.DeleteTask(callback.Queue, ti.ID); err != nil {
			t.Fatal(err)
		}
	}
	return first
}

// message creates a record of the app's sender.
func (b *relayBundle) message(t *testing.T, id string) {
	t.Helper()
	now := time.Now()
	r := &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "transactional", Tenant: "acme", Sender: appSender,
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: now}}, CreatedAt: now, UpdatedAt: now, Queue: "transactional"}
	if _, err := b.st.Create(context.Background(), []*store.Record{r}); err != nil {
		t.Fatal(err)
	}
}

// Gupshup-v2 webhooks as ChatArchitect sends them.
const (
	enqueuedHook = `{"app":"acme-app","timestamp":1764064800000,"version":2,"type":"message-event","payload":{"id":"pid-1","type":"enqueued","destination":"96996999699","payload":{"whatsappMessageId":"wamid.X","type":"session"}}}`
	sentHook     = `{"app":"acme-app","timestamp":1764064801000,"version":2,"type":"message-event","payload":{"id":"wamid.X","gsId":"pid-1","type":"sent","destination":"96996999699","payload":{"ts":1764064801}}}`
	inboundHook  = `{"app":"acme-app","timestamp":1764064802000,"version":2,"type":"message","payload":{"id":"in-1","source":"96996999699","type":"text","payload":{"text":"where is my order?"},"sender":{"phone":"96996999699","name":"John"}}}`
)

// An event that outruns the send's answer waits for chatq to know its
// message; then the message's events reach the application in the order
// they came, with chatq's id where ChatArchitect put its messageId, signed,
// and otherwise as ChatArchitect sent them.
func TestRelayEventsInOrderWithChatqID(t *testing.T) {
	b := relaySetup(t, true)
	ctx := context.Background()
	b.message(t, "msg-1")
	if err := b.relay.Event(ctx, "", "pid-1", "", "", []byte(enqueuedHook)); err != nil {
		t.Fatal(err)
	}
	if err := b.work(t); err == nil || len(b.app.got()) != 0 {
		t.Fatalf("an event of an unknown message: %v, %d forwarded; want a retry and nothing", err, len(b.app.got()))
	}
	if _, err := b.st.Submit(ctx, "msg-1", "pid-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.relay.Event(ctx, "msg-1", "wamid.X", "pid-1", "", []byte(sentHook)); err != nil {
		t.Fatal(err)
	}
	if err := b.work(t); err != nil {
		t.Fatal(err)
	}
	got := b.app.got()
	if len(got) != 2 {
		t.Fatalf("forwarded %d webhooks, want 2: %s", len(got), got)
	}
	for i, tt := range []struct {
		raw, field, typ string
		keep            map[string]string
	}{
		{enqueuedHook, "id", "enqueued", nil},
		{sentHook, "gsId", "sent", map[string]string{"id": "wamid.X"}},
	} {
		var hook struct {
			App     string                     `json:"app"`
			Version int                        `json:"version"`
			Type    string                     `json:"type"`
			Payload map[string]json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(got[i], &hook); err != nil {
			t.Fatal(err)
		}
		var typ, id string
		_ = json.Unmarshal(hook.Payload["type"], &typ)
		_ = json.Unmarshal(hook.Payload[tt.field], &id)
		if hook.App != "acme-app" || hook.Version != 2 || hook.Type != "message-event" || typ != tt.typ || id != "msg-1" {
			t.Errorf("webhook %d: %s; want a %s event with chatq's id in %s", i, got[i], tt.typ, tt.field)
		}
		for k, v := range tt.keep {
			var s string
			_ = json.Unmarshal(hook.Payload[k], &s)
			if s != v {
				t.Errorf("webhook %d: %s is %q, want %q as ChatArchitect sent it", i, k, s, v)
			}
		}
		var orig struct {
			Payload struct {
				Payload json.RawMessage `json:"payload"`
			} `json:"payload"`
		}
		_ = json.Unmarshal([]byte(tt.raw), &orig)
		if !bytes.Equal(hook.Payload["payload"], orig.Payload.Payload) {
			t.Errorf("webhook %d: inner payload %s, want %s unchanged", i, hook.Payload["payload"], orig.Payload.Payload)
		}
	}
}

// Inbound messages go to the application of the sender whose URL they came
// to, byte for byte; a failing application gets them again.
func TestRelayInboundUnchangedAndRetried(t *testing.T) {
	b := relaySetup(t, true)
	b.app.answers = []int{http.StatusServiceUnavailable}
	if err := b.relay.Inbound(context.Background(), appSender, []byte(inboundHook)); err != nil {
		t.Fatal(err)
	}
	if err := b.work(t); err == nil || len(b.app.got()) != 0 {
		t.Fatal("a 503 from the application: no error, want a retry")
	}
	if err := b.work(t); err != nil {
		t.Fatal(err)
	}
	got := b.app.got()
	if len(got) != 1 || string(got[0]) != inboundHook {
		t.Errorf("forwarded %s, want the inbound webhook unchanged", got)
	}
}

// Without CHATQ_CALLBACK_ALLOW_PRIVATE, an application URL on a private
// address gets nothing.
func TestRelayRefusesPrivateAddresses(t *testing.T) {
	b := relaySetup(t, false)
	if err := b.relay.Inbound(context.Background(), appSender, []byte(inboundHook)); err != nil {
		t.Fatal(err)
	}
	err := b.work(t)
	if !errors.Is(err, callback.ErrPrivateAddress) {
		t.Errorf("forwarding to %s: %v, want %v", b.app.srv.URL, err, callback.ErrPrivateAddress)
	}
	if got := b.app.got(); len(got) != 0 {
		t.Errorf("forwarded to a private address: %s", got)
	}
}

func TestWithChatqID(t *testing.T) {
	tests := []struct {
		name, raw, pid, want string
	}{
		{"enqueued", `{"type":"message-event","payload":{"id":"pid","type":"enqueued"}}`, "pid",
			`{"payload":{"id":"cq","type":"enqueued"},"type":"message-event"}`},
		{"sent", `{"type":"message-event","payload":{"id":"wamid","gsId":"pid","type":"sent"}}`, "pid",
			`{"payload":{"gsId":"cq","id":"wamid","type":"sent"},"type":"message-event"}`},
		{"failed with both", `{"type":"message-event","payload":{"id":"pid","gsId":"pid","type":"failed"}}`, "pid",
			`{"payload":{"gsId":"cq","id":"cq","type":"failed"},"type":"message-event"}`},
		{"read after gsId is gone", `{"type":"message-event","payload":{"id":"wamid","type":"read"}}`, "pid",
			`{"payload":{"gsId":"cq","id":"wamid","type":"read"},"type":"message-event"}`},
		{"failed by WhatsApp id", `{"type":"message-event","payload":{"id":"wamid","type":"failed"}}`, "",
			`{"payload":{"id":"cq","type":"failed"},"type":"message-event"}`},
	}
	for _, tt := range tests {
		got, err := callback.WithChatqID([]byte(tt.raw), "cq", tt.pid)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: %s %v, want %s", tt.name, got, err, tt.want)
		}
	}
	if _, err := callback.WithChatqID([]byte(`{"type":"message-event","payload":"x"}`), "cq", ""); err == nil {
		t.Error("a payload that is no object: no error")
	}
}
