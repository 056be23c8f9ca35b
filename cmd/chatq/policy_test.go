package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
)

func TestPolicyCommands(t *testing.T) {
	sb, err := sandbox.New(sandbox.Config{AppID: "app", AppSecret: "sbx_secret"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	t.Cleanup(func() { sbSrv.Close(); sb.Close() })

	// Where the sandbox sends its webhooks once chatq registered them.
	var mu sync.Mutex
	var hookPaths []string
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hookPaths = append(hookPaths, r.URL.Path)
		mu.Unlock()
	}))
	t.Cleanup(hooks.Close)

	const secret = "whsec_0123456789abcdef"
	for k, v := range map[string]string{
		"CHATQ_REDIS_URL":      redistest.Start(t).URL(),
		"CHATQ_CA_BASE_URL":    sbSrv.URL,
		"CHATQ_CA_APP_ID":      "app",
		"CHATQ_CA_APP_SECRET":  "sbx_secret",
		"CHATQ_CA_SOURCE":      "15550001234",
		"CHATQ_PUBLIC_URL":     hooks.URL + "/",
		"CHATQ_WEBHOOK_SECRET": secret,
		"CHATQ_LOG_LEVEL":      "warn",
	} {
		t.Setenv(k, v)
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		p := &program{stdout: &out, stderr: &out}
		err := p.run(context.Background(), args)
		return out.String(), err
	}
	want := func(out string, err error, parts ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, s := range parts {
			if !strings.Contains(out, s) {
				t.Errorf("output lacks %q:\n%s", s, out)
			}
		}
	}

	out, err := run("suppressions", "add", "+447700900123", "--reason", "asked by e-mail")
	want(out, err, "447700900123 suppressed")
	out, err = run("suppressions", "list")
	want(out, err, "DESTINATION", "447700900123", "operator", "asked by e-mail")
	out, err = run("suppressions", "remove", "447700900123")
	want(out, err, "447700900123 no longer suppressed")
	if _, err := run("suppressions", "remove", "447700900123"); err == nil || !strings.Contains(err.Error(), "is not suppressed") {
		t.Errorf("removing twice: %v", err)
	}
	if _, err := run("suppressions", "add", "12ab"); exitCode(err) != 2 {
		t.Errorf("a bad number: %v", err)
	}

	out, err = run("templates", "list")
	want(out, err, "welcome_offer", "en_US", "APPROVED", "otp_code")
	out, err = run("templates", "submit", "--name", "order_ready", "--language", "en", "--category", "UTILITY",
		"--content", "Your order {{1}} is ready.", "--example", "Your order [42] is ready.")
	want(out, err, `"elementName": "order_ready"`, `"status": "PENDING"`)
	out, err = run("templates", "sync")
	want(out, err, "4 templates, 3 approved")

	out, err = run("webhook", "register")
	want(out, err, "webhook registered", hooks.URL+"/webhooks/chatarchitect/")
	if strings.Contains(out, secret) {
		t.Errorf("the webhook secret is printed: %s", out)
	}
	// The sandbox now sends its webhooks to the registered URL.
	resp, err := http.Post(sbSrv.URL+"/sandbox/inbound", "application/json", strings.NewReader(`{"from":"447700900123","text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	poll.Until(t, 5*time.Second, "a webhook at the registered URL", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(hookPaths) > 0 && hookPaths[0] == "/webhooks/chatarchitect/"+secret, strings.Join(hookPaths, ",")
	})

	t.Setenv("CHATQ_PUBLIC_URL", "")
	if _, err := run("webhook", "register"); err == nil || err.Error() != "CHATQ_PUBLIC_URL is not set" {
		t.Errorf("register without a public URL: %v", err)
	}
	t.Setenv("CHATQ_CA_SOURCE", "")
	if _, err := run("templates", "list"); err == nil || err.Error() != "CHATQ_CA_SOURCE is not set" {
		t.Errorf("templates without a source: %v", err)
	}

	for _, args := range [][]string{{"suppressions", "list", "--help"}, {"templates", "submit", "--help"}, {"webhook", "--help"}} {
		out, err := run(args...)
		if exitCode(err) != 0 || !strings.Contains(out, "Usage: chatq "+args[0]) {
			t.Errorf("%v: %v %s", args, err, out)
		}
	}
	if _, err := run("templates", "publish"); exitCode(err) != 2 {
		t.Errorf("an unknown subcommand: %v", err)
	}
}
