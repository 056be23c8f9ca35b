package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

// A tenant with two senders: a message that names none goes from the
// sender the user wrote to while its 24h window is open, from the sender
// that last wrote to the user once it is closed, and to a new recipient
// from the tenant's default sender.
func TestDevSenderChosenByWindowThenLastThenDefault(t *testing.T) {
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": redistest.Start(t).URL(), "CHATQ_CA_APP_SECRET": "dev-secret"})
	const senderA, senderB = "4915100000711", "4915100000722"
	const user, newcomer = "96996999711", "96996999722"
	code, body := d.do(t, http.MethodPost, "/v1/senders", `{"number":"`+senderA+`","app_id":"chatq-dev","app_secret":"dev-secret","tenant":"acme","default":true}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/senders A: %d %v", code, body)
	}
	code, body = d.do(t, http.MethodPost, "/v1/senders", `{"number":"`+senderB+`","app_id":"chatq-dev","app_secret":"dev-secret","tenant":"acme"}`)
	hookB, _ := body["webhook_path"].(string)
	if code != http.StatusCreated || hookB == "" {
		t.Fatalf("POST /v1/senders B: %d %v", code, body)
	}
	code, body = d.do(t, http.MethodPost, "/v1/keys", `{"tenant":"acme","name":"crm"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/keys: %d %v", code, body)
	}
	acme := &devRun{api: d.api, key: body["key"].(string)}
	webhook := func(body string) {
		t.Helper()
		resp, err := http.Post(d.api+hookB, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook to B's URL: %d", resp.StatusCode)
		}
	}

	// The user writes to B: a free-form message without sender goes from B.
	webhook(`{"app":"chatq-dev","timestamp":` + fmt.Sprint(time.Now().UnixMilli()) + `,"version":2,"type":"message","payload":{"id":"in-711","source":"` + user + `","type":"text","payload":{"text":"hello B"},"sender":{"phone":"` + user + `","name":"Ann"}}}`)
	code, body = acme.do(t, http.MethodPost, "/v1/messages", `{"destination":"`+user+`","payload":{"type":"text","message":"Hi Ann"}}`)
	if code != http.StatusAccepted || body["sender"] != senderB {
		t.Fatalf("a free-form message to a user who wrote to B: %d %v, want it from B", code, body)
	}
	id, _ := body["id"].(string)
	var provider string
	poll.Until(t, 20*time.Second, "the reply submitted", func() (bool, string) {
		_, body := acme.do(t, http.MethodGet, "/v1/messages/"+id, "")
		provider, _ = body["provider_message_id"].(string)
		return provider != "", fmt.Sprint(body["status"])
	})
	logged := sandboxSources(t, d.sandbox, user)
	if len(logged) != 1 || logged[0] != senderB {
		t.Errorf("the sandbox logged sources %v for the reply, want [%s]", logged, senderB)
	}

	// A send from B fails for the closed window: B's window closes, and B
	// stays the user's sender. A free-form message is refused, a template
	// goes from B.
	webhook(`{"type":"message-event","payload":{"id":"` + provider + `","type":"failed","destination":"` + user + `","payload":{"code":131047}}}`)
	code, body = acme.do(t, http.MethodPost, "/v1/messages", `{"destination":"`+user+`","payload":{"type":"text","message":"Still there?"}}`)
	if e, _ := body["error"].(map[string]any); code != http.StatusUnprocessableEntity || e["code"] != "window_closed" {
		t.Errorf("a free-form message after B's window closed: %d %v, want 422 window_closed", code, body)
	}
	code, body = acme.do(t, http.MethodPost, "/v1/messages", `{"destination":"`+user+`","payload":`+payloads["template"]+`}`)
	if code != http.StatusAccepted || body["sender"] != senderB {
		t.Errorf("a template to the user after B's window closed: %d %v, want it from B", code, body)
	}

	// B's template cache, which checked the template, was fetched with
	// B's app's credentials and is B's own.
	code, body = d.do(t, http.MethodGet, "/v1/templates?sender="+senderB, "")
	if list, _ := body["templates"].([]any); code != http.StatusOK || len(list) == 0 || body["fetched_at"] == nil {
		t.Errorf("GET /v1/templates?sender=B: %d %v, want B's fetched cache", code, body)
	}
	if code, body = d.do(t, http.MethodGet, "/v1/templates?sender=4915100000799", ""); code != http.StatusBadRequest {
		t.Errorf("GET /v1/templates for an unknown sender: %d %v, want 400 naming sender", code, body)
	}

	// A recipient nobody wrote to or heard from gets the default sender.
	code, body = acme.do(t, http.MethodPost, "/v1/messages", `{"destination":"`+newcomer+`","payload":`+payloads["template"]+`}`)
	if code != http.StatusAccepted || body["sender"] != senderA {
		t.Errorf("a template to a new recipient: %d %v, want it from the default sender A", code, body)
	}
}

// sandboxSources returns the source of each message the sandbox accepted
// for destination.
func sandboxSources(t *testing.T, sandbox, destination string) []string {
	t.Helper()
	resp, err := http.Get(sandbox + "/sandbox/messages?destination=" + destination)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var logged []struct {
		Source string `json:"source"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&logged); err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, l := range logged {
		out = append(out, l.Source)
	}
	return out
}
