package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/worker"
)

// loadConfig reads the environment and checks that the variables a command
// needs are set.
func loadConfig(base config.Config, needs ...string) (config.Config, error) {
	cfg, err := config.Load(base)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Need(needs...)
}

func newLogger(cfg config.Config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("CHATQ_LOG_LEVEL: %w", err)
	}
	zc := zap.NewProductionConfig()
	if cfg.LogFormat == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		zc.EncoderConfig.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		zc.DisableStacktrace = true
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		return nil, err
	}
	// go-redis logs through a process-wide logger of its own, in plain
	// text on stderr; its lines (a Sentinel failover, a failed dial) go to
	// chatq's log instead.
	redis.SetLogger(redisLogger{log.Named("redis")})
	return log, nil
}

// redisLogger is go-redis's logger, writing to a zap logger. go-redis
// logs only what goes wrong or changes (dial failures, bad connections, a
// new master), so its lines are warnings.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

// connect loads the configuration, requiring a Redis setting and needs,
// and connects to Redis. The caller closes the client.
func connect(ctx context.Context, needs ...string) (config.Config, redis.UniversalClient, error) {
	cfg, err := loadConfig(config.Default(), append([]string{"CHATQ_REDIS_URL"}, needs...)...)
	if err != nil {
		return cfg, nil, err
	}
	rdb, err := openRedis(ctx, cfg)
	return cfg, rdb, err
}

// openRedis connects to the Redis of the configuration (CHATQ_REDIS_URL, a
// cluster or a Sentinel-managed master) and checks that it answers.
func openRedis(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	// Every send in flight uses a connection, and asynq needs its own (per
	// node, on a cluster).
	pool := cfg.Concurrency + 32
	var rdb redis.UniversalClient
	var where string
	switch {
	case len(cfg.RedisClusterAddrs) > 0:
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:     cfg.RedisClusterAddrs,
			Username:  cfg.RedisUsername,
			Password:  cfg.RedisPassword,
			TLSConfig: redisTLS(cfg),
			PoolSize:  pool,
		})
		where = "redis cluster at " + strings.Join(cfg.RedisClusterAddrs, ",")
	case len(cfg.RedisSentinelAddrs) > 0:
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       cfg.RedisSentinelMaster,
			SentinelAddrs:    cfg.RedisSentinelAddrs,
			SentinelPassword: cfg.RedisSentinelPassword,
			Username:         cfg.RedisUsername,
			Password:         cfg.RedisPassword,
			TLSConfig:        redisTLS(cfg),
			PoolSize:         pool,
		})
		where = fmt.Sprintf("redis master %q of the sentinels at %s", cfg.RedisSentinelMaster, strings.Join(cfg.RedisSentinelAddrs, ","))
	default:
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("CHATQ_REDIS_URL: %w", err)
		}
		opt.PoolSize = max(opt.PoolSize, pool)
		rdb = redis.NewClient(opt)
		where = "redis at " + opt.Addr
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return rdb, nil
}

// redisTLS is the TLS configuration of CHATQ_REDIS_TLS, nil without it.
func redisTLS(cfg config.Config) *tls.Config {
	if !cfg.RedisTLS {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// asynqRedis is the same Redis as openRedis's, for the asynq dashboard,
// which opens its own connections.
func asynqRedis(cfg config.Config) (asynq.RedisConnOpt, error) {
	switch {
	case len(cfg.RedisClusterAddrs) > 0:
		return asynq.RedisClusterClientOpt{
			Addrs:     cfg.RedisClusterAddrs,
			Username:  cfg.RedisUsername,
			Password:  cfg.RedisPassword,
			TLSConfig: redisTLS(cfg),
		}, nil
	case len(cfg.RedisSentinelAddrs) > 0:
		return asynq.RedisFailoverClientOpt{
			MasterName:       cfg.RedisSentinelMaster,
			SentinelAddrs:    cfg.RedisSentinelAddrs,
			SentinelPassword: cfg.RedisSentinelPassword,
			Username:         cfg.RedisUsername,
			Password:         cfg.RedisPassword,
			TLSConfig:        redisTLS(cfg),
		}, nil
	}
	opt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("CHATQ_REDIS_URL: %w", err)
	}
	return opt, nil
}

func caClient(cfg config.Config) *chatarchitect.Client {
	return chatarchitect.New(chatarchitect.Config{
		BaseURL: cfg.CABaseURL, AppID: cfg.CAAppID, AppSecret: cfg.CAAppSecret,
		Source: cfg.CASource, Timeout: cfg.CATimeout,
	}, nil)
}

func enqueueClient(rdb redis.UniversalClient, cfg config.Config) *enqueue.Client {
	return enqueueClientWith(rdb, cfg, newChecker(rdb, cfg, zap.NewNop()))
}

// enqueueClientWith returns an enqueue client that checks messages against
// checker's conversation policy.
func enqueueClientWith(rdb redis.UniversalClient, cfg config.Config, checker *policy.Checker) *enqueue.Client {
	maxRetry := cfg.RetryMax
	if maxRetry == 0 {
		maxRetry = -1
	}
	return enqueue.NewClient(rdb, enqueue.Config{MaxRetry: maxRetry, TTL: cfg.RecordTTL, Policy: enqueue.CheckerPolicy(checker), AuthTTL: cfg.AuthTTL,
		BulkShards: cfg.BulkShards, WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout})
}

// newWorker returns a worker of cfg that counts into m (nil counts
// nothing).
func newWorker(rdb redis.UniversalClient, cfg config.Config, m *metrics.Metrics, log *zap.Logger) (*worker.Worker, error) {
	weights, err := cfg.Weights()
	if err != nil {
		return nil, fmt.Errorf("CHATQ_QUEUE_WEIGHTS: %w", err)
	}
	conv, err := conversation(rdb, cfg, m, log)
	if err != nil {
		return nil, err
	}
	return worker.New(rdb, worker.Config{
		Conversation:    conv,
		Flow:            flowConfig(cfg, conv),
		Concurrency:     cfg.Concurrency,
		Queues:          weights,
		BulkShards:      cfg.BulkShards,
		ShutdownTimeout: cfg.ShutdownTimeout,
		RecordTTL:       cfg.RecordTTL,
		Retry: worker.Policy{
			MaxRetry: cfg.RetryMax, BaseDelay: cfg.RetryBaseDelay,
			MaxDelay: cfg.RetryMaxDelay, Jitter: cfg.RetryJitter,
		},
		// asynq's polling: README's Performance section has its costs.
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		Metrics:                  m,
	}, caClient(cfg), log.Named("worker")), nil
}

// serve runs an HTTP server on ln until ctx ends, then shuts it down.
func serve(ctx context.Context, ln net.Listener, h http.Handler, log *zap.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// randomSecret returns a fresh random token for development use.
func randomSecret(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// httpURL turns a listener's address into a URL a local client can use.
func httpURL(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(tcp.Port)))
}
