package main

import (
	"context"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/worker"
)

// flowConfig is a worker's flow control from the environment. The
// conversation policy, when there is one, exempts recipients inside their
// 24h window from the daily cap.
func flowConfig(cfg config.Config, conv *worker.Conversation) worker.FlowConfig {
	fc := worker.FlowConfig{Limits: ratelimit.Config{
		Sender:          cfg.CASource,
		Rate:            cfg.RatePerSecond,
		Burst:           cfg.RateBurst,
		MaxRetryAfter:   cfg.MaxRetryAfter,
		PairInterval:    cfg.PairInterval,
		PairBurst:       cfg.PairBurst,
		DailyRecipients: cfg.DailyRecipientLimit,
	}}
	// Set only when there is one: a nil *policy.Checker in the interface
	// would not be a nil Window.
	if conv != nil && conv.Policy != nil {
		fc.Window = conv.Policy
	}
	return fc
}

func (p *program) pauseCommand() *cobra.Command {
	var reason string
	cmd := command("pause [--reason TEXT]", "stop sending for every worker (the circuit breaker, by hand)",
		"Stops sending for every worker: opens the circuit breaker and pauses the transactional\n"+
			"and bulk queues. Messages are still accepted, and wait. Only chatq resume starts sending\nagain. Prints the circuit breaker's state. Needs CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.pause(cmd.Context(), reason) })
	cmd.Flags().StringVar(&reason, "reason", "paused by an operator", "why, as /readyz and the logs show it")
	return cmd
}

func (p *program) pause(ctx context.Context, reason string) error {
	return p.circuit(ctx, func(c *worker.Circuit) error { return c.Pause(ctx, reason) })
}

func (p *program) resumeCommand() *cobra.Command {
	return command("resume", "start sending again after a pause or an account failure",
		"Restarts sending for every worker: closes the circuit breaker, whether an operator\n"+
			"or an account-level refusal from ChatArchitect opened it, unpauses the transactional\nand bulk queues, and lifts every sender's throttle (a 429's Retry-After and the lowered\n"+
			"rate). Prints the circuit breaker's state. Needs CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.resume(cmd.Context()) })
}

func (p *program) resume(ctx context.Context) error {
	return p.circuit(ctx, func(c *worker.Circuit) error {
		_, err := c.Resume(ctx)
		return err
	})
}

// circuit runs change on the circuit breaker and prints its state after.
func (p *program) circuit(ctx context.Context, change func(*worker.Circuit) error) error {
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	c := newCircuit(rdb, log)
	if err := change(c); err != nil {
		return err
	}
	st, err := c.State(ctx)
	if err != nil {
		return err
	}
	return p.printJSON(st)
}

func newCircuit(rdb redis.UniversalClient, log *zap.Logger) *worker.Circuit {
	return worker.NewCircuit(rdb, log.Named("circuit"))
}
