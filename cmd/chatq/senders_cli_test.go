package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
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
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/tenants"
)

// cliIn runs chatq in-process with stdin and args, and returns what it
// wrote to stdout and stderr together.
func cliIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	p := &program{stdout: &out, stderr: &out, stdin: strings.NewReader(stdin)}
	err := p.run(context.Background(), args)
	return out.String(), err
}

// senderEnv sets the environment of a deployment with a secrets key and no
// sender of its own, and returns the key.
func senderEnv(t *testing.T, redisURL string) []byte {
	t.Helper()
	key := bytes.Repeat([]byte{7}, 32)
	for k, v := range map[string]string{
		"CHATQ_REDIS_URL":   redisURL,
		"CHATQ_SECRETS_KEY": hex.EncodeToString(key),
		"CHATQ_CA_SOURCE":   "",
		"CHATQ_CA_APP_ID":   "",
		"CHATQ_LOG_LEVEL":   "warn",
	} {
		t.Setenv(k, v)
	}
	return key
}

func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
}

func TestSendersCommands(t *testing.T) {
	srv := redistest.Start(t)
	key := senderEnv(t, srv.URL())
	cipher, err := senders.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	// What every chatq process reads: the registry in Redis.
	stored := func(number string) (senders.Sender, bool) {
		t.Helper()
		reg := senders.New(srv.Client(t), senders.Config{Cipher: cipher})
		if err := reg.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		return reg.Lookup(number)
	}
	const number = "4915100000001"

	// The secret comes on stdin, and is printed nowhere.
	out, err := cliIn(t, "s3cret-of-acme\n", "senders", "add", "--number", "+"+number, "--app-id", "acme-app",
		"--app-secret-stdin", "--tenant", "acme", "--rate-per-second", "20", "--pair-interval", "3s", "--default")
	if err != nil {
		t.Fatalf("senders add: %v\n%s", err, out)
	}
	for _, want := range []string{"sender " + number + " added", "rate_burst", "pair_interval          3s", "default                yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("senders add printed no %q:\n%s", want, out)
		}
	}
	x, ok := stored(number)
	if !ok || x.AppSecret != "s3cret-of-acme" || x.Tenant != "acme" || x.Limits.RatePerSecond != 20 || x.Limits.RateBurst != 20 || !x.Default {
		t.Fatalf("the registry holds %+v, %v", x.Limits, ok)
	}
	if strings.Contains(out, "s3cret") || strings.Contains(out, x.WebhookSecret) {
		t.Errorf("senders add printed a secret:\n%s", out)
	}

	out, err = cliIn(t, "", "senders", "list")
	if err != nil || !strings.Contains(out, "NUMBER") || !strings.Contains(out, number+"  acme") {
		t.Errorf("senders list: %v\n%s", err, out)
	}
	var list struct {
		Senders []map[string]any `json:"senders"`
	}
	out, err = cliIn(t, "", "senders", "list", "--tenant", "acme", "--json")
	if err != nil {
		t.Fatal(err)
	}
	decodeJSON(t, out, &list)
	if len(list.Senders) != 1 || list.Senders[0]["number"] != number || list.Senders[0]["state"] != "active" || list.Senders[0]["app_secret"] != nil {
		t.Errorf("senders list --json: %s", out)
	}
	out, _ = cliIn(t, "", "senders", "list", "--tenant", "other", "--json")
	if strings.TrimSpace(out) != `{`+"\n"+`  "senders": []`+"\n"+`}` {
		t.Errorf("senders list of a tenant without senders: %q", out)
	}
	var one map[string]any
	out, err = cliIn(t, "", "senders", "show", number, "--json")
	if err != nil {
		t.Fatal(err)
	}
	decodeJSON(t, out, &one)
	if one["webhook_path"] != x.WebhookPath() || one["pair_interval"] != "3s" {
		t.Errorf("senders show --json: %s", out)
	}
	if out, _ := cliIn(t, "", "senders", "show", number); strings.Contains(out, x.WebhookSecret) || !strings.Contains(out, "/webhooks/chatarchitect/") {
		t.Errorf("senders show prints the webhook secret, or no webhook path:\n%s", out)
	}

	// update changes the fields given and nothing else; --reset takes a
	// limit back to the deployment's.
	out, err = cliIn(t, "", "senders", "update", number, "--rate-burst", "5", "--reset", "rate_per_second,pair_interval", "--portfolio", "acme-eu", "--json")
	if err != nil {
		t.Fatalf("senders update: %v\n%s", err, out)
	}
	decodeJSON(t, out, &one)
	if one["rate_per_second"] != 40.0 || one["rate_burst"] != 5.0 || one["pair_interval"] != "6s" || one["portfolio"] != "acme-eu" || one["app_id"] != "acme-app" {
		t.Errorf("after senders update: %s", out)
	}
	if out, err := cliIn(t, "new-secret", "senders", "update", number, "--app-secret-stdin"); err != nil {
		t.Fatalf("senders update --app-secret-stdin: %v\n%s", err, out)
	}
	if x, _ := stored(number); x.AppSecret != "new-secret" || x.Portfolio != "acme-eu" {
		t.Errorf("after a new secret: %q %q", x.AppSecret, x.Portfolio)
	}

	for _, st := range []struct{ cmd, state string }{{"pause", "paused"}, {"resume", "active"}} {
		out, err := cliIn(t, "", "senders", st.cmd, number)
		if err != nil || !strings.Contains(out, "sender "+number+" "+st.state) && !strings.Contains(out, "state                  "+st.state) {
			t.Errorf("senders %s: %v\n%s", st.cmd, err, out)
		}
		if x, _ := stored(number); x.Paused != (st.state == "paused") {
			t.Errorf("after senders %s the registry says paused=%v", st.cmd, x.Paused)
		}
	}

	// Mistakes name the flag, and exit 2.
	for _, tt := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"senders", "add", "--app-id", "a", "--app-secret", "s", "--tenant", "acme"}, "senders add: --number is required"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--tenant", "acme"}, "senders add: --app-secret or --app-secret-stdin is required"},
		{"s", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret", "s", "--app-secret-stdin", "--tenant", "acme"}, "not both"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret-stdin", "--tenant", "acme"}, "--app-secret-stdin: stdin holds no secret"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret", "s", "--tenant", "Acme"}, "senders add: --tenant must be lower-case"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a:b", "--app-secret", "s", "--tenant", "acme"}, "senders add: --app-id must not contain a colon"},
		{"", []string{"senders", "add", "--number", "12ab", "--app-id", "a", "--app-secret", "s", "--tenant", "acme"}, "senders add: --number"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret", "s", "--tenant", "acme", "--rate-per-second", "-1"}, "senders add: --rate-per-second must be a positive number"},
		{"", []string{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret", "s", "--tenant", "acme", "--pair-interval", "soon"}, `invalid argument "soon" for "--pair-interval"`},
		{"", []string{"senders", "update", number}, "senders update: nothing to change"},
		{"", []string{"senders", "update", number, "--reset", "speed"}, `senders update: --reset: "speed" is not a limit`},
		{"", []string{"senders", "update", number, "--reset", "rate_burst", "--rate-burst", "3"}, "contradict"},
		{"", []string{"senders", "update", number, "--number", "4915100000009"}, "unknown flag: --number"},
		{"", []string{"senders", "show"}, "senders show: the sender's number is required"},
		{"", []string{"keys", "create", "--tenant", "acme"}, "keys create: --name is required"},
		{"", []string{"keys", "create", "--tenant", "ACME", "--name", "crm"}, "keys create: --tenant must be lower-case"},
	} {
		out, err := cliIn(t, tt.stdin, tt.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("chatq %s: exit %d, %v; want 2 and %q\n%s", strings.Join(tt.args, " "), exitCode(err), err, tt.want, out)
		}
	}
	if _, err := cliIn(t, "", "senders", "add", "--number", number, "--app-id", "a", "--app-secret", "s", "--tenant", "acme"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("adding a number twice: %v", err)
	}

	// Without the key: writes are refused naming it; reads fail naming it
	// as soon as senders are stored.
	t.Setenv("CHATQ_SECRETS_KEY", "")
	for _, args := range [][]string{
		{"senders", "add", "--number", "4915100000002", "--app-id", "a", "--app-secret", "s", "--tenant", "acme"},
		{"senders", "list"}, {"senders", "show", number}, {"senders", "pause", number},
	} {
		_, err := cliIn(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), "CHATQ_SECRETS_KEY") || strings.Contains(err.Error(), "\n") {
			t.Errorf("chatq %s without CHATQ_SECRETS_KEY: %v, want one line naming it", strings.Join(args, " "), err)
		}
	}
	t.Setenv("CHATQ_SECRETS_KEY", hex.EncodeToString(key))

	out, err = cliIn(t, "", "senders", "remove", "+"+number)
	if err != nil || out != "sender "+number+" removed\n" {
		t.Errorf("senders remove: %v %q", err, out)
	}
	if _, ok := stored(number); ok {
		t.Error("the sender is still in the registry")
	}
	if _, err := cliIn(t, "", "senders", "show", number); err == nil || !strings.Contains(err.Error(), "no sender with this number") {
		t.Errorf("showing a removed sender: %v", err)
	}

	t.Setenv("CHATQ_REDIS_URL", "")
	if _, err := cliIn(t, "", "senders", "list"); err == nil || !strings.Contains(err.Error(), "CHATQ_REDIS_URL is not set") {
		t.Errorf("senders list without Redis: %v", err)
	}
}

func TestKeysCommands(t *testing.T) {
	srv := redistest.Start(t)
	senderEnv(t, srv.URL())
	ks := tenants.NewKeys(srv.Client(t))

	var created map[string]any
	out, err := cliIn(t, "", "keys", "create", "--tenant", "acme", "--name", "crm-prod", "--json")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, out)
	}
	decodeJSON(t, out, &created)
	secret, _ := created["key"].(string)
	id, _ := created["id"].(string)
	if k, ok, err := ks.Lookup(context.Background(), secret); err != nil || !ok || k.Tenant != "acme" || k.ID != id {
		t.Fatalf("the printed key %q does not open tenant acme: %v %v %+v", secret, ok, err, k)
	}
	out, err = cliIn(t, "", "keys", "create", "--tenant", "globex", "--name", "billing")
	if err != nil || !strings.Contains(out, "created for tenant globex (billing)") || !strings.Contains(out, tenants.KeyPrefix) {
		t.Errorf("keys create: %v\n%s", err, out)
	}

	out, err = cliIn(t, "", "keys", "list")
	if err != nil || !strings.Contains(out, "ID") || !strings.Contains(out, id) || !strings.Contains(out, "globex") || strings.Contains(out, tenants.KeyPrefix) {
		t.Errorf("keys list (never a key): %v\n%s", err, out)
	}
	var list struct {
		Keys []map[string]any `json:"keys"`
	}
	out, _ = cliIn(t, "", "keys", "list", "--tenant", "acme", "--json")
	decodeJSON(t, out, &list)
	if len(list.Keys) != 1 || list.Keys[0]["id"] != id || list.Keys[0]["key"] != nil {
		t.Errorf("keys list --tenant acme --json: %s", out)
	}

	out, err = cliIn(t, "", "keys", "revoke", id)
	if err != nil || out != "key "+id+" of tenant acme (crm-prod) revoked\n" {
		t.Errorf("keys revoke: %v %q", err, out)
	}
	if _, ok, _ := ks.Lookup(context.Background(), secret); ok {
		t.Error("a revoked key still opens its tenant")
	}
	if _, err := cliIn(t, "", "keys", "revoke", id); err == nil || !strings.Contains(err.Error(), "no key with this id") {
		t.Errorf("revoking twice: %v", err)
	}
}

// webhook register --sender registers the sender's own webhook URL with
// its own app's credentials: the sandbox, which knows only those, then
// sends its webhooks there.
func TestWebhookRegisterSender(t *testing.T) {
	srv := redistest.Start(t)
	senderEnv(t, srv.URL())
	sb, err := sandbox.New(sandbox.Config{AppID: "acme-app", AppSecret: "s3cret-of-acme"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	t.Cleanup(func() { sbSrv.Close(); sb.Close() })
	var mu sync.Mutex
	var hookPaths []string
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hookPaths = append(hookPaths, r.URL.Path)
		mu.Unlock()
	}))
	t.Cleanup(hooks.Close)
	t.Setenv("CHATQ_CA_BASE_URL", sbSrv.URL)
	t.Setenv("CHATQ_PUBLIC_URL", hooks.URL)

	const number = "4915100000001"
	if out, err := cliIn(t, "s3cret-of-acme", "senders", "add", "--number", number, "--app-id", "acme-app", "--app-secret-stdin", "--tenant", "acme"); err != nil {
		t.Fatalf("senders add: %v\n%s", err, out)
	}
	var view map[string]any
	out, _ := cliIn(t, "", "senders", "show", number, "--json")
	decodeJSON(t, out, &view)
	path, _ := view["webhook_path"].(string)

	out, err = cliIn(t, "", "webhook", "register", "--sender", "+"+number)
	if err != nil || !strings.Contains(out, "webhook registered for "+number+": "+hooks.URL+"/webhooks/chatarchitect/") {
		t.Fatalf("webhook register --sender: %v\n%s", err, out)
	}
	if secret := strings.TrimPrefix(path, "/webhooks/chatarchitect/"); secret == "" || strings.Contains(out, secret) {
		t.Errorf("the sender's webhook secret is printed, or unknown (%q): %s", path, out)
	}
	resp, err := http.Post(sbSrv.URL+"/sandbox/inbound", "application/json", strings.NewReader(`{"from":"447700900123","text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	poll.Until(t, 10*time.Second, "a webhook at the sender's URL", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(hookPaths) > 0 && hookPaths[0] == path, strings.Join(hookPaths, ",")
	})

	if _, err := cliIn(t, "", "webhook", "register", "--sender", "4915100000009"); err == nil || !strings.Contains(err.Error(), "no sender with this number") {
		t.Errorf("an unknown sender: %v", err)
	}
	if _, err := cliIn(t, "", "webhook", "register", "--sender", "12ab"); exitCode(err) != 2 {
		t.Errorf("a bad number: %v", err)
	}
	t.Setenv("CHATQ_SECRETS_KEY", "")
	if _, err := cliIn(t, "", "webhook", "register", "--sender", number); err == nil || err.Error() != "CHATQ_SECRETS_KEY is not set" {
		t.Errorf("a stored sender without CHATQ_SECRETS_KEY: %v", err)
	}
}
