package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redisproc"
)

// SentinelMaster is the name under which a Sentinel setup's sentinels
// monitor its master: CHATQ_REDIS_SENTINEL_MASTER.
const SentinelMaster = "chatq"

// sentinelReadyTimeout bounds how long a new Sentinel setup may take to
// replicate and to have its sentinels find each other.
const sentinelReadyTimeout = 30 * time.Second

// Sentinel is a Redis master with two replicas, monitored by three
// sentinels (quorum two), all private processes on loopback ports, none
// persistent. Its failover is quick: a master is down after 2s of silence.
//
// A killed node stays dead. Restarted without persistence, it would come
// back empty, and a sentinel could promote it before it has synced from
// the new master, which would then copy its emptiness: the Redis
// documentation warns against restarting such nodes automatically. With
// two replicas, the new master still has one for WAIT to count.
type Sentinel struct {
	// data holds the master and the replicas, whichever is which now.
	data      []*redisproc.Process
	sentinels []*redisproc.Process
}

// StartSentinel starts the master, its replicas and the three sentinels,
// waits until the replicas are in sync and every sentinel knows them and
// the other sentinels (without which no failover can happen), and kills
// them all when tb ends. Without redis-server it skips tb, or fails it with
// CI=true.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	bin := requireBinary(tb, "redis-server")
	s := &Sentinel{}
	track := func(what string, p *redisproc.Process) {
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("redistest: log of %s on %s:\n%s", what, p.Addr(), p.Log())
			}
			p.Kill()
		})
	}
	// Diskless replication without its default 5s wait for more replicas:
	// a restarted node resyncs at once.
	quick := []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
	master, err := redisproc.Start(redisproc.Config{Bin: bin, Dir: tb.TempDir(), Extra: quick})
	if err != nil {
		tb.Fatalf("redistest: sentinel master: %v", err)
	}
	track("master", master)
	s.data = []*redisproc.Process{master}
	for range 2 {
		replica, err := redisproc.Start(redisproc.Config{Bin: bin, Dir: tb.TempDir(),
			Extra: append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}, quick...)})
		if err != nil {
			tb.Fatalf("redistest: sentinel replica: %v", err)
		}
		track("replica", replica)
		s.data = append(s.data, replica)
	}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	// Sentinels learn of replicas from the master's INFO, which they read
	// at once and then every 10s: the replicas must be there first.
	for _, r := range s.data[1:] {
		if err := waitInSync(ctx, r.Addr()); err != nil {
			tb.Fatalf("redistest: replica %s: %v", r.Addr(), err)
		}
	}
	for range 3 {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			// 1s would be quicker, but a sentinel may then take the new
			// master for down before it has answered its first PING, and
			// fail over a second time.
			"sentinel down-after-milliseconds %[1]s 2000\n"+
			"sentinel failover-timeout %[1]s 5000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, master.Port())
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		p, err := redisproc.Start(redisproc.Config{Bin: bin, Dir: dir, Conf: conf, Extra: []string{"--sentinel"}})
		if err != nil {
			tb.Fatalf("redistest: sentinel: %v", err)
		}
		track("sentinel", p)
		s.sentinels = append(s.sentinels, p)
	}
	for _, p := range s.sentinels {
		if err := waitSentinelReady(ctx, p.Addr(), len(s.data)-1, len(s.sentinels)-1); err != nil {
			tb.Fatalf("redistest: sentinel %s: %v", p.Addr(), err)
		}
	}
	return s
}

func waitInSync(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	defer rdb.Close()
	return poll(ctx, func() error {
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("not in sync:\n%s", info)
		}
		return nil
	})
}

func waitSentinelReady(ctx context.Context, addr string, replicas, others int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	defer sc.Close()
	return poll(ctx, func() error {
		known, err := sc.Replicas(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		peers, err := sc.Sentinels(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if len(known) < replicas || len(peers) < others {
			return fmt.Errorf("knows %d replicas and %d other sentinels", len(known), len(peers))
		}
		return nil
	})
}

// SentinelAddrs returns the sentinels' host:port addresses, the form
// CHATQ_REDIS_SENTINEL_ADDRS takes.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.Addr()
	}
	return out
}

// DataAddrs returns the addresses of the master and the replicas, in no
// particular order: the roles change with each failover.
func (s *Sentinel) DataAddrs() []string {
	out := make([]string, len(s.data))
	for i, p := range s.data {
		out[i] = p.Addr()
	}
	return out
}

// Client returns a failover client that follows the master the sentinels
// name, closed when tb ends.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: SentinelMaster, SentinelAddrs: s.SentinelAddrs(), DialTimeout: 2 * time.Second,
	})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// MasterAddr returns the master's address as the first sentinel that
// answers names it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, p := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second})
		hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		_ = sc.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel names the master: %w", last)
}

// KillMaster kills the current master with SIGKILL, as a crash would, and
// returns its address.
func (s *Sentinel) KillMaster(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	p := s.node(tb, addr)
	if err := p.Crash(); err != nil {
		tb.Fatalf("redistest: kill master: %v", err)
	}
	return addr
}

// WaitFailover waits until every sentinel names a master other than old and
// that master answers as one, and returns its address.
func (s *Sentinel) WaitFailover(tb testing.TB, old string, timeout time.Duration) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var addr string
	err := poll(ctx, func() error {
		for _, p := range s.sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr(), DialTimeout: time.Second})
			hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
			_ = sc.Close()
			if err != nil {
				return err
			}
			addr = net.JoinHostPort(hp[0], hp[1])
			if addr == old {
				return fmt.Errorf("sentinel %s still names %s", p.Addr(), old)
			}
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
		defer rdb.Close()
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("%s is not a master yet", addr)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("redistest: failover from %s: %v", old, err)
	}
	return addr
}

func (s *Sentinel) node(tb testing.TB, addr string) *redisproc.Process {
	tb.Helper()
	for _, p := range s.data {
		if p.Addr() == addr {
			return p
		}
	}
	tb.Fatalf("redistest: %s is not a data node of this Sentinel setup", addr)
	return nil
}
