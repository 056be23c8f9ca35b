// Package bench is chatq's benchmark harness: each measurement is a
// function that runs chatq against a private Redis and the ChatArchitect
// sandbox, and Run puts them side by side with bare asynq (whose rates are
// the ceiling of chatq's) and BullMQ on the same Redis. The headline
// measurements (deployed, stream, latency) run chatq as users do: the
// chatq binary started as "chatq sandbox", "chatq api" and "chatq worker"
// processes from the default configuration; the others run parts of chatq
// in this process and say so in their labels.
//
// Only ratios from one run mean much: the same machine gives different
// absolute figures from run to run.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chatq/chatq/enqueue"
)

// Measurement names, for Options.Only, in the order Run runs them.
const (
	MeasureBaseline     = "baseline"
	MeasureDeployed     = "deployed"
	MeasureEnqueue      = "enqueue"
	MeasureBullMQ       = "bullmq"
	MeasureSend         = "send"
	MeasureStream       = "stream"
	MeasureLatency      = "latency"
	MeasureRedisMemory  = "redis-memory"
	MeasureWorkerMemory = "worker-memory"
)

// Measurements lists every measurement name, in the order Run runs them.
var Measurements = []string{MeasureBaseline, MeasureDeployed, MeasureEnqueue, MeasureBullMQ, MeasureSend, MeasureStream, MeasureLatency, MeasureRedisMemory, MeasureWorkerMemory}

// Options choose what a run measures and how much. Zero sizes take the
// defaults of DefaultOptions.
type Options struct {
	// Only lists the measurements to run; empty runs them all. The
	// baseline runs whenever a rate is measured, for the ratios.
	Only []string `json:"only,omitempty"`
	// Goroutines is the number of concurrent callers of the one-at-a-time
	// enqueue paths (bare asynq, Send, POST /v1/messages).
	Goroutines int `json:"goroutines"`
	// Concurrency is the worker's (and bare asynq's server's).
	Concurrency int `json:"concurrency"`
	// AsynqTasks is the size of each baseline.
	AsynqTasks int `json:"asynq_tasks"`
	// EnqueueMessages is the size of each enqueue measurement.
	EnqueueMessages int `json:"enqueue_messages"`
	// BatchSize is the size of a batch (SendBatch, POST
	// /v1/messages/batch), BatchCallers how many run at once.
	BatchSize    int `json:"batch_size"`
	BatchCallers int `json:"batch_callers"`
	// BullMQDir holds the script that measures BullMQ on the same Redis
	// and its installed packages (npm ci --prefix BullMQDir).
	BullMQDir string `json:"bullmq_dir"`
	// Chatq is the chatq binary the deployed measurement starts as
	// "chatq sandbox", "chatq api" and "chatq worker" (chatq bench passes
	// its own).
	Chatq string `json:"chatq,omitempty"`
	// DeployedMessages are posted to the API and sent by the worker, and
	// as many by the BullMQ sender; LifeMessages then live their whole
	// life with four webhooks each.
	DeployedMessages int `json:"deployed_messages"`
	LifeMessages     int `json:"life_messages"`
	// Rounds is how many times the deployed send and the BullMQ sender's
	// are measured, one after the other each time: the ratio of their
	// rates is judged on its median over the rounds.
	Rounds int `json:"rounds"`
	// WorkerProfile, if set, is where the deployed worker's CPU profile of
	// its send phase is written.
	WorkerProfile string `json:"-"`
	// SendMessages is the size of the stripped send-rate measurement.
	SendMessages int `json:"send_messages"`
	// Stream shapes the full-stream measurement.
	Stream StreamOptions `json:"stream"`
	// IdleMessages is the number of transactional messages sent one at a
	// time to an idle worker; Backlog the number of bulk messages drained
	// while transactional latency is measured.
	IdleMessages int `json:"idle_messages"`
	Backlog      int `json:"backlog"`
	// RedisMessages is the number of messages queued to measure Redis
	// memory.
	RedisMessages int `json:"redis_messages"`
	// WorkerMessages is the number of messages sent to measure the
	// worker's memory, sampled every WorkerEvery messages.
	WorkerMessages int `json:"worker_messages"`
	WorkerEvery    int `json:"worker_every"`
}

// DefaultOptions are the sizes of the full run (about twenty minutes on two
// cores).
func DefaultOptions() Options {
	o := Options{
		Goroutines:       32,
		Concurrency:      50,
		AsynqTasks:       100_000,
		EnqueueMessages:  50_000,
		BatchSize:        1000,
		BatchCallers:     2,
		BullMQDir:        filepath.Join("internal", "bench", "bullmq"),
		SendMessages:     50_000,
		IdleMessages:     200,
		DeployedMessages: 50_000,
		LifeMessages:     20_000,
		Rounds:           3,
		Backlog:          50_000,
		RedisMessages:    100_000,
		WorkerMessages:   1_000_000,
		WorkerEvery:      100_000,
	}
	o.Stream.withDefaults()
	return o
}

// QuickOptions are the sizes of a short run (about two minutes on a quiet machine), for a
// first look; its figures are noisier than the full run's.
func QuickOptions() Options {
	o := DefaultOptions()
	o.AsynqTasks = 30_000
	o.EnqueueMessages = 10_000
	o.SendMessages = 20_000
	o.DeployedMessages = 10_000
	o.LifeMessages = 3_000
	o.Rounds = 1
	o.IdleMessages = 100
	o.Backlog = 10_000
	o.RedisMessages = 20_000
	o.WorkerMessages = 60_000
	o.WorkerEvery = 20_000
	o.Stream.Duration = 10 * time.Second
	o.Stream.ProbeDuration = 5 * time.Second
	o.Stream.MaxProbes = 1
	return o
}

// withDefaults fills the zero sizes from DefaultOptions.
func (o *Options) withDefaults() {
	d := DefaultOptions()
	o.Goroutines = cmpOr(o.Goroutines, d.Goroutines)
	o.Concurrency = cmpOr(o.Concurrency, d.Concurrency)
	o.AsynqTasks = cmpOr(o.AsynqTasks, d.AsynqTasks)
	o.EnqueueMessages = cmpOr(o.EnqueueMessages, d.EnqueueMessages)
	o.BatchSize = cmpOr(o.BatchSize, d.BatchSize)
	o.BatchCallers = cmpOr(o.BatchCallers, d.BatchCallers)
	o.BullMQDir = cmpOr(o.BullMQDir, d.BullMQDir)
	o.SendMessages = cmpOr(o.SendMessages, d.SendMessages)
	o.DeployedMessages = cmpOr(o.DeployedMessages, d.DeployedMessages)
	o.LifeMessages = cmpOr(o.LifeMessages, d.LifeMessages)
	o.Rounds = cmpOr(o.Rounds, d.Rounds)
	o.IdleMessages = cmpOr(o.IdleMessages, d.IdleMessages)
	o.Backlog = cmpOr(o.Backlog, d.Backlog)
	o.RedisMessages = cmpOr(o.RedisMessages, d.RedisMessages)
	o.WorkerMessages = cmpOr(o.WorkerMessages, d.WorkerMessages)
	o.WorkerEvery = cmpOr(o.WorkerEvery, d.WorkerEvery)
	o.Stream.Concurrency = cmpOr(o.Stream.Concurrency, o.Concurrency)
	o.Stream.Chatq = cmpOr(o.Stream.Chatq, o.Chatq)
	o.Stream.withDefaults()
}

// Validate checks the measurement names and sizes.
func (o *Options) Validate() error {
	for _, m := range o.Only {
		if !slices.Contains(Measurements, m) {
			return fmt.Errorf("unknown measurement %q (known: %s)", m, strings.Join(Measurements, ", "))
		}
	}
	for _, v := range []struct {
		name string
		n    int
	}{
		{"goroutines", o.Goroutines}, {"concurrency", o.Concurrency}, {"asynq tasks", o.AsynqTasks},
		{"enqueue messages", o.EnqueueMessages}, {"batch size", o.BatchSize}, {"batch callers", o.BatchCallers},
		{"send messages", o.SendMessages}, {"deployed messages", o.DeployedMessages}, {"life messages", o.LifeMessages}, {"rounds", o.Rounds}, {"idle messages", o.IdleMessages}, {"backlog", o.Backlog},
		{"redis messages", o.RedisMessages}, {"worker messages", o.WorkerMessages}, {"worker every", o.WorkerEvery},
	} {
		if v.n < 0 {
			return fmt.Errorf("%s must not be negative, not %d", v.name, v.n)
		}
	}
	if o.Stream.Target < 0 || o.Stream.Step < 0 || (o.Stream.Step > 0 && o.Stream.Step <= 1) {
		return fmt.Errorf("stream: target must be positive and step above 1")
	}
	switch o.Stream.Priority {
	case "", enqueue.Bulk, enqueue.Transactional:
	default:
		return fmt.Errorf("stream: priority must be %q or %q, not %q", enqueue.Bulk, enqueue.Transactional, o.Stream.Priority)
	}
	return nil
}

func (o *Options) runs(name string) bool {
	if len(o.Only) == 0 {
		return true
	}
	if name == MeasureBaseline {
		for _, m := range []string{MeasureBaseline, MeasureDeployed, MeasureEnqueue, MeasureBullMQ, MeasureSend, MeasureStream} {
			if slices.Contains(o.Only, m) {
				return true
			}
		}
		return false
	}
	return slices.Contains(o.Only, name)
}

// Run runs the measurements opts selects, one after the other, and reports
// them. A measurement that fails is named in Report.Failures and the run
// goes on; the error is for the run as a whole (ctx ended).
func Run(ctx context.Context, env *Env, opts Options) (*Report, error) {
	opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{Started: time.Now().UTC(), Machine: newMachine(), Options: opts}
	rep.Machine.RedisVersion = redisVersion(ctx, env)
	steps := []struct {
		name string
		run  func() error
	}{
		{MeasureBaseline, func() error { return runBaseline(ctx, env, opts, rep) }},
		{MeasureDeployed, func() error { return runDeployed(ctx, env, opts, rep) }},
		{MeasureEnqueue, func() error { return runEnqueue(ctx, env, opts, rep) }},
		{MeasureBullMQ, func() error { return runBullMQ(ctx, env, opts, rep) }},
		{MeasureSend, func() error { return runSend(ctx, env, opts, rep) }},
		{MeasureStream, func() error { return runStream(ctx, env, opts, rep) }},
		{MeasureLatency, func() error { return runLatency(ctx, env, opts, rep) }},
		{MeasureRedisMemory, func() error { return runRedisMemory(ctx, env, opts, rep) }},
		{MeasureWorkerMemory, func() error { return runWorkerMemory(ctx, env, opts, rep) }},
	}
	for _, st := range steps {
		if !opts.runs(st.name) {
			continue
		}
		if err := st.run(); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", st.name, err))
			env.logf("%s failed: %v", st.name, err)
		}
	}
	rep.Elapsed = time.Since(rep.Started)
	rep.Machine.LoadAfter = loadAverage()
	rep.Finish()
	return rep, nil
}

func redisVersion(ctx context.Context, env *Env) string {
	c := env.Redis.Client(1)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "unknown"
}

// seconds prints a duration of whole seconds as "60s", not "1m0s".
func seconds(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int64(d/time.Second))
	}
	return d.String()
}

func rateFigure(name, label string, r Rate, baseline string) Figure {
	return Figure{Name: name, Label: label, Value: r.PerSecond(), Unit: "msg/s", Baseline: baseline}
}

func runBaseline(ctx context.Context, env *Env, o Options, rep *Report) error {
	enq, err := AsynqEnqueue(ctx, env, o.AsynqTasks, o.Goroutines, false)
	if err != nil {
		return err
	}
	rep.Results.AsynqEnqueue = &enq
	rep.Add(rateFigure(BaselineEnqueue, fmt.Sprintf("bare asynq: enqueue, %d goroutines", o.Goroutines), enq, ""))
	// chatq's enqueue client sends its tasks through go-redis's
	// autopipeliner; bare asynq on the same connection shows how much of
	// chatq's batch rate that alone explains.
	ap, err := AsynqEnqueue(ctx, env, o.AsynqTasks, o.Goroutines, true)
	if err != nil {
		return err
	}
	rep.Results.AsynqEnqueueAutopipelined = &ap
	rep.Add(rateFigure("asynq_enqueue_autopipelined", fmt.Sprintf("bare asynq: enqueue, %d goroutines, autopipelined connection", o.Goroutines), ap, BaselineEnqueue))
	proc, calls, err := AsynqProcess(ctx, env, o.AsynqTasks, o.Concurrency)
	if err != nil {
		return err
	}
	rep.Results.AsynqProcess = &proc
	rep.Results.AsynqProcessCommands = calls
	rep.Add(rateFigure(BaselineProcess, fmt.Sprintf("bare asynq: no-op processing, concurrency %d", o.Concurrency), proc, ""),
		Figure{Name: "asynq_process_commands", Label: "bare asynq: Redis commands per no-op task", Value: perMessage(calls, o.AsynqTasks), Unit: "cmd/msg"})
	return nil
}

func runEnqueue(ctx context.Context, env *Env, o Options, rep *Report) error {
	batches := fmt.Sprintf("of %d, %d at a time", o.BatchSize, o.BatchCallers)
	for _, m := range []struct {
		name, label string
		result      **Rate
		measure     func() (Rate, error)
		target      *Target
	}{
		{"enqueue_send", fmt.Sprintf("enqueue: library Send, %d goroutines", o.Goroutines), &rep.Results.EnqueueSend,
			func() (Rate, error) { return EnqueueSend(ctx, env, o.EnqueueMessages, o.Goroutines) }, nil},
		{"enqueue_batch", "enqueue: library SendBatch " + batches, &rep.Results.EnqueueBatch,
			func() (Rate, error) { return EnqueueBatch(ctx, env, o.EnqueueMessages, o.BatchSize, o.BatchCallers) },
			&Target{Bound: 0.6, OfBaseline: true}},
		{"enqueue_http", fmt.Sprintf("enqueue: POST /v1/messages, %d clients, in-process API without policy", o.Goroutines), &rep.Results.EnqueueHTTP,
			func() (Rate, error) { return EnqueueHTTP(ctx, env, o.EnqueueMessages, o.Goroutines) }, nil},
		{"enqueue_http_batch", "enqueue: POST /v1/messages/batch " + batches + ", in-process API without policy", &rep.Results.EnqueueHTTPBatch,
			func() (Rate, error) {
				return EnqueueHTTPBatch(ctx, env, o.EnqueueMessages, o.BatchSize, o.BatchCallers)
			}, nil},
	} {
		r, err := m.measure()
		if err != nil {
			return err
		}
		*m.result = &r
		f := rateFigure(m.name, m.label, r, BaselineEnqueue)
		f.Target = m.target
		rep.Add(f)
	}
	return nil
}

func runBullMQ(ctx context.Context, env *Env, o Options, rep *Report) error {
	res, err := BullMQ(ctx, env, o.BullMQDir, o.EnqueueMessages, o.BatchSize, o.BatchCallers, o.Concurrency)
	if errors.Is(err, ErrBullMQMissing) {
		// BullMQ is a comparison, not a part of chatq: without Node.js and
		// its packages the run goes on and says so.
		rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", MeasureBullMQ, err))
		env.logf("%s not measured: %v", MeasureBullMQ, err)
		return nil
	}
	if err != nil {
		return err
	}
	rep.Results.BullMQ = &res
	rep.Add(
		rateFigure("bullmq_add_bulk", fmt.Sprintf("BullMQ %s: addBulk of %d, %d at a time", res.Version, o.BatchSize, o.BatchCallers), res.AddBulk, BaselineEnqueue),
		rateFigure("bullmq_process", fmt.Sprintf("BullMQ %s: no-op processing, concurrency %d", res.Version, o.Concurrency), res.Process, BaselineProcess),
	)
	if b := rep.Results.EnqueueBatch; b != nil && res.AddBulk.PerSecond() > 0 {
		rep.Add(Figure{Name: "enqueue_batch_vs_bullmq", Label: "enqueue: library SendBatch over BullMQ addBulk",
			Value: b.PerSecond() / res.AddBulk.PerSecond(), Unit: "x", Target: &Target{Bound: 1},
			Note: "the same batches; SendBatch also writes a record (its payload inside) and index entries per message"})
	}
	return nil
}

func runSend(ctx context.Context, env *Env, o Options, rep *Report) error {
	r, err := SendRate(ctx, env, o.SendMessages, o.Concurrency)
	if err != nil {
		return err
	}
	rep.Results.SendRate = &r
	rep.Add(rateFigure("send_rate_stripped", fmt.Sprintf("stripped send, not what users run: in-process worker without flow control, policy or metrics, %s queued to submitted", thousands(int64(o.SendMessages))), r, BaselineProcess))
	return nil
}

func runStream(ctx context.Context, env *Env, o Options, rep *Report) error {
	res, err := Stream(ctx, env, o.Stream)
	if err != nil {
		return err
	}
	rep.Results.Stream = &res
	so := o.Stream
	best := Figure{Name: "stream_rate", Label: fmt.Sprintf("chatq as deployed: full stream (%s), highest rate held %s, every webhook correlated", so.Priority, seconds(so.Duration)),
		Unit: "msg/s", Baseline: BaselineProcess, Target: &Target{Bound: so.Target}}
	if res.Best != nil {
		best.Value = res.Best.Rate
		best.Note = fmt.Sprintf("4 webhooks per message (%.0f/s at %.0f msg/s), %s apart, after a %s warm-up; lag p99 %.0fms at that rate",
			4*res.Best.Rate, res.Best.Rate, so.WebhookDelay, seconds(so.Warmup), ms(res.Best.Lag.P99))
	} else {
		best.Note = "no rate held: " + res.AtTarget.Why
	}
	rep.Add(best)
	lag := Figure{Name: "stream_lag_p99", Label: fmt.Sprintf("chatq as deployed: full stream at %s msg/s: p99 webhook-to-record lag", thousands(int64(so.Target))),
		Value: ms(res.AtTarget.Lag.P99), Unit: "ms", Target: &Target{Max: true, Bound: ms(so.MaxLag)},
		Note: fmt.Sprintf("from the webhook's arrival at a relay in front of chatq's API process to the first read of the record showing it, %d samples; the messages enqueued with chatq's Go library from the bench's process", res.AtTarget.Lag.Count)}
	if !res.AtTarget.Sustained {
		lag.Note += "; the rate did not hold: " + res.AtTarget.Why
	}
	rep.Add(lag)
	return nil
}

func runLatency(ctx context.Context, env *Env, o Options, rep *Report) error {
	res, err := Latency(ctx, env, o.Chatq, o.IdleMessages, o.Backlog, o.Concurrency)
	if err != nil {
		return err
	}
	rep.Results.Latency = &res
	rep.Add(
		Figure{Name: "latency_idle_p50", Label: "chatq as deployed: transactional enqueue-to-submitted p50, idle worker", Value: ms(res.Idle.P50), Unit: "ms", Target: &Target{Max: true, Bound: 20}},
		Figure{Name: "latency_idle_p99", Label: "chatq as deployed: transactional enqueue-to-submitted p99, idle worker", Value: ms(res.Idle.P99), Unit: "ms"},
		Figure{Name: "latency_backlog_p50", Label: fmt.Sprintf("chatq as deployed: transactional p50 while %s bulk drain", thousands(int64(res.BacklogSize))), Value: ms(res.Backlog.P50), Unit: "ms"},
		Figure{Name: "latency_backlog_p99", Label: fmt.Sprintf("chatq as deployed: transactional p99 while %s bulk drain", thousands(int64(res.BacklogSize))), Value: ms(res.Backlog.P99), Unit: "ms",
			Target: &Target{Max: true, Bound: 100}, Note: fmt.Sprintf("the bulk drained at %.0f msg/s meanwhile", res.BulkRate.PerSecond())},
	)
	return nil
}

func runRedisMemory(ctx context.Context, env *Env, o Options, rep *Report) error {
	m, err := QueuedMemory(ctx, env, o.RedisMessages)
	if err != nil {
		return err
	}
	rep.Results.RedisMemory = &m
	rep.Add(Figure{Name: "redis_bytes_per_message", Label: fmt.Sprintf("Redis memory per queued %d-character text message", m.TextLength),
		Value: m.PerMessage(), Unit: "B/msg", Target: &Target{Max: true, Bound: 1536},
		Note: fmt.Sprintf("used_memory growth over %s queued messages, worker stopped; MEMORY USAGE of one record %d B (%s), its asynq task %d B",
			thousands(int64(m.Messages)), m.RecordBytes, m.payloadNote(), m.TaskBytes)})
	return nil
}

func runWorkerMemory(ctx context.Context, env *Env, o Options, rep *Report) error {
	m, err := WorkerHeap(ctx, env, o.WorkerMessages, o.WorkerEvery, o.Concurrency)
	if err != nil {
		return err
	}
	rep.Results.WorkerMemory = &m
	first, steady, last := m.Samples[0], m.Steady(), m.Samples[len(m.Samples)-1]
	// Flat: the heap grows by no more than a tenth, or 2 MiB, whichever is
	// more, as a live heap of a few MiB moves by a MiB from one collection
	// to the next.
	bound := max(2, mib(steady.HeapAlloc)/10)
	grew, fraction := m.Growth()
	heaps := make([]string, len(m.Samples))
	for i, sm := range m.Samples {
		heaps[i] = trimFloat1(mib(sm.HeapAlloc))
	}
	rep.Add(
		Figure{Name: "worker_heap_first", Label: fmt.Sprintf("stripped in-process worker: heap after %s messages", thousands(int64(first.Messages))), Value: mib(first.HeapAlloc), Unit: "MiB"},
		Figure{Name: "worker_heap_last", Label: fmt.Sprintf("stripped in-process worker: heap after %s messages", thousands(int64(last.Messages))), Value: mib(last.HeapAlloc), Unit: "MiB"},
		Figure{Name: "worker_heap_growth", Label: fmt.Sprintf("stripped in-process worker: heap growth from %s to %s messages", thousands(int64(steady.Messages)), thousands(int64(last.Messages))),
			Value: float64(grew) / (1 << 20), Unit: "MiB", Target: &Target{Max: true, Bound: bound},
			Note: fmt.Sprintf("%+.1f%%; live heap after GC, every %s messages: %s MiB; the process runs worker, producer and sandbox (its log emptied before each sample)",
				100*fraction, thousands(int64(o.WorkerEvery)), strings.Join(heaps, ", "))},
	)
	return nil
}

// deployedProcesses names the processes whose CPU time the deployed
// measurement shows, in the order it shows them.
var deployedProcesses = []string{"worker", "api", "redis", "sandbox", "bullmq"}

// usageFigures are a phase's Redis commands and CPU time per message, one
// figure per process that ran.
func usageFigures(name, label string, u Usage, messages int, target *Target) []Figure {
	figs := []Figure{{Name: name + "_commands", Label: label + ": Redis commands per message", Value: perMessage(u.Commands, messages),
		Unit: "cmd/msg", Target: target, Note: "per message: " + topCommands(u.ByCommand, messages, 8)}}
	for _, p := range deployedProcesses {
		cpu, ok := u.CPU[p]
		if !ok {
			continue
		}
		figs = append(figs, Figure{Name: name + "_cpu_" + p, Label: fmt.Sprintf("%s: %s CPU per message", label, p),
			Value: float64(cpu.Microseconds()) / float64(max(messages, 1)), Unit: "µs/msg"})
	}
	return figs
}

func runDeployed(ctx context.Context, env *Env, o Options, rep *Report) error {
	res, err := Deployed(ctx, env, DeployedOptions{
		Chatq: o.Chatq, Messages: o.DeployedMessages, LifeMessages: o.LifeMessages,
		BatchSize: o.BatchSize, BatchCallers: o.BatchCallers, Concurrency: o.Concurrency,
		WebhookDelay: o.Stream.WebhookDelay, BullMQDir: o.BullMQDir, WorkerProfile: o.WorkerProfile, Rounds: o.Rounds,
	})
	if err != nil {
		return err
	}
	rep.Results.Deployed = &res
	n := thousands(int64(res.Messages))
	ran := fmt.Sprintf("chatq sandbox, api and worker processes, worker of concurrency %d from the default configuration (flow control and conversation policy on, metrics on, CHATQ_RATE_PER_SECOND=%s)",
		o.Concurrency, limitRate)
	send := rateFigure("deployed_send_rate", fmt.Sprintf("chatq as deployed: send, %s queued to submitted, webhooks off", n), res.Send, BaselineProcess)
	send.Target = &Target{Bound: 0.40, OfBaseline: true}
	send.Note = fmt.Sprintf("%s; from the first message submitted to the last; %.0f sends waited for a limit", ran, res.LimitWaits)
	rep.Add(send)
	if b := res.BullMQ; b != nil {
		rep.Add(Figure{Name: "bullmq_send_rate", Label: fmt.Sprintf("BullMQ %s: minimal sender, %s jobs, concurrency %d", b.Version, n, o.Concurrency),
			Value: b.Send.PerSecond(), Unit: "msg/s", Baseline: BaselineProcess,
			Note: "internal/bench/bullmq/send.mjs: a Worker that POSTs each job to the same sandbox (Basic auth) and stores the provider id in a Redis hash, nothing else; from its start to the last job's end"})
		if b.Send.PerSecond() > 0 {
			ratio := Figure{Name: "deployed_send_vs_bullmq", Label: "chatq as deployed: send rate over the minimal BullMQ sender's",
				Value: res.Send.PerSecond() / b.Send.PerSecond(), Unit: "x", Target: &Target{Bound: 1.5}}
			if len(res.Rounds) > 1 {
				// Judged on the rounds' median.
				ratio.Label += ", first round"
				ratio.Target = nil
			}
			rep.Add(ratio)
		}
		if cost, ok := costOverBullMQ(res.SendUsage, b.Usage); ok {
			rep.Add(Figure{Name: "deployed_send_cost_vs_bullmq", Label: "chatq as deployed: send CPU per message over the minimal BullMQ sender's, in sandbox CPU",
				Value: cost, Unit: "x",
				Note: "(worker + Redis CPU) / sandbox CPU of chatq's send phase, over (Node.js + Redis CPU) / sandbox CPU of the BullMQ sender's: the sandbox does the same work per message in both, so this ratio holds when the machine's speed changes between the two phases, which the rates' ratio does not"})
		}
	}
	rep.Add(roundFigures(res.Rounds)...)
	sendUsage := usageFigures("deployed_send", "chatq as deployed: send", res.SendUsage, res.Messages, &Target{Max: true, Bound: 24})
	sendUsage[0].Note += "; calls summed over INFO commandstats (commands inside scripts included), reset at each phase's start; the background work of every process running counts too (the worker's start, asynq's polling, the API's counters); CPU is each process's utime+stime from /proc, over the same phase (the worker's from its start)"
	rep.Add(sendUsage...)
	if b := res.BullMQ; b != nil {
		rep.Add(usageFigures("bullmq_send", "BullMQ minimal sender", b.Usage, res.Messages, nil)...)
	}
	if f, ok := redisTimeFigure(res.RedisTime); ok {
		rep.Add(f)
	}
	campaign := rateFigure("deployed_campaign_rate", fmt.Sprintf("chatq as deployed: send of a marketing campaign, %s template messages", n), res.Campaign, BaselineProcess)
	campaign.Note = "the sandbox's marketing template (welcome_offer, two parameters), bulk priority, each to a recipient of its own, queued with the worker stopped, then sent by the same worker started again, webhooks off: beside a text message's checks each send checks the recipient's marketing cap and the template's state, and the sender's lane feeds the bulk queue"
	rep.Add(campaign)
	rep.Add(usageFigures("deployed_campaign", "chatq as deployed: campaign send", res.CampaignUsage, res.Messages, nil)...)
	rep.Add(usageFigures("deployed_life", fmt.Sprintf("chatq as deployed: whole life with 4 webhooks (%s messages)", thousands(int64(res.LifeMessages))),
		res.LifeUsage, res.LifeMessages, &Target{Max: true, Bound: 50})...)
	if res.LifeRecordBytes > 0 {
		rep.Add(Figure{Name: "deployed_life_record_bytes", Label: "chatq as deployed: Redis memory of a read message's record",
			Value: float64(res.LifeRecordBytes), Unit: "B",
			Note: fmt.Sprintf("MEMORY USAGE of the record (its payload, history, ids and pricing inside: a %s) after its four webhooks, the median of a sample of the whole-life phase's; a record is kept CHATQ_RECORD_TTL after its last change", res.LifeRecordEncoding)})
	}
	rep.Add(rateFigure("deployed_enqueue_rate", fmt.Sprintf("chatq as deployed: POST /v1/messages/batch of %d, %d at a time", o.BatchSize, o.BatchCallers), res.Enqueue, BaselineEnqueue))
	rep.Add(usageFigures("deployed_enqueue", "chatq as deployed: POST /v1/messages/batch", res.EnqueueUsage, res.Messages, nil)...)
	return nil
}

// roundFigures are the medians over the rounds (two or more) of the send
// rate's ratio to the BullMQ sender's, judged, and of the CPU's ratio in
// sandbox CPU, each round's figures in their notes.
func roundFigures(rounds []Round) []Figure {
	if len(rounds) < 2 {
		return nil
	}
	var rates, costs []float64
	var rateNotes, costNotes []string
	for _, r := range rounds {
		ratio := r.Send.PerSecond() / r.BullMQ.PerSecond()
		rates = append(rates, ratio)
		rateNotes = append(rateNotes, fmt.Sprintf("%s over %s msg/s = %.2f x", thousands(int64(r.Send.PerSecond())), thousands(int64(r.BullMQ.PerSecond())), ratio))
		if c, ok := costOverBullMQ(r.SendUsage, r.BullMQUsage); ok {
			costs = append(costs, c)
			costNotes = append(costNotes, fmt.Sprintf("%.2f x", c))
		}
	}
	n := len(rounds)
	figs := []Figure{{Name: "deployed_send_vs_bullmq_rounds", Label: fmt.Sprintf("chatq as deployed: send rate over the minimal BullMQ sender's, median of %d rounds", n),
		Value: median(rates), Unit: "x", Target: &Target{Bound: 1.5},
		Note: fmt.Sprintf("each round posts as many messages with the worker stopped, runs the BullMQ sender, then starts the worker again: %s", strings.Join(rateNotes, "; "))}}
	if len(costs) == n {
		figs = append(figs, Figure{Name: "deployed_send_cost_vs_bullmq_rounds", Label: fmt.Sprintf("chatq as deployed: send CPU per message over the minimal BullMQ sender's, in sandbox CPU, median of %d rounds", n),
			Value: median(costs), Unit: "x", Note: "by round: " + strings.Join(costNotes, ", ")})
	}
	return figs
}

// median returns the median of v, which it sorts.
func median(v []float64) float64 {
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// redisTimeFigure is the share of Redis's time in a send that chatq's
// scripts took, its note the commands that took the most.
func redisTimeFigure(t RedisTime) (Figure, bool) {
	total := t.Total()
	if total <= 0 {
		return Figure{}, false
	}
	var ours time.Duration
	parts := make([]string, 0, 8)
	for i, c := range t.Commands {
		if c.Chatq {
			ours += c.Time
		}
		if i < 8 {
			parts = append(parts, fmt.Sprintf("%s %.0f %% (%s calls, %.1f µs each)", c.Name, 100*c.Share(total), thousands(int64(c.Calls)),
				float64(c.Time.Nanoseconds())/1e3/float64(c.Calls)))
		}
	}
	return Figure{Name: "deployed_send_redis_scripts", Label: "chatq as deployed: send: share of Redis's command time in chatq's scripts",
		Value: 100 * float64(ours) / float64(total), Unit: "%",
		Note: fmt.Sprintf("%s; from Redis's SLOWLOG with every command logged (which costs Redis time itself, so in a phase of its own: %s text messages sent by the same worker started again, the log's last %s entries at three quarters of them), the clients' commands alone, a script's with the commands it ran inside; a script is named by its first key",
			strings.Join(parts, ", "), thousands(int64(t.Messages)), thousands(int64(t.Entries)))}, true
}

// costOverBullMQ is the CPU chatq's send spends per message (worker and
// Redis) over the BullMQ sender's (Node.js and Redis), each counted in
// units of the sandbox's CPU in its own phase; ok is false when a phase
// has no sandbox CPU to count in.
func costOverBullMQ(chatq, bullmq Usage) (float64, bool) {
	cs, bs := chatq.CPU["sandbox"], bullmq.CPU["sandbox"]
	if cs <= 0 || bs <= 0 {
		return 0, false
	}
	peer := float64(bullmq.CPU["bullmq"]+bullmq.CPU["redis"]) / float64(bs)
	if peer <= 0 {
		return 0, false
	}
	return float64(chatq.CPU["worker"]+chatq.CPU["redis"]) / float64(cs) / peer, true
}

// topCommands lists the n most called commands of by, per message.
func topCommands(by map[string]int64, messages, n int) string {
	names := make([]string, 0, len(by))
	for name := range by {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(by[b], by[a]), strings.Compare(a, b)) })
	parts := make([]string, 0, n)
	for _, name := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s %s", name, trimFloat1(perMessage(by[name], messages))))
	}
	return strings.Join(parts, ", ")
}
