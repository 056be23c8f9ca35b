package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
)

// limitRate is the deployment's CHATQ_RATE_PER_SECOND: far above any rate
// the bench reaches, so that flow control runs its reservation on every
// send and never holds one back. Every other limit keeps its default, which
// a bench message (each to a number of its own) never reaches.
const limitRate = "1000000"

// deployment is chatq as users run it: the chatq binary started as
// "chatq sandbox", "chatq api" and "chatq worker", each a process of its
// own with its environment, on the private Redis. Nothing of chatq runs in
// the bench's process.
type deployment struct {
	env        *Env
	bin        string
	dir        string
	base       map[string]string
	http       *http.Client
	sandboxURL string
	apiURL     string
	metricsURL string

	mu    sync.Mutex
	procs map[string]*process
}

// process is one chatq process, its output in a file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // how it ended; read after done is closed
}

// startDeployment starts the sandbox (its webhooks webhookDelay apart) and
// the API of a deployment whose worker will send concurrency at a time;
// extra are more variables of its environment, name then value.
// The worker is started apart (startWorker), so that a measurement can
// count from its start.
func startDeployment(ctx context.Context, env *Env, bin string, concurrency int, webhookDelay time.Duration, extra ...string) (*deployment, error) {
	if bin == "" {
		return nil, errors.New("deployment: no chatq binary (Options.Chatq)")
	}
	dir, err := os.MkdirTemp("", "chatq-bench-deploy-")
	if err != nil {
		return nil, fmt.Errorf("deployment: %w", err)
	}
	addrs, err := freeAddrs(3)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("deployment: %w", err)
	}
	d := &deployment{
		env: env, bin: bin, dir: dir, procs: map[string]*process{},
		http:       &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		sandboxURL: "http://" + addrs[0], apiURL: "http://" + addrs[1], metricsURL: "http://" + addrs[2] + "/metrics",
	}
	d.base = map[string]string{
		"CHATQ_REDIS_URL":             "redis://" + env.Redis.Addr(),
		"CHATQ_HTTP_ADDR":             addrs[1],
		"CHATQ_API_KEYS":              apiKey,
		"CHATQ_WEBHOOK_SECRET":        webhookSecret,
		"CHATQ_CA_BASE_URL":           d.sandboxURL,
		"CHATQ_CA_APP_ID":             appID,
		"CHATQ_CA_APP_SECRET":         appSecret,
		"CHATQ_CA_SOURCE":             businessPhone,
		"CHATQ_CONCURRENCY":           strconv.Itoa(concurrency),
		"CHATQ_METRICS_ADDR":          addrs[2],
		"CHATQ_RATE_PER_SECOND":       limitRate,
		"CHATQ_SANDBOX_ADDR":          addrs[0],
		"CHATQ_SANDBOX_WEBHOOK_DELAY": webhookDelay.String(),
		"CHATQ_LOG_FORMAT":            "json",
		"CHATQ_LOG_LEVEL":             "info",
	}
	// extra are more variables, as name, value, name, value...
	for i := 0; i+1 < len(extra); i += 2 {
		d.base[extra[i]] = extra[i+1]
	}
	if err := d.startSandbox(ctx); err != nil {
		d.close()
		return nil, err
	}
	if err := d.startAPI(ctx); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago. The listeners stay open until all n are picked, so that the n
// differ.
func freeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// environ is a chatq process's environment: the bench's own without any
// CHATQ_ variable, then the deployment's.
func (d *deployment) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHATQ_") {
			env = append(env, kv)
		}
	}
	for k, v := range d.base {
		env = append(env, k+"="+v)
	}
	return env
}

// spawn starts "chatq command".
func (d *deployment) spawn(command string) (*process, error) {
	logPath := filepath.Join(d.dir, command+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start chatq %s: %w", command, err)
	}
	cmd := exec.Command(d.bin, command)
	cmd.Env = d.environ()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start chatq %s: %w", command, err)
	}
	p := &process{name: command, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs[command] = p
	d.mu.Unlock()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last lines of the process's output, for an error.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// waitReady polls ready until it holds, failing when p exits or after a
// generous timeout (a busy machine starts processes slowly).
func (d *deployment) waitReady(ctx context.Context, p *process, ready func() bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for !ready() {
		if p.exited() {
			return fmt.Errorf("chatq %s exited (%v): %s", p.name, p.err, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chatq %s not ready after 60s: %s", p.name, p.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (d *deployment) startSandbox(ctx context.Context) error {
	p, err := d.spawn("sandbox")
	if err != nil {
		return err
	}
	return d.waitReady(ctx, p, func() bool { _, err := d.sandboxStats(ctx); return err == nil })
}

func (d *deployment) startAPI(ctx context.Context) error {
	p, err := d.spawn("api")
	if err != nil {
		return err
	}
	return d.waitReady(ctx, p, func() bool {
		code, _, err := d.do(ctx, http.MethodGet, d.apiURL+"/readyz", nil)
		return err == nil && code == http.StatusOK
	})
}

// startWorker starts "chatq worker" and waits until it takes tasks.
func (d *deployment) startWorker(ctx context.Context) error {
	p, err := d.spawn("worker")
	if err != nil {
		return err
	}
	return d.waitReady(ctx, p, func() bool {
		b, _ := os.ReadFile(p.logPath)
		return bytes.Contains(b, []byte(`"worker started"`))
	})
}

// registerWebhook points the sandbox's webhooks at url's receiver, as
// "chatq webhook register" does.
func (d *deployment) registerWebhook(ctx context.Context, url string) error {
	c := chatarchitect.New(chatarchitect.Config{
		BaseURL: d.sandboxURL, AppID: appID, AppSecret: appSecret, Source: businessPhone, Timeout: upstreamTimeout,
	}, nil)
	return c.RegisterWebhook(ctx, url+"/webhooks/chatarchitect/"+webhookSecret)
}

// do sends one request with the credentials its target wants: Basic auth
// to the sandbox, the API key to the API.
func (d *deployment) do(ctx context.Context, method, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if strings.HasPrefix(url, d.sandboxURL) {
		req.SetBasicAuth(appID, appSecret)
	} else {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	return resp.StatusCode, answer, err
}

// sandboxStats is what the sandbox process counted.
type sandboxStats struct {
	Accepted        int64 `json:"accepted"`
	WebhooksSent    int64 `json:"webhooks_sent"`
	WebhooksFailed  int64 `json:"webhooks_failed"`
	WebhooksDropped int64 `json:"webhooks_dropped"`
	WebhooksPending int64 `json:"webhooks_pending"`
}

func (d *deployment) sandboxStats(ctx context.Context) (sandboxStats, error) {
	var st sandboxStats
	code, body, err := d.do(ctx, http.MethodGet, d.sandboxURL+"/sandbox/stats", nil)
	if err != nil {
		return st, fmt.Errorf("sandbox stats: %w", err)
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("sandbox stats: status %d", code)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("sandbox stats: %w", err)
	}
	return st, nil
}

// waitAccepted polls the sandbox every 2ms until it accepted n messages,
// or fails after timeout.
func (d *deployment) waitAccepted(ctx context.Context, what string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.sandboxStats(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if st.Accepted >= int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d after %s", what, st.Accepted, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// workerMetric sums the samples of a counter on the worker's /metrics, all
// labels together. It reads no Redis.
func (d *deployment) workerMetric(ctx context.Context, name string) (float64, error) {
	code, body, err := d.do(ctx, http.MethodGet, d.metricsURL, nil)
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("worker metrics: status %d: %w", code, err)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("worker metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

// postBatches posts n messages that message makes (textMessage,
// campaignMessage), of priority prio, numbered from first, to POST
// /v1/messages/batch in batches of size, callers at a time, and returns
// their ids.
func (d *deployment) postBatches(ctx context.Context, message messageFunc, first, n, size, callers int, prefix string, prio enqueue.Priority) ([]string, error) {
	batches := splitBatches(n, size)
	ids := make([]string, n)
	err := parallel(ctx, len(batches), callers, func(ctx context.Context, i int) error {
		b := batches[i]
		body, err := batchOf(message, prefix, first+b.from, b.n, prio)
		if err != nil {
			return err
		}
		got, err := d.postBatch(ctx, body)
		if err != nil {
			return err
		}
		if len(got) != b.n {
			return fmt.Errorf("POST /v1/messages/batch: %d results for %d messages", len(got), b.n)
		}
		copy(ids[b.from:], got)
		return nil
	})
	return ids, err
}

// postBatch posts one batch body and returns the ids, in order.
func (d *deployment) postBatch(ctx context.Context, body []byte) ([]string, error) {
	code, answer, err := d.do(ctx, http.MethodPost, d.apiURL+"/v1/messages/batch", body)
	if err != nil {
		return nil, fmt.Errorf("POST /v1/messages/batch: %w", err)
	}
	var out struct {
		Results []struct {
			ID    string          `json:"id"`
			Error json.RawMessage `json:"error"`
		} `json:"results"`
	}
	if code != http.StatusOK || json.Unmarshal(answer, &out) != nil {
		return nil, fmt.Errorf("POST /v1/messages/batch: status %d: %.300s", code, answer)
	}
	ids := make([]string, len(out.Results))
	for i, r := range out.Results {
		if r.ID == "" || len(r.Error) > 0 {
			return nil, fmt.Errorf("POST /v1/messages/batch: message %d refused: %s", i, r.Error)
		}
		ids[i] = r.ID
	}
	return ids, nil
}

// stop stops the chatq process of command (SIGTERM) and waits until it
// exits.
func (d *deployment) stop(command string) error {
	d.mu.Lock()
	p := d.procs[command]
	d.mu.Unlock()
	if p == nil || p.exited() {
		return fmt.Errorf("stop %s: not running", command)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", command, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("stop %s: still running 30s after SIGTERM, killed", command)
	}
}

// pids returns the process id of each running chatq process, by command.
func (d *deployment) pids() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for name, p := range d.procs {
		if !p.exited() {
			out[name] = p.cmd.Process.Pid
		}
	}
	return out
}

// close stops every process (SIGTERM, then SIGKILL after 10s) and removes
// their logs.
func (d *deployment) close() {
	d.mu.Lock()
	procs := make([]*process, 0, len(d.procs))
	for _, p := range d.procs {
		procs = append(procs, p)
	}
	d.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	d.http.CloseIdleConnections()
	_ = os.RemoveAll(d.dir)
}

// Usage is what one phase cost: the Redis commands it ran and the CPU time
// of each process.
type Usage struct {
	// Commands is the sum of calls in Redis's INFO commandstats, commands
	// run inside scripts included.
	Commands int64 `json:"commands"`
	// ByCommand is the calls of each command, by its name in INFO
	// commandstats (evalsha, hset, ...).
	ByCommand map[string]int64 `json:"by_command"`
	// CPU is each process's user plus system time, by name (worker, api,
	// sandbox, redis, bullmq).
	CPU map[string]time.Duration `json:"cpu_ns"`
}

// meter measures a phase's Usage: Redis's command counts are reset at its
// start, and each process's CPU time read then and at its end.
type meter struct {
	rdb   *redis.Client
	pids  func() map[string]int
	start map[string]time.Duration
}

// startMeter resets Redis's command statistics and notes the CPU time of
// the processes pids names (read again at the end, so that a process
// started during the phase counts from zero).
func startMeter(ctx context.Context, rdb *redis.Client, pids func() map[string]int) (*meter, error) {
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		return nil, fmt.Errorf("config resetstat: %w", err)
	}
	m := &meter{rdb: rdb, pids: pids, start: map[string]time.Duration{}}
	for name, pid := range pids() {
		t, err := processCPU(pid)
		if err != nil {
			return nil, err
		}
		m.start[name] = t
	}
	return m, nil
}

// stop returns the usage since startMeter.
func (m *meter) stop(ctx context.Context) (Usage, error) {
	u := Usage{CPU: map[string]time.Duration{}}
	for name, pid := range m.pids() {
		t, err := processCPU(pid)
		if err != nil {
			return u, err
		}
		u.CPU[name] = t - m.start[name]
	}
	by, err := commandStats(ctx, m.rdb)
	if err != nil {
		return u, err
	}
	// The INFO that reads the counts is counted itself.
	by["info"]--
	if by["info"] == 0 {
		delete(by, "info")
	}
	u.ByCommand = by
	for _, n := range by {
		u.Commands += n
	}
	return u, nil
}

// commandCalls sums the calls of every command in INFO commandstats.
func commandCalls(ctx context.Context, rdb *redis.Client) (int64, error) {
	by, err := commandStats(ctx, rdb)
	var sum int64
	for _, n := range by {
		sum += n
	}
	return sum, err
}

// commandStats returns the calls of each command in INFO commandstats
// (lines "cmdstat_hset:calls=12,usec=...").
func commandStats(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("info commandstats: %w", err)
	}
	by := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("info commandstats: %q: %w", line, err)
		}
		by[strings.TrimPrefix(name, "cmdstat_")] += n
	}
	return by, nil
}

// redisPID returns the process id Redis reports.
func redisPID(ctx context.Context, rdb *redis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("info server: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("info server: no process_id")
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ), 100 on
// every Linux architecture Go runs on.
const clockTicks = 100

// processCPU returns a process's user plus system CPU time from
// /proc/<pid>/stat (Linux only), to 10ms.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: the fields that
	// follow it are counted from its end. utime and stime are fields 14
	// and 15 of the whole line.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of process %d: short /proc stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu of process %d: unreadable /proc stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
