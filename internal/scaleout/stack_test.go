package scaleout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
)

// Credentials and secrets every process of a stack shares.
const (
	appID          = "scaleout"
	appSecret      = "scaleout-secret"
	source         = "15550001234"
	apiKey         = "scaleout-key"
	webhookSecret  = "scaleout-hook"
	callbackSecret = "scaleout-callbacks"
)

// buildChatq builds the chatq binary for tb. After the first build of a
// run the Go build cache makes it a link step.
func buildChatq(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "chatq")
	// go test puts the toolchain that runs the tests first on PATH.
	out, err := exec.Command("go", "build", "-o", bin, "github.com/chatq/chatq/cmd/chatq").CombinedOutput()
	if err != nil {
		tb.Fatalf("build chatq: %v\n%s", err, out)
	}
	return bin
}

// stack is chatq on one Redis setup: the sandbox and a receiver of status
// callbacks in the test process, the API and the workers as chatq
// processes.
type stack struct {
	tb  testing.TB
	bin string
	// env is the CHATQ_ environment every process gets.
	env map[string]string
	// rdb is the test's own client of the same Redis.
	rdb     redis.UniversalClient
	store   *store.Store
	sandbox *sandbox.Server
	sbURL   string
	api     string
	hooks   *callbacks
	http    *http.Client

	// retried counts the batch posts that had to be sent again.
	retried atomic.Int64

	mu    sync.Mutex
	procs []*proc
}

// newStack starts the sandbox and the callback receiver, for Redis as
// redisEnv names it (the test's client of it is rdb). env adds to or
// overrides the defaults.
func newStack(tb testing.TB, rdb redis.UniversalClient, redisEnv, env map[string]string) *stack {
	tb.Helper()
	sb, err := sandbox.New(sandbox.Config{AppID: appID, AppSecret: appSecret, WebhookDelay: 20 * time.Millisecond}, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	sbSrv := httptest.NewServer(sb)
	tb.Cleanup(func() { sbSrv.Close(); sb.Close() })
	hooks := &callbacks{byID: map[string][]string{}}
	hookSrv := httptest.NewServer(hooks)
	tb.Cleanup(hookSrv.Close)
	hooks.url = hookSrv.URL

	s := &stack{
		tb: tb, bin: buildChatq(tb), rdb: rdb, store: store.New(rdb, store.Config{}),
		sandbox: sb, sbURL: sbSrv.URL, hooks: hooks,
		http: &http.Client{Timeout: 10 * time.Second},
		env: map[string]string{
			"CHATQ_API_KEYS":               apiKey,
			"CHATQ_WEBHOOK_SECRET":         webhookSecret,
			"CHATQ_CALLBACK_SECRET":        callbackSecret,
			"CHATQ_CALLBACK_ALLOW_PRIVATE": "true",
			"CHATQ_CA_BASE_URL":            sbSrv.URL,
			"CHATQ_CA_APP_ID":              appID,
			"CHATQ_CA_APP_SECRET":          appSecret,
			"CHATQ_CA_SOURCE":              source,
			"CHATQ_CA_TIMEOUT":             "2s",
			"CHATQ_CONCURRENCY":            "20",
			// The limits are not under test here: only the sender's rate
			// is kept, high, as its Redis script is part of every send.
			"CHATQ_RATE_PER_SECOND":  "10000",
			"CHATQ_PAIR_INTERVAL":    "0",
			"CHATQ_RETRY_BASE_DELAY": "200ms",
			"CHATQ_LOG_LEVEL":        "warn",
			// Each worker serves its metrics on a port of its own.
			"CHATQ_METRICS_ADDR": "127.0.0.1:0",
		},
	}
	for k, v := range redisEnv {
		s.env[k] = v
	}
	for k, v := range env {
		s.env[k] = v
	}
	tb.Cleanup(s.stopAll)
	return s
}

// proc is a chatq process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	// err is the process's exit, set before done is closed.
	err error
}

// spawn starts chatq with args and the stack's environment, with extra
// on top.
func (s *stack) spawn(name string, extra map[string]string, args ...string) *proc {
	s.tb.Helper()
	cmd := exec.Command(s.bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATQ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range s.env {
		if _, ok := extra[k]; !ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for k, v := range extra {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start chatq %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p
}

// startAPI starts chatq api, waits until /readyz answers 200 and points
// the sandbox's webhooks at it.
func (s *stack) startAPI() {
	s.tb.Helper()
	addr := freeAddr(s.tb)
	p := s.spawn("api", map[string]string{"CHATQ_HTTP_ADDR": addr}, "api")
	s.api = "http://" + addr
	s.waitFor("the API to be ready", 20*time.Second, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("chatq api exited: %v\n%s", p.err, p.out.tail(20))
		default:
		}
		resp, err := s.http.Get(s.api + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d", resp.StatusCode)
		}
		return nil
	})
	hook := newRelay(s.api+"/webhooks/chatarchitect/"+webhookSecret, s.http)
	relay := httptest.NewServer(hook)
	s.tb.Cleanup(func() { relay.Close(); hook.wait() })
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: s.sbURL, AppID: appID, AppSecret: appSecret, Source: source, Timeout: 5 * time.Second}, nil)
	if err := ca.RegisterWebhook(context.Background(), relay.URL); err != nil {
		s.tb.Fatalf("register the webhook: %v", err)
	}
}

// startWorkers starts n chatq worker processes and waits until asynq lists
// all of them. They log at debug level, a line per send, which sentBy
// counts.
func (s *stack) startWorkers(n int) []*proc {
	s.tb.Helper()
	inspector := asynq.NewInspectorFromRedisClient(s.rdb)
	before, err := inspector.Servers()
	if err != nil {
		s.tb.Fatalf("list workers: %v", err)
	}
	var ps []*proc
	for i := range n {
		ps = append(ps, s.spawn(fmt.Sprintf("worker-%d", i+1), map[string]string{"CHATQ_LOG_LEVEL": "debug"}, "worker"))
	}
	s.waitFor("the workers to start", 20*time.Second, func() error {
		for _, p := range ps {
			select {
			case <-p.done:
				return fmt.Errorf("chatq %s exited: %v\n%s", p.name, p.err, p.out.tail(20))
			default:
			}
		}
		servers, err := inspector.Servers()
		if err != nil {
			return err
		}
		if len(servers) < len(before)+n {
			return fmt.Errorf("%d asynq servers", len(servers))
		}
		return nil
	})
	return ps
}

// stopAll stops every process still running with SIGTERM, as an operator
// would, and reports those that do not end well.
func (s *stack) stopAll() {
	s.mu.Lock()
	procs := s.procs
	s.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			s.tb.Errorf("chatq %s did not stop within 30s of SIGTERM", p.name)
		}
		if p.err != nil {
			s.tb.Errorf("chatq %s ended with %v", p.name, p.err)
		}
		if s.tb.Failed() {
			s.tb.Logf("output of chatq %s:\n%s", p.name, p.out.tail(40))
		}
	}
}

// message is one message of a test run and the status it must end in.
type message struct {
	Channel        string         `json:"channel"`
	Destination    string         `json:"destination"`
	Payload        map[string]any `json:"payload"`
	Priority       string         `json:"priority"`
	IdempotencyKey string         `json:"idempotency_key"`
	CallbackURL    string         `json:"callback_url,omitempty"`
	want           store.Status
}

// newMessages returns n messages: every third transactional, the others
// bulk; every tenth with a status callback; each with its own destination
// and idempotency key. Destinations end in 9, which no magic number of the
// sandbox does: every message ends "read".
func (s *stack) newMessages(run string, n int) []*message {
	msgs := make([]*message, n)
	for i := range msgs {
		m := &message{
			Channel:        "whatsapp",
			Destination:    fmt.Sprintf("44%08d9", i),
			Payload:        map[string]any{"type": "text", "message": fmt.Sprintf("%s message %d", run, i)},
			Priority:       "bulk",
			IdempotencyKey: fmt.Sprintf("%s-%d", run, i),
			want:           store.Read,
		}
		if i%3 == 0 {
			m.Priority = "transactional"
		}
		if i%10 == 0 {
			m.CallbackURL = s.hooks.url + "/" + run
		}
		msgs[i] = m
	}
	return msgs
}

// send posts msgs in batches of size and returns their ids by index; see
// sendAll.
func (s *stack) send(msgs []*message, size int, timeout time.Duration) []string {
	s.tb.Helper()
	ids, err := s.sendAll(msgs, size, 0, timeout)
	if err != nil {
		s.tb.Fatal(err)
	}
	return ids
}

// sendAll posts msgs in batches of size, gap apart, until every message
// has an id, sending again the items that failed (503 while Redis fails
// over): their idempotency keys make that safe. It returns the ids by
// message index, and counts the batches that failed in part or whole.
func (s *stack) sendAll(msgs []*message, size int, gap, timeout time.Duration) ([]string, error) {
	ids := make([]string, len(msgs))
	deadline := time.Now().Add(timeout)
	for start := 0; start < len(msgs); start += size {
		pending := make([]int, 0, size)
		for i := start; i < min(start+size, len(msgs)); i++ {
			pending = append(pending, i)
		}
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				return ids, fmt.Errorf("%d messages still not accepted after %s", len(pending), timeout)
			}
			var err error
			if pending, err = s.sendBatch(msgs, pending, ids); err != nil {
				s.retried.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
		}
		time.Sleep(gap)
	}
	return ids, nil
}

// sendBatch posts the messages of index and returns those without an id.
func (s *stack) sendBatch(msgs []*message, index []int, ids []string) ([]int, error) {
	batch := struct {
		Messages []*message `json:"messages"`
	}{}
	for _, i := range index {
		batch.Messages = append(batch.Messages, msgs[i])
	}
	body, _ := json.Marshal(batch)
	req, _ := http.NewRequest(http.MethodPost, s.api+"/v1/messages/batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return index, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return index, fmt.Errorf("batch: %d %s", resp.StatusCode, raw)
	}
	var out struct {
		Results []struct {
			Index int    `json:"index"`
			ID    string `json:"id"`
		} `json:"results"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return index, fmt.Errorf("batch answer %s: %w", raw, err)
	}
	var left []int
	for _, r := range out.Results {
		if r.ID == "" {
			left = append(left, index[r.Index])
			continue
		}
		ids[index[r.Index]] = r.ID
	}
	if len(left) > 0 {
		return left, errors.New("some items failed")
	}
	return nil, nil
}

// outcome is where the messages of a run ended.
type outcome struct {
	// missing are ids whose record is gone: acknowledged writes lost.
	missing []string
	// wrong are ids not in their expected status, with the status.
	wrong map[string]store.Status
	took  time.Duration
}

// settle waits until every message is in its expected status, or timeout.
func (s *stack) settle(msgs []*message, ids []string, timeout time.Duration) outcome {
	s.tb.Helper()
	start := time.Now()
	var o outcome
	for {
		recs, err := s.store.GetMany(context.Background(), ids)
		o = outcome{wrong: map[string]store.Status{}, took: time.Since(start)}
		if err != nil {
			s.tb.Logf("read records: %v", err)
		} else {
			for i, r := range recs {
				switch {
				case r == nil:
					o.missing = append(o.missing, ids[i])
				case r.Status != msgs[i].want:
					o.wrong[ids[i]] = r.Status
				}
			}
			if len(o.missing) == 0 && len(o.wrong) == 0 {
				return o
			}
		}
		if time.Since(start) > timeout {
			return o
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sentBy returns how many messages each worker sent (the upstream accepted),
// from their debug logs.
func sentBy(workers []*proc) []int {
	n := make([]int, len(workers))
	for i, p := range workers {
		p.out.mu.Lock()
		n[i] = bytes.Count(p.out.b.Bytes(), []byte(`"outcome":"submitted"`))
		p.out.mu.Unlock()
	}
	return n
}

// summary counts the statuses of wrong, for failure messages.
func (o outcome) summary() string {
	n := map[store.Status]int{}
	for _, st := range o.wrong {
		n[st]++
	}
	var parts []string
	for st, c := range n {
		parts = append(parts, fmt.Sprintf("%s: %d", st, c))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d lost, not final: {%s}", len(o.missing), strings.Join(parts, ", "))
}

// checkCallbacks checks that every message with a callback URL got a
// correctly signed callback for its final status.
func (s *stack) checkCallbacks(msgs []*message, ids []string, timeout time.Duration) {
	s.tb.Helper()
	s.waitFor("the status callbacks", timeout, func() error {
		var missing []string
		for i, m := range msgs {
			if m.CallbackURL != "" && !s.hooks.got(ids[i], string(m.want)) {
				missing = append(missing, ids[i])
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d messages without their %q callback", len(missing), store.Read)
		}
		return nil
	})
	if n := s.hooks.badSignatures(); n > 0 {
		s.tb.Errorf("%d callbacks with a bad signature", n)
	}
}

// waitFor polls check until it succeeds, failing the test after timeout.
func (s *stack) waitFor(what string, timeout time.Duration, check func() error) {
	s.tb.Helper()
	poll.Until(s.tb, timeout, what, func() (bool, string) {
		if err := check(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// callbacks receives status callbacks and remembers the statuses each
// message reported.
type callbacks struct {
	url string

	mu   sync.Mutex
	byID map[string][]string
	bad  int
}

func (c *callbacks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var rec struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	_ = json.Unmarshal(body, &rec)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := callback.Verify(callbackSecret, r.Header.Get(callback.SignatureHeader), body, time.Minute, time.Now()); err != nil {
		c.bad++
	}
	c.byID[rec.ID] = append(c.byID[rec.ID], rec.Status)
}

func (c *callbacks) got(id, status string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.byID[id] {
		if st == status {
			return true
		}
	}
	return false
}

func (c *callbacks) badSignatures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bad
}

// relay stands between the sandbox and chatq's webhook receiver for the
// provider's own retries: ChatArchitect retries a webhook for far longer
// than the sandbox does (700ms), long enough to outlast a failover. It
// takes each webhook at once and posts it on until chatq takes it, for up
// to a minute.
type relay struct {
	target string
	http   *http.Client
	wg     sync.WaitGroup
	// failed counts webhooks chatq never took.
	failed atomic.Int64
}

func newRelay(target string, c *http.Client) *relay { return &relay{target: target, http: c} }

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		delay := 100 * time.Millisecond
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			resp, err := r.http.Post(r.target, "application/json", bytes.NewReader(body))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					return
				}
			}
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
		}
		r.failed.Add(1)
	}()
}

// wait waits for the webhooks still being posted.
func (r *relay) wait() { r.wg.Wait() }

// freeAddr returns a loopback address with a port free right now.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// tail returns the last n lines.
func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	lines := strings.Split(strings.TrimRight(s.b.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
