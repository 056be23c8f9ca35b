package scaleout

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
)

// BenchmarkSendThroughput measures how fast two chatq worker processes
// send a backlog of bulk messages to the sandbox, on one Redis and on a
// three-master Redis Cluster, with the bulk queue in one shard and in
// three. The rate is taken between the 10th and the 90th percent of the
// backlog, so that neither the workers' start nor the last stragglers
// count. Every worker's send still runs chatq's whole path: the record's
// transition scripts, the sender's rate limiter (set high, and so never
// waiting), asynq's dequeue and completion. No webhook comes back: only
// sending is measured.
//
// It also reports how the Redis commands spread over the masters. Run it
// with make bench-scaleout.
func BenchmarkSendThroughput(b *testing.B) {
	const n = 20000
	setups := []struct {
		name    string
		cluster bool
		shards  int
	}{
		{"redis/shards=1", false, 1},
		{"redis/shards=3", false, 3},
		{"cluster3/shards=1", true, 1},
		{"cluster3/shards=3", true, 3},
	}
	for _, su := range setups {
		b.Run(su.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				r := runThroughput(b, su.cluster, su.shards, n)
				b.ReportMetric(r.send, "sent/s")
				b.ReportMetric(r.enqueue, "enqueued/s")
				b.Logf("%s: %d messages; enqueued at %.0f/s, sent at %.0f/s by 2 workers; %.1f Redis commands per message sent; "+
					"per master, share of the commands and CPU busy while sending: %s",
					su.name, n, r.enqueue, r.send, r.perMessage, r.spread)
			}
		})
	}
}

type throughput struct {
	enqueue, send float64
	perMessage    float64
	spread        string
}

func runThroughput(b *testing.B, cluster bool, shards, n int) throughput {
	b.Helper()
	var rdb redis.UniversalClient
	redisEnv := map[string]string{}
	if cluster {
		c := redistest.StartCluster(b, 3)
		rdb = c.Client(b)
		redisEnv["CHATQ_REDIS_CLUSTER_ADDRS"] = strings.Join(c.Addrs(), ",")
	} else {
		srv := redistest.Start(b)
		if !srv.Real() {
			b.Skip("needs redis-server")
		}
		rdb = srv.Client(b)
		redisEnv["CHATQ_REDIS_URL"] = srv.URL()
	}
	s := newStack(b, rdb, redisEnv, map[string]string{
		"CHATQ_BULK_SHARDS":     strconv.Itoa(shards),
		"CHATQ_CONCURRENCY":     "50",
		"CHATQ_RATE_PER_SECOND": "1000000",
	})

	ctx := context.Background()
	client := enqueue.NewClient(rdb, enqueue.Config{BulkShards: shards})
	defer client.Close()
	start := time.Now()
	const batch = 500
	for i := 0; i < n; i += batch {
		msgs := make([]*enqueue.Message, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			msgs = append(msgs, &enqueue.Message{
				Destination: fmt.Sprintf("44%08d9", j), Priority: enqueue.Bulk,
				Payload: &enqueue.Text{Message: fmt.Sprintf("throughput %d", j)},
			})
		}
		res, err := client.SendBatch(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	enqueueRate := float64(n) / time.Since(start).Seconds()

	before := redisStats(b, rdb)
	sendStart := time.Now()
	b.StartTimer()
	s.startWorkers(2)
	var t10, t90 time.Time
	s.waitFor("the backlog to be sent", 5*time.Minute, func() error {
		a := s.sandbox.Stats().Accepted
		if t10.IsZero() && a >= int64(n/10) {
			t10 = time.Now()
		}
		if t90.IsZero() && a >= int64(n*9/10) {
			t90 = time.Now()
		}
		if a < int64(n) {
			return fmt.Errorf("%d of %d sent", a, n)
		}
		return nil
	})
	b.StopTimer()
	elapsed := time.Since(sendStart).Seconds()
	after := redisStats(b, rdb)
	var total int64
	for addr, st := range after {
		total += st.commands - before[addr].commands
	}
	var parts []string
	for addr, st := range after {
		parts = append(parts, fmt.Sprintf("%s %.0f%% %.0f%%", addr,
			100*float64(st.commands-before[addr].commands)/float64(total), 100*(st.cpu-before[addr].cpu)/elapsed))
	}
	return throughput{
		enqueue:    enqueueRate,
		send:       float64(n*8/10) / t90.Sub(t10).Seconds(),
		perMessage: float64(total) / float64(n),
		spread:     strings.Join(parts, ", "),
	}
}

var (
	commandsRe = regexp.MustCompile(`total_commands_processed:(\d+)`)
	cpuRe      = regexp.MustCompile(`used_cpu_(?:sys|user):([0-9.]+)`)
)

// serverStats are a Redis server's counters: the commands it ran (those
// inside scripts included) and its CPU seconds.
type serverStats struct {
	commands int64
	cpu      float64
}

// redisStats returns each master's counters.
func redisStats(tb testing.TB, rdb redis.UniversalClient) map[string]serverStats {
	tb.Helper()
	ctx := context.Background()
	out := map[string]serverStats{}
	count := func(c *redis.Client) error {
		info, err := c.Info(ctx, "stats", "cpu").Result()
		if err != nil {
			return err
		}
		m := commandsRe.FindStringSubmatch(info)
		if m == nil {
			return fmt.Errorf("no total_commands_processed in INFO of %s", c.Options().Addr)
		}
		var st serverStats
		st.commands, _ = strconv.ParseInt(m[1], 10, 64)
		for _, cm := range cpuRe.FindAllStringSubmatch(info, -1) {
			sec, _ := strconv.ParseFloat(cm[1], 64)
			st.cpu += sec
		}
		out[c.Options().Addr] = st
		return nil
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		// ForEachMaster runs its function concurrently.
		var mu sync.Mutex
		err = c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return count(node)
		})
	case *redis.Client:
		err = count(c)
	default:
		err = fmt.Errorf("unexpected client %T", rdb)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BenchmarkEnqueueWait measures what CHATQ_REDIS_WAIT_REPLICAS=1 costs a
// producer on a Sentinel-managed master with replicas on loopback: one
// message per call (as POST /v1/messages) and batches of 100 (as
// POST /v1/messages/batch).
func BenchmarkEnqueueWait(b *testing.B) {
	sn := redistest.StartSentinel(b)
	rdb := sn.Client(b)
	ctx := context.Background()
	for _, wait := range []int{0, 1} {
		for _, size := range []int{1, 100} {
			b.Run(fmt.Sprintf("wait=%d/batch=%d", wait, size), func(b *testing.B) {
				client := enqueue.NewClient(rdb, enqueue.Config{WaitReplicas: wait, WaitTimeout: time.Second})
				defer client.Close()
				msgs := make([]*enqueue.Message, size)
				b.ResetTimer()
				for i := range b.N {
					for j := range msgs {
						msgs[j] = &enqueue.Message{
							Destination: fmt.Sprintf("44%04d%04d9", i%10000, j), Priority: enqueue.Bulk,
							Payload: &enqueue.Text{Message: "wait"},
						}
					}
					if _, err := client.SendBatch(ctx, msgs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/msg")
			})
		}
	}
}
