package main

import (
	"net/http"
	"strings"
	"testing"

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
		t.Setenv("CHATQ_CA_SOURCE", "15550001234")
		for _, k := range []string{"", strings.Repeat("ab", 32)} {
			t.Setenv("CHATQ_SECRETS_KEY", k)
			_, err := chatq(t, args...)
			if err == nil || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") || strings.Contains(err.Error(), "\n") {
				t.Errorf("chatq %s with CHATQ_SECRETS_KEY=%q and a stored sender: %v, want one line naming CHATQ_SECRETS_KEY", args[0], k, err)
			}
		}
	}
}
