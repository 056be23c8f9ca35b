package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/console"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/stats"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

func (p *program) apiCommand() *cobra.Command {
	return command("api", "HTTP API, webhook receiver",
		"Serves the HTTP API and the ChatArchitect webhook receiver on CHATQ_HTTP_ADDR.\nNeeds CHATQ_REDIS_URL, CHATQ_API_KEYS and CHATQ_WEBHOOK_SECRET.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.api(cmd.Context()) })
}

func (p *program) api(ctx context.Context) error {
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
	counter := startCounter(rdb, log)
	defer stopCounter(counter)
	h, closeAPI, err := apiHandler(rdb, cfg, metrics.New(inspector), counter, log)
	if err != nil {
		return err
	}
	defer closeAPI()
	log.Info("api listening", zap.String("addr", ln.Addr().String()))
	p.announce(map[string]string{"api": httpURL(ln.Addr())})
	return serve(ctx, ln, h, log.Named("http"))
}

// waitCounts reads the messages waiting, by sender and reason, for the
// chatq_messages_waiting gauge: those of every sender, and those of
// records that name none ("default"). The bulk messages in a sender's
// lane that may go now count under the reason its state gives them
// (api.LaneReasons), as GET /v1/messages/{id} shows them.
func waitCounts(st *store.Store, reg *senders.Registry, states *ratelimit.States) metrics.WaitCounts {
	return func(ctx context.Context) (map[string]map[string]int64, error) {
		numbers := []string{""}
		for _, s := range reg.All() {
			if s.Number != "" {
				numbers = append(numbers, s.Number)
			}
		}
		counts, err := st.WaitingCounts(ctx, numbers)
		if err != nil {
			return nil, err
		}
		out := make(map[string]map[string]int64, len(counts))
		for number, byReason := range counts {
			m := make(map[string]int64, len(byReason))
			for r, n := range byReason {
				m[string(r)] = n
			}
			out[store.LaneOf(number)] = m
		}
		lanes, err := st.Lanes(ctx)
		if err != nil {
			return nil, err
		}
		_, due, err := st.LaneSizes(ctx, lanes, time.Now())
		if err != nil {
			return nil, err
		}
		var held []string
		for lane, n := range due {
			if n > 0 {
				held = append(held, store.SenderOfLane(lane))
			}
		}
		reasons, err := api.LaneReasons(ctx, reg, states, held)
		if err != nil {
			return nil, err
		}
		for _, number := range held {
			lane := store.LaneOf(number)
			if out[lane] == nil {
				out[lane] = map[string]int64{}
			}
			out[lane][string(reasons[number])] += due[lane]
		}
		return out, nil
	}
}

// laneSizes reads the size of every sender's lane for the
// chatq_lane_messages gauge.
func laneSizes(st *store.Store) metrics.LaneSizes {
	return func(ctx context.Context) (map[string]int64, error) {
		lanes, err := st.Lanes(ctx)
		if err != nil {
			return nil, err
		}
		size, _, err := st.LaneSizes(ctx, lanes, time.Now())
		return size, err
	}
}

// apiHandler builds the API's handler, with the asynq dashboard at
// /monitoring/ and the console at /console/; the returned func releases
// it. The status changes its webhooks and messages make are counted into
// counter.
func apiHandler(rdb redis.UniversalClient, cfg config.Config, m *metrics.Metrics, counter *stats.Counter, log *zap.Logger) (http.Handler, func(), error) {
	connOpt, err := asynqRedis(cfg)
	if err != nil {
		return nil, nil, err
	}
	consoleHandler, err := console.Handler()
	if err != nil {
		return nil, nil, err
	}
	dashboard := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: connOpt, ReadOnly: cfg.DashboardReadonly})
	reg, err := newRegistry(rdb, cfg, log)
	if err != nil {
		_ = dashboard.Close()
		return nil, nil, err
	}
	checker := sendersChecker(rdb, cfg, reg, log.Named("policy"))
	client := enqueueClientWith(rdb, cfg, checker, counter)
	stopRefresh := runTemplateRefresh(checker)
	release := func() {
		stopRefresh()
		_ = client.Close()
		_ = dashboard.Close()
	}
	st := store.New(rdb, store.Config{TTL: cfg.RecordTTL, Notifier: callbackNotifier(rdb, log), Counter: counter})
	m.WatchWaiting(waitCounts(st, reg, ratelimit.NewStates(rdb, senders.Normalize(cfg.CASource))))
	m.WatchLanes(laneSizes(st))
	srv, err := api.New(api.Config{APIKeys: cfg.APIKeys, WebhookSecret: cfg.WebhookSecret, Dashboard: dashboard, Metrics: m,
		Policy: checker, Inbound: inboundForwarder(rdb, cfg), Relay: callback.NewRelay(rdb, asynq.NewClientFromRedisClient(rdb), 0),
		AllowPrivateWebhooks: cfg.CallbackAllowPrivate, Circuit: newCircuit(rdb, log),
		Console: consoleHandler, Senders: reg, SenderStates: ratelimit.NewStates(rdb, senders.Normalize(cfg.CASource)), Keys: tenants.NewKeys(rdb), Upstream: chatarchitect.Config{BaseURL: cfg.CABaseURL, Timeout: cfg.CATimeout}},
		client, st, log.Named("api"))
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

func (p *program) workerCommand() *cobra.Command {
	return command("worker", "send queued messages to ChatArchitect",
		"Sends queued messages to ChatArchitect. Run any number, on any number of machines.\nServes its metrics at /metrics on CHATQ_METRICS_ADDR (:9091; empty turns it off).\nNeeds CHATQ_REDIS_URL, CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE (the sender\nnumber: the key of the limits every worker shares, and the destination of the circuit\nbreaker's probe);\nwith CHATQ_SECRETS_KEY it sends from every stored sender too, and the CHATQ_CA_ variables\nare needed only for a sender of tenant default.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.worker(cmd.Context()) })
}

func (p *program) worker(ctx context.Context) error {
	cfg, err := loadConfig(config.Default(), "CHATQ_REDIS_URL")
	if err != nil {
		return err
	}
	if cfg.SecretsKey == "" {
		if err := cfg.Need("CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET", "CHATQ_CA_SOURCE"); err != nil {
			return fmt.Errorf("%w (without CHATQ_SECRETS_KEY a worker sends from the sender of the CHATQ_CA_ variables alone)", err)
		}
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	reg, err := newRegistry(rdb, cfg, log)
	if err != nil {
		return err
	}
	defer reg.Stop()
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
		go func() { served <- serve(ctx, ln, metricsHandler(m, cfg.Pprof), log.Named("metrics")) }()
	}
	counter := startCounter(rdb, log)
	defer stopCounter(counter)
	w, err := newWorker(rdb, cfg, reg, m, counter, log)
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
// orchestrator; with profiles, Go's profiles at /debug/pprof/ too.
func metricsHandler(m *metrics.Metrics, profiles bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	if profiles {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	return mux
}

// startCounter starts the count of status changes per minute that the
// console's overview shows (internal/stats).
func startCounter(rdb redis.UniversalClient, log *zap.Logger) *stats.Counter {
	c := stats.New(rdb, log.Named("stats"))
	c.Start()
	return c
}

// stopCounter writes the counts not yet written, within a few seconds.
func stopCounter(c *stats.Counter) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c.Stop(ctx)
}
