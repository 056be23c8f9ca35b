package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
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
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/stats"
	"github.com/chatq/chatq/internal/store"
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
	if err := checkRedis(pctx, rdb, where); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return rdb, nil
}

// checkRedis refuses a Redis older than chatq needs: every node of a
// cluster, else the one server (or the Sentinel-managed master).
func checkRedis(ctx context.Context, rdb redis.UniversalClient, where string) error {
	if c, ok := rdb.(*redis.ClusterClient); ok {
		return c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return checkRedisVersion(redisVersion(ctx, node), node.Options().Addr)
		})
	}
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	at := c.Options().Addr
	if strings.HasPrefix(where, "redis master") {
		// A Sentinel client's address is a placeholder.
		at = strings.TrimPrefix(where, "redis ")
	}
	return checkRedisVersion(redisVersion(ctx, c), at)
}

// redisVersion returns the version the server reports: INFO's
// redis_version, else HELLO's version (miniredis, embedded by chatq dev,
// answers no INFO server section), "" when it reports none.
func redisVersion(ctx context.Context, c *redis.Client) string {
	if info, err := c.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				return v
			}
		}
	}
	// HELLO 3 is what go-redis says on every new connection already.
	if hello, err := c.Do(ctx, "HELLO", "3").Result(); err == nil {
		if m, ok := hello.(map[any]any); ok {
			if v, ok := m["version"].(string); ok {
				return v
			}
		}
	}
	return ""
}

// checkRedisVersion refuses a Redis older than 7.0, whose SET has no NX
// with GET (idempotency claims) and whose PEXPIRE has no GT (record lives).
// A server that reports no version is let through: only its first such
// command can tell.
func checkRedisVersion(version, at string) error {
	if version == "" {
		return nil
	}
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	maj, err1 := strconv.Atoi(major)
	_, err2 := strconv.Atoi(cmp.Or(minor, "0"))
	if err1 != nil || err2 != nil || maj < 7 {
		return &redisVersionError{version: version, at: at, unreadable: err1 != nil || err2 != nil}
	}
	return nil
}

// redisVersionError is a Redis that chatq does not run on. Its message is
// the one line chatq stops with, which begins with Redis's name.
type redisVersionError struct {
	version, at string
	unreadable  bool
}

func (e *redisVersionError) Error() string {
	if e.unreadable {
		return fmt.Sprintf("Redis at %s reports version %q, which chatq cannot read: chatq needs Redis 7.0 or later", e.at, e.version)
	}
	return fmt.Sprintf("Redis %s at %s is too old: chatq needs Redis 7.0 or later", e.version, e.at)
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

// newRegistry starts the sender registry of cfg: the stored senders, whose
// secrets CHATQ_SECRETS_KEY opens, and the sender of the CHATQ_CA_
// variables. It fails, naming CHATQ_SECRETS_KEY, when Redis holds senders
// the process cannot open. The caller stops it.
func newRegistry(rdb redis.UniversalClient, cfg config.Config, log *zap.Logger) (*senders.Registry, error) {
	key, err := cfg.SecretsKeyBytes()
	if err != nil {
		return nil, fmt.Errorf("CHATQ_SECRETS_KEY: %w", err)
	}
	rc := senders.Config{
		Defaults: senders.Limits{RatePerSecond: cfg.RatePerSecond, RateBurst: cfg.RateBurst, PairInterval: cfg.PairInterval,
			PairBurst: cfg.PairBurst, DailyRecipientLimit: cfg.DailyRecipientLimit},
		Log: log.Named("senders"),
	}
	if key != nil {
		if rc.Cipher, err = senders.NewCipher(key); err != nil {
			return nil, fmt.Errorf("CHATQ_SECRETS_KEY: %w", err)
		}
	}
	if cfg.CASource != "" {
		rc.Env = &senders.Sender{Number: cfg.CASource, AppID: cfg.CAAppID, AppSecret: cfg.CAAppSecret, WebhookSecret: cfg.WebhookSecret}
	}
	reg := senders.New(rdb, rc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Start(ctx); err != nil {
		return nil, err
	}
	return reg, nil
}

func caClient(cfg config.Config) *chatarchitect.Client {
	return chatarchitect.New(chatarchitect.Config{
		BaseURL: cfg.CABaseURL, AppID: cfg.CAAppID, AppSecret: cfg.CAAppSecret,
		Source: cfg.CASource, Timeout: cfg.CATimeout,
	}, nil)
}

func enqueueClient(rdb redis.UniversalClient, cfg config.Config) *enqueue.Client {
	return enqueueClientWith(rdb, cfg, newChecker(rdb, cfg, zap.NewNop()), nil)
}

// enqueueClientWith returns an enqueue client that checks messages against
// checker's conversation policy and counts the records it creates into
// counter (nil counts nothing).
func enqueueClientWith(rdb redis.UniversalClient, cfg config.Config, checker *policy.Checker, counter store.Counter) *enqueue.Client {
	maxRetry := cfg.RetryMax
	if maxRetry == 0 {
		maxRetry = -1
	}
	return enqueue.NewClient(rdb, enqueue.Config{MaxRetry: maxRetry, TTL: cfg.RecordTTL, Policy: enqueue.CheckerPolicy(checker), AuthTTL: cfg.AuthTTL,
		BulkShards: cfg.BulkShards, WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout, Counter: counter})
}

// newWorker returns a worker of cfg that counts into m and counter (nil
// counts nothing). With CHATQ_SECRETS_KEY it sends from every sender of
// reg; without, from the environment's sender alone, as before senders.
func newWorker(rdb redis.UniversalClient, cfg config.Config, reg *senders.Registry, m *metrics.Metrics, counter *stats.Counter, log *zap.Logger) (*worker.Worker, error) {
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
		Counter:                  counter,
		Senders:                  workerSenders(cfg, reg),
	}, caClient(cfg), log.Named("worker")), nil
}

// workerSenders is the registry a worker sends from, nil when the
// deployment stores no senders (no CHATQ_SECRETS_KEY).
func workerSenders(cfg config.Config, reg *senders.Registry) *worker.Senders {
	if reg == nil || !reg.Stored() {
		return nil
	}
	return &worker.Senders{Registry: reg, Upstream: chatarchitect.Config{BaseURL: cfg.CABaseURL, Timeout: cfg.CATimeout}}
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
