package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/store"
)

// LatencyResult is the time from enqueue (the call to Send) to "submitted"
// (the time the worker recorded in the history) of transactional messages.
type LatencyResult struct {
	// Idle is measured one message at a time on an idle worker.
	Idle Latencies `json:"idle"`
	// Backlog is measured while the worker drains Backlog bulk messages.
	Backlog Latencies `json:"backlog"`
	// BacklogSize is the number of bulk messages queued before the start.
	BacklogSize int `json:"backlog_size"`
	// BulkRate is how fast the bulk messages were sent meanwhile.
	BulkRate Rate `json:"bulk_rate"`
}

// Latency measures enqueue-to-submitted latencies of transactional
// messages: idle (idle messages, one at a time, each sent after the one
// before was submitted and a random pause of up to 20ms) and while a
// worker of concurrency sends drains backlog bulk messages (one
// transactional message every 10ms while the bulk queue lasts).
// The sandbox and the worker are chatq processes started from the binary
// chatq; the messages are sent with chatq's Go library from this process.
func Latency(ctx context.Context, env *Env, chatq string, idle, backlog, concurrency int) (LatencyResult, error) {
	var res LatencyResult
	var err error
	if res.Idle, err = idleLatency(ctx, env, chatq, idle, concurrency); err != nil {
		return res, err
	}
	env.logf("latency, idle: %d transactional messages: p50 %.1fms, p99 %.1fms", res.Idle.Count, ms(res.Idle.P50), ms(res.Idle.P99))
	res.BacklogSize = backlog
	if res.Backlog, res.BulkRate, err = backlogLatency(ctx, env, chatq, backlog, concurrency); err != nil {
		return res, err
	}
	env.logf("latency, draining %d bulk messages (%.0f/s): %d transactional messages: p50 %.1fms, p99 %.1fms",
		backlog, res.BulkRate.PerSecond(), res.Backlog.Count, ms(res.Backlog.P50), ms(res.Backlog.P99))
	return res, nil
}

func idleLatency(ctx context.Context, env *Env, chatq string, n, concurrency int) (Latencies, error) {
	if err := env.flush(ctx); err != nil {
		return Latencies{}, err
	}
	d, err := startDeployment(ctx, env, chatq, concurrency, 0)
	if err != nil {
		return Latencies{}, fmt.Errorf("idle latency: %w", err)
	}
	defer d.close()
	s := newStack(env)
	defer s.close()
	client := s.enqueueClient(8, enqueue.Config{})
	if err := d.startWorker(ctx); err != nil {
		return Latencies{}, fmt.Errorf("idle latency: %w", err)
	}
	starts := map[string]time.Time{}
	ids := make([]string, 0, n)
	for i := range n {
		t0 := time.Now()
		rec, err := client.Send(ctx, textMessage(plainPrefix, i, enqueue.Transactional))
		if err != nil {
			return Latencies{}, fmt.Errorf("idle latency: %w", err)
		}
		starts[rec.ID] = t0
		ids = append(ids, rec.ID)
		if err := d.waitAccepted(ctx, "idle latency: send", i+1, 10*time.Second); err != nil {
			return Latencies{}, err
		}
		// A random pause, so that messages arrive at every point of the
		// idle worker's polling cycle.
		time.Sleep(time.Duration(rand.Int64N(int64(20 * time.Millisecond))))
	}
	return submitLatencies(ctx, store.New(s.redis(4), store.Config{}), ids, starts)
}

func backlogLatency(ctx context.Context, env *Env, chatq string, backlog, concurrency int) (Latencies, Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Latencies{}, Rate{}, err
	}
	d, err := startDeployment(ctx, env, chatq, concurrency, 0)
	if err != nil {
		return Latencies{}, Rate{}, fmt.Errorf("backlog latency: %w", err)
	}
	defer d.close()
	s := newStack(env)
	defer s.close()
	client := s.enqueueClient(72, enqueue.Config{})
	if _, err := enqueueAll(ctx, client, 0, backlog, enqueue.Bulk); err != nil {
		return Latencies{}, Rate{}, fmt.Errorf("backlog latency: %w", err)
	}
	start := time.Now()
	if err := d.startWorker(ctx); err != nil {
		return Latencies{}, Rate{}, fmt.Errorf("backlog latency: %w", err)
	}
	starts := map[string]time.Time{}
	var ids []string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	// Transactional messages go on while at least a twentieth of the bulk
	// is left, so that every one of them meets a busy worker.
	for {
		st, err := d.sandboxStats(ctx)
		if err != nil {
			return Latencies{}, Rate{}, fmt.Errorf("backlog latency: %w", err)
		}
		if int(st.Accepted)-len(ids) >= backlog-backlog/20 {
			break
		}
		select {
		case <-ctx.Done():
			return Latencies{}, Rate{}, ctx.Err()
		case <-tick.C:
		}
		t0 := time.Now()
		rec, err := client.Send(ctx, textMessage(sampledPrefix, len(ids), enqueue.Transactional))
		if err != nil {
			return Latencies{}, Rate{}, fmt.Errorf("backlog latency: %w", err)
		}
		starts[rec.ID] = t0
		ids = append(ids, rec.ID)
	}
	total := int64(backlog + len(ids))
	if err := d.waitAccepted(ctx, "backlog latency: sends", int(total), time.Minute); err != nil {
		return Latencies{}, Rate{}, err
	}
	bulk := Rate{Count: backlog, Elapsed: time.Since(start)}
	lat, err := submitLatencies(ctx, store.New(s.redis(4), store.Config{}), ids, starts)
	return lat, bulk, err
}

// submitLatencies waits until every record is submitted and returns the
// times from starts to "submitted".
func submitLatencies(ctx context.Context, st *store.Store, ids []string, starts map[string]time.Time) (Latencies, error) {
	recs, err := waitRecords(ctx, st, ids, time.Minute, func(r *store.Record) bool {
		_, ok := historyAt(r, store.Submitted)
		return ok
	})
	if err != nil {
		return Latencies{}, fmt.Errorf("latency: %w", err)
	}
	d := make([]time.Duration, len(recs))
	for i, r := range recs {
		at, _ := historyAt(r, store.Submitted)
		d[i] = at.Sub(starts[r.ID])
	}
	return summarize(d), nil
}
