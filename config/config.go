// Package config reads chatq's configuration from CHATQ_ environment
// variables. Only package main uses it; every other package takes plain
// values in its own config struct.
package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap/zapcore"
)

// Prefix is the prefix of every chatq environment variable.
const Prefix = "CHATQ"

// Config is every setting chatq reads. The defaults are in Default; a field
// whose default depends on another is filled by Load.
//
// Variable names come from the field names split into words (RedisURL is
// CHATQ_REDIS_URL, Sandbox.Addr is CHATQ_SANDBOX_ADDR). They are not spelled
// out in envconfig:"..." tags because envconfig then also reads the name
// without the prefix (REDIS_URL, LOG_LEVEL), which an unrelated program's
// environment may well set.
type Config struct {
	// Redis is one of RedisURL (a single server), RedisClusterAddrs (Redis
	// Cluster seed nodes) or RedisSentinelAddrs with RedisSentinelMaster
	// (a Sentinel-managed master); Validate refuses more than one.
	RedisURL            string   `split_words:"true"`
	RedisClusterAddrs   []string `split_words:"true"`
	RedisSentinelAddrs  []string `split_words:"true"`
	RedisSentinelMaster string   `split_words:"true"`
	// RedisUsername and RedisPassword authenticate to the cluster nodes or
	// to the Sentinel-managed servers; RedisURL carries its own.
	RedisUsername string `split_words:"true"`
	RedisPassword string `split_words:"true"`
	// RedisSentinelPassword authenticates to the sentinels themselves.
	RedisSentinelPassword string `split_words:"true"`
	// RedisTLS connects to the cluster nodes or the Sentinel-managed
	// servers over TLS (RedisURL says so with rediss://).
	RedisTLS bool `split_words:"true"`
	// RedisWaitReplicas, when positive, makes the producers wait (up to
	// RedisWaitTimeout) until that many replicas hold a new message before
	// they acknowledge it, so that a failover does not lose it.
	RedisWaitReplicas int           `split_words:"true"`
	RedisWaitTimeout  time.Duration `split_words:"true"`
	// BulkShards spreads the bulk queue over that many asynq queues
	// (enqueue.BulkQueues), whose hash slots spread over a Redis Cluster's
	// masters; 1 keeps the single queue "bulk".
	BulkShards int `split_words:"true"`

	HTTPAddr string `split_words:"true"`
	// APIKeys are the bearer keys of /v1/* and the dashboard's passwords.
	APIKeys       []string `split_words:"true"`
	WebhookSecret string   `split_words:"true"`
	PublicURL     string   `split_words:"true"`

	CABaseURL   string        `split_words:"true"`
	CAAppID     string        `split_words:"true"`
	CAAppSecret string        `split_words:"true"`
	CASource    string        `split_words:"true"`
	CATimeout   time.Duration `split_words:"true"`

	Concurrency int `split_words:"true"`
	// QueueWeights is "name=weight,..."; Weights() parses it.
	QueueWeights string `split_words:"true"`
	// ShutdownTimeout defaults to CATimeout + 5s.
	ShutdownTimeout time.Duration `split_words:"true"`
	// TaskCheckInterval and DelayedTaskCheckInterval are asynq's polling
	// intervals: for new work when idle, and for retries and scheduled
	// messages coming due.
	TaskCheckInterval        time.Duration `split_words:"true"`
	DelayedTaskCheckInterval time.Duration `split_words:"true"`

	RetryMax       int           `split_words:"true"`
	RetryBaseDelay time.Duration `split_words:"true"`
	RetryMaxDelay  time.Duration `split_words:"true"`
	RetryJitter    float64       `split_words:"true"`

	RatePerSecond float64 `split_words:"true"`
	// RateBurst defaults to 1: steady spacing, so that no one-second
	// window holds more than RatePerSecond messages. A larger burst lets
	// that many leave back to back after a quiet spell.
	RateBurst int `split_words:"true"`
	// MaxRetryAfter caps the upstream's Retry-After: how long one 429 may
	// hold a sender back at most.
	MaxRetryAfter       time.Duration `split_words:"true"`
	PairInterval        time.Duration `split_words:"true"`
	PairBurst           int           `split_words:"true"`
	DailyRecipientLimit int           `split_words:"true"`
	WindowPolicy        string        `split_words:"true"`

	// SecretsKey encrypts the secrets of the senders stored in Redis
	// (AES-256-GCM): 32 bytes, hex or base64. Empty keeps chatq
	// single-sender, from the CA variables alone.
	SecretsKey string `split_words:"true"`

	CallbackSecret       string `split_words:"true"`
	CallbackAllowPrivate bool   `split_words:"true"`
	InboundURL           string `split_words:"true"`

	// AuthTTL is how long after its acceptance an authentication template
	// without expires_at stays worth sending.
	AuthTTL time.Duration `split_words:"true"`
	// AllowUSMarketing lets marketing templates to +1 numbers through,
	// which WhatsApp refuses (131049) since April 2025.
	AllowUSMarketing bool `split_words:"true"`

	// DashboardReadonly shows the dashboard without its buttons.
	DashboardReadonly bool `split_words:"true"`
	// MetricsAddr is where chatq worker serves /metrics and /healthz;
	// empty turns that off. chatq api and dev serve /metrics on HTTPAddr.
	MetricsAddr string `split_words:"true"`
	// Pprof also serves Go's profiles (net/http/pprof) at /debug/pprof/
	// on a worker's MetricsAddr, which should then not be public.
	Pprof bool

	RecordTTL time.Duration `split_words:"true"`
	LogLevel  string        `split_words:"true"`
	LogFormat string        `split_words:"true"`

	Sandbox Sandbox `split_words:"true"`
}

// Sandbox holds the knobs of the ChatArchitect sandbox (CHATQ_SANDBOX_*).
// Its credentials are CAAppID and CAAppSecret, the same the client uses.
type Sandbox struct {
	Addr           string        `split_words:"true"`
	Rate           float64       `split_words:"true"`
	ErrorRatio     float64       `split_words:"true"`
	Latency        time.Duration `split_words:"true"`
	WebhookDelay   time.Duration `split_words:"true"`
	DuplicateRatio float64       `split_words:"true"`
	ReorderRatio   float64       `split_words:"true"`
}

// Default returns the configuration with every documented default.
func Default() Config {
	return Config{
		HTTPAddr:       ":8080",
		CABaseURL:      "https://api.chatarchitect.com",
		CATimeout:      10 * time.Second,
		Concurrency:    50,
		QueueWeights:   "transactional=6,bulk=1",
		RetryMax:       8,
		RetryBaseDelay: 2 * time.Second,
		RetryMaxDelay:  15 * time.Minute,
		RetryJitter:    0.2,
		RatePerSecond:  40,
		RateBurst:      1,
		MaxRetryAfter:  5 * time.Minute,
		PairInterval:   6 * time.Second,
		PairBurst:      3,
		WindowPolicy:   "learn",
		RecordTTL:      720 * time.Hour,
		AuthTTL:        10 * time.Minute,
		LogLevel:       "info",
		LogFormat:      "json",
		MetricsAddr:    ":9091",

		BulkShards: 1,
		// A replica on the same network acknowledges within a millisecond
		// or two; one that lags further than this is left behind rather
		// than slow every message (README, Scaling out).
		RedisWaitTimeout: 100 * time.Millisecond,

		// An idle worker picks a one-time code up within 10ms, for about
		// 500 Redis commands/s (README, Performance).
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: time.Second,

		Sandbox: Sandbox{
			Addr:         ":8090",
			WebhookDelay: 200 * time.Millisecond,
		},
	}
}

// Load reads the CHATQ_ environment over base (usually Default()), fills the
// derived defaults and validates the result. Its error is one line naming
// the variable.
func Load(base Config) (Config, error) {
	cfg := base
	if err := envconfig.Process(Prefix, &cfg); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return Config{}, fmt.Errorf("%s=%q: not a valid %s", pe.KeyName, pe.Value, kindName(pe.TypeName))
		}
		return Config{}, fmt.Errorf("read environment: %w", err)
	}
	cfg.fillDerived()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (c *Config) fillDerived() {
	if c.RateBurst == 0 {
		// CHATQ_RATE_BURST=0, or a base without one: steady spacing.
		c.RateBurst = 1
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = c.CATimeout + 5*time.Second
	}
	// A new slice, not c.APIKeys[:0]: that would rewrite the caller's base.
	var keys []string
	for _, k := range c.APIKeys {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	c.APIKeys = keys
	c.RedisClusterAddrs = trimList(c.RedisClusterAddrs)
	c.RedisSentinelAddrs = trimList(c.RedisSentinelAddrs)
}

// trimList drops the blanks around and between comma-separated items, into
// a new slice so that the caller's base is not rewritten.
func trimList(items []string) []string {
	var out []string
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func kindName(goType string) string {
	switch goType {
	case "time.Duration":
		return "duration (such as 500ms, 10s, 15m)"
	case "int", "int64":
		return "whole number"
	case "float64":
		return "number"
	case "bool":
		return "boolean (true or false)"
	}
	return goType
}

// Validate checks every value and names the variable of the first bad one.
func (c *Config) Validate() error {
	bad := func(name string, format string, args ...any) error {
		return fmt.Errorf("%s_%s: %s", Prefix, name, fmt.Sprintf(format, args...))
	}
	if c.RedisURL != "" {
		if _, err := url.Parse(c.RedisURL); err != nil || !(strings.HasPrefix(c.RedisURL, "redis://") || strings.HasPrefix(c.RedisURL, "rediss://")) {
			return bad("REDIS_URL", "must be a redis:// or rediss:// URL")
		}
	}
	if err := c.validateRedis(bad); err != nil {
		return err
	}
	for _, u := range []struct{ name, value string }{
		{"CA_BASE_URL", c.CABaseURL}, {"PUBLIC_URL", c.PublicURL}, {"INBOUND_URL", c.InboundURL},
	} {
		if u.value == "" {
			continue
		}
		p, err := url.Parse(u.value)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return bad(u.name, "must be an http or https URL")
		}
	}
	for _, a := range []struct{ name, value string }{
		{"HTTP_ADDR", c.HTTPAddr}, {"SANDBOX_ADDR", c.Sandbox.Addr},
	} {
		if _, _, err := net.SplitHostPort(a.value); err != nil {
			return bad(a.name, "must be host:port or :port, not %q", a.value)
		}
	}
	if _, _, err := net.SplitHostPort(c.MetricsAddr); c.MetricsAddr != "" && err != nil {
		return bad("METRICS_ADDR", "must be host:port, :port, or empty (off), not %q", c.MetricsAddr)
	}
	// strconv accepts NaN and Inf, which pass every range check below.
	for _, f := range []struct {
		name  string
		value float64
	}{
		{"RATE_PER_SECOND", c.RatePerSecond}, {"RETRY_JITTER", c.RetryJitter},
		{"SANDBOX_RATE", c.Sandbox.Rate}, {"SANDBOX_ERROR_RATIO", c.Sandbox.ErrorRatio},
		{"SANDBOX_DUPLICATE_RATIO", c.Sandbox.DuplicateRatio}, {"SANDBOX_REORDER_RATIO", c.Sandbox.ReorderRatio},
	} {
		if math.IsNaN(f.value) || math.IsInf(f.value, 0) {
			return bad(f.name, "must be a finite number")
		}
	}
	if c.CABaseURL == "" {
		return bad("CA_BASE_URL", "must not be empty")
	}
	switch {
	case c.CATimeout <= 0:
		return bad("CA_TIMEOUT", "must be positive")
	case c.Concurrency < 1:
		return bad("CONCURRENCY", "must be at least 1")
	case c.ShutdownTimeout <= 0:
		return bad("SHUTDOWN_TIMEOUT", "must be positive")
	case c.TaskCheckInterval < time.Millisecond:
		return bad("TASK_CHECK_INTERVAL", "must be at least 1ms")
	case c.DelayedTaskCheckInterval < 100*time.Millisecond:
		return bad("DELAYED_TASK_CHECK_INTERVAL", "must be at least 100ms")
	case c.RetryMax < 0:
		return bad("RETRY_MAX", "must not be negative")
	case c.RetryBaseDelay <= 0:
		return bad("RETRY_BASE_DELAY", "must be positive")
	case c.RetryMaxDelay < c.RetryBaseDelay:
		return bad("RETRY_MAX_DELAY", "must be at least CHATQ_RETRY_BASE_DELAY (%s)", c.RetryBaseDelay)
	case c.RetryJitter < 0 || c.RetryJitter >= 1:
		return bad("RETRY_JITTER", "must be from 0 up to (not including) 1")
	case c.RatePerSecond <= 0:
		return bad("RATE_PER_SECOND", "must be positive")
	case c.RateBurst < 1:
		return bad("RATE_BURST", "must be at least 1")
	case c.MaxRetryAfter < time.Second:
		return bad("MAX_RETRY_AFTER", "must be at least 1s")
	case c.PairInterval < 0:
		return bad("PAIR_INTERVAL", "must not be negative (0 turns the limit off)")
	case c.PairBurst < 1:
		return bad("PAIR_BURST", "must be at least 1")
	case c.DailyRecipientLimit < 0:
		return bad("DAILY_RECIPIENT_LIMIT", "must not be negative (0 turns the limit off)")
	case c.RecordTTL < time.Hour:
		return bad("RECORD_TTL", "must be at least 1h")
	case c.AuthTTL <= 0:
		return bad("AUTH_TTL", "must be positive, such as 10m")
	}
	switch c.WindowPolicy {
	case "learn", "strict", "off":
	default:
		return bad("WINDOW_POLICY", "must be learn, strict or off, not %q", c.WindowPolicy)
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		return bad("LOG_LEVEL", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return bad("LOG_FORMAT", "must be json or console, not %q", c.LogFormat)
	}
	if _, err := c.Weights(); err != nil {
		return bad("QUEUE_WEIGHTS", "%v", err)
	}
	if c.SecretsKey != "" {
		if _, err := c.SecretsKeyBytes(); err != nil {
			return bad("SECRETS_KEY", "%v", err)
		}
	}
	if c.CASource != "" && !isPhone(c.CASource) {
		return bad("CA_SOURCE", "must be the business's WhatsApp number (8 to 15 digits)")
	}
	s := c.Sandbox
	switch {
	case s.Rate < 0:
		return bad("SANDBOX_RATE", "must not be negative (0 turns it off)")
	case s.ErrorRatio < 0 || s.ErrorRatio > 1:
		return bad("SANDBOX_ERROR_RATIO", "must be between 0 and 1")
	case s.DuplicateRatio < 0 || s.DuplicateRatio > 1:
		return bad("SANDBOX_DUPLICATE_RATIO", "must be between 0 and 1")
	case s.ReorderRatio < 0 || s.ReorderRatio > 1:
		return bad("SANDBOX_REORDER_RATIO", "must be between 0 and 1")
	case s.Latency < 0:
		return bad("SANDBOX_LATENCY", "must not be negative")
	case s.WebhookDelay < 0:
		return bad("SANDBOX_WEBHOOK_DELAY", "must not be negative")
	}
	return nil
}

// validateRedis checks the choice of Redis: one server, a cluster or a
// Sentinel-managed master, and the settings that go with it.
func (c *Config) validateRedis(bad func(name, format string, args ...any) error) error {
	var set []string
	if c.RedisURL != "" {
		set = append(set, Prefix+"_REDIS_URL")
	}
	if len(c.RedisClusterAddrs) > 0 {
		set = append(set, Prefix+"_REDIS_CLUSTER_ADDRS")
	}
	if len(c.RedisSentinelAddrs) > 0 {
		set = append(set, Prefix+"_REDIS_SENTINEL_ADDRS")
	}
	if len(set) > 1 {
		return fmt.Errorf("%s: set only one of CHATQ_REDIS_URL, CHATQ_REDIS_CLUSTER_ADDRS and CHATQ_REDIS_SENTINEL_ADDRS, not %s", set[1], strings.Join(set, " and "))
	}
	for _, a := range []struct {
		name  string
		addrs []string
	}{{"REDIS_CLUSTER_ADDRS", c.RedisClusterAddrs}, {"REDIS_SENTINEL_ADDRS", c.RedisSentinelAddrs}} {
		for _, addr := range a.addrs {
			if strings.ContainsAny(addr, "/@") {
				// Not repeated: a URL here may hold a password.
				return bad(a.name, "must be comma-separated host:port addresses, without scheme or credentials (CHATQ_REDIS_PASSWORD holds the password)")
			}
			if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
				return bad(a.name, "must be comma-separated host:port addresses, not %q", addr)
			}
		}
	}
	switch {
	case len(c.RedisSentinelAddrs) > 0 && c.RedisSentinelMaster == "":
		return bad("REDIS_SENTINEL_MASTER", "must name the master the sentinels monitor (CHATQ_REDIS_SENTINEL_ADDRS is set)")
	case len(c.RedisSentinelAddrs) == 0 && c.RedisSentinelMaster != "":
		return bad("REDIS_SENTINEL_MASTER", "needs CHATQ_REDIS_SENTINEL_ADDRS")
	case len(c.RedisSentinelAddrs) == 0 && c.RedisSentinelPassword != "":
		return bad("REDIS_SENTINEL_PASSWORD", "needs CHATQ_REDIS_SENTINEL_ADDRS")
	}
	// A URL carries its own credentials and scheme; two places for one
	// setting would leave the reader guessing which wins.
	if c.RedisURL != "" {
		for _, v := range []struct {
			name string
			set  bool
		}{{"REDIS_USERNAME", c.RedisUsername != ""}, {"REDIS_PASSWORD", c.RedisPassword != ""}, {"REDIS_TLS", c.RedisTLS}} {
			if v.set {
				return bad(v.name, "does not apply to CHATQ_REDIS_URL: put it in the URL (redis://user:password@host:port/db, rediss:// for TLS)")
			}
		}
	}
	switch {
	case c.BulkShards < 1 || c.BulkShards > MaxBulkShards:
		return bad("BULK_SHARDS", "must be from 1 to %d", MaxBulkShards)
	case c.RedisWaitReplicas < 0:
		return bad("REDIS_WAIT_REPLICAS", "must not be negative (0 turns the wait off)")
	case c.RedisWaitReplicas > 0 && len(c.RedisClusterAddrs) > 0:
		// WAIT counts the replicas of the connection's own server, and a
		// batch's records live on every master.
		return bad("REDIS_WAIT_REPLICAS", "is not supported with CHATQ_REDIS_CLUSTER_ADDRS")
	case c.RedisWaitTimeout < time.Millisecond || c.RedisWaitTimeout > 2*time.Second:
		// WAIT runs inside a pipeline, which Redis's client gives up on
		// after its 3s read timeout.
		return bad("REDIS_WAIT_TIMEOUT", "must be from 1ms to 2s")
	}
	return nil
}

// MaxBulkShards bounds CHATQ_BULK_SHARDS: every worker polls every shard
// when idle, so shards cost Redis commands even when they are empty.
const MaxBulkShards = 64

// RedisConfigured reports whether any Redis is set: a URL, cluster nodes or
// sentinels.
func (c *Config) RedisConfigured() bool {
	return c.RedisURL != "" || len(c.RedisClusterAddrs) > 0 || len(c.RedisSentinelAddrs) > 0
}

// Weights parses QueueWeights ("transactional=6,bulk=1").
func (c *Config) Weights() (map[string]int, error) {
	w := make(map[string]int)
	for _, part := range strings.Split(c.QueueWeights, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q is not name=weight", part)
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("weight of %s must be a whole number of at least 1, not %q", name, val)
		}
		w[name] = n
	}
	for _, q := range []string{"transactional", "bulk"} {
		if _, ok := w[q]; !ok {
			return nil, fmt.Errorf("must give a weight to %s", q)
		}
	}
	return w, nil
}

// SecretsKeyBytes decodes SecretsKey: 32 bytes written as 64 hex digits or
// in base64 (standard or URL alphabet, padded or not). It returns nil, nil
// when no key is set.
func (c *Config) SecretsKeyBytes() ([]byte, error) {
	k := strings.TrimSpace(c.SecretsKey)
	if k == "" {
		return nil, nil
	}
	if b, err := hex.DecodeString(k); err == nil && len(k) == 64 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(k); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	// The value is a secret: it is not repeated.
	return nil, errors.New("must be 32 bytes written as 64 hex digits or in base64 (openssl rand -hex 32 makes one)")
}

// Need returns an error naming the first of the given variables (full
// names, such as "CHATQ_REDIS_URL") that is not set. A command calls it with
// what it needs, and nothing more.
func (c *Config) Need(names ...string) error {
	for _, name := range names {
		var set bool
		switch name {
		case "CHATQ_REDIS_URL":
			// Any of the three ways to reach Redis will do.
			if !c.RedisConfigured() {
				return fmt.Errorf("CHATQ_REDIS_URL is not set (nor CHATQ_REDIS_CLUSTER_ADDRS or CHATQ_REDIS_SENTINEL_ADDRS)")
			}
			continue
		case "CHATQ_API_KEYS":
			set = len(c.APIKeys) > 0
		case "CHATQ_WEBHOOK_SECRET":
			set = c.WebhookSecret != ""
		case "CHATQ_PUBLIC_URL":
			set = c.PublicURL != ""
		case "CHATQ_CA_APP_ID":
			set = c.CAAppID != ""
		case "CHATQ_CA_APP_SECRET":
			set = c.CAAppSecret != ""
		case "CHATQ_CA_SOURCE":
			set = c.CASource != ""
		case "CHATQ_CALLBACK_SECRET":
			set = c.CallbackSecret != ""
		case "CHATQ_SECRETS_KEY":
			set = strings.TrimSpace(c.SecretsKey) != ""
		default:
			return fmt.Errorf("config: Need does not know %s", name)
		}
		if !set {
			return fmt.Errorf("%s is not set", name)
		}
	}
	return nil
}

func isPhone(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if len(s) < 8 || len(s) > 15 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
