package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// Credentials and secrets of the private stack; nothing outside the
// process ever sees them.
const (
	appID         = "bench"
	appSecret     = "bench-secret"
	businessPhone = "15550001234"
	apiKey        = "bench-key"
	webhookSecret = "bench-hook"
	// upstreamTimeout bounds one send to the sandbox.
	upstreamTimeout = 10 * time.Second
)

// Env is what every measurement runs on: one private Redis, shared by the
// measurements one after the other (each flushes it first), and where logs
// and progress go.
type Env struct {
	// Redis is the server every component uses.
	Redis *Redis
	// Log receives the components' logs; nil discards them.
	Log *zap.Logger
	// Progress receives a line per step as the measurements go; nil
	// discards them.
	Progress io.Writer
}

func (e *Env) logger() *zap.Logger {
	if e.Log == nil {
		return zap.NewNop()
	}
	return e.Log
}

func (e *Env) logf(format string, args ...any) {
	if e.Progress != nil {
		fmt.Fprintf(e.Progress, format+"\n", args...)
	}
}

// flush empties Redis, so that a measurement starts from nothing.
func (e *Env) flush(ctx context.Context) error {
	c := e.Redis.Client(1)
	defer c.Close()
	if err := c.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("flush redis: %w", err)
	}
	return nil
}

// stack is the chatq components of one measurement, each with its own Redis
// client as they would have in their own processes. close stops them in
// the reverse order of their start.
type stack struct {
	env     *Env
	closers []func()

	sandbox    *sandbox.Server
	sandboxURL string
	// sent counts the sends the sandbox accepted, as the worker saw them.
	sent *countingSender
}

func newStack(env *Env) *stack { return &stack{env: env} }

func (s *stack) onClose(f func()) { s.closers = append(s.closers, f) }

func (s *stack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// redis returns a new client with poolSize connections, closed with the
// stack.
func (s *stack) redis(poolSize int) *redis.Client {
	c := s.env.Redis.Client(poolSize)
	s.onClose(func() { _ = c.Close() })
	return c
}

// enqueueClient returns an enqueue.Client with a Redis client of its own.
func (s *stack) enqueueClient(poolSize int, cfg enqueue.Config) *enqueue.Client {
	c := enqueue.NewClient(s.redis(poolSize), cfg)
	s.onClose(func() { _ = c.Close() })
	return c
}

// startSandbox serves the ChatArchitect sandbox on loopback. Without a
// webhook registered, its webhooks are counted and not sent.
func (s *stack) startSandbox(cfg sandbox.Config) error {
	cfg.AppID, cfg.AppSecret = appID, appSecret
	sb, err := sandbox.New(cfg, s.env.logger().Named("sandbox"))
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	s.onClose(sb.Close)
	url, err := s.serve(sb)
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	s.sandbox, s.sandboxURL = sb, url
	s.sent = &countingSender{next: s.upstream()}
	return nil
}

// upstream returns a ChatArchitect client for the sandbox.
func (s *stack) upstream() *chatarchitect.Client {
	return chatarchitect.New(chatarchitect.Config{
		BaseURL: s.sandboxURL, AppID: appID, AppSecret: appSecret, Source: businessPhone, Timeout: upstreamTimeout,
	}, nil)
}

// resetSandbox makes the sandbox forget what it accepted, so that its log
// does not count as chatq's memory.
func (s *stack) resetSandbox() error {
	rec := httptest.NewRecorder()
	s.sandbox.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/sandbox/reset", nil))
	if rec.Code != http.StatusOK && rec.Code != http.StatusNoContent {
		return fmt.Errorf("reset sandbox: status %d", rec.Code)
	}
	return nil
}

// startAPI serves chatq's HTTP API on loopback, its webhook receiver
// wrapped by wrap when set, and returns its base URL.
func (s *stack) startAPI(client *enqueue.Client, wrap func(http.Handler) http.Handler) (string, error) {
	rdb := s.redis(64)
	srv, err := api.New(api.Config{APIKeys: []string{apiKey}, WebhookSecret: webhookSecret},
		client, store.New(rdb, store.Config{}), s.env.logger().Named("api"))
	if err != nil {
		return "", fmt.Errorf("start api: %w", err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	url, err := s.serve(h)
	if err != nil {
		return "", fmt.Errorf("start api: %w", err)
	}
	return url, nil
}

// startWorker starts a worker sending to the sandbox through s.sent.
func (s *stack) startWorker(cfg worker.Config) (*worker.Worker, error) {
	rdb := s.redis(cfg.Concurrency + 32)
	w := worker.New(rdb, cfg, s.sent, s.env.logger().Named("worker"))
	if err := w.Start(); err != nil {
		return nil, err
	}
	var once sync.Once
	stop := func() { once.Do(w.Shutdown) }
	s.onClose(stop)
	return w, nil
}

// workerConfig is the stripped worker of the in-process measurements (the
// stripped send rate, the worker's heap): queues transactional=6, bulk=1,
// default retries, concurrency sends in flight, and no flow control, no
// conversation policy and no metrics. It is not what "chatq worker" runs;
// the deployed measurements start that.
func workerConfig(concurrency int) worker.Config {
	return worker.Config{Concurrency: concurrency}
}

// serve runs h on a loopback port until the stack closes.
func (s *stack) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: zap.NewStdLog(s.env.logger().Named("http"))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.env.logger().Warn("loopback server stopped", zap.Error(err))
		}
	}()
	s.onClose(func() {
		// Close, not Shutdown: the measurement is over, and Shutdown would
		// wait 5s for a client's spare connection that never sent a
		// request.
		_ = srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String(), nil
}

// countingSender counts the sends the upstream accepted.
type countingSender struct {
	next worker.Sender
	n    atomic.Int64
}

func (c *countingSender) Send(ctx context.Context, destination string, payload json.RawMessage) (string, error) {
	id, err := c.next.Send(ctx, destination, payload)
	if err == nil {
		c.n.Add(1)
	}
	return id, err
}

// waitCount polls until counter reaches n, or fails after timeout.
func waitCount(ctx context.Context, what string, counter *atomic.Int64, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for counter.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d after %s", what, counter.Load(), n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// waitUntil polls cond every 10ms until it holds; after timeout it gives up
// without an error, leaving the caller to find what is missing. Only ctx
// ending is an error.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// parallel calls fn(i) for every i in [0, n) from g goroutines and returns
// the first error; after an error the remaining calls are skipped.
func parallel(ctx context.Context, n, g int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(g, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
