package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

// syncBuffer collects a program's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devRun is a running "chatq dev".
type devRun struct {
	api, sandbox, key string
	out               *syncBuffer
}

// startDev runs "chatq dev" in-process on free ports with env on top of
// test-friendly settings, and stops it at the end of the test.
func startDev(t *testing.T, env map[string]string) *devRun {
	t.Helper()
	base := map[string]string{
		"CHATQ_HTTP_ADDR":             "127.0.0.1:0",
		"CHATQ_SANDBOX_ADDR":          "127.0.0.1:0",
		"CHATQ_SANDBOX_WEBHOOK_DELAY": "20ms",
		"CHATQ_CA_TIMEOUT":            "1s",
		"CHATQ_RETRY_BASE_DELAY":      "100ms",
		"CHATQ_LOG_LEVEL":             "warn",
	}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		t.Setenv(k, v)
	}
	out := &syncBuffer{}
	ready := make(chan map[string]string, 1)
	p := &program{stdout: out, stderr: out, ready: func(a map[string]string) { ready <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, []string{"dev"}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("chatq dev ended with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("chatq dev did not stop within 30s of SIGINT")
		}
	})
	select {
	case a := <-ready:
		return &devRun{api: a["api"], sandbox: a["sandbox"], key: a["key"], out: out}
	case err := <-done:
		t.Fatalf("chatq dev stopped: %v\n%s", err, out)
	case <-time.After(20 * time.Second):
		t.Fatalf("chatq dev not ready after 20s:\n%s", out)
	}
	return nil
}

func (d *devRun) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, d.api+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, v
}

// payloads holds a valid payload of every type.
var payloads = map[string]string{
	"text":        `{"type":"text","message":"Hi John, how are you?"}`,
	"image":       `{"type":"image","originalUrl":"https://example.com/a.jpg","previewUrl":"https://example.com/a_s.jpg","caption":"A picture"}`,
	"audio":       `{"type":"audio","url":"https://example.com/a.mp3"}`,
	"video":       `{"type":"video","url":"https://example.com/a.mp4","caption":"A film"}`,
	"file":        `{"type":"file","url":"https://example.com/a.pdf","filename":"invoice.pdf"}`,
	"location":    `{"type":"location","latitude":48.8584,"longitude":2.2945,"name":"Eiffel Tower"}`,
	"contact":     `{"type":"contact","contact":{"name":{"formattedName":"John Doe"},"phones":[{"phone":"+15551234567","type":"CELL"}]}}`,
	"list":        `{"type":"list","title":"Menu","body":"Pick one","msgid":"m1","globalButtons":[{"type":"text","title":"Open"}],"items":[{"title":"Drinks","options":[{"type":"text","title":"Tea"},{"type":"text","title":"Coffee"}]}]}`,
	"quick_reply": `{"type":"quick_reply","msgid":"q1","content":{"type":"text","text":"Coming?"},"options":[{"type":"text","title":"Yes"},{"type":"text","title":"No"}]}`,
	"template":    `{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":["123456"]}}`,
}

func TestDevEndToEnd(t *testing.T) {
	for _, redisMode := range []string{"real redis", "embedded redis"} {
		t.Run(redisMode, func(t *testing.T) {
			env := map[string]string{}
			if redisMode == "real redis" {
				srv := redistest.Start(t)
				if !srv.Real() {
					t.Skip("no redis-server here")
				}
				env["CHATQ_REDIS_URL"] = srv.URL()
			}
			d := startDev(t, env)

			type expect struct {
				status, code string
			}
			want := map[string]expect{}
			send := func(dest, payload string, e expect) {
				code, rec := d.do(t, "POST", "/v1/messages", fmt.Sprintf(`{"channel":"whatsapp","destination":%q,"payload":%s}`, dest, payload))
				if code != http.StatusAccepted {
					t.Fatalf("POST %s: %d %v", dest, code, rec)
				}
				want[rec["id"].(string)] = e
			}
			for typ, p := range payloads {
				send("4420700"+fmt.Sprint(1000+len(want))+"9", p, expect{status: "read"})
				_ = typ
			}
			magic := map[string]expect{
				"0001": {"failed", "131026"},
				"0002": {"dead", "http_400"},
				"0003": {"read", ""},
				"0004": {"read", ""},
				"0005": {"delivered", ""},
				"0006": {"failed", "1012"},
				"0007": {"read", ""},
				"0008": {"failed", "131047"},
			}
			for suffix, e := range magic {
				send("4420711"+suffix, payloads["text"], e)
			}

			for id, e := range want {
				var rec map[string]any
				poll.Until(t, 40*time.Second, "final status of "+id, func() (bool, string) {
					_, rec = d.do(t, "GET", "/v1/messages/"+id, "")
					return rec["status"] == e.status, fmt.Sprintf("%v to %v is %v, want %s", rec["type"], rec["destination"], rec["status"], e.status)
				})
				if e.code != "" {
					le, _ := rec["last_error"].(map[string]any)
					if le == nil || le["code"] != e.code {
						t.Errorf("%s (%s): last_error %v, want code %s", id, rec["destination"], rec["last_error"], e.code)
					}
				}
			}
			if redisMode == "real redis" {
				checkDashboard(t, d)
			}
			if !strings.Contains(d.out.String(), "chatq dev is running") {
				t.Errorf("no start banner in the output:\n%s", d.out)
			}
		})
	}
}

func TestCommandsRefuseToStartWithoutWhatTheyNeed(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"api"}, nil, "CHATQ_REDIS_URL is not set"},
		{[]string{"api"}, map[string]string{"CHATQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "CHATQ_API_KEYS is not set"},
		{[]string{"api"}, map[string]string{"CHATQ_REDIS_URL": "redis://127.0.0.1:1/0", "CHATQ_API_KEYS": "k"}, "CHATQ_WEBHOOK_SECRET is not set"},
		{[]string{"worker"}, map[string]string{"CHATQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "CHATQ_CA_APP_ID is not set"},
		// Without its number a worker would keep the sender's limits under
		// another name than its peers, and its probe could not reach getHSM.
		{[]string{"worker"}, map[string]string{"CHATQ_REDIS_URL": "redis://127.0.0.1:1/0", "CHATQ_CA_APP_ID": "app", "CHATQ_CA_APP_SECRET": "secret"}, "CHATQ_CA_SOURCE is not set"},
		{[]string{"send", "--to", "96996999699", "--text", "hi"}, nil, "CHATQ_REDIS_URL is not set"},
		{[]string{"status", "01J"}, nil, "CHATQ_REDIS_URL is not set"},
		{[]string{"worker"}, map[string]string{"CHATQ_CA_TIMEOUT": "soon"}, "CHATQ_CA_TIMEOUT"},
		{[]string{"dev"}, map[string]string{"CHATQ_RATE_PER_SECOND": "-1"}, "CHATQ_RATE_PER_SECOND"},
		{[]string{"dev"}, map[string]string{"CHATQ_LOG_LEVEL": "loud"}, "CHATQ_LOG_LEVEL"},
		{[]string{"nope"}, nil, `unknown command "nope"`},
		{[]string{"send", "--text", "hi"}, nil, "--to is required"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for _, k := range []string{"CHATQ_REDIS_URL", "CHATQ_API_KEYS", "CHATQ_WEBHOOK_SECRET", "CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET", "CHATQ_CA_SOURCE"} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			p := &program{stdout: &out, stderr: &out}
			err := p.run(context.Background(), tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range (&program{}).root().Commands() {
		name := c.Name()
		var out bytes.Buffer
		p := &program{stdout: &out, stderr: &out}
		if err := p.run(context.Background(), []string{name, "--help"}); exitCode(err) != 0 {
			t.Errorf("%s --help: %v", name, err)
		}
		if !strings.Contains(out.String(), "Usage: chatq "+name) {
			t.Errorf("%s --help printed %q", name, out.String())
		}
	}
}

// checkDashboard drives the asynq dashboard's own JSON API: the queues are
// there, the dead letter of the 0002 message is archived with its reason
// and without its body, and nothing is shown without the password.
func checkDashboard(t *testing.T, d *devRun) {
	t.Helper()
	get := func(path, password string) (int, string) {
		req, _ := http.NewRequest("GET", d.api+path, nil)
		if password != "" {
			req.SetBasicAuth("ops", password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, pw := range []string{"", "wrong", d.key + "x"} {
		if code, _ := get("/monitoring/api/queues", pw); code != http.StatusUnauthorized {
			t.Errorf("dashboard with password %q: %d, want 401", pw, code)
		}
	}
	code, body := get("/monitoring/api/queues", d.key)
	if code != http.StatusOK || !strings.Contains(body, `"transactional"`) {
		t.Fatalf("dashboard queues: %d %s", code, body)
	}
	code, body = get("/monitoring/api/queues/transactional/archived_tasks", d.key)
	if code != http.StatusOK || !strings.Contains(body, "Invalid Destination") {
		t.Errorf("dashboard archived tasks: %d %s", code, body)
	}
	if strings.Contains(body, "Hi John") {
		t.Errorf("a message body shows in the dashboard: %s", body)
	}
	if code, body := get("/monitoring/", d.key); code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Errorf("dashboard page: %d %.200s", code, body)
	}
}
