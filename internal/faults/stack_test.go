package faults

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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
)

// businessNumber is the sender of every stack (CHATQ_CA_SOURCE).
const businessNumber = "15550001234"

// secrets are a stack's credentials. The defaults are plain; the secrets
// test makes them recognisable.
type secrets struct {
	apiKey, webhookSecret, appID, appSecret, callbackSecret string
}

func defaultSecrets() secrets {
	return secrets{
		apiKey:         "ck_faults_0123456789abcdef",
		webhookSecret:  "whsec_faults_0123456789",
		appID:          "faults",
		appSecret:      "ca_secret_faults_0123456789",
		callbackSecret: "cb_secret_faults_0123456789",
	}
}

// stackConfig shapes a stack.
type stackConfig struct {
	// aof runs Redis with appendfsync always, for the Redis crash.
	aof bool
	// env is set for every chatq process, over the stack's defaults.
	env map[string]string
	// secrets replace defaultSecrets when set.
	secrets *secrets
	// direct registers the API itself as the sandbox's webhook URL rather
	// than the retrying relay.
	direct bool
}

// stack is one private chatq installation: a redis-server of its own, the
// sandbox, the API and the workers a case starts, each a real chatq
// process with its log in a file. Everything is killed when the test ends,
// and the logs' last lines are printed if it failed.
type stack struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	redis *redistest.Server
	rdb   *redis.Client
	store *store.Store
	sec   secrets
	env   map[string]string
	http  *http.Client
	relay *relay

	sandboxURL, apiURL string

	mu    sync.Mutex
	procs []*proc
	api   *proc
}

// proc is a chatq process.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // how it ended; read after done is closed
	killed  atomic.Bool
	// metricsURL is a worker's /metrics.
	metricsURL string
}

func newStack(t *testing.T, cfg stackConfig) *stack {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{AOF: cfg.aof})
	if !srv.CanRestart() {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true needs redis-server on PATH for the fault suite")
		}
		t.Skip("needs redis-server on PATH")
	}
	sec := defaultSecrets()
	if cfg.secrets != nil {
		sec = *cfg.secrets
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stack{
		t: t, ctx: ctx, dir: logDir(t), redis: srv, sec: sec,
		http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	s.rdb = srv.Client(t)
	s.store = store.New(s.rdb, store.Config{})
	// Registered after TempDir, so it runs first: the processes are gone
	// before their logs are removed.
	t.Cleanup(func() {
		cancel()
		for _, p := range s.processes() {
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s did not exit within 10s of SIGKILL", p.name)
			}
		}
		if s.relay != nil {
			s.relay.close()
		}
		if t.Failed() {
			for _, p := range s.processes() {
				t.Logf("--- last lines of %s (%s):\n%s", p.name, filepath.Base(p.logPath), p.tail(40))
			}
		}
	})

	sandboxAddr, apiAddr := freeAddr(t), freeAddr(t)
	s.sandboxURL, s.apiURL = "http://"+sandboxAddr, "http://"+apiAddr
	s.env = map[string]string{
		"CHATQ_REDIS_URL":                   srv.URL(),
		"CHATQ_HTTP_ADDR":                   apiAddr,
		"CHATQ_API_KEYS":                    sec.apiKey,
		"CHATQ_WEBHOOK_SECRET":              sec.webhookSecret,
		"CHATQ_CA_BASE_URL":                 s.sandboxURL,
		"CHATQ_CA_APP_ID":                   sec.appID,
		"CHATQ_CA_APP_SECRET":               sec.appSecret,
		"CHATQ_CA_SOURCE":                   businessNumber,
		"CHATQ_CA_TIMEOUT":                  "1s",
		"CHATQ_RETRY_BASE_DELAY":            "100ms",
		"CHATQ_RETRY_MAX_DELAY":             "2s",
		"CHATQ_RATE_PER_SECOND":             "100000",
		"CHATQ_PAIR_INTERVAL":               "0",
		"CHATQ_DELAYED_TASK_CHECK_INTERVAL": "200ms",
		"CHATQ_SANDBOX_ADDR":                sandboxAddr,
		"CHATQ_SANDBOX_WEBHOOK_DELAY":       "20ms",
		"CHATQ_LOG_FORMAT":                  "json",
		"CHATQ_LOG_LEVEL":                   "info",
	}
	for k, v := range cfg.env {
		s.env[k] = v
	}

	t.Logf("redis %s, sandbox %s, api %s, logs in %s", srv.Addr(), s.sandboxURL, s.apiURL, s.dir)
	s.spawn("sandbox", "sandbox")
	s.waitFor("the sandbox to answer", 20*time.Second, func() (bool, error) {
		_, err := s.sandboxStats()
		return err == nil, nil
	})
	s.startAPI()
	public := s.apiURL
	if !cfg.direct {
		s.relay = newRelay(s.apiURL)
		public = s.relay.url()
	}
	if out, err := s.run(map[string]string{"CHATQ_PUBLIC_URL": public}, "webhook", "register"); err != nil {
		t.Fatalf("chatq webhook register: %v\n%s", err, out)
	}
	return s
}

// EnvLogs names a directory where the processes' logs are kept after the
// tests, one subdirectory per test; without it they go to a temporary
// directory removed at the end.
const EnvLogs = "CHATQ_FAULTS_LOGS"

func logDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv(EnvLogs)
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *stack) processes() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc(nil), s.procs...)
}

// environ is the environment of a chatq process: the test's own without
// any CHATQ_ variable, then the stack's, then extra.
func (s *stack) environ(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATQ_") {
			env = append(env, kv)
		}
	}
	for k, v := range s.env {
		if _, ok := extra[k]; !ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// spawn starts "chatq args..." with its output in a log file of its own.
func (s *stack) spawn(name string, args ...string) *proc {
	return s.spawnEnv(name, nil, args...)
}

func (s *stack) spawnEnv(name string, extra map[string]string, args ...string) *proc {
	s.t.Helper()
	s.mu.Lock()
	logPath := filepath.Join(s.dir, fmt.Sprintf("%02d-%s.log", len(s.procs)+1, name))
	s.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.CommandContext(s.ctx, chatqBin, args...)
	cmd.Env = s.environ(extra)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		s.t.Fatalf("start chatq %s: %v", strings.Join(args, " "), err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p
}

// run runs a one-shot chatq command to its end and returns its output.
func (s *stack) run(extra map[string]string, args ...string) (string, error) {
	p := s.spawnEnv(args[0], extra, args...)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		s.kill(p)
		return p.output(), fmt.Errorf("chatq %s did not finish within 30s", strings.Join(args, " "))
	}
	return p.output(), p.err
}

// startAPI starts "chatq api" and waits until it is ready.
func (s *stack) startAPI() *proc {
	s.t.Helper()
	p := s.spawn("api", "api")
	s.api = p
	s.waitFor("the API to be ready", 20*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("chatq api exited: %v", p.err)
		}
		code, _, err := s.call(http.MethodGet, "/readyz", nil, "")
		return err == nil && code == http.StatusOK, nil
	})
	return p
}

// startWorker starts "chatq worker" with that many send goroutines and
// waits until it takes tasks.
func (s *stack) startWorker(name string, concurrency int) *proc {
	s.t.Helper()
	metricsAddr := freeAddr(s.t)
	p := s.spawnEnv(name, map[string]string{"CHATQ_CONCURRENCY": strconv.Itoa(concurrency), "CHATQ_METRICS_ADDR": metricsAddr}, "worker")
	p.metricsURL = "http://" + metricsAddr + "/metrics"
	s.waitFor(name+" to start", 20*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("chatq worker exited: %v", p.err)
		}
		return strings.Contains(p.output(), `"worker started"`), nil
	})
	return p
}

// kill ends p with SIGKILL, as a crash or the OOM killer would, and waits
// until it is gone.
func (s *stack) kill(p *proc) {
	s.t.Helper()
	p.killed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		s.t.Fatalf("%s still runs 10s after SIGKILL", p.name)
	}
}

// stop ends p with SIGTERM, as an orderly shutdown does, and waits for it.
func (s *stack) stop(p *proc) {
	s.t.Helper()
	p.killed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Fatalf("stop %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("%s still runs 30s after SIGTERM", p.name)
		s.kill(p)
	}
}

// checkAlive fails the test for every process that ended on its own.
func (s *stack) checkAlive() {
	s.t.Helper()
	for _, p := range s.processes() {
		if p.exited() && !p.killed.Load() && len(p.cmd.Args) > 1 && longRunning(p.cmd.Args[1]) {
			s.t.Errorf("%s exited on its own: %v", p.name, p.err)
		}
	}
}

func longRunning(command string) bool {
	return command == "api" || command == "worker" || command == "sandbox"
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// countInLogs counts the lines of the processes' logs that contain s.
func (s *stack) countInLogs(substr string) int {
	n := 0
	for _, p := range s.processes() {
		n += strings.Count(p.output(), substr)
	}
	return n
}

// possibleDuplicates sums chatq_possible_duplicates_total, whatever its
// labels, over the workers of ps that still run.
func (s *stack) possibleDuplicates(ps ...*proc) (float64, error) {
	sum := 0.0
	for _, p := range ps {
		if p.exited() {
			continue
		}
		req, err := http.NewRequestWithContext(s.ctx, http.MethodGet, p.metricsURL, nil)
		if err != nil {
			return 0, err
		}
		resp, err := s.http.Do(req)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "chatq_possible_duplicates_total") {
				continue
			}
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %w", p.metricsURL, line, err)
			}
			sum += v
		}
	}
	return sum, nil
}

// waitFor polls cond until it holds, fails the test when it returns an
// error or timeout passes.
func (s *stack) waitFor(what string, timeout time.Duration, cond func() (bool, error)) {
	s.t.Helper()
	if err := poll(timeout, 20*time.Millisecond, cond); err != nil {
		s.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// poll calls cond every interval until it holds, it fails, or timeout
// passes.
func poll(timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		<-tick.C
	}
}

// call makes an API request with the stack's key (unless auth is "-") and
// returns the status and body.
func (s *stack) call(method, path string, body []byte, auth string) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(s.ctx, method, s.apiURL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	switch auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+s.sec.apiKey)
	case "-":
	default:
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// sandboxCall calls one of the sandbox's control routes.
func (s *stack) sandboxCall(method, path string, body any, into any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(s.ctx, method, s.sandboxURL+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if into == nil {
		return nil
	}
	return json.Unmarshal(b, into)
}

func (s *stack) sandboxStats() (sandbox.Stats, error) {
	var st sandbox.Stats
	err := s.sandboxCall(http.MethodGet, "/sandbox/stats", nil, &st)
	return st, err
}

// configureSandbox changes the sandbox's knobs (PUT /sandbox/config).
func (s *stack) configureSandbox(knobs map[string]any) {
	s.t.Helper()
	if err := s.sandboxCall(http.MethodPut, "/sandbox/config", knobs, nil); err != nil {
		s.t.Fatal(err)
	}
}

// accepted is one message the sandbox accepted.
type accepted struct {
	MessageID   string          `json:"messageId"`
	Destination string          `json:"destination"`
	Payload     json.RawMessage `json:"payload"`
}

func (s *stack) sandboxMessages() ([]accepted, error) {
	var list []accepted
	err := s.sandboxCall(http.MethodGet, "/sandbox/messages", nil, &list)
	return list, err
}

// quiet waits until the sandbox has no webhook left to send and the relay
// none left to deliver, so that late duplicates are in the records too.
func (s *stack) quiet(timeout time.Duration) error {
	return poll(timeout, 50*time.Millisecond, func() (bool, error) {
		st, err := s.sandboxStats()
		if err != nil {
			return false, err
		}
		return st.WebhooksPending == 0 && (s.relay == nil || s.relay.idle()), nil
	})
}

// relay stands between the sandbox and the API as a provider's webhook
// queue does: it passes each webhook on at once while the API answers, and
// while it does not (killed, or without Redis) it acknowledges the webhook
// and retries it in the background for up to three minutes. The sandbox
// itself gives up after 700ms, which is shorter than any outage here; the
// real provider retries for much longer.
type relay struct {
	target  string
	srv     *httptest.Server
	client  *http.Client
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	pending atomic.Int64

	// queued counts webhooks that had to be retried, lost those given up.
	queued, lost atomic.Int64
}

func newRelay(target string) *relay {
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{target: target, ctx: ctx, cancel: cancel, client: &http.Client{Timeout: 10 * time.Second}}
	r.srv = httptest.NewServer(r)
	return r
}

func (r *relay) url() string { return r.srv.URL }

func (r *relay) idle() bool { return r.pending.Load() == 0 }

func (r *relay) close() {
	r.cancel()
	r.wg.Wait()
	r.srv.Close()
}

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 2<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if code, err := r.post(req.URL.Path, body); err == nil && !retryable(code) {
		w.WriteHeader(code)
		return
	}
	r.queued.Add(1)
	r.pending.Add(1)
	r.wg.Add(1)
	go r.retry(req.URL.Path, body)
	w.WriteHeader(http.StatusOK)
}

func retryable(code int) bool { return code >= 500 || code == http.StatusTooManyRequests }

func (r *relay) retry(path string, body []byte) {
	defer r.wg.Done()
	defer r.pending.Add(-1)
	deadline := time.Now().Add(3 * time.Minute)
	delay := 100 * time.Millisecond
	for time.Now().Before(deadline) {
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(delay):
		}
		if code, err := r.post(path, body); err == nil && !retryable(code) {
			return
		}
		delay = min(2*delay, time.Second)
	}
	r.lost.Add(1)
}

func (r *relay) post(path string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, r.target+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
