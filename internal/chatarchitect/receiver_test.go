package chatarchitect_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/sandbox"
)

// These tests register a webhook receiver on the sandbox and check, through
// ParseWebhook, what a receiver of chatq's sees of every outcome.

// receiver is a webhook endpoint that parses and keeps every webhook, in
// the order they arrive.
type receiver struct {
	url string

	mu    sync.Mutex
	hooks []*chatarchitect.Webhook
	// changed is closed, and replaced, whenever a webhook arrives.
	changed chan struct{}
	errs    []string
}

// newReceiver starts a receiver. It reports, when the test ends, every
// webhook it could not parse.
func newReceiver(tb testing.TB) *receiver {
	tb.Helper()
	r := &receiver{changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	r.url = srv.URL + "/webhooks/chatarchitect/s3cret"
	tb.Cleanup(func() {
		srv.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, e := range r.errs {
			tb.Errorf("receiver: %s", e)
		}
	})
	return r
}

func (r *receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.fail(fmt.Sprintf("read webhook: %v", err))
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	hook, err := chatarchitect.ParseWebhook(body)
	if err != nil {
		r.fail(fmt.Sprintf("%v: %s", err, body))
		http.Error(w, "invalid webhook", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.hooks = append(r.hooks, hook)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *receiver) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
}

// waitUntil waits until done holds for the webhooks received so far, and
// returns them. It fails the test after waitFor, naming what it waited for.
func (r *receiver) waitUntil(tb testing.TB, what string, done func(hooks []*chatarchitect.Webhook) bool) []*chatarchitect.Webhook {
	tb.Helper()
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		hooks := slices.Clone(r.hooks)
		changed := r.changed
		r.mu.Unlock()
		if done(hooks) {
			return hooks
		}
		select {
		case <-changed:
		case <-timeout.C:
			tb.Fatalf("waited %s for %s; received:\n%s", waitFor, what, describe(hooks))
		}
	}
}

// describe lists webhooks for a failure message.
func describe(hooks []*chatarchitect.Webhook) string {
	var b strings.Builder
	for _, h := range hooks {
		fmt.Fprintf(&b, "  %s\n", h.Raw)
	}
	return b.String()
}

// eventsOf returns the message events of the message the provider knows as
// messageID, in arrival order.
func eventsOf(hooks []*chatarchitect.Webhook, messageID string) []*chatarchitect.MessageEvent {
	var events []*chatarchitect.MessageEvent
	for _, h := range hooks {
		if ev := h.Event; ev != nil && (ev.ID == messageID || ev.GsID == messageID) {
			events = append(events, ev)
		}
	}
	return events
}

// eventTypes returns the types of events, in order.
func eventTypes(events []*chatarchitect.MessageEvent) []string {
	types := make([]string, len(events))
	for i, ev := range events {
		types[i] = ev.Type
	}
	return types
}

// hasEvents returns a condition for waitUntil: messageID has n events.
func hasEvents(messageID string, n int) func([]*chatarchitect.Webhook) bool {
	return func(hooks []*chatarchitect.Webhook) bool { return len(eventsOf(hooks, messageID)) >= n }
}

// receiverEnv is a sandbox whose webhooks go to a receiver.
type receiverEnv struct {
	*sandboxEnv
	client *chatarchitect.Client
	hooks  *receiver
}

// newReceiverEnv starts a receiver and a sandbox configured by cfg, and
// registers the receiver with the client.
func newReceiverEnv(tb testing.TB, cfg sandbox.Config) *receiverEnv {
	tb.Helper()
	// The receiver first, so that it outlives the sandbox's senders.
	hooks := newReceiver(tb)
	env := newSandbox(tb, cfg)
	client := env.client(tb, waitFor)
	if err := client.RegisterWebhook(context.Background(), hooks.url); err != nil {
		tb.Fatalf("RegisterWebhook: %v", err)
	}
	return &receiverEnv{sandboxEnv: env, client: client, hooks: hooks}
}

// send sends a text message and returns its messageId.
func (e *receiverEnv) send(tb testing.TB, destination string) string {
	tb.Helper()
	id, err := e.client.Send(context.Background(), destination, marshal(tb, &enqueue.Text{Message: "Hi there"}))
	if err != nil {
		tb.Fatalf("Send to %s: %v", destination, err)
	}
	return id
}

// waitIdle waits until the sandbox has no webhook left to send, so that a
// test can tell that an event will never come.
func (e *receiverEnv) waitIdle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for e.sb.Stats().WebhooksPending != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("the sandbox still has %d messages' webhooks to send after %s", e.sb.Stats().WebhooksPending, waitFor)
		}
		<-tick.C
	}
}

// eventView is what the tests compare of a message event. WhatsAppID is
// checked on its own and Timestamp only for being set.
type eventView struct {
	Type, ID, GsID, Destination, Code, Reason string
}

func viewOf(events []*chatarchitect.MessageEvent) []eventView {
	views := make([]eventView, len(events))
	for i, ev := range events {
		views[i] = eventView{Type: ev.Type, ID: ev.ID, GsID: ev.GsID, Destination: ev.Destination, Code: ev.Code, Reason: ev.Reason}
	}
	return views
}

func TestReceiverMessageFates(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{})
	const (
		undeliverable = "Message undeliverable"
		optedOut      = "User has opted out"
		windowClosed  = "Re-engagement message: more than 24 hours have passed since the customer last replied to this number"
	)
	type failure struct {
		code, reason string
		class        chatarchitect.Class
	}
	tests := []struct {
		name        string
		destination string
		// types are the event types expected, in order.
		types   []string
		failure *failure
		// optedOut: a user-event opted-out for the destination follows.
		optedOut bool
	}{
		{"normal", "4915558880000", []string{"enqueued", "sent", "delivered", "read"}, nil, false},
		{"undeliverable 0001", "4915558880001", []string{"enqueued", "failed"}, &failure{"131026", undeliverable, chatarchitect.ClassPermanent}, false},
		{"never read 0005", "4915558880005", []string{"enqueued", "sent", "delivered"}, nil, false},
		{"opted out 0006", "4915558880006", []string{"failed"}, &failure{"1012", optedOut, chatarchitect.ClassPolicy}, true},
		{"window closed 0008", "4915558880008", []string{"enqueued", "failed"}, &failure{"131047", windowClosed, chatarchitect.ClassPolicy}, false},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		ids[i] = env.send(t, tt.destination)
	}
	for i, tt := range tests {
		id := ids[i]
		hooks := env.hooks.waitUntil(t, fmt.Sprintf("%d events of %s (%s)", len(tt.types), id, tt.name), hasEvents(id, len(tt.types)))
		if tt.optedOut {
			hooks = env.hooks.waitUntil(t, "the opted-out user-event of "+tt.destination, func(hooks []*chatarchitect.Webhook) bool {
				return slices.ContainsFunc(hooks, func(h *chatarchitect.Webhook) bool {
					return h.User != nil && h.User.Phone == tt.destination
				})
			})
		}
		t.Run(tt.name, func(t *testing.T) {
			events := eventsOf(hooks, id)
			// enqueued tells WhatsApp's id; sent, delivered and read are
			// known by it, with the provider's id in gsId.
			var wamid string
			if len(events) > 0 && events[0].Type == chatarchitect.EventEnqueued {
				wamid = events[0].WhatsAppID
				if !strings.HasPrefix(wamid, "wamid.") {
					t.Errorf("enqueued whatsappMessageId = %q, want a wamid", wamid)
				}
			}
			var want []eventView
			for _, typ := range tt.types {
				v := eventView{Type: typ, Destination: tt.destination}
				switch typ {
				case chatarchitect.EventEnqueued:
					v.ID = id
				case chatarchitect.EventFailed:
					v.ID, v.GsID = id, id
					v.Code, v.Reason = tt.failure.code, tt.failure.reason
				default:
					v.ID, v.GsID = wamid, id
				}
				want = append(want, v)
			}
			if diff := cmp.Diff(want, viewOf(events)); diff != "" {
				t.Errorf("events of %s (-want +got):\n%s", id, diff)
			}
			for _, ev := range events {
				if ev.Timestamp.IsZero() {
					t.Errorf("%s event has no timestamp", ev.Type)
				}
				if ev.Type != chatarchitect.EventFailed && ev.WhatsAppID != wamid {
					t.Errorf("%s event WhatsAppID = %q, want %q", ev.Type, ev.WhatsAppID, wamid)
				}
				if ev.Type == chatarchitect.EventFailed {
					if class, ok := chatarchitect.ClassifyCode(ev.Code); !ok || class != tt.failure.class {
						t.Errorf("ClassifyCode(%q) = %q, %t, want %q", ev.Code, class, ok, tt.failure.class)
					}
				}
			}
			var users []chatarchitect.UserEvent
			for _, h := range hooks {
				if h.User != nil && h.User.Phone == tt.destination {
					users = append(users, *h.User)
				}
			}
			var wantUsers []chatarchitect.UserEvent
			if tt.optedOut {
				wantUsers = []chatarchitect.UserEvent{{Phone: tt.destination, Type: "opted-out"}}
			}
			if diff := cmp.Diff(wantUsers, users); diff != "" {
				t.Errorf("user-events of %s (-want +got):\n%s", tt.destination, diff)
			}
		})
	}

	// Every message's webhooks are out: none sent more than the above
	// (0005 is never read).
	env.waitIdle(t)
	env.hooks.mu.Lock()
	hooks := slices.Clone(env.hooks.hooks)
	env.hooks.mu.Unlock()
	for i, tt := range tests {
		if got := eventTypes(eventsOf(hooks, ids[i])); !slices.Equal(got, tt.types) {
			t.Errorf("%s: all events = %v, want %v", tt.name, got, tt.types)
		}
	}
}

func TestReceiverWindowOpensOnInbound(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{})
	const user = "4915559990008"
	closed := env.send(t, user)
	hooks := env.hooks.waitUntil(t, "the failed event of "+closed, hasEvents(closed, 2))
	if got := eventTypes(eventsOf(hooks, closed)); !slices.Equal(got, []string{"enqueued", "failed"}) {
		t.Fatalf("events with the window closed = %v, want [enqueued failed]", got)
	}
	env.control(t, http.MethodPost, "/sandbox/inbound", `{"from":"`+user+`","text":"Hello?"}`)
	open := env.send(t, user)
	hooks = env.hooks.waitUntil(t, "the read event of "+open, hasEvents(open, 4))
	if got := eventTypes(eventsOf(hooks, open)); !slices.Equal(got, []string{"enqueued", "sent", "delivered", "read"}) {
		t.Errorf("events with the window open = %v, want [enqueued sent delivered read]", got)
	}
}

func TestReceiverInbound(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{})
	const from = "4915551230000"
	answer := env.control(t, http.MethodPost, "/sandbox/inbound", `{"from":"+`+from+`","text":"Where is my order?"}`)
	var ans struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(answer, &ans); err != nil || ans.ID == "" {
		t.Fatalf("POST /sandbox/inbound answered %s, want an id (%v)", answer, err)
	}
	hooks := env.hooks.waitUntil(t, "the inbound message", func(hooks []*chatarchitect.Webhook) bool {
		return slices.ContainsFunc(hooks, func(h *chatarchitect.Webhook) bool { return h.Inbound != nil })
	})
	var got []chatarchitect.Webhook
	for _, h := range hooks {
		got = append(got, chatarchitect.Webhook{Type: h.Type, Inbound: h.Inbound, User: h.User, Event: h.Event})
	}
	want := []chatarchitect.Webhook{{Type: chatarchitect.WebhookMessage, Inbound: &chatarchitect.InboundMessage{
		ID: ans.ID, Source: from, Type: "text", Text: "Where is my order?", SenderName: "Sandbox User",
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("webhooks (-want +got):\n%s", diff)
	}
	if hooks[0].Timestamp.IsZero() {
		t.Error("the message webhook has no timestamp")
	}
}

func TestReceiverOptOutAndIn(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{})
	const phone = "4915554560000"
	userEvents := func(n int) []chatarchitect.UserEvent {
		hooks := env.hooks.waitUntil(t, fmt.Sprintf("%d user-events", n), func(hooks []*chatarchitect.Webhook) bool {
			count := 0
			for _, h := range hooks {
				if h.User != nil {
					count++
				}
			}
			return count >= n
		})
		var users []chatarchitect.UserEvent
		for _, h := range hooks {
			if h.Type != chatarchitect.WebhookUserEvent {
				continue
			}
			if h.User == nil {
				t.Fatalf("user-event without a user: %s", h.Raw)
			}
			users = append(users, *h.User)
		}
		return users
	}

	env.control(t, http.MethodPost, "/sandbox/optout", `{"phone":"`+phone+`"}`)
	want := []chatarchitect.UserEvent{{Phone: phone, Type: "opted-out"}}
	if diff := cmp.Diff(want, userEvents(1)); diff != "" {
		t.Errorf("after opt-out (-want +got):\n%s", diff)
	}

	// An opted-out user's messages fail with 1012.
	id := env.send(t, phone)
	hooks := env.hooks.waitUntil(t, "the failed event of "+id, hasEvents(id, 1))
	if ev := eventsOf(hooks, id)[0]; ev.Type != chatarchitect.EventFailed || ev.Code != "1012" {
		t.Errorf("event of a message to an opted-out user = %s %s, want failed 1012", ev.Type, ev.Code)
	}
	// ...and their opt-out is repeated with it.
	want = append(want, chatarchitect.UserEvent{Phone: phone, Type: "opted-out"})
	if diff := cmp.Diff(want, userEvents(2)); diff != "" {
		t.Errorf("after a send to the opted-out user (-want +got):\n%s", diff)
	}

	env.control(t, http.MethodPost, "/sandbox/optin", `{"phone":"`+phone+`"}`)
	want = append(want, chatarchitect.UserEvent{Phone: phone, Type: "opted-in"})
	if diff := cmp.Diff(want, userEvents(3)); diff != "" {
		t.Errorf("after opt-in (-want +got):\n%s", diff)
	}
}

func TestReceiverDuplicates(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{DuplicateRatio: 1})
	ids := []string{env.send(t, "4915556540000"), env.send(t, "4915556540010"), env.send(t, "4915556540020")}
	for _, id := range ids {
		// Four events, each at least twice.
		hooks := env.hooks.waitUntil(t, "every event of "+id+" twice", func(hooks []*chatarchitect.Webhook) bool {
			counts := map[string]int{}
			for _, ev := range eventsOf(hooks, id) {
				counts[ev.Type]++
			}
			return len(counts) == 4 && counts["enqueued"] >= 2 && counts["sent"] >= 2 && counts["delivered"] >= 2 && counts["read"] >= 2
		})
		// A copy carries the very same body, so that a receiver can tell
		// it is one.
		bodies := map[string][][]byte{}
		for _, h := range hooks {
			if ev := h.Event; ev != nil && (ev.ID == id || ev.GsID == id) {
				bodies[ev.Type] = append(bodies[ev.Type], h.Raw)
			}
		}
		for typ, copies := range bodies {
			for _, b := range copies[1:] {
				if !bytes.Equal(b, copies[0]) {
					t.Errorf("%s copies of %s differ:\n%s\n%s", typ, id, copies[0], b)
				}
			}
		}
	}
	env.waitIdle(t)
	if got, want := env.sb.Stats().WebhooksDuplicated, int64(4*len(ids)); got != want {
		t.Errorf("sandbox counted %d duplicated webhooks, want %d", got, want)
	}
}

func TestReceiverReorder(t *testing.T) {
	t.Parallel()
	env := newReceiverEnv(t, sandbox.Config{ReorderRatio: 1})
	const messages = 30
	ids := make([]string, messages)
	for i := range ids {
		ids[i] = env.send(t, fmt.Sprintf("49155565%04d", 100+i))
	}
	hooks := env.hooks.waitUntil(t, "4 events of each message", func(hooks []*chatarchitect.Webhook) bool {
		for _, id := range ids {
			if len(eventsOf(hooks, id)) < 4 {
				return false
			}
		}
		return true
	})
	inOrder := []string{"enqueued", "sent", "delivered", "read"}
	reordered := 0
	for _, id := range ids {
		got := eventTypes(eventsOf(hooks, id))
		// Reordered, but nothing lost or added.
		if sorted := slices.Sorted(slices.Values(got)); !slices.Equal(sorted, slices.Sorted(slices.Values(inOrder))) {
			t.Errorf("events of %s = %v, want each of %v once", id, got, inOrder)
		}
		if !slices.Equal(got, inOrder) {
			reordered++
		}
	}
	// One reordered message is enough to pass: a shuffle may keep a
	// message's order by chance, but over 30 messages of 4 events a
	// reorder ratio of 1 that reordered none is broken.
	if reordered == 0 {
		t.Errorf("all %d messages' events arrived in order with reorder_ratio 1", messages)
	}
	t.Logf("%d of %d messages' events arrived out of order", reordered, messages)
}
