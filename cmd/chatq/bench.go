package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/bench"
)

// benchSizes maps the size flags of chatq bench onto bench.Options, so
// that --quick can take its sizes for every flag not given.
type benchSizes struct {
	ints      []benchFlag[int]
	durations []benchFlag[time.Duration]
	floats    []benchFlag[float64]
}

type benchFlag[T any] struct {
	name, usage string
	field       func(*bench.Options) *T
}

func newBenchSizes() benchSizes {
	return benchSizes{
		ints: []benchFlag[int]{
			{"messages", "messages sent through the worker to watch its memory (worker-memory)", func(o *bench.Options) *int { return &o.WorkerMessages }},
			{"memory-every", "worker memory is sampled every this many messages", func(o *bench.Options) *int { return &o.WorkerEvery }},
			{"goroutines", "concurrent callers of the one-at-a-time enqueue paths", func(o *bench.Options) *int { return &o.Goroutines }},
			{"concurrency", "sends in flight per worker (and bare asynq's server concurrency)", func(o *bench.Options) *int { return &o.Concurrency }},
			{"asynq-tasks", "tasks of each bare asynq baseline", func(o *bench.Options) *int { return &o.AsynqTasks }},
			{"enqueue-messages", "messages of each enqueue measurement", func(o *bench.Options) *int { return &o.EnqueueMessages }},
			{"batch-size", "messages per batch (SendBatch, POST /v1/messages/batch)", func(o *bench.Options) *int { return &o.BatchSize }},
			{"batch-callers", "batches in flight at once", func(o *bench.Options) *int { return &o.BatchCallers }},
			{"deployed-messages", "messages the deployed worker sends, and the BullMQ sender", func(o *bench.Options) *int { return &o.DeployedMessages }},
			{"life-messages", "messages of the deployed whole-life phase, webhooks on", func(o *bench.Options) *int { return &o.LifeMessages }},
			{"rounds", "times the deployed send and the BullMQ sender's are measured, one after the other; their ratio is judged on the median", func(o *bench.Options) *int { return &o.Rounds }},
			{"send-messages", "messages of the stripped send-rate measurement", func(o *bench.Options) *int { return &o.SendMessages }},
			{"idle-messages", "transactional messages sent one at a time to an idle worker", func(o *bench.Options) *int { return &o.IdleMessages }},
			{"backlog", "bulk messages drained while transactional latency is measured", func(o *bench.Options) *int { return &o.Backlog }},
			{"redis-messages", "messages queued to measure Redis memory", func(o *bench.Options) *int { return &o.RedisMessages }},
			{"max-probes", "shorter full-stream runs looking for the highest rate", func(o *bench.Options) *int { return &o.Stream.MaxProbes }},
		},
		durations: []benchFlag[time.Duration]{
			{"stream-duration", "how long a full-stream rate must hold", func(o *bench.Options) *time.Duration { return &o.Stream.Duration }},
			{"probe-duration", "length of each probe of the full stream", func(o *bench.Options) *time.Duration { return &o.Stream.ProbeDuration }},
			{"max-lag", "p99 webhook-to-record lag a full-stream rate must keep", func(o *bench.Options) *time.Duration { return &o.Stream.MaxLag }},
			{"webhook-delay", "the sandbox's delay between a message's webhooks", func(o *bench.Options) *time.Duration { return &o.Stream.WebhookDelay }},
			{"warmup", "how long each full-stream run goes before it is measured", func(o *bench.Options) *time.Duration { return &o.Stream.Warmup }},
		},
		floats: []benchFlag[float64]{
			{"stream-target", "full-stream rate, in messages/s, held first", func(o *bench.Options) *float64 { return &o.Stream.Target }},
			{"probe-step", "factor between probed full-stream rates", func(o *bench.Options) *float64 { return &o.Stream.Step }},
		},
	}
}

// register binds every size flag to o, with o's values as defaults.
func (b benchSizes) register(fs *pflag.FlagSet, o *bench.Options) {
	for _, f := range b.ints {
		fs.IntVar(f.field(o), f.name, *f.field(o), f.usage)
	}
	for _, f := range b.durations {
		fs.DurationVar(f.field(o), f.name, *f.field(o), f.usage)
	}
	for _, f := range b.floats {
		fs.Float64Var(f.field(o), f.name, *f.field(o), f.usage)
	}
}

// takeUnset copies from into o for every size flag not on the command line.
func (b benchSizes) takeUnset(fs *pflag.FlagSet, o *bench.Options, from bench.Options) {
	for _, f := range b.ints {
		if !fs.Changed(f.name) {
			*f.field(o) = *f.field(&from)
		}
	}
	for _, f := range b.durations {
		if !fs.Changed(f.name) {
			*f.field(o) = *f.field(&from)
		}
	}
	for _, f := range b.floats {
		if !fs.Changed(f.name) {
			*f.field(o) = *f.field(&from)
		}
	}
}

// benchFlags are chatq bench's flags other than the sizes.
type benchFlags struct {
	only, jsonPath, redisBin, chatq, cpuProfile, memProfile, logLevel string
	quick                                                             bool
}

func (p *program) benchCommand() *cobra.Command {
	var f benchFlags
	opts := bench.DefaultOptions()
	sizes := newBenchSizes()
	cmd := command("bench [flags]", "measure chatq against bare asynq on this machine",
		"Measures chatq on this machine: starts a private redis-server and, from this binary, \"chatq sandbox\"\n"+
			"(no latency, no rate limit), \"chatq api\" and \"chatq worker\" as processes, as deployed, and prints\n"+
			"each figure side by side with bare asynq and a minimal BullMQ sender on the same Redis. The other\n"+
			"measurements run chatq's parts in this process. Measurements: "+strings.Join(bench.Measurements, ", ")+".\n"+
			"The full run takes about twenty minutes on two cores; --quick takes a few.",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			if f.quick {
				sizes.takeUnset(cmd.Flags(), &opts, bench.QuickOptions())
			}
			return p.bench(cmd.Context(), opts, f)
		})
	fs := cmd.Flags()
	sizes.register(fs, &opts)
	fs.StringVar(&f.only, "only", "", "comma-separated measurements to run (default all)")
	fs.BoolVar(&f.quick, "quick", false, "smaller sizes for every size flag not given")
	fs.StringVar(&f.jsonPath, "json", "", "also write every figure and raw result as JSON to this file")
	fs.StringVar(&f.redisBin, "redis-server", "redis-server", "the redis-server binary to start")
	fs.StringVar(&f.chatq, "chatq", "", "the chatq binary started as sandbox, api and worker (default this one)")
	fs.StringVar(&opts.BullMQDir, "bullmq-dir", opts.BullMQDir, "directory of the BullMQ comparison script, its packages installed by npm ci (make bench does)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&f.memProfile, "memprofile", "", "write a heap profile at the end of the run to this file")
	fs.StringVar(&opts.WorkerProfile, "worker-profile", "", "write a CPU profile of the deployed worker's send phase to this file (CHATQ_PPROF)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "level of the components' logs, written to stderr")
	fs.Func("stream-priority", "priority of the full stream's messages: bulk (default) or transactional", func(v string) error {
		opts.Stream.Priority = enqueue.Priority(v)
		return nil
	})
	cmd.AddCommand(p.benchSendersCommand())
	_ = cmd.RegisterFlagCompletionFunc("only", choices(bench.Measurements...))
	_ = cmd.RegisterFlagCompletionFunc("stream-priority", choices(string(enqueue.Bulk), string(enqueue.Transactional)))
	return cmd
}

func (p *program) bench(ctx context.Context, opts bench.Options, f benchFlags) error {
	if f.only != "" {
		for _, m := range strings.Split(f.only, ",") {
			opts.Only = append(opts.Only, strings.TrimSpace(m))
		}
	}
	if err := opts.Validate(); err != nil {
		return usageError("bench: " + err.Error())
	}
	// The deployed measurements start this very binary as chatq's
	// processes, unless told another.
	opts.Chatq = f.chatq
	if opts.Chatq == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find the chatq binary: %w", err)
		}
		opts.Chatq = self
	}
	if _, err := os.Stat(opts.Chatq); err != nil {
		return usageError("bench: --chatq: " + err.Error())
	}
	level, err := zapcore.ParseLevel(f.logLevel)
	if err != nil {
		return usageError("bench: --log-level: " + err.Error())
	}
	zc := zap.NewDevelopmentConfig()
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.DisableStacktrace = true
	log, err := zc.Build()
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer func() { _ = log.Sync() }()

	redis, err := bench.StartRedis(f.redisBin)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if err := redis.Close(); err != nil {
			log.Warn("removing the private Redis's directory", zap.Error(err))
		}
	}()
	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep, err := bench.Run(ctx, &bench.Env{Redis: redis, Log: log, Progress: p.stderr}, opts)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	fmt.Fprintln(p.stdout)
	if err := rep.WriteTable(p.stdout); err != nil {
		return err
	}
	if f.jsonPath != "" {
		if err := rep.WriteJSON(f.jsonPath); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if f.memProfile != "" {
		if err := writeHeapProfile(f.memProfile); err != nil {
			return err
		}
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("bench: %d measurements failed", len(rep.Failures))
	}
	return nil
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: --memprofile: %w", err)
	}
	runtime.GC()
	err = pprof.WriteHeapProfile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bench: --memprofile: %w", err)
	}
	return nil
}

// benchSendersCommand is "chatq bench senders": fairness between the
// senders of two tenants, chatq as deployed (make bench-senders).
func (p *program) benchSendersCommand() *cobra.Command {
	o := bench.DefaultSendersOptions()
	var redisBin, chatq string
	cmd := command("senders [flags]", "measure fairness between two tenants' senders",
		"Starts a private redis-server and, from this binary, \"chatq sandbox\", \"chatq api\" and \"chatq worker\"\n"+
			"as processes, with two stored senders of two tenants at --rate each. Tenant A queues --backlog bulk\n"+
			"messages, then tenant B --run bulk messages and a transactional one every --every while they go.\n"+
			"Prints B's rate over its run against its limit, A's meanwhile, and the p50/p99 of B's\n"+
			"transactional messages from enqueue to acceptance (the sandbox's own timestamps).",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			o.Chatq = chatq
			if o.Chatq == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("bench senders: find the chatq binary: %w", err)
				}
				o.Chatq = self
			}
			redis, err := bench.StartRedis(redisBin)
			if err != nil {
				return fmt.Errorf("bench senders: %w", err)
			}
			defer func() { _ = redis.Close() }()
			res, err := bench.Senders(cmd.Context(), &bench.Env{Redis: redis, Log: zap.NewNop(), Progress: p.stderr}, o)
			if err != nil {
				return fmt.Errorf("bench senders: %w", err)
			}
			return bench.WriteSenders(p.stdout, res)
		})
	fs := cmd.Flags()
	fs.Float64Var(&o.Rate, "rate", o.Rate, "each sender's rate_per_second")
	fs.IntVar(&o.Backlog, "backlog", o.Backlog, "tenant A's bulk messages, queued first")
	fs.IntVar(&o.Run, "run", o.Run, "tenant B's bulk messages")
	fs.DurationVar(&o.TransactionalEvery, "every", o.TransactionalEvery, "how often B sends a transactional message during its run")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "the worker's CHATQ_CONCURRENCY")
	fs.StringVar(&redisBin, "redis-server", "redis-server", "the redis-server binary to start")
	fs.StringVar(&chatq, "chatq", "", "the chatq binary started as sandbox, api and worker (default this one)")
	return cmd
}
