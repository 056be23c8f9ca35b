package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redisproc"
)

// Redis is a private redis-server on a free loopback port, without
// persistence, so that nothing else competes for it and no disk write
// blurs the figures. Close kills it.
type Redis struct {
	proc *redisproc.Process
	dir  string
}

// StartRedis starts the redis-server found at bin (looked up on PATH when
// it has no slash; "" means "redis-server") and waits until it answers.
func StartRedis(bin string) (*Redis, error) {
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
	// The benchmark writes millions of keys: no limit, no eviction.
	p, err := redisproc.Start(redisproc.Config{Bin: path, Dir: dir, Extra: []string{"--maxmemory", "0"}})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis: %w", err)
	}
	return &Redis{proc: p, dir: dir}, nil
}

// Addr returns the server's host:port.
func (r *Redis) Addr() string { return r.proc.Addr() }

// Client returns a new client with a pool of poolSize connections. The
// caller closes it.
func (r *Redis) Client(poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:     r.Addr(),
		PoolSize: poolSize,
		// Every connection the load needs is opened before it starts, so
		// that dials do not count against the first measurements.
		MinIdleConns: min(poolSize, 8),
	})
}

// Close kills the server and removes its directory.
func (r *Redis) Close() error {
	r.proc.Kill()
	return os.RemoveAll(r.dir)
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
