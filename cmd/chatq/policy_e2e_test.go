package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

const testCallbackSecret = "cb_test_secret"

// receiver is a status callback (or inbound) receiver that verifies every
// signature with the documented helper, and fails its first requests when
// told to.
type receiver struct {
	srv *httptest.Server
	tb  testing.TB

	mu       sync.Mutex
	failures int      // requests still to answer 500
	calls    int      // requests received
	bodies   [][]byte // verified bodies, in arrival order
	headers  []string // their Chatq-Signature headers
}

func newReceiver(tb testing.TB, failures int) *receiver {
	tb.Helper()
	r := &receiver{tb: tb, failures: failures}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, "unreadable", http.StatusBadRequest)
			return
		}
		sig := req.Header.Get(enqueue.SignatureHeader)
		if err := enqueue.VerifySignature(testCallbackSecret, sig, body, time.Minute); err != nil {
			tb.Errorf("callback with a bad signature (%v): %s", err, body)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/json" {
			tb.Errorf("callback Content-Type %q", ct)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls++
		if r.failures > 0 {
			r.failures--
			http.Error(w, "not now", http.StatusInternalServerError)
			return
		}
		r.bodies = append(r.bodies, body)
		r.headers = append(r.headers, sig)
	}))
	tb.Cleanup(r.srv.Close)
	return r
}

// records returns what the receiver accepted, decoded.
func (r *receiver) records() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]map[string]any, len(r.bodies))
	for i, b := range r.bodies {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			r.tb.Fatalf("callback body is not JSON: %s", b)
		}
	}
	return out
}

// statuses returns the top-level statuses of the records received for id.
func (r *receiver) statuses(id string) []string {
	var out []string
	for _, rec := range r.records() {
		if rec["id"] == id {
			out = append(out, rec["status"].(string))
		}
	}
	return out
}

// policyDev runs "chatq dev" on a Redis the test can read too.
type policyDev struct {
	*devRun
	checker *policy.Checker
}

func startPolicyDev(t *testing.T, env map[string]string) *policyDev {
	t.Helper()
	srv := redistest.Start(t)
	all := map[string]string{
		"CHATQ_REDIS_URL":       srv.URL(),
		"CHATQ_CALLBACK_SECRET": testCallbackSecret,
	}
	for k, v := range env {
		all[k] = v
	}
	d := startDev(t, all)
	return &policyDev{devRun: d, checker: policy.New(srv.Client(t), policy.Config{})}
}

func (d *policyDev) send(t *testing.T, body string) (int, map[string]any) {
	t.Helper()
	return d.do(t, "POST", "/v1/messages", body)
}

// sandboxPost calls one of the sandbox's control routes.
func (d *policyDev) sandboxPost(t *testing.T, path, body string) {
	t.Helper()
	resp, err := http.Post(d.sandbox+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d", path, resp.StatusCode)
	}
}

// upstream returns the payloads the sandbox accepted for destination.
func (d *policyDev) upstream(t *testing.T, destination string) []map[string]any {
	t.Helper()
	resp, err := http.Get(d.sandbox + "/sandbox/messages?destination=" + destination)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []struct {
		Payload map[string]any `json:"payload"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(list))
	for i, m := range list {
		out[i] = m.Payload
	}
	return out
}

// waitStatus polls a message until it reaches status and returns it.
func (d *policyDev) waitStatus(t *testing.T, id, status string) map[string]any {
	t.Helper()
	var rec map[string]any
	poll.Until(t, 20*time.Second, "message "+id+" "+status, func() (bool, string) {
		_, rec = d.do(t, "GET", "/v1/messages/"+id, "")
		b, _ := json.Marshal(rec)
		return rec["status"] == status, string(b)
	})
	return rec
}

func (d *policyDev) waitSuppressed(t *testing.T, number string, want bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("%s suppressed=%v", number, want), func() (bool, string) {
		s, err := d.checker.Suppressions.Get(context.Background(), number)
		if err != nil {
			t.Fatal(err)
		}
		return (s != nil) == want, fmt.Sprint(s)
	})
}

func (d *policyDev) waitWindow(t *testing.T, number string, cond func(policy.Window) bool) {
	t.Helper()
	poll.Until(t, 10*time.Second, "window of "+number, func() (bool, string) {
		w, err := d.checker.Windows.Get(context.Background(), number)
		if err != nil {
			t.Fatal(err)
		}
		return cond(w), fmt.Sprintf("%+v", w)
	})
}

// wantRefused checks a 422 with code and a message containing want.
func wantRefused(t *testing.T, code int, body map[string]any, wantCode, wantField, wantMessage string) {
	t.Helper()
	e, _ := body["error"].(map[string]any)
	if code != http.StatusUnprocessableEntity || e == nil {
		t.Fatalf("got %d %v, want 422 %s", code, body, wantCode)
	}
	got := map[string]any{"code": e["code"], "field": e["field"]}
	if diff := cmp.Diff(map[string]any{"code": wantCode, "field": wantField}, got); diff != "" {
		t.Errorf("refusal (-want +got):\n%s\nmessage: %v", diff, e["message"])
	}
	if msg, _ := e["message"].(string); !strings.Contains(msg, wantMessage) {
		t.Errorf("message %q does not say %q", msg, wantMessage)
	}
}

func textTo(number, text string) string {
	return fmt.Sprintf(`{"destination":%q,"payload":{"type":"text","message":%q}}`, number, text)
}

const fallback = `"fallback_template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John","BF2026"]}`

func TestConversationPolicyLearnMode(t *testing.T) {
	d := startPolicyDev(t, nil)

	t.Run("a user who opted out is refused and never reached again", func(t *testing.T) {
		const number = "4420733330006"
		code, rec := d.send(t, textTo(number, "first"))
		if code != http.StatusAccepted {
			t.Fatalf("first send: %d %v", code, rec)
		}
		d.waitStatus(t, rec["id"].(string), "failed")
		d.waitSuppressed(t, number, true)
		code, body := d.send(t, textTo(number, "second"))
		wantRefused(t, code, body, "suppressed", "destination", "destination is suppressed")
		code, body = d.send(t, `{"destination":"+`+number+`","payload":{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["1"]}}}`)
		wantRefused(t, code, body, "suppressed", "destination", "suppressed")
		if n := len(d.upstream(t, number)); n != 1 {
			t.Errorf("the sandbox got %d messages for %s, want only the first", n, number)
		}
	})

	t.Run("an opt-out while a message waits dead-letters it unsent", func(t *testing.T) {
		const number = "4420733331111"
		sendAt := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
		code, rec := d.send(t, fmt.Sprintf(`{"destination":%q,"payload":{"type":"text","message":"later"},"send_at":%q}`, number, sendAt))
		if code != http.StatusAccepted || rec["status"] != "scheduled" {
			t.Fatalf("send: %d %v", code, rec)
		}
		d.sandboxPost(t, "/sandbox/optout", `{"phone":"`+number+`"}`)
		d.waitSuppressed(t, number, true)
		got := d.waitStatus(t, rec["id"].(string), "dead")
		le, _ := got["last_error"].(map[string]any)
		if le["class"] != "policy" || le["code"] != "suppressed" {
			t.Errorf("last_error %v, want class policy, code suppressed", le)
		}
		if n := len(d.upstream(t, number)); n != 0 {
			t.Errorf("the sandbox got %d messages for a suppressed user", n)
		}
		// Opting in again lifts the suppression.
		d.sandboxPost(t, "/sandbox/optin", `{"phone":"`+number+`"}`)
		d.waitSuppressed(t, number, false)
		if code, body := d.send(t, textTo(number, "welcome back")); code != http.StatusAccepted {
			t.Errorf("send after opt-in: %d %v", code, body)
		}
	})

	t.Run("operators edit the suppression list", func(t *testing.T) {
		const number = "4420733332222"
		code, body := d.do(t, "PUT", "/v1/suppressions/"+number, `{"reason":"asked us by e-mail"}`)
		if code != http.StatusOK || body["source"] != "operator" || body["reason"] != "asked us by e-mail" {
			t.Fatalf("PUT: %d %v", code, body)
		}
		code, body = d.send(t, textTo(number, "hi"))
		wantRefused(t, code, body, "suppressed", "destination", "asked us by e-mail")
		if code, body = d.do(t, "GET", "/v1/suppressions", ""); code != http.StatusOK || !strings.Contains(fmt.Sprint(body["suppressions"]), number) {
			t.Errorf("GET list: %d %v", code, body)
		}
		if code, body = d.do(t, "DELETE", "/v1/suppressions/"+number, ""); code != http.StatusOK {
			t.Errorf("DELETE: %d %v", code, body)
		}
		if code, _ = d.do(t, "GET", "/v1/suppressions/"+number, ""); code != http.StatusNotFound {
			t.Errorf("GET after DELETE: %d", code)
		}
	})

	t.Run("the window: refused, fallback template, open after the user writes", func(t *testing.T) {
		const number = "4420744440008"
		// chatq does not know yet: the first free-form message goes, and fails.
		code, rec := d.send(t, textTo(number, "are you there?"))
		if code != http.StatusAccepted {
			t.Fatalf("first send: %d %v", code, rec)
		}
		d.waitStatus(t, rec["id"].(string), "failed")
		d.waitWindow(t, number, func(w policy.Window) bool { return w.KnownClosed(time.Now()) })

		code, body := d.send(t, textTo(number, "hello?"))
		wantRefused(t, code, body, "window_closed", "destination", "outside its 24h window")

		code, rec = d.send(t, `{"destination":"`+number+`","payload":{"type":"text","message":"hello?"},`+fallback+`}`)
		if code != http.StatusAccepted {
			t.Fatalf("send with fallback: %d %v", code, rec)
		}
		got := d.waitStatus(t, rec["id"].(string), "read")
		if !strings.Contains(fmt.Sprint(got["history"]), "fallback template") {
			t.Errorf("the history does not tell of the fallback: %v", got["history"])
		}
		sent := d.upstream(t, number)
		if last := sent[len(sent)-1]; last["type"] != "template" || !strings.Contains(fmt.Sprint(last), "welcome_offer") {
			t.Errorf("the sandbox got %v, want the fallback template", last)
		}

		d.sandboxPost(t, "/sandbox/inbound", `{"from":"`+number+`","text":"hi, I am back"}`)
		d.waitWindow(t, number, func(w policy.Window) bool { return w.Open(time.Now()) })
		code, rec = d.send(t, textTo(number, "welcome back"))
		if code != http.StatusAccepted {
			t.Fatalf("send after inbound: %d %v", code, rec)
		}
		d.waitStatus(t, rec["id"].(string), "read")
		sent = d.upstream(t, number)
		if last := sent[len(sent)-1]; last["type"] != "text" || last["message"] != "welcome back" {
			t.Errorf("the sandbox got %v, want the free-form text", last)
		}
	})

	t.Run("templates are checked before they are enqueued", func(t *testing.T) {
		tests := []struct {
			name, body, code, field, message string
		}{
			{"wrong parameter count",
				`{"destination":"4420755550000","payload":{"type":"template","template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John"]}}}`,
				"template_params", "payload.template.params", "payload.template.params must hold 2 parameters, not 1"},
			{"unknown template",
				`{"destination":"4420755550000","payload":{"type":"template","template":{"elementName":"no_such_thing","languageCode":"en","params":[]}}}`,
				"unknown_template", "payload.template.elementName", "no_such_thing"},
			{"wrong language",
				`{"destination":"4420755550000","payload":{"type":"template","template":{"elementName":"otp_code","languageCode":"en_US","params":["1"]}}}`,
				"unknown_template", "payload.template.elementName", "it exists in en"},
			{"fallback with the wrong count",
				`{"destination":"4420755550000","payload":{"type":"text","message":"x"},"fallback_template":{"elementName":"otp_code","languageCode":"en","params":[]}}`,
				"template_params", "fallback_template.params", "must hold 1 parameter, not 0"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				code, body := d.send(t, tt.body)
				wantRefused(t, code, body, tt.code, tt.field, tt.message)
			})
		}
		code, body := d.send(t, `{"destination":"4420755550000","payload":{"type":"template","template":{"elementName":"welcome_offer","languageCode":"en_US","params":["John","X1"]}}}`)
		if code != http.StatusAccepted {
			t.Errorf("a valid template: %d %v", code, body)
		}
		code, body = d.do(t, "GET", "/v1/templates", "")
		if code != http.StatusOK || !strings.Contains(fmt.Sprint(body["templates"]), "welcome_offer") {
			t.Errorf("GET /v1/templates: %d %v", code, body)
		}
	})

	t.Run("a batch is checked item by item", func(t *testing.T) {
		code, body := d.do(t, "POST", "/v1/messages/batch", `{"messages":[`+textTo("4420733330006", "x")+`,`+textTo("4420766660000", "y")+`]}`)
		if code != http.StatusOK {
			t.Fatalf("batch: %d %v", code, body)
		}
		res := body["results"].([]any)
		first, second := res[0].(map[string]any), res[1].(map[string]any)
		if e, _ := first["error"].(map[string]any); e == nil || e["code"] != "suppressed" {
			t.Errorf("first item: %v, want suppressed", first)
		}
		if second["id"] == nil {
			t.Errorf("second item: %v, want queued", second)
		}
	})
}

func TestConversationPolicyStrictMode(t *testing.T) {
	d := startPolicyDev(t, map[string]string{"CHATQ_WINDOW_POLICY": "strict"})
	const number = "4420777770000" // not a magic number: only chatq refuses it
	code, body := d.send(t, textTo(number, "hi"))
	wantRefused(t, code, body, "window_closed", "destination", "CHATQ_WINDOW_POLICY=strict")

	code, rec := d.send(t, `{"destination":"`+number+`","payload":{"type":"text","message":"hi"},`+fallback+`}`)
	if code != http.StatusAccepted {
		t.Fatalf("send with fallback: %d %v", code, rec)
	}
	d.waitStatus(t, rec["id"].(string), "read")
	if sent := d.upstream(t, number); len(sent) != 1 || sent[0]["type"] != "template" {
		t.Errorf("the sandbox got %v, want the fallback template only", sent)
	}
	if code, _ := d.send(t, `{"destination":"`+number+`","payload":{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["42"]}}}`); code != http.StatusAccepted {
		t.Errorf("a template outside the window: %d, want 202", code)
	}

	d.sandboxPost(t, "/sandbox/inbound", `{"from":"`+number+`","text":"hello"}`)
	d.waitWindow(t, number, func(w policy.Window) bool { return w.Open(time.Now()) })
	code, rec = d.send(t, textTo(number, "hello to you"))
	if code != http.StatusAccepted {
		t.Fatalf("send after inbound: %d %v", code, rec)
	}
	d.waitStatus(t, rec["id"].(string), "read")
}

func TestStatusCallbacksAndInboundForwarding(t *testing.T) {
	inbound := newReceiver(t, 0)
	d := startPolicyDev(t, map[string]string{"CHATQ_INBOUND_URL": inbound.srv.URL})

	t.Run("every status, signed, in order", func(t *testing.T) {
		r := newReceiver(t, 0)
		code, rec := d.send(t, `{"destination":"4420788880000","payload":{"type":"text","message":"hi"},"callback_url":"`+r.srv.URL+`/events"}`)
		if code != http.StatusAccepted {
			t.Fatalf("send: %d %v", code, rec)
		}
		id := rec["id"].(string)
		want := []string{"queued", "sending", "submitted", "enqueued", "sent", "delivered", "read"}
		poll.Until(t, 20*time.Second, "all callbacks", func() (bool, string) {
			got := r.statuses(id)
			return len(got) == len(want), fmt.Sprint(got)
		})
		if diff := cmp.Diff(want, r.statuses(id)); diff != "" {
			t.Errorf("callback statuses (-want +got):\n%s", diff)
		}
		// Each body is the record as of its change.
		for i, got := range r.records() {
			if h := got["history"].([]any); len(h) != i+1 || h[i].(map[string]any)["status"] != want[i] {
				t.Errorf("callback %d (%s) has history %v", i, want[i], h)
			}
			if _, ok := got["payload"]; ok {
				t.Errorf("callback %d carries the payload", i)
			}
		}
		// A tampered body does not verify.
		r.mu.Lock()
		body, sig := r.bodies[0], r.headers[0]
		r.mu.Unlock()
		tampered := []byte(strings.Replace(string(body), `"queued"`, `"read"`, 1))
		if err := enqueue.VerifySignature(testCallbackSecret, sig, tampered, time.Minute); !errors.Is(err, enqueue.ErrBadSignature) {
			t.Errorf("tampered body: %v, want ErrBadSignature", err)
		}
	})

	t.Run("a receiver that fails twice gets every callback within half a minute", func(t *testing.T) {
		r := newReceiver(t, 2)
		start := time.Now()
		code, rec := d.send(t, `{"destination":"4420788881111","payload":{"type":"text","message":"hi"},"callback_url":"`+r.srv.URL+`"}`)
		if code != http.StatusAccepted {
			t.Fatalf("send: %d %v", code, rec)
		}
		id := rec["id"].(string)
		want := []string{"queued", "sending", "submitted", "enqueued", "sent", "delivered", "read"}
		poll.Until(t, 30*time.Second, "all callbacks despite failures", func() (bool, string) {
			return len(r.statuses(id)) == len(want), fmt.Sprint(r.statuses(id))
		})
		if diff := cmp.Diff(want, r.statuses(id)); diff != "" {
			t.Errorf("callback statuses (-want +got):\n%s", diff)
		}
		t.Logf("all %d callbacks after 2 failures in %s (%d requests)", len(want), time.Since(start).Round(time.Millisecond), r.calls)

		// A lone notice (the message waits for its send_at) is retried
		// by asynq itself, within seconds.
		r = newReceiver(t, 2)
		start = time.Now()
		sendAt := time.Now().Add(20 * time.Second).UTC().Format(time.RFC3339)
		code, rec = d.send(t, `{"destination":"4420788881112","payload":{"type":"text","message":"later"},"send_at":"`+sendAt+`","callback_url":"`+r.srv.URL+`"}`)
		if code != http.StatusAccepted {
			t.Fatalf("send: %d %v", code, rec)
		}
		id = rec["id"].(string)
		poll.Until(t, 15*time.Second, "the scheduled callback despite failures", func() (bool, string) {
			return len(r.statuses(id)) == 1, fmt.Sprint(r.statuses(id))
		})
		if got := r.statuses(id); got[0] != "scheduled" {
			t.Errorf("callback status %v, want scheduled", got)
		}
		t.Logf("a lone callback after 2 failures in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("an expired one-time code is never sent", func(t *testing.T) {
		r := newReceiver(t, 0)
		// 0003 answers 500 to the first attempt; the retry comes after
		// the code expired.
		const number = "4420799990003"
		expires := time.Now().Add(700 * time.Millisecond).UTC().Format(time.RFC3339Nano)
		code, rec := d.send(t, `{"destination":"`+number+`","payload":{"type":"text","message":"Your code is 123456"},"expires_at":"`+expires+`","callback_url":"`+r.srv.URL+`"}`)
		if code != http.StatusAccepted {
			t.Fatalf("send: %d %v", code, rec)
		}
		id := rec["id"].(string)
		d.waitStatus(t, id, "expired")
		if sent := d.upstream(t, number); len(sent) != 0 {
			t.Errorf("the sandbox accepted %v, an expired code", sent)
		}
		poll.Until(t, 10*time.Second, "the expired callback", func() (bool, string) {
			got := r.statuses(id)
			return len(got) > 0 && got[len(got)-1] == "expired", fmt.Sprint(got)
		})
	})

	t.Run("inbound messages and user events are forwarded", func(t *testing.T) {
		d.sandboxPost(t, "/sandbox/inbound", `{"from":"4420711112222","text":"where is my order?"}`)
		d.sandboxPost(t, "/sandbox/optout", `{"phone":"4420711113333"}`)
		poll.Until(t, 10*time.Second, "forwarded events", func() (bool, string) {
			return len(inbound.records()) >= 2, fmt.Sprint(inbound.records())
		})
		var kinds []string
		for _, in := range inbound.records() {
			switch in["type"] {
			case "message":
				msg, _ := in["message"].(map[string]any)
				if in["phone"] != "4420711112222" || msg["text"] != "where is my order?" {
					t.Errorf("forwarded message %v", in)
				}
			case "user-event":
				if in["phone"] != "4420711113333" || in["event"] != "opted-out" {
					t.Errorf("forwarded user event %v", in)
				}
			}
			kinds = append(kinds, in["type"].(string))
		}
		if !strings.Contains(strings.Join(kinds, ","), "message") || !strings.Contains(strings.Join(kinds, ","), "user-event") {
			t.Errorf("forwarded %v, want a message and a user-event", kinds)
		}
	})
}
