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
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

func (p *program) api(ctx context.Context, args []string) error {
	fs := p.flags("api", "api\n\nServes the HTTP API and the ChatArchitect webhook receiver on CHATQ_HTTP_ADDR.\nNeeds CHATQ_REDIS_URL, CHATQ_API_KEYS and CHATQ_WEBHOOK_SECRET.")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, rdb, err := connect(ctx, "CHATQ_API_KEYS", "CHATQ_WEBHOOK_SECRET")
	if err != nil {
		return err
	}
	defer rdb.Close()
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
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
	connOpt, err := asynqRedis(cfg)
	if err != nil {
		return nil, nil, err
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
	reg, err := newRegistry(rdb, cfg, log)
	if err != nil {
		release()
		return nil, nil, err
	}
	srv, err := api.New(api.Config{APIKeys: cfg.APIKeys, WebhookSecret: cfg.WebhookSecret, Dashboard: dashboard, Metrics: m,
		Policy: checker, Inbound: inboundForwarder(rdb, cfg), Circuit: newCircuit(rdb, log),
		Senders: reg, Keys: tenants.NewKeys(rdb), Upstream: chatarchitect.Config{BaseURL: cfg.CABaseURL, Timeout: cfg.CATimeout}},
		client, store.New(rdb, store.Config{TTL: cfg.RecordTTL, Notifier: callbackNotifier(rdb, log)}), log.Named("api"))
	if err != nil {
		reg.Stop()
		release()
		return nil, nil, err
	}
	return srv, func() { reg.Stop(); release() }, nil
}

func (p *program) announce(addrs map[string]string) {
	if p.ready != nil {
		p.ready(addrs)
	}
}

func (p *program) worker(ctx context.Context, args []string) error {
	fs := p.flags("worker", "worker\n\nSends queued messages to ChatArchitect. Run any number, on any number of machines.\nServes its metrics at /metrics on CHATQ_METRICS_ADDR (:9091; empty turns it off).\nNeeds CHATQ_REDIS_URL, CHATQ_CA_APP_ID and CHATQ_CA_APP_SECRET.")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, rdb, err := connect(ctx, "CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET")
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := checkSecretsKey(rdb, cfg); err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// The worker's own metrics. The queue sizes are the API's to report:
	// every worker reporting them would count them as many times.
	m := metrics.New(nil)
	addrs := map[string]string{}
	served := make(chan error, 1)
	if cfg.MetricsAddr == "" {
		served <- nil
	} else {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("CHATQ_METRICS_ADDR: %w", err)
		}
		addrs["metrics"] = httpURL(ln.Addr())
		go func() { served <- serve(ctx, ln, metricsHandler(m), log.Named("metrics")) }()
	}
	w, err := newWorker(rdb, cfg, m, log)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	log.Info("worker started", zap.Int("concurrency", cfg.Concurrency), zap.String("upstream", cfg.CABaseURL), zap.String("metrics", addrs["metrics"]))
	p.announce(addrs)
	<-ctx.Done()
	log.Info("worker stopping: finishing sends on the wire", zap.Duration("timeout", cfg.ShutdownTimeout))
	w.Shutdown()
	if err := <-served; err != nil {
		log.Warn("metrics endpoint", zap.Error(err))
	}
	return nil
}

// metricsHandler serves a worker's /metrics, and /healthz for its
// orchestrator.
func metricsHandler(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return mux
}
