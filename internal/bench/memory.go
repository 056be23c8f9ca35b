package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/sandbox"
)

// RedisMemory is what queued messages cost in Redis.
type RedisMemory struct {
	// Messages were enqueued, and none sent.
	Messages int `json:"messages"`
	// Bytes is the growth of used_memory.
	Bytes int64 `json:"bytes"`
	// RecordBytes, PayloadBytes and TaskBytes are MEMORY USAGE of one job
	// record, of its payload's key of its own and of its asynq task.
	// PayloadBytes is 0 when the payload is in the record's hash, as a
	// short one is.
	RecordBytes  int64 `json:"record_bytes"`
	PayloadBytes int64 `json:"payload_bytes"`
	TaskBytes    int64 `json:"task_bytes"`
	// TextLength is the length of each message's text.
	TextLength int `json:"text_length"`
}

// PerMessage returns the bytes per queued message.
func (m RedisMemory) PerMessage() float64 {
	if m.Messages == 0 {
		return 0
	}
	return float64(m.Bytes) / float64(m.Messages)
}

// payloadNote says where the payload of the measured record is.
func (m RedisMemory) payloadNote() string {
	if m.PayloadBytes == 0 {
		return "its payload inside"
	}
	return fmt.Sprintf("its payload %d B apart", m.PayloadBytes)
}

// QueuedMemory enqueues n text messages with no worker running and
// returns the growth of Redis's used_memory.
func QueuedMemory(ctx context.Context, env *Env, n int) (RedisMemory, error) {
	if err := env.flush(ctx); err != nil {
		return RedisMemory{}, err
	}
	s := newStack(env)
	defer s.close()
	rdb := s.redis(4)
	client := s.enqueueClient(72, enqueue.Config{})
	// The first batch creates what every queue has once (its key in the
	// set of queues, script cache): not a per-message cost.
	if _, err := enqueueAll(ctx, client, n, 10, enqueue.Transactional); err != nil {
		return RedisMemory{}, fmt.Errorf("redis memory: %w", err)
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return RedisMemory{}, err
	}
	ids, err := enqueueAll(ctx, client, 0, n, enqueue.Transactional)
	if err != nil {
		return RedisMemory{}, fmt.Errorf("redis memory: %w", err)
	}
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return RedisMemory{}, err
	}
	m := RedisMemory{Messages: n, Bytes: after - before, TextLength: len(messageText(0))}
	// The key names are the store's and asynq's, for the breakdown only:
	// the figure is used_memory's.
	m.RecordBytes, _ = rdb.MemoryUsage(ctx, "chatq:m:{"+ids[0]+"}").Result()
	m.PayloadBytes, _ = rdb.MemoryUsage(ctx, "chatq:pl:{"+ids[0]+"}").Result()
	m.TaskBytes, _ = rdb.MemoryUsage(ctx, "asynq:{"+enqueue.QueueFor(enqueue.Transactional)+"}:t:"+ids[0]).Result()
	env.logf("redis memory: %d queued messages of %d characters: %.0f bytes each (record %d, %s, task %d)",
		n, m.TextLength, m.PerMessage(), m.RecordBytes, m.payloadNote(), m.TaskBytes)
	return m, nil
}

// WorkerMemory is the Go heap of the process running the worker, sampled
// as messages go through.
type WorkerMemory struct {
	Samples []MemorySample `json:"samples"`
	// RecordTTL is the record lifetime used, short so that Redis does not
	// hold every record of the run.
	RecordTTL time.Duration `json:"record_ttl_ns"`
}

// MemorySample is the heap after a garbage collection, once Messages were
// sent.
type MemorySample struct {
	Messages   int    `json:"messages"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	HeapInuse  uint64 `json:"heap_inuse"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
}

// Steady returns the sample growth is measured from: the second one when
// there are three or more, as the first step also fills what a worker
// keeps for good (connections, buffers, pools).
func (w WorkerMemory) Steady() MemorySample {
	if len(w.Samples) >= 3 {
		return w.Samples[1]
	}
	return w.Samples[0]
}

// Growth returns how much the heap grew from the steady sample to the
// last, in bytes and as a fraction of the steady sample.
func (w WorkerMemory) Growth() (bytes int64, fraction float64) {
	from, last := w.Steady().HeapAlloc, w.Samples[len(w.Samples)-1].HeapAlloc
	bytes = int64(last) - int64(from)
	if from > 0 {
		fraction = float64(bytes) / float64(from)
	}
	return bytes, fraction
}

// WorkerHeap sends total messages through a worker of concurrency
// sends, enqueued in steps of every messages, and after each step samples
// the heap: the sandbox's log of accepted messages is emptied, the garbage
// collected, and runtime.ReadMemStats read. The process holds the worker,
// the producer and the sandbox, so the figures bound the worker's own
// from above.
func WorkerHeap(ctx context.Context, env *Env, total, every, concurrency int) (WorkerMemory, error) {
	if err := env.flush(ctx); err != nil {
		return WorkerMemory{}, err
	}
	s := newStack(env)
	defer s.close()
	if err := s.startSandbox(sandbox.Config{}); err != nil {
		return WorkerMemory{}, err
	}
	res := WorkerMemory{RecordTTL: 2 * time.Minute}
	client := s.enqueueClient(72, enqueue.Config{TTL: res.RecordTTL})
	cfg := workerConfig(concurrency)
	cfg.RecordTTL = res.RecordTTL
	if _, err := s.startWorker(cfg); err != nil {
		return WorkerMemory{}, err
	}
	start := time.Now()
	for done := 0; done < total; {
		step := min(every, total-done)
		if _, err := enqueueAll(ctx, client, done, step, enqueue.Transactional); err != nil {
			return res, fmt.Errorf("worker memory: %w", err)
		}
		done += step
		if err := waitCount(ctx, "worker memory: sends", &s.sent.n, int64(done), time.Duration(step)*5*time.Millisecond+time.Minute); err != nil {
			return res, err
		}
		if err := s.resetSandbox(); err != nil {
			return res, err
		}
		sample := heapSample(done)
		res.Samples = append(res.Samples, sample)
		env.logf("worker memory: %d of %d messages sent (%.0f/s): heap %.1f MiB, %d goroutines",
			done, total, float64(done)/time.Since(start).Seconds(), mib(sample.HeapAlloc), sample.Goroutines)
	}
	return res, nil
}

func heapSample(messages int) MemorySample {
	// Two collections: the first may leave what finalizers free.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return MemorySample{Messages: messages, HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, Sys: m.Sys, Goroutines: runtime.NumGoroutine()}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
