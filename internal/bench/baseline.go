package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// noopTask is the task type of the asynq baseline.
const noopTask = "bench:noop"

// noopPayload is what a chatq task carries: a 26-character job id.
func noopPayload() []byte { return []byte(ulid.Make().String()) }

// AsynqEnqueue measures bare asynq's enqueue rate: n tasks carrying a job
// id, as chatq's do, enqueued one call each from goroutines goroutines. It
// is the ceiling of every enqueue path of chatq, which writes the same
// task plus a job record. With autopipelined, the calls go through
// go-redis's autopipeliner, as chatq's enqueue client sends its tasks.
func AsynqEnqueue(ctx context.Context, env *Env, n, goroutines int, autopipelined bool) (Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, err
	}
	s := newStack(env)
	defer s.close()
	plain := s.redis(goroutines + 8)
	var rdb redis.UniversalClient = plain
	how := ""
	if autopipelined {
		ap, err := plain.AutoPipeline()
		if err != nil {
			return Rate{}, fmt.Errorf("asynq enqueue: %w", err)
		}
		rdb, how = ap, ", autopipelined"
	}
	client := asynq.NewClientFromRedisClient(rdb)
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = noopPayload()
	}
	start := time.Now()
	err := parallel(ctx, n, goroutines, func(ctx context.Context, i int) error {
		if _, err := client.EnqueueContext(ctx, asynq.NewTask(noopTask, payloads[i])); err != nil {
			return fmt.Errorf("asynq enqueue: %w", err)
		}
		return nil
	})
	r := Rate{Count: n, Elapsed: time.Since(start)}
	if err != nil {
		return Rate{}, err
	}
	env.logf("asynq enqueue%s: %d tasks from %d goroutines in %s: %.0f/s", how, n, goroutines, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// AsynqProcess measures bare asynq's processing rate: n queued tasks taken
// by a server of concurrency goroutines whose handler does nothing. It is
// the ceiling of chatq's send rate, whose handler records each send twice
// and calls the upstream once. It also returns the Redis commands the
// server ran (INFO commandstats, reset at its start, read once the last
// task is done).
func AsynqProcess(ctx context.Context, env *Env, n, concurrency int) (Rate, int64, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, 0, err
	}
	s := newStack(env)
	defer s.close()
	client := asynq.NewClientFromRedisClient(s.redis(40))
	defer client.Close()
	if err := parallel(ctx, n, 32, func(ctx context.Context, _ int) error {
		_, err := client.EnqueueContext(ctx, asynq.NewTask(noopTask, noopPayload()))
		return err
	}); err != nil {
		return Rate{}, 0, fmt.Errorf("asynq process: enqueue: %w", err)
	}

	var done atomic.Int64
	var last atomic.Int64 // unix nanoseconds of the last task's end
	srv := asynq.NewServerFromRedisClient(s.redis(concurrency+32), asynq.Config{
		Concurrency: concurrency,
		// As chatq's worker: an idle server looks again after 10ms.
		TaskCheckInterval: 10 * time.Millisecond,
		Logger:            env.logger().Named("asynq").Sugar(),
		LogLevel:          asynq.WarnLevel,
	})
	stats := s.redis(1)
	if err := stats.ConfigResetStat(ctx).Err(); err != nil {
		return Rate{}, 0, fmt.Errorf("asynq process: %w", err)
	}
	start := time.Now()
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		done.Add(1)
		last.Store(time.Now().UnixNano())
		return nil
	})); err != nil {
		return Rate{}, 0, fmt.Errorf("asynq process: %w", err)
	}
	defer srv.Shutdown()
	if err := waitCount(ctx, "asynq process", &done, int64(n), time.Duration(n)*time.Millisecond+time.Minute); err != nil {
		return Rate{}, 0, err
	}
	calls, err := commandCalls(ctx, stats)
	if err != nil {
		return Rate{}, 0, fmt.Errorf("asynq process: %w", err)
	}
	r := Rate{Count: n, Elapsed: time.Unix(0, last.Load()).Sub(start)}
	env.logf("asynq process: %d no-op tasks, concurrency %d, in %s: %.0f/s; %.1f Redis commands per task", n, concurrency, r.Elapsed.Round(time.Millisecond), r.PerSecond(), perMessage(calls-1, n))
	return r, calls - 1, nil
}
