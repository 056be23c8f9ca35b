package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

// ChatArchitect's API overview ends with a Python and a Node.js example of
// a send. The README shows them pointed at "chatq sandbox"; these tests run
// exactly what the README shows against an in-process sandbox, so that the
// sandbox keeps answering ChatArchitect's own clients and the README stays
// true.

// The credentials and URL of the README's examples. The overview leaves
// APP_ID and APP_SECRET to the reader; the examples assign them.
const (
	exampleAppID     = "demo"
	exampleAppSecret = "demo"
	exampleURL       = "http://127.0.0.1:8090"
)

// pythonExample is the overview's Python snippet with the sandbox's URL and
// the credentials' assignments.
const pythonExample = `import requests, base64
APP_ID = "demo"
APP_SECRET = "demo"
auth = base64.b64encode(f"{APP_ID}:{APP_SECRET}".encode()).decode()
r = requests.post(
  "http://127.0.0.1:8090/whatsappmessage",
  headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
  json={"channel": "whatsapp", "destination": "96996999699", "payload": {"type": "text", "message": "Hi John!"}}
)
print(r.json())
`

// nodeExample is the overview's Node.js snippet with the sandbox's URL and
// the credentials' assignments. Node.js 18 and later have fetch built in,
// so the overview's node-fetch import, a package to install, is left out;
// and the answer is printed, which the overview's snippet does not do.
const nodeExample = `// Node.js 18+ has fetch built in: no import fetch from "node-fetch".
const APP_ID = "demo";
const APP_SECRET = "demo";
const auth = Buffer.from(` + "`${APP_ID}:${APP_SECRET}`" + `).toString("base64");

const r = await fetch("http://127.0.0.1:8090/whatsappmessage", {
  method: "POST",
  headers: { "Authorization": ` + "`Basic ${auth}`" + `, "Content-Type": "application/json" },
  body: JSON.stringify({
    channel: "whatsapp",
    destination: "96996999699",
    payload: { type: "text", message: "Hi John!" }
  })
});
console.log(await r.json());
`

// exampleLog collects the sandbox command's output while it runs.
type exampleLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *exampleLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *exampleLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startExampleSandbox runs "chatq sandbox" in-process on a free port with
// the examples' credentials, stops it at the end of the test, and returns
// its URL.
func startExampleSandbox(t *testing.T) string {
	t.Helper()
	t.Setenv("CHATQ_SANDBOX_ADDR", "127.0.0.1:0")
	t.Setenv("CHATQ_CA_APP_ID", exampleAppID)
	t.Setenv("CHATQ_CA_APP_SECRET", exampleAppSecret)
	t.Setenv("CHATQ_LOG_LEVEL", "warn")
	out := &exampleLog{}
	ready := make(chan map[string]string, 1)
	p := &program{stdout: out, stderr: out, ready: func(a map[string]string) { ready <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, []string{"sandbox"}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("chatq sandbox ended with %v\n%s", err, out)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("chatq sandbox did not stop within 15s")
		}
	})
	select {
	case a := <-ready:
		if a["sandbox"] == "" {
			t.Fatalf("chatq sandbox announced no sandbox URL: %v", a)
		}
		return a["sandbox"]
	case err := <-done:
		t.Fatalf("chatq sandbox stopped: %v\n%s", err, out)
	case <-time.After(15 * time.Second):
		t.Fatalf("chatq sandbox not ready after 15s:\n%s", out)
	}
	return ""
}

// requireRuntime skips the test when the interpreter an example needs is
// missing (checked by running name with args), except in CI, which
// installs it (.ci/run) and where a skip would hide a broken example.
func requireRuntime(t *testing.T, what, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err == nil {
		return
	}
	msg := what + " is needed to run this example: `" + name + " " + strings.Join(args, " ") + "` failed: " + err.Error()
	if s := strings.TrimSpace(string(out)); s != "" {
		msg += ": " + s
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; with CI=true this is a failure (.ci/run installs it)")
	}
	t.Skip(msg + "; skipped (with CI=true this is a failure)")
}

// submittedRe finds the messageId of a "submitted" answer in what Python's
// print(dict) and Node's console.log(object) write:
// {'status': 'submitted', 'messageId': '...'} and
// { status: 'submitted', messageId: '...' } (over several lines when long).
var submittedRe = regexp.MustCompile(`'?status'?: 'submitted',\s+'?messageId'?: '([0-9a-f-]{36})'`)

func TestChatArchitectExamples(t *testing.T) {
	sandboxURL := startExampleSandbox(t)
	tests := []struct {
		name   string
		file   string
		source string
		// runtime: the interpreter and how to check it has what the
		// example needs.
		runtime, check string
		checkArgs      []string
	}{
		{"python", "example.py", pythonExample, "python3", "python3 with the requests module", []string{"-c", "import requests"}},
		{"node", "example.mjs", nodeExample, "node", "Node.js 18 or later (global fetch)", []string{"-e", "if (typeof fetch !== 'function') process.exit(1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireRuntime(t, tt.check, tt.runtime, tt.checkArgs...)
			if strings.Count(tt.source, exampleURL) != 1 {
				t.Fatalf("the %s example must call %s exactly once", tt.name, exampleURL)
			}
			script := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(script, []byte(strings.Replace(tt.source, exampleURL, sandboxURL, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tt.runtime, script)
			// A proxy from the environment must not stand between the
			// example and the local sandbox.
			cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", tt.runtime, tt.file, err, out)
			}
			m := submittedRe.FindSubmatch(out)
			if m == nil {
				t.Fatalf("the %s example printed %q, want a 'status': 'submitted' answer with a messageId", tt.name, out)
			}
			checkAccepted(t, sandboxURL, string(m[1]))
		})
	}
}

// checkAccepted checks that the sandbox logged messageID as the examples'
// message.
func checkAccepted(t *testing.T, sandboxURL, messageID string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(sandboxURL + "/sandbox/messages?destination=96996999699")
	if err != nil {
		t.Fatalf("GET /sandbox/messages: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /sandbox/messages: %v", err)
	}
	var log []struct {
		MessageID string          `json:"messageId"`
		Payload   json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(body, &log); err != nil {
		t.Fatalf("GET /sandbox/messages: %v in %s", err, body)
	}
	for _, m := range log {
		if m.MessageID != messageID {
			continue
		}
		if want := `{"type":"text","message":"Hi John!"}`; string(m.Payload) != want {
			t.Errorf("sandbox logged payload %s, want %s", m.Payload, want)
		}
		return
	}
	t.Errorf("sandbox did not log message %s: %s", messageID, body)
}

// TestReadmeShowsTheExamples keeps the README's sandbox section in step
// with what TestChatArchitectExamples runs.
func TestReadmeShowsTheExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"sandbox command": "CHATQ_CA_APP_ID=" + exampleAppID + " CHATQ_CA_APP_SECRET=" + exampleAppSecret + " go run ./cmd/chatq sandbox",
		"python example":  "python3 - <<'PY'\n" + pythonExample + "PY\n",
		"node example":    "node --input-type=module <<'JS'\n" + nodeExample + "JS\n",
	} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("README.md does not show the %s as the tests run it:\n%s", name, want)
		}
	}
}

// chatqSubmittedRe finds chatq's message id (a ULID) in a "submitted"
// answer as the examples print it.
var chatqSubmittedRe = regexp.MustCompile(`'?status'?: 'submitted',\s+'?messageId'?: '([0-9A-Z]{26})'`)

// appHooks is an application's webhook receiver: what ChatArchitect's own
// webhooks reached before, and chatq's forwarding reaches now.
type appHooks struct {
	mu      sync.Mutex
	events  map[string][]string // chatq message id -> event types, in arrival order
	inbound [][]byte
	bad     []string
}

// ServeHTTP keeps a message-event's type under the id ChatArchitect's
// messageId stood in: id for enqueued and failed, gsId for the others.
func (h *appHooks) ServeHTTP(w http.ResponseWriter, r *http.Request, secret string) {
	body, _ := io.ReadAll(r.Body)
	var hook struct {
		Type    string `json:"type"`
		Payload struct {
			ID   string `json:"id"`
			GsID string `json:"gsId"`
			Type string `json:"type"`
		} `json:"payload"`
	}
	err := json.Unmarshal(body, &hook)
	h.mu.Lock()
	defer h.mu.Unlock()
	verr := callback.Verify(secret, r.Header.Get(callback.SignatureHeader), body, time.Minute, time.Now())
	if err == nil && verr == nil && hook.Type == "message" {
		h.inbound = append(h.inbound, body)
		return
	}
	if err != nil || verr != nil || hook.Type != "message-event" {
		h.bad = append(h.bad, fmt.Sprintf("%v %v %s", err, verr, body))
		return
	}
	id := hook.Payload.GsID
	if hook.Payload.Type == "enqueued" || hook.Payload.Type == "failed" {
		id = hook.Payload.ID
	}
	h.events[id] = append(h.events[id], hook.Payload.Type)
}

func (h *appHooks) of(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.events[id], ",") + " " + strings.Join(h.bad, " | ")
}

// The same examples, pointed at chatq api instead of ChatArchitect: a
// sender added through the API has the examples' app credentials, its
// application registered its webhook with the drop-in POST /webhook, and
// the application's receiver gets the message's delivery events in
// ChatArchitect's format, with the id the example printed.
func TestChatArchitectExamplesAgainstChatq(t *testing.T) {
	const callbackSecret = "cb_examples"
	hooks := &appHooks{events: map[string][]string{}}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hooks.ServeHTTP(w, r, callbackSecret) }))
	t.Cleanup(receiver.Close)
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": redistest.Start(t).URL(), "CHATQ_CALLBACK_SECRET": callbackSecret})

	const number = "4915100000701"
	code, body := d.do(t, http.MethodPost, "/v1/senders",
		fmt.Sprintf(`{"number":%q,"app_id":%q,"app_secret":%q,"tenant":"shop"}`, number, exampleAppID, exampleAppSecret))
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/senders: %d %v", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, d.api+"/webhook",
		strings.NewReader(fmt.Sprintf(`{"channel":"whatsapp","destination":%q,"webhook":%q,"webhook_separate":"false"}`, number, receiver.URL+"/whatsapp")))
	req.SetBasicAuth(exampleAppID, exampleAppSecret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), `"success"`) {
		t.Fatalf("drop-in POST /webhook: %d %s", resp.StatusCode, answer)
	}

	for _, tt := range []struct {
		name, file, source, runtime, check string
		checkArgs                          []string
	}{
		{"python", "example.py", pythonExample, "python3", "python3 with the requests module", []string{"-c", "import requests"}},
		{"node", "example.mjs", nodeExample, "node", "Node.js 18 or later (global fetch)", []string{"-e", "if (typeof fetch !== 'function') process.exit(1)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			requireRuntime(t, tt.check, tt.runtime, tt.checkArgs...)
			script := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(script, []byte(strings.Replace(tt.source, exampleURL, d.api, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tt.runtime, script)
			cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", tt.runtime, tt.file, err, out)
			}
			m := chatqSubmittedRe.FindSubmatch(out)
			if m == nil {
				t.Fatalf("the %s example printed %q, want a 'status': 'submitted' answer with chatq's messageId", tt.name, out)
			}
			id := string(m[1])
			code, rec := d.do(t, http.MethodGet, "/v1/messages/"+id, "")
			if code != http.StatusOK || rec["sender"] != number || rec["tenant"] != "shop" {
				t.Fatalf("GET /v1/messages/%s: %d %v, want a message of sender %s", id, code, rec, number)
			}
			poll.Until(t, 30*time.Second, "the application's webhooks of "+id, func() (bool, string) {
				got := hooks.of(id)
				return strings.HasPrefix(got, "enqueued,sent,delivered,read "), got
			})
		})
	}

	// A user writes to the sender: ChatArchitect's webhook at the sender's
	// own URL reaches the application as it came.
	const inbound = `{"app":"demo","timestamp":1764064802000,"version":2,"type":"message","payload":{"id":"in-1","source":"96996999699","type":"text","payload":{"text":"where is my order?"},"sender":{"phone":"96996999699","name":"John"}}}`
	resp, err = http.Post(d.api+body["webhook_path"].(string), "application/json", strings.NewReader(inbound))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("an inbound webhook at the sender's URL: %d", resp.StatusCode)
	}
	poll.Until(t, 30*time.Second, "the inbound message at the application", func() (bool, string) {
		hooks.mu.Lock()
		defer hooks.mu.Unlock()
		return len(hooks.inbound) == 1 && string(hooks.inbound[0]) == inbound, fmt.Sprintf("%q %q", hooks.inbound, hooks.bad)
	})
}
