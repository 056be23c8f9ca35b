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
)

// SentinelMaster is the name under which a Sentinel setup's sentinels
// monitor its master: CHATQ_REDIS_SENTINEL_MASTER.
const SentinelMaster = "chatq"

// sentinelReadyTimeout bounds how long a new Sentinel setup may take to
// replicate and to have its sentinels find each other.
const sentinelReadyTimeout = 30 * time.Second

// Sentinel is a Redis master with one replica, monitored by three
// sentinels (quorum two), all private processes on loopback ports. Its
// failover is quick: a master is down after 1s of silence.
type Sentinel struct {
	// data holds the master and the replica, whichever is which now.
	data      []*process
	sentinels []*process
}

// StartSentinel starts the master, its replica and the three sentinels,
// waits until the replica is in sync and every sentinel knows the replica
// and the other sentinels (without which no failover can happen), and kills
// them all when tb ends. Without redis-server it skips tb, or fails it with
// CI=true.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	bin := requireBinary(tb, "redis-server")
	s := &Sentinel{}
	track := func(what string, p *process) {
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("redistest: log of %s on %s:\n%s", what, p.addr(), p.log.tail())
			}
			p.kill()
		})
	}
	// Diskless replication without its default 5s wait for more replicas:
	// a restarted node resyncs at once.
	quick := []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
	master, err := start(&process{bin: bin, dir: tb.TempDir(), extra: quick})
	if err != nil {
		tb.Fatalf("redistest: sentinel master: %v", err)
	}
	track("master", master)
	replica, err := start(&process{bin: bin, dir: tb.TempDir(),
		extra: append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.port)}, quick...)})
	if err != nil {
		tb.Fatalf("redistest: sentinel replica: %v", err)
	}
	track("replica", replica)
	s.data = []*process{master, replica}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	// Sentinels learn of replicas from the master's INFO, which they read
	// at once and then every 10s: the replica must be there first.
	if err := waitInSync(ctx, replica.addr()); err != nil {
		tb.Fatalf("redistest: replica %s: %v", replica.addr(), err)
	}
	for range 3 {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 5000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, master.port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		p, err := start(&process{bin: bin, dir: dir, conf: conf, extra: []string{"--sentinel"}})
		if err != nil {
			tb.Fatalf("redistest: sentinel: %v", err)
		}
		track("sentinel", p)
		s.sentinels = append(s.sentinels, p)
	}
	for _, p := range s.sentinels {
		if err := waitSentinelReady(ctx, p.addr(), len(s.sentinels)-1); err != nil {
			tb.Fatalf("redistest: sentinel %s: %v", p.addr(), err)
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

func waitSentinelReady(ctx context.Context, addr string, others int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	defer sc.Close()
	return poll(ctx, func() error {
		replicas, err := sc.Replicas(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		peers, err := sc.Sentinels(ctx, SentinelMaster).Result()
		if err != nil {
			return err
		}
		if len(replicas) < 1 || len(peers) < others {
			return fmt.Errorf("knows %d replicas and %d other sentinels", len(replicas), len(peers))
		}
		return nil
	})
}

// SentinelAddrs returns the sentinels' host:port addresses, the form
// CHATQ_REDIS_SENTINEL_ADDRS takes.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.addr()
	}
	return out
}

// DataAddrs returns the addresses of the master and the replica, in no
// particular order: the roles change with each failover.
func (s *Sentinel) DataAddrs() []string {
	out := make([]string, len(s.data))
	for i, p := range s.data {
		out[i] = p.addr()
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
		sc := redis.NewSentinelClient(&redis.Options{Addr: p.addr(), DialTimeout: time.Second})
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
	if err := p.crash(); err != nil {
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
			sc := redis.NewSentinelClient(&redis.Options{Addr: p.addr(), DialTimeout: time.Second})
			hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
			_ = sc.Close()
			if err != nil {
				return err
			}
			if a := net.JoinHostPort(hp[0], hp[1]); a == old {
				return fmt.Errorf("sentinel %s still names %s", p.addr(), old)
			} else {
				addr = a
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

// Restart starts the killed node at addr again, on the same port; the
// sentinels make it a replica of the new master.
func (s *Sentinel) Restart(tb testing.TB, addr string) {
	tb.Helper()
	p := s.node(tb, addr)
	if err := p.restart(); err != nil {
		tb.Fatalf("redistest: restart %s: %v\nlog:\n%s", addr, err, p.log.tail())
	}
}

func (s *Sentinel) node(tb testing.TB, addr string) *process {
	tb.Helper()
	for _, p := range s.data {
		if p.addr() == addr {
			return p
		}
	}
	tb.Fatalf("redistest: %s is not a data node of this Sentinel setup", addr)
	return nil
}
