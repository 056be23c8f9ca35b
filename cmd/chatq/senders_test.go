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

// chatq dev serves the sender registry and tenant keys with a secrets key
// of its own; a process on the same Redis without that key refuses to
// start, naming CHATQ_SECRETS_KEY.
func TestDevSendersAndTenants(t *testing.T) {
	redisURL := redistest.Start(t).URL()
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": redisURL})
	code, body := d.do(t, http.MethodPost, "/v1/senders", `{"number":"4915100000501","app_id":"app","app_secret":"s","tenant":"acme"}`)
	if code != http.StatusCreated || body["state"] != "active" {
		t.Fatalf("POST /v1/senders on chatq dev: %d %v", code, body)
	}
	code, body = d.do(t, http.MethodPost, "/v1/keys", `{"tenant":"acme","name":"crm"}`)
	key, _ := body["key"].(string)
	if code != http.StatusCreated || !strings.HasPrefix(key, "cq_") {
		t.Fatalf("POST /v1/keys: %d %v", code, body)
	}
	tenant := &devRun{api: d.api, key: key}
	code, body = tenant.do(t, http.MethodPost, "/v1/messages", `{"destination":"96996999699","payload":{"type":"text","message":"Hi"}}`)
	if code != http.StatusAccepted || body["tenant"] != "acme" || body["sender"] != "4915100000501" {
		t.Errorf("POST /v1/messages with acme's key: %d %v, want acme's sender", code, body)
	}
	for _, args := range [][]string{{"api"}, {"worker"}} {
		t.Setenv("CHATQ_REDIS_URL", redisURL)
		t.Setenv("CHATQ_API_KEYS", "k")
		t.Setenv("CHATQ_WEBHOOK_SECRET", "w")
		t.Setenv("CHATQ_CA_APP_ID", "app")
		t.Setenv("CHATQ_CA_APP_SECRET", "sec")
		t.Setenv("CHATQ_CA_SOURCE", "4915100000999")
		for _, k := range []string{"", strings.Repeat("ab", 32)} {
			t.Setenv("CHATQ_SECRETS_KEY", k)
			_, err := chatq(t, args...)
			if err == nil || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") || strings.Contains(err.Error(), "\n") {
				t.Errorf("chatq %s with CHATQ_SECRETS_KEY=%q and a stored sender: %v, want one line naming CHATQ_SECRETS_KEY", args[0], k, err)
			}
		}
	}
}

// A sender added through the API sends within seconds from the workers
// already running, through its app's credentials, naming its number as the
// source when its app has several; /readyz lists it.
func TestDevSenderAddedThroughTheAPISendsAtOnce(t *testing.T) {
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": redistest.Start(t).URL(), "CHATQ_CA_APP_SECRET": "dev-secret"})
	const number = "4915100000601"
	added := time.Now()
	code, body := d.do(t, http.MethodPost, "/v1/senders", `{"number":"`+number+`","app_id":"chatq-dev","app_secret":"dev-secret","tenant":"acme"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/senders: %d %v", code, body)
	}
	code, body = d.do(t, http.MethodPost, "/v1/keys", `{"tenant":"acme","name":"crm"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/keys: %d %v", code, body)
	}
	acme := &devRun{api: d.api, key: body["key"].(string)}
	code, body = acme.do(t, http.MethodPost, "/v1/messages", `{"destination":"96996999601","sender":"`+number+`","payload":{"type":"text","message":"Hi"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/messages: %d %v", code, body)
	}
	id, _ := body["id"].(string)
	poll.Until(t, 5*time.Second-time.Since(added), "the new sender's message submitted within 5s of the sender's addition", func() (bool, string) {
		_, body := acme.do(t, http.MethodGet, "/v1/messages/"+id, "")
		return body["status"] == "submitted" || body["status"] == "delivered" || body["status"] == "read", fmt.Sprint(body["status"])
	})
	t.Logf("sent %s after the sender was added", time.Since(added).Round(time.Millisecond))

	resp, err := http.Get(d.sandbox + "/sandbox/messages?destination=96996999601")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var logged []struct {
		AppID  string `json:"app_id"`
		Source string `json:"source"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&logged); err != nil {
		t.Fatal(err)
	}
	if len(logged) != 1 || logged[0].AppID != "chatq-dev" || logged[0].Source != number {
		t.Errorf("the sandbox logged %+v; want one message of app chatq-dev with source %s (its app has two numbers)", logged, number)
	}

	code, ready := d.do(t, http.MethodGet, "/readyz", "")
	list, _ := ready["senders"].([]any)
	states := map[string]any{}
	for _, x := range list {
		s, _ := x.(map[string]any)
		states[fmt.Sprint(s["number"])] = s["state"]
	}
	if code != http.StatusOK || states[number] != "active" || len(states) != 2 {
		t.Errorf("/readyz: %d, senders %v; want the environment's sender and %s, active", code, states, number)
	}
}
