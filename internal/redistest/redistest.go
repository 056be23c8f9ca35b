// Package redistest gives each test a Redis of its own.
//
// Start picks, in this order:
//
//  1. the server named by CHATQ_TEST_REDIS_URL, when that is set. The URL
//     must point at a throwaway database: Start runs FLUSHDB on the database
//     it names. Tests that share it must not run at the same time, so use
//     go test -p 1 with it;
//  2. a private redis-server on a free loopback port, when redis-server is on
//     PATH. It is killed when the test ends, and Stop and Restart can crash
//     and revive it for fault tests;
//  3. an embedded miniredis otherwise, so that go test ./... passes on a
//     machine with nothing installed. With CI=true a missing real Redis fails
//     the test instead.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redisproc"
)

// EnvURL names the environment variable that points the tests at an
// existing Redis, as redis://[:password@]host:port/db. Its database is
// flushed by every Start.
const EnvURL = "CHATQ_TEST_REDIS_URL"

// Options tunes Start. The zero value is a plain, non-persistent Redis.
type Options struct {
	// AOF turns on the append-only file with appendfsync always, so that
	// every acknowledged write survives Stop and comes back with Restart.
	// It only has an effect on a private redis-server.
	AOF bool
	// ForceMiniredis uses an embedded miniredis even when a real Redis is
	// available, for tests of the fallback itself.
	ForceMiniredis bool
}

// Server is a Redis for one test (or one bundle of tests). Its methods that
// take a testing.TB fail that test on error.
type Server struct {
	addr  string
	url   string
	redis *redis.Options

	// Exactly one of these is set, depending on where the server came from.
	external bool
	mini     *miniredis.Miniredis
	proc     *redisproc.Process
}

// Start returns a Redis for tb, chosen as the package comment describes, and
// cleans it up when tb ends. Only the first Options is used.
func Start(tb testing.TB, opts ...Options) *Server {
	tb.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.ForceMiniredis {
		return startMini(tb)
	}
	if raw := os.Getenv(EnvURL); raw != "" {
		return startExternal(tb, raw)
	}
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return startPrivate(tb, o, bin)
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("redistest: CI=true needs a real Redis, but redis-server is not on PATH and %s is not set", EnvURL)
	}
	return startMini(tb)
}

func startMini(tb testing.TB) *Server {
	tb.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		tb.Fatalf("redistest: start miniredis: %v", err)
	}
	tb.Cleanup(m.Close)
	return &Server{
		addr:  m.Addr(),
		url:   "redis://" + m.Addr() + "/0",
		redis: &redis.Options{Addr: m.Addr()},
		mini:  m,
	}
}

func startExternal(tb testing.TB, raw string) *Server {
	tb.Helper()
	ro, err := redis.ParseURL(raw)
	if err != nil {
		// The URL may hold a password, so it is not repeated here, and
		// url.Error, which quotes it, is unwrapped.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		tb.Fatalf("redistest: %s is not a redis:// URL: %v", EnvURL, err)
	}
	s := &Server{addr: ro.Addr, url: raw, redis: ro, external: true}
	c := redis.NewClient(s.clientOptions())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Every test starts from an empty database, as it would with a private
	// server; this is why the URL must name a throwaway database.
	if err := c.FlushDB(ctx).Err(); err != nil {
		tb.Fatalf("redistest: flush database %d of %s (%s): %v", ro.DB, ro.Addr, EnvURL, err)
	}
	return s
}

func startPrivate(tb testing.TB, o Options, bin string) *Server {
	tb.Helper()
	// TempDir is created before the process so that its removal, a cleanup
	// registered earlier, runs after the process is killed.
	dir := tb.TempDir()
	p, err := redisproc.Start(redisproc.Config{Bin: bin, Dir: dir, AOF: o.AOF})
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("redistest: log of redis-server on %s:\n%s", p.Addr(), p.Log())
		}
		p.Kill()
	})
	addr := p.Addr()
	return &Server{
		addr:  addr,
		url:   "redis://" + addr + "/0",
		redis: &redis.Options{Addr: addr},
		proc:  p,
	}
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL returns the server as redis://host:port/db, the form CHATQ_REDIS_URL
// takes. It carries the password of CHATQ_TEST_REDIS_URL, if any.
func (s *Server) URL() string { return s.url }

// DB returns the database number the tests use.
func (s *Server) DB() int { return s.redis.DB }

// Real reports whether this is a real Redis (a private redis-server or the
// server of CHATQ_TEST_REDIS_URL) rather than miniredis.
func (s *Server) Real() bool { return s.mini == nil }

// CanRestart reports whether Stop and Restart work, which is only the case
// for a private redis-server. Fault tests skip themselves without it.
func (s *Server) CanRestart() bool { return s.proc != nil }

// Client returns a go-redis client for the server's database, closed when tb
// ends.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(s.clientOptions())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *Server) clientOptions() *redis.Options {
	o := *s.redis
	// Tests that kill the server want errors promptly, not after the
	// default retries and five-second dials.
	o.DialTimeout = 2 * time.Second
	return &o
}

// Stop kills the private redis-server with SIGKILL, as a crash would, and
// waits until it is gone. Writes it acknowledged survive only with
// Options.AOF. Stop fails tb on any other kind of server.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mustBePrivate(tb, "Stop")
	if err := s.proc.Crash(); err != nil {
		tb.Fatalf("redistest: stop: %v", err)
	}
}

// Restart starts the private redis-server again on the same port with the
// same data directory, so that with Options.AOF its data comes back, and
// waits until it answers PING. It fails tb on any other kind of server.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mustBePrivate(tb, "Restart")
	if err := s.proc.Restart(); err != nil {
		tb.Fatalf("redistest: restart: %v\nlog of redis-server:\n%s", err, s.proc.Log())
	}
}

func (s *Server) mustBePrivate(tb testing.TB, op string) {
	tb.Helper()
	switch {
	case s.external:
		tb.Fatalf("redistest: %s needs a private redis-server, but the tests use %s from %s; unset it to run this test", op, s.addr, EnvURL)
	case s.mini != nil:
		tb.Fatalf("redistest: %s needs a private redis-server, but this is miniredis (check CanRestart first)", op)
	}
}

// Commands returns the commands the server of c ran since the last call
// (or its start), those inside scripts included, by name: from INFO
// commandstats, which CONFIG RESETSTAT then clears; neither of the two
// counts. A test on a server that counts nothing (miniredis) is skipped.
func Commands(tb testing.TB, c *redis.Client) map[string]int64 {
	tb.Helper()
	ctx := context.Background()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil || !strings.Contains(info, "cmdstat_") {
		tb.Skipf("redistest: the server counts no commands (%v)", err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, stats, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok || name == "info" || name == "config|resetstat" {
			continue
		}
		calls, _, _ := strings.Cut(stats, ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		out[name] += n
	}
	return out
}

// Total sums counts of Commands.
func Total(counts map[string]int64) int64 {
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

// RoundTrips counts the round trips a client makes to Redis once added
// to it (CountRoundTrips): a command alone, or a pipeline, however many
// commands it holds. Connecting is not counted.
type RoundTrips struct{ n atomic.Int64 }

// CountRoundTrips starts counting c's round trips.
func CountRoundTrips(c *redis.Client) *RoundTrips {
	h := &RoundTrips{}
	c.AddHook(h)
	return h
}

// Take returns the round trips counted since the last call, and starts
// again from zero.
func (h *RoundTrips) Take() int64 { return h.n.Swap(0) }

// DialHook is part of redis.Hook.
func (h *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook is part of redis.Hook.
func (h *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook is part of redis.Hook.
func (h *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}
