package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisReadyTimeout bounds how long a starting redis-server may take to
// answer PING.
const redisReadyTimeout = 15 * time.Second

// Redis is a private redis-server on a free loopback port, without
// persistence, so that nothing else competes for it and no disk write
// blurs the figures. Close kills it.
type Redis struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	once sync.Once
}

// StartRedis starts the redis-server found at bin (looked up on PATH when
// it has no slash; "" means "redis-server") and waits until it answers.
func StartRedis(ctx context.Context, bin string) (*Redis, error) {
	if bin == "" {
		bin = "redis-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("start redis: %w (install Redis or pass the path of redis-server)", err)
	}
	dir, err := os.MkdirTemp("", "chatq-bench-redis-")
	if err != nil {
		return nil, fmt.Errorf("start redis: %w", err)
	}
	const attempts = 3
	for i := 1; ; i++ {
		r, err := launchRedis(ctx, path, dir)
		if err == nil {
			return r, nil
		}
		// The port may have been taken between picking and binding it.
		if i == attempts || !strings.Contains(err.Error(), "Address already in use") {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
}

func launchRedis(ctx context.Context, path, dir string) (*Redis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, out: &tailBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(path,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		// The benchmark writes millions of keys: no limit, no eviction.
		"--maxmemory", "0",
	)
	r.cmd.Stdout = r.out
	r.cmd.Stderr = r.out
	r.cmd.SysProcAttr = sysProcAttr()
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	if err := r.waitReady(ctx); err != nil {
		r.kill()
		return nil, fmt.Errorf("redis-server on %s: %w\n%s", r.addr, err, r.out.String())
	}
	return r, nil
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return r.addr }

// Client returns a new client with a pool of poolSize connections. The
// caller closes it.
func (r *Redis) Client(poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:     r.addr,
		PoolSize: poolSize,
		// Every connection the load needs is opened before it starts, so
		// that dials do not count against the first measurements.
		MinIdleConns: min(poolSize, 8),
	})
}

// Close kills the server and removes its directory.
func (r *Redis) Close() error {
	r.once.Do(r.kill)
	return os.RemoveAll(r.dir)
}

func (r *Redis) kill() {
	// Kill fails only when the process is gone already.
	_ = r.cmd.Process.Kill()
	<-r.done
}

func (r *Redis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisReadyTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(r.addr)
		if err == nil {
			return nil
		}
		select {
		case <-r.done:
			return errors.New("exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("no answer to PING: %w", err)
		case <-tick.C:
		}
	}
}

func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// usedMemory returns Redis's used_memory, in bytes.
func usedMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("redis memory: used_memory %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("redis memory: INFO memory has no used_memory")
}

// tailBuffer keeps the last few kilobytes of redis-server's output, for
// error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > tailSize {
		b.buf = bytes.Clone(b.buf[len(b.buf)-tailSize:])
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
