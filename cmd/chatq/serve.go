package main

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
)

func (p *program) api(ctx context.Context, args []string) error {
	fs := p.flags("api", "api\n\nServes the HTTP API and the ChatArchitect webhook receiver on CHATQ_HTTP_ADDR.\nNeeds CHATQ_REDIS_URL, CHATQ_API_KEYS and CHATQ_WEBHOOK_SECRET.")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(config.Default(), "CHATQ_REDIS_URL", "CHATQ_API_KEYS", "CHATQ_WEBHOOK_SECRET")
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("CHATQ_HTTP_ADDR: %w", err)
	}
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	h, closeAPI, err := apiHandler(rdb, cfg, metrics.New(inspector), log)
	if err != nil {
		return err
	}
	defer closeAPI()
	log.Info("api listening", zap.String("addr", ln.Addr().String()))
	p.announce(map[string]string{"api": httpURL(ln.Addr())})
	return serve(ctx, ln, h, log.Named("http"))
}

// apiHandler builds the API's handler, with the asynq dashboard at
// /monitoring/; the returned func releases it.
func apiHandler(rdb redis.UniversalClient, cfg config.Config, m *metrics.Metrics, log *zap.Logger) (http.Handler, func(), error) {
	connOpt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("CHATQ_REDIS_URL: %w", err)
	}
	dashboard := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: connOpt, ReadOnly: cfg.DashboardReadonly})
	checker := newChecker(rdb, cfg, log.Named("policy"))
	client := enqueueClientWith(rdb, cfg, checker)
	stopRefresh := runTemplateRefresh(checker)
	release := func() {
		stopRefresh()
		_ = client.Close()
		_ = dashboard.Close()
	}
	srv, err := api.New(api.Config{APIKeys: cfg.APIKeys, WebhookSecret: cfg.WebhookSecret, Dashboard: dashboard, Metrics: m,
		Policy: checker, Inbound: inboundForwarder(rdb, cfg), Circuit: newCircuit(rdb, log)},
		client, store.New(rdb, store.Config{TTL: cfg.RecordTTL, Notifier: callbackNotifier(rdb, log)}), log.Named("api"))
	if err != nil {
		release()
		return nil, nil, err
	}
	return srv, release, nil
}

func (p *program) announce(addrs map[string]string) {
	if p.ready != nil {
		p.ready(addrs)
	}
}

func (p *program) worker(ctx context.Context, args []string) error {
	fs := p.flags("worker", "worker\n\nSends queued messages to ChatArchitect. Run any number, on any number of machines.\nNeeds CHATQ_REDIS_URL, CHATQ_CA_APP_ID and CHATQ_CA_APP_SECRET.")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(config.Default(), "CHATQ_REDIS_URL", "CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET")
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	w, err := newWorker(rdb, cfg, log)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	log.Info("worker started", zap.Int("concurrency", cfg.Concurrency), zap.String("upstream", cfg.CABaseURL))
	p.announce(map[string]string{})
	<-ctx.Done()
	log.Info("worker stopping: finishing sends on the wire", zap.Duration("timeout", cfg.ShutdownTimeout))
	w.Shutdown()
	return nil
}
