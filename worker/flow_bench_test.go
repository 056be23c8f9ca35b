package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/worker"
)

// needRealRedis skips a benchmark whose figures mean nothing on miniredis.
func needRealRedis(b *testing.B) {
	b.Helper()
	if os.Getenv(redistest.EnvURL) != "" {
		return
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("needs redis-server on PATH (or " + redistest.EnvURL + ")")
	}
}

// commandsProcessed reads Redis's count of commands served so far.
func commandsProcessed(tb testing.TB, rdb redis.UniversalClient) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Fatal("no total_commands_processed in INFO stats")
	return 0
}

// commandsPerSecond measures the commands Redis serves over d, less the
// two INFO calls that measure it.
func commandsPerSecond(tb testing.TB, rdb redis.UniversalClient, d time.Duration) float64 {
	tb.Helper()
	before := commandsProcessed(tb, rdb)
	time.Sleep(d)
	return float64(commandsProcessed(tb, rdb)-before-1) / d.Seconds()
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, int(math.Ceil(p*float64(len(s))))-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// BenchmarkFlowControl runs four workers sharing one sender limit of 80/s
// against a sandbox that refuses anything faster, for 30 s, with a backlog
// of 50,000 bulk messages, and sends a transactional message every 250ms.
// Run it with make bench-ratelimit.
func BenchmarkFlowControl(b *testing.B) {
	needRealRedis(b)
	const (
		workers, concurrency, rate = 4, 50, 80
		backlog                    = 50_000
		run                        = 30 * time.Second
		probeEvery                 = 250 * time.Millisecond
	)
	for range b.N {
		bd := setup(b, sandbox.Config{Rate: rate, WebhookDelay: time.Hour}, false)
		ctx := context.Background()
		for i := 0; i < backlog; i += 1000 {
			msgs := make([]*enqueue.Message, 1000)
			for j := range msgs {
				msgs[j] = text(fmt.Sprintf("4480%07d9", i+j), "bulk")
			}
			bd.sendAll(b, bd.client, msgs)
		}
		cfg := worker.Config{Concurrency: concurrency, Flow: limits(ratelimit.Config{Rate: rate, Burst: 1})}
		start := time.Now()
		for range workers {
			bd.worker(b, bd.ca, cfg)
		}
		cmdsBefore := commandsProcessed(b, bd.rdb)

		type probe struct {
			dest string
			sent time.Time
		}
		var probes []probe
		time.Sleep(2 * time.Second) // the backlog is flowing
		for i := 0; time.Since(start) < run-2*time.Second; i++ {
			m := text(fmt.Sprintf("4481%07d9", i), "your code is 123456")
			m.Priority = enqueue.Transactional
			sent := time.Now()
			if _, err := bd.client.Send(ctx, m); err != nil {
				b.Fatal(err)
			}
			probes = append(probes, probe{m.Destination, sent})
			time.Sleep(probeEvery)
		}
		time.Sleep(time.Until(start.Add(run)))
		end := time.Now()
		cmds := float64(commandsProcessed(b, bd.rdb)-cmdsBefore) / end.Sub(start).Seconds()
		stats := bd.sandbox.Stats()

		// Every acceptance within the run, and each probe's wait.
		byDest := map[string]time.Time{}
		var at []time.Time
		for _, m := range sandboxMessages(b, bd.sandbox) {
			if m.ReceivedAt.Before(end) {
				at = append(at, m.ReceivedAt)
				byDest[m.Destination] = m.ReceivedAt
			}
		}
		slices.SortFunc(at, time.Time.Compare)
		if len(at) < 2 {
			b.Fatalf("the sandbox accepted %d messages in %s", len(at), run)
		}
		achieved := float64(len(at)-1) / at[len(at)-1].Sub(at[0]).Seconds()
		var waits []time.Duration
		for _, p := range probes {
			got, ok := byDest[p.dest]
			if !ok {
				b.Fatalf("transactional message to %s not sent within the run", p.dest)
			}
			waits = append(waits, got.Sub(p.sent))
		}
		bound := time.Duration(concurrency)*time.Second/rate + time.Second

		fmt.Printf("\nflow control: %d workers x %d sends in flight, one sender limit of %d/s (burst 1),\n"+
			"sandbox refusing anything over %d/s, %s, %d bulk messages waiting\n\n", workers, concurrency, rate, rate, run, backlog)
		fmt.Printf("  %-40s %d msg/s\n", "configured rate", rate)
		fmt.Printf("  %-40s %.2f msg/s (%d messages)\n", "achieved rate", achieved, len(at))
		fmt.Printf("  %-40s %+.2f %%\n", "error", (achieved-rate)/rate*100)
		fmt.Printf("  %-40s %d\n", "upstream 429s", stats.Throttled)
		fmt.Printf("  %-40s p50 %s  p99 %s  max %s (%d messages; bound %s)\n", "transactional wait behind the backlog",
			secs(percentile(waits, 0.5)), secs(percentile(waits, 0.99)), secs(slices.Max(waits)), len(waits), secs(bound))
		fmt.Printf("  %-40s %.0f commands/s (%.1f per message)\n\n", "Redis load", cmds, cmds/achieved)
		b.ReportMetric(achieved, "msg/s")
		b.ReportMetric(float64(stats.Throttled), "429s")
		b.ReportMetric(percentile(waits, 0.99).Seconds(), "p99-transactional-s")
	}
}

type sandboxMessage struct {
	Destination string    `json:"destination"`
	ReceivedAt  time.Time `json:"received_at"`
}

func sandboxMessages(tb testing.TB, sb *sandbox.Server) []sandboxMessage {
	tb.Helper()
	var msgs []sandboxMessage
	if err := json.Unmarshal(sandboxDo(tb, sb, "GET", "/sandbox/messages", ""), &msgs); err != nil {
		tb.Fatal(err)
	}
	return msgs
}

// BenchmarkPollingIntervals measures what asynq's two polling intervals
// cost an idle worker in Redis commands, and what they add to latency: the
// pickup of a message sent to an idle worker (TaskCheckInterval), and the
// end of a 2s hold, whose task asynq moves back in whole seconds every
// DelayedTaskCheckInterval. Run it with make bench-ratelimit.
func BenchmarkPollingIntervals(b *testing.B) {
	needRealRedis(b)
	for range b.N {
		fmt.Printf("\nasynq's polling, one idle worker (chatq's flow control included)\n\n")
		fmt.Printf("  %-36s %22s %30s\n", "TaskCheckInterval", "idle Redis commands/s", "pickup by an idle worker")
		for _, interval := range []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second} {
			load, picks := pollingRun(b, worker.Config{TaskCheckInterval: interval})
			fmt.Printf("  %-36s %22.0f %30s\n", interval.String()+defaultNote(interval, 10*time.Millisecond, time.Second), load,
				"avg "+secs(avg(picks))+", max "+secs(slices.Max(picks)))
		}
		fmt.Printf("\n  %-36s %22s %30s\n", "DelayedTaskCheckInterval", "idle Redis commands/s", "a 2s hold ends after")
		for _, interval := range []time.Duration{time.Second, 5 * time.Second} {
			load, holds := holdRun(b, worker.Config{DelayedTaskCheckInterval: interval})
			fmt.Printf("  %-36s %22.0f %30s\n", interval.String()+defaultNote(interval, time.Second, 5*time.Second), load,
				"avg "+secs(avg(holds))+", max "+secs(slices.Max(holds)))
		}
		fmt.Println()
	}
}

func defaultNote(d, chatq, asynq time.Duration) string {
	switch d {
	case chatq:
		return " (chatq's default)"
	case asynq:
		return " (asynq's default)"
	}
	return ""
}

func avg(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// pollingRun measures an idle worker's Redis load, then the pickup latency
// of messages sent to it one at a time.
func pollingRun(b *testing.B, cfg worker.Config) (float64, []time.Duration) {
	bd := setup(b, sandbox.Config{WebhookDelay: time.Hour}, false)
	bd.worker(b, bd.ca, cfg)
	time.Sleep(time.Second)
	load := commandsPerSecond(b, bd.rdb, 3*time.Second)
	var picks []time.Duration
	for i := range 8 {
		m := text(fmt.Sprintf("4482%07d9", i), "ping")
		m.Priority = enqueue.Transactional
		sent := time.Now()
		if _, err := bd.client.Send(context.Background(), m); err != nil {
			b.Fatal(err)
		}
		for {
			at := acceptedAt(b, bd.sandbox, m.Destination)
			if len(at) > 0 {
				picks = append(picks, at[0].Sub(sent))
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		// Let the worker fall idle again, at a point of its polling cycle
		// that differs each time.
		time.Sleep(time.Duration(300+97*i) * time.Millisecond)
	}
	return load, picks
}

// holdRun measures an idle worker's Redis load, then how long after the
// first of two messages to one recipient the second goes, the pair limit
// holding it 2s.
func holdRun(b *testing.B, cfg worker.Config) (float64, []time.Duration) {
	const interval = 2 * time.Second
	bd := setup(b, sandbox.Config{WebhookDelay: time.Hour}, false)
	cfg.Flow = limits(ratelimit.Config{PairInterval: interval, PairBurst: 1})
	bd.worker(b, bd.ca, cfg)
	time.Sleep(time.Second)
	load := commandsPerSecond(b, bd.rdb, 5*time.Second)
	var dests, ids []string
	for i := range 10 {
		dest := fmt.Sprintf("4483%07d9", i)
		dests = append(dests, dest)
		ids = append(ids, bd.sendAll(b, bd.client, []*enqueue.Message{text(dest, "first"), text(dest, "second")})...)
		// Spread over more than a whole cycle of the slowest interval.
		time.Sleep(530 * time.Millisecond)
	}
	bd.waitAll(b, ids, 30*time.Second, submitted)
	var holds []time.Duration
	for _, dest := range dests {
		at := acceptedAt(b, bd.sandbox, dest)
		holds = append(holds, at[1].Sub(at[0]))
	}
	return load, holds
}
