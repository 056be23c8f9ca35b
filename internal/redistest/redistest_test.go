package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redisproc"
)

func TestStartAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		real bool
	}{
		{name: "default", real: realAvailable()},
		{name: "miniredis", opts: Options{ForceMiniredis: true}, real: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvURL, "")
			s := Start(t, tc.opts)
			if got := s.Real(); got != tc.real {
				t.Errorf("Real() = %v, want %v", got, tc.real)
			}
			if got := s.CanRestart(); got != tc.real {
				t.Errorf("CanRestart() = %v, want %v", got, tc.real)
			}
			ro, err := redis.ParseURL(s.URL())
			if err != nil {
				t.Fatalf("URL() = %q: %v", s.URL(), err)
			}
			if ro.Addr != s.Addr() {
				t.Errorf("URL() %q has address %q, Addr() = %q", s.URL(), ro.Addr, s.Addr())
			}
			if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.Addr() == "127.0.0.1:6379" {
				t.Errorf("Addr() = %q, want a private loopback port", s.Addr())
			}
			mustSetGet(t, s.Client(t), "k", "v")
		})
	}
}

func TestStopMakesUnreachable(t *testing.T) {
	s := startPrivateOrSkip(t, Options{})
	c := s.Client(t)
	mustSetGet(t, c, "k", "v")

	s.Stop(t)
	if err := redisproc.Ping(s.Addr()); err == nil {
		t.Fatal("PING answered after Stop")
	}
}

func TestRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		aof      bool
		wantKept bool
	}{
		{name: "aof keeps acknowledged writes", aof: true, wantKept: true},
		{name: "without aof data is lost", aof: false, wantKept: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startPrivateOrSkip(t, Options{AOF: tc.aof})
			c := s.Client(t)
			mustSetGet(t, c, "k", "v")
			addr := s.Addr()

			s.Stop(t)
			s.Restart(t)

			if s.Addr() != addr {
				t.Errorf("Addr() after Restart = %q, want %q", s.Addr(), addr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// The client made before the crash must find the new server.
			n, err := c.Exists(ctx, "k").Result()
			if err != nil {
				t.Fatalf("EXISTS after Restart: %v", err)
			}
			if kept := n == 1; kept != tc.wantKept {
				t.Errorf("key kept across Stop and Restart = %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

func TestMisuseFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		// private says whether the case needs a private redis-server.
		private bool
		opts    Options
		op      func(s *Server, tb testing.TB)
		want    string
	}{
		{name: "stop miniredis", opts: Options{ForceMiniredis: true}, op: (*Server).Stop, want: "miniredis"},
		{name: "restart miniredis", opts: Options{ForceMiniredis: true}, op: (*Server).Restart, want: "miniredis"},
		{name: "restart running", private: true, op: (*Server).Restart, want: "still running"},
		{name: "stop twice", private: true, op: func(s *Server, tb testing.TB) { s.Stop(tb); s.Stop(tb) }, want: "not running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Server
			if tc.private {
				s = startPrivateOrSkip(t, tc.opts)
			} else {
				s = Start(t, tc.opts)
			}
			msg, failed := runFake(t, func(tb testing.TB) { tc.op(s, tb) })
			if !failed || !strings.Contains(msg, tc.want) {
				t.Errorf("failed = %v with %q, want a failure mentioning %q", failed, msg, tc.want)
			}
		})
	}
}

func TestExternalURL(t *testing.T) {
	owner := startPrivateOrSkip(t, Options{})
	oc := owner.Client(t)
	ctx := context.Background()
	db5 := redis.NewClient(&redis.Options{Addr: owner.Addr(), DB: 5})
	defer db5.Close()
	if err := oc.Set(ctx, "other-db", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := db5.Set(ctx, "stale", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	t.Setenv(EnvURL, "redis://"+owner.Addr()+"/5")
	s := Start(t)
	if !s.Real() || s.CanRestart() || s.DB() != 5 || s.Addr() != owner.Addr() {
		t.Fatalf("Start with %s: Real=%v CanRestart=%v DB=%d Addr=%s, want true false 5 %s",
			EnvURL, s.Real(), s.CanRestart(), s.DB(), s.Addr(), owner.Addr())
	}
	if n := db5.Exists(ctx, "stale").Val(); n != 0 {
		t.Error("the database of the URL was not flushed")
	}
	if n := oc.Exists(ctx, "other-db").Val(); n != 1 {
		t.Error("a database the URL does not name was flushed")
	}
	mustSetGet(t, s.Client(t), "k", "v")
	if n := db5.Exists(ctx, "k").Val(); n != 1 {
		t.Error("Client does not use the database of the URL")
	}
	msg, failed := runFake(t, s.Stop)
	if !failed || !strings.Contains(msg, EnvURL) {
		t.Errorf("Stop on %s: failed = %v with %q, want a failure naming %s", EnvURL, failed, msg, EnvURL)
	}
}

func TestFallback(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ci         string
		wantFailed bool
	}{
		{name: "miniredis without redis-server", ci: "", wantFailed: false},
		{name: "CI needs a real Redis", ci: "true", wantFailed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvURL, "")
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			var s *Server
			msg, failed := runFake(t, func(tb testing.TB) { s = Start(tb) })
			if failed != tc.wantFailed {
				t.Fatalf("Start failed = %v (%q), want %v", failed, msg, tc.wantFailed)
			}
			if failed {
				if !strings.Contains(msg, "redis-server") {
					t.Errorf("failure %q does not say what is missing", msg)
				}
				return
			}
			if s.Real() {
				t.Error("Real() = true without redis-server")
			}
			mustSetGet(t, s.Client(t), "k", "v")
		})
	}
}

func realAvailable() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// startPrivateOrSkip starts a private redis-server whatever
// CHATQ_TEST_REDIS_URL says, and skips the test where there is none to be
// had (outside CI).
func startPrivateOrSkip(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if !realAvailable() && os.Getenv("CI") != "true" {
		tb.Skip("redis-server is not on PATH")
	}
	if os.Getenv(EnvURL) != "" {
		if t, ok := tb.(*testing.T); ok {
			t.Setenv(EnvURL, "")
		}
	}
	s := Start(tb, opts)
	if !s.CanRestart() {
		tb.Fatalf("Start gave a server that cannot restart")
	}
	return s
}

func mustSetGet(tb testing.TB, c *redis.Client, key, value string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, key, value, 0).Err(); err != nil {
		tb.Fatalf("SET %s: %v", key, err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != value {
		tb.Fatalf("GET %s = %q, %v; want %q", key, got, err, value)
	}
}

// fakeTB records failures instead of failing the real test, so that tests
// can check that misuse fails. Everything else goes to the real test.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	msgs   []string
	failed bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) fail(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
	f.msgs = append(f.msgs, msg)
}

func (f *fakeTB) Error(args ...any)                 { f.fail(fmt.Sprint(args...)) }
func (f *fakeTB) Errorf(format string, args ...any) { f.fail(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Fatal(args ...any)                 { f.fail(fmt.Sprint(args...)); runtime.Goexit() }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fail(fmt.Sprintf(format, args...))
	runtime.Goexit()
}
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// runFake runs fn with a fakeTB on its own goroutine, since Fatal ends the
// goroutine it runs on, and reports what failed.
func runFake(t *testing.T, fn func(tb testing.TB)) (msg string, failed bool) {
	t.Helper()
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n"), f.failed
}
