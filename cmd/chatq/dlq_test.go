package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// sandboxConfig changes the sandbox's knobs at run time.
func (d *devRun) sandboxConfig(t *testing.T, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, d.sandbox+"/sandbox/config", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /sandbox/config %s: %d", body, resp.StatusCode)
	}
}

// accepted counts the sends the sandbox accepted for destination.
func (d *devRun) accepted(t *testing.T, destination string) int {
	t.Helper()
	resp, err := http.Get(d.sandbox + "/sandbox/messages?destination=" + destination)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// chatq runs one chatq command in-process, in the environment the test
// set, and returns its output.
func chatq(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	p := &program{stdout: &out, stderr: &out, stdin: strings.NewReader("")}
	err := p.run(context.Background(), args)
	return out.String(), err
}

// After an outage (every send a 500 until the retries ran out), one
// chatq dlq retry sends every dead letter of it, once, and each reaches
// read.
func TestDLQRetryAfterOutage(t *testing.T) {
	srv := redistest.Start(t)
	d := startDev(t, map[string]string{
		"CHATQ_REDIS_URL":                   srv.URL(),
		"CHATQ_RETRY_MAX":                   "1",
		"CHATQ_DELAYED_TASK_CHECK_INTERVAL": "100ms",
	})
	d.sandboxConfig(t, `{"error_ratio":1}`)

	const n = 6
	ids := make(map[string]string) // id -> destination
	for i := range n {
		dest := fmt.Sprintf("4420733%04d", 100+i)
		code, rec := d.do(t, "POST", "/v1/messages", fmt.Sprintf(`{"destination":%q,"payload":{"type":"text","message":"Your order shipped"},"batch_id":"outage"}`, dest))
		if code != http.StatusAccepted {
			t.Fatalf("POST: %d %v", code, rec)
		}
		ids[rec["id"].(string)] = dest
	}
	// The campaign's own listing says when they are all dead.
	poll.Until(t, 30*time.Second, "every message of the outage dead", func() (bool, string) {
		_, page := d.do(t, "GET", "/v1/messages?batch_id=outage&status=dead", "")
		list, _ := page["messages"].([]any)
		return len(list) == n, fmt.Sprint(page)
	})
	// The dead-letter index is written a moment after the status.
	poll.Until(t, 5*time.Second, "every message of the outage a dead letter", func() (bool, string) {
		_, page := d.do(t, "GET", "/v1/dead-letters?batch_id=outage&class=retryable&code=http_500", "")
		list, _ := page["dead_letters"].([]any)
		return len(list) == n, fmt.Sprint(page)
	})
	code, batch := d.do(t, "GET", "/v1/batches/outage", "")
	if counts, _ := batch["counts"].(map[string]any); code != http.StatusOK || counts["dead"] != float64(n) || batch["total"] != float64(n) {
		t.Errorf("GET /v1/batches/outage: %d %v", code, batch)
	}

	// The shell shows them, with the archived task and no body.
	out, err := chatq(t, "dlq", "list", "--batch", "outage")
	if err != nil {
		t.Fatalf("dlq list: %v\n%s", err, out)
	}
	for id := range ids {
		if !strings.Contains(out, id) || !strings.Contains(out, "http_500") {
			t.Errorf("dlq list lacks %s with its code:\n%s", id, out)
		}
	}
	var some string
	for id := range ids {
		some = id
		break
	}
	out, err = chatq(t, "dlq", "show", some)
	if err != nil || !strings.Contains(out, `"state": "archived"`) || !strings.Contains(out, `"status": "dead"`) || strings.Contains(out, "Your order shipped") {
		t.Errorf("dlq show: %v\n%s", err, out)
	}

	// The upstream recovers; one command replays the outage.
	d.sandboxConfig(t, `{"error_ratio":0}`)
	out, err = chatq(t, "dlq", "retry", "--batch", "outage", "--class", "retryable", "--newer-than", "1h")
	if err != nil || !strings.Contains(out, fmt.Sprintf("retried %d dead letters", n)) {
		t.Fatalf("dlq retry: %v\n%s", err, out)
	}
	for id, dest := range ids {
		poll.Until(t, 30*time.Second, id+" read", func() (bool, string) {
			_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
			return rec["status"] == "read", fmt.Sprint(rec["status"], rec["history"])
		})
		if got := d.accepted(t, dest); got != 1 {
			t.Errorf("%s: the sandbox accepted %d sends, want 1", dest, got)
		}
		_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
		if h, _ := json.Marshal(rec["history"]); !strings.Contains(string(h), "retried by an operator") || !strings.Contains(string(h), `"status":"dead"`) {
			t.Errorf("%s: history %s does not keep the death and the retry", id, h)
		}
	}
	out, err = chatq(t, "dlq", "list")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("dlq list after the retry: %v\n%s", err, out)
	}
}

func TestDLQCommandLine(t *testing.T) {
	t.Setenv("CHATQ_REDIS_URL", redistest.Start(t).URL())
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "retry"}, "give ids, filters, or --all"},
		{[]string{"dlq", "delete"}, "give ids, filters, or --all"},
		{[]string{"dlq", "retry", "--all", "--class", "retryable"}, "drop it to use filters"},
		{[]string{"dlq", "retry", "--class", "retryable", "01J"}, "not both"},
		{[]string{"dlq", "list", "--class", "fatal"}, "--class must be"},
		{[]string{"dlq", "list", "--older-than", "2d"}, "--older-than must be"},
		{[]string{"dlq", "list", "--batch", "x", "extra"}, "unexpected argument"},
		{[]string{"dlq", "show"}, "the message id is required"},
		{[]string{"dlq", "show", "01NOSUCH"}, `no message with id "01NOSUCH"`},
		{[]string{"dlq", "purge"}, `unknown subcommand "purge"`},
		{[]string{"dlq", "list", "--tenant", "Acme!"}, "--tenant must be"},
		{[]string{"dlq", "retry", "--all", "--tenant", ""}, "--tenant is required"},
		{[]string{"dlq", "retry", "--tenant", "acme"}, "give ids, filters, or --all"},
		{[]string{"dlq", "delete", "--tenant", "acme", "01J"}, "ids need none"},
	} {
		out, err := chatq(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error with %q\n%s", tt.args, err, tt.want, out)
		}
	}
	out, err := chatq(t, "dlq", "retry", "01NOSUCH")
	if err != nil || !strings.Contains(out, "01NOSUCH: no such message") || !strings.Contains(out, "retried 0 dead letters (0 not dead, 1 not found)") {
		t.Errorf("retry of an unknown id: %v\n%s", err, out)
	}
	out, err = chatq(t, "dlq", "delete", "--all")
	if err != nil || !strings.Contains(out, "deleted 0 dead letters") {
		t.Errorf("delete --all of nothing: %v\n%s", err, out)
	}
}

// Each tenant has its own dead letters: chatq dlq reads tenant default's
// unless --tenant names another, and acts on that tenant's alone.
func TestDLQTenant(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("CHATQ_REDIS_URL", srv.URL())
	ctx := context.Background()
	st := store.New(srv.Client(t), store.Config{})
	now := time.Now().UTC()
	ids := map[string]string{} // tenant -> its dead letter
	for i, tenant := range []string{store.DefaultTenant, "acme"} {
		r := &store.Record{ID: fmt.Sprintf("01DEADLETTER%d", i), Destination: "442070000", Type: "text", Priority: "transactional",
			Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: now}}, Tenant: tenant,
			CreatedAt: now, UpdatedAt: now, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: "transactional"}
		if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.Move(ctx, r.ID, store.Change{Status: store.Dead, Error: &store.ErrorInfo{Class: "permanent", Code: "1001", Message: "refused", At: now}}); err != nil {
			t.Fatal(err)
		}
		ids[tenant] = r.ID
	}
	for _, c := range []struct {
		args         []string
		shows, hides string
	}{
		{[]string{"dlq", "list"}, ids[store.DefaultTenant], ids["acme"]},
		{[]string{"dlq", "list", "--tenant", "default"}, ids[store.DefaultTenant], ids["acme"]},
		{[]string{"dlq", "list", "--tenant", "acme", "--json"}, ids["acme"], ids[store.DefaultTenant]},
	} {
		out, err := chatq(t, c.args...)
		if err != nil || !strings.Contains(out, c.shows) || strings.Contains(out, c.hides) {
			t.Errorf("%v: %v\n%s\nwant %s, not %s", c.args, err, out, c.shows, c.hides)
		}
	}
	out, err := chatq(t, "dlq", "delete", "--all", "--tenant", "acme")
	if err != nil || !strings.Contains(out, "deleted 1 dead letter") {
		t.Fatalf("dlq delete --all --tenant acme: %v\n%s", err, out)
	}
	if out, err := chatq(t, "dlq", "list", "--tenant", "acme"); err != nil || strings.Contains(out, ids["acme"]) {
		t.Errorf("acme's dead letters after the deletion: %v\n%s", err, out)
	}
	if out, err := chatq(t, "dlq", "list"); err != nil || !strings.Contains(out, ids[store.DefaultTenant]) {
		t.Errorf("tenant default's dead letters after acme's deletion: %v\n%s", err, out)
	}
}
