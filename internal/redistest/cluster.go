package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redisproc"
)

// clusterReadyTimeout bounds how long a new cluster may take to agree on
// its slots.
const clusterReadyTimeout = 30 * time.Second

// Cluster is a Redis Cluster of private redis-server processes on loopback
// ports: masters only, no replicas.
type Cluster struct {
	nodes []*redisproc.Process
}

// StartCluster starts masters redis-server processes in cluster mode, joins
// them with redis-cli --cluster create (the slots split evenly), waits until
// every node reports cluster_state:ok, and kills them when tb ends. Without
// redis-server and redis-cli on PATH it skips tb, or fails it with CI=true.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: redis-cli --cluster create needs at least 3 masters, not %d", masters)
	}
	server, cli := requireBinary(tb, "redis-server"), requireBinary(tb, "redis-cli")
	c := &Cluster{}
	for range masters {
		dir := tb.TempDir()
		p, err := redisproc.Start(redisproc.Config{Bin: server, Dir: dir, ClusterBus: true, Extra: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			// A node is failed after 2s of silence, not the default 15s.
			"--cluster-node-timeout", "2000",
		}})
		if err != nil {
			tb.Fatalf("redistest: cluster node: %v", err)
		}
		c.nodes = append(c.nodes, p)
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("redistest: log of cluster node %s:\n%s", p.Addr(), p.Log())
			}
			p.Kill()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitReady(ctx); err != nil {
		tb.Fatalf("redistest: cluster on %s: %v", strings.Join(c.Addrs(), ","), err)
	}
	return c
}

// waitReady polls every node until each reports cluster_state:ok and knows
// every other node.
func (c *Cluster) waitReady(ctx context.Context) error {
	want := "cluster_known_nodes:" + strconv.Itoa(len(c.nodes))
	for _, p := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second})
		err := poll(ctx, func() error {
			info, err := rdb.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want) {
				return fmt.Errorf("node %s not ready:\n%s", p.Addr(), info)
			}
			return nil
		})
		_ = rdb.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Addrs returns the nodes' host:port addresses, the form
// CHATQ_REDIS_CLUSTER_ADDRS takes.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, p := range c.nodes {
		out[i] = p.Addr()
	}
	return out
}

// Client returns a cluster client, closed when tb ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), DialTimeout: 2 * time.Second})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// requireBinary returns the path of a program the test needs; without it
// the test is skipped, or failed with CI=true.
func requireBinary(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("redistest: CI=true needs %s, which is not on PATH", name)
	}
	tb.Skipf("redistest: %s is not on PATH", name)
	return ""
}

// poll calls check every 50ms until it succeeds or ctx ends, and returns
// check's last error then.
func poll(ctx context.Context, check func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %w", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
