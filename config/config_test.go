package config_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/kelseyhightower/envconfig"

	"github.com/chatq/chatq/config"
)

// clearEnv unsets every CHATQ_ variable for the test, so that the machine's
// environment cannot leak into it.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, config.Prefix+"_") {
			t.Setenv(name, "") // restores the value when the test ends
			os.Unsetenv(name)
		}
	}
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// The defaults of CONTRACT.md's environment table, row by row.
func TestLoadDefaults(t *testing.T) {
	clearEnv(t)
	got, err := config.Load(config.Default())
	if err != nil {
		t.Fatalf("Load with an empty environment: %v", err)
	}
	want := config.Config{
		RedisURL:             "", // embedded in dev, which cmd fills in
		HTTPAddr:             ":8080",
		APIKeys:              nil,
		WebhookSecret:        "",
		PublicURL:            "",
		CABaseURL:            "https://api.chatarchitect.com",
		CAAppID:              "",
		CAAppSecret:          "",
		CASource:             "",
		CATimeout:            10 * time.Second,
		Concurrency:          50,
		QueueWeights:         "transactional=6,bulk=1",
		ShutdownTimeout:      15 * time.Second, // CHATQ_CA_TIMEOUT + 5s
		RetryMax:             8,
		RetryBaseDelay:       2 * time.Second,
		RetryMaxDelay:        15 * time.Minute,
		RetryJitter:          0.2,
		RatePerSecond:        40,
		RateBurst:            1, // steady spacing
		MaxRetryAfter:        5 * time.Minute,
		PairInterval:         6 * time.Second,
		PairBurst:            3,
		DailyRecipientLimit:  0,
		WindowPolicy:         "learn",
		CallbackSecret:       "",
		CallbackAllowPrivate: false,
		InboundURL:           "",
		MetricsAddr:          ":9091",
		RecordTTL:            720 * time.Hour,
		AuthTTL:              10 * time.Minute,
		AllowUSMarketing:     false,
		LogLevel:             "info",
		LogFormat:            "json",
		BulkShards:           1,
		RedisWaitReplicas:    0,
		RedisWaitTimeout:     100 * time.Millisecond,

		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: time.Second,
		Sandbox: config.Sandbox{
			Addr:           ":8090",
			Rate:           0,
			ErrorRatio:     0,
			Latency:        0,
			WebhookDelay:   200 * time.Millisecond,
			DuplicateRatio: 0,
			ReorderRatio:   0,
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load(Default()) (-want +got):\n%s", diff)
	}
	w, err := got.Weights()
	if err != nil {
		t.Fatalf("Weights of the default: %v", err)
	}
	if diff := cmp.Diff(map[string]int{"transactional": 6, "bulk": 1}, w); diff != "" {
		t.Errorf("Weights() (-want +got):\n%s", diff)
	}
}

// Each variable sets its field, and nothing else but the derived defaults.
func TestLoadReadsEveryVariable(t *testing.T) {
	tests := []struct {
		name, value string
		set         func(*config.Config)
	}{
		{"CHATQ_REDIS_URL", "redis://:pw@redis.internal:6380/2", func(c *config.Config) { c.RedisURL = "redis://:pw@redis.internal:6380/2" }},
		{"CHATQ_REDIS_CLUSTER_ADDRS", " 10.0.0.1:7000, 10.0.0.2:7000,,", func(c *config.Config) { c.RedisClusterAddrs = []string{"10.0.0.1:7000", "10.0.0.2:7000"} }},
		{"CHATQ_REDIS_USERNAME", "chatq", func(c *config.Config) { c.RedisUsername = "chatq" }},
		{"CHATQ_REDIS_PASSWORD", "pw", func(c *config.Config) { c.RedisPassword = "pw" }},
		{"CHATQ_REDIS_TLS", "true", func(c *config.Config) { c.RedisTLS = true }},
		{"CHATQ_REDIS_WAIT_REPLICAS", "1", func(c *config.Config) { c.RedisWaitReplicas = 1 }},
		{"CHATQ_REDIS_WAIT_TIMEOUT", "1s", func(c *config.Config) { c.RedisWaitTimeout = time.Second }},
		{"CHATQ_BULK_SHARDS", "3", func(c *config.Config) { c.BulkShards = 3 }},
		{"CHATQ_HTTP_ADDR", "127.0.0.1:9000", func(c *config.Config) { c.HTTPAddr = "127.0.0.1:9000" }},
		{"CHATQ_API_KEYS", " k1 , k2,,", func(c *config.Config) { c.APIKeys = []string{"k1", "k2"} }},
		{"CHATQ_WEBHOOK_SECRET", "whs", func(c *config.Config) { c.WebhookSecret = "whs" }},
		{"CHATQ_PUBLIC_URL", "https://chatq.example.com", func(c *config.Config) { c.PublicURL = "https://chatq.example.com" }},
		{"CHATQ_CA_BASE_URL", "http://127.0.0.1:8090", func(c *config.Config) { c.CABaseURL = "http://127.0.0.1:8090" }},
		{"CHATQ_CA_APP_ID", "app", func(c *config.Config) { c.CAAppID = "app" }},
		{"CHATQ_CA_APP_SECRET", "sec", func(c *config.Config) { c.CAAppSecret = "sec" }},
		{"CHATQ_CA_SOURCE", "+15550001234", func(c *config.Config) { c.CASource = "+15550001234" }},
		{"CHATQ_CA_TIMEOUT", "3s", func(c *config.Config) { c.CATimeout = 3 * time.Second; c.ShutdownTimeout = 8 * time.Second }},
		{"CHATQ_CONCURRENCY", "7", func(c *config.Config) { c.Concurrency = 7 }},
		{"CHATQ_QUEUE_WEIGHTS", "transactional=3,bulk=2", func(c *config.Config) { c.QueueWeights = "transactional=3,bulk=2" }},
		{"CHATQ_SHUTDOWN_TIMEOUT", "1m", func(c *config.Config) { c.ShutdownTimeout = time.Minute }},
		{"CHATQ_TASK_CHECK_INTERVAL", "100ms", func(c *config.Config) { c.TaskCheckInterval = 100 * time.Millisecond }},
		{"CHATQ_DELAYED_TASK_CHECK_INTERVAL", "5s", func(c *config.Config) { c.DelayedTaskCheckInterval = 5 * time.Second }},
		{"CHATQ_RETRY_MAX", "0", func(c *config.Config) { c.RetryMax = 0 }},
		{"CHATQ_RETRY_BASE_DELAY", "1s", func(c *config.Config) { c.RetryBaseDelay = time.Second }},
		{"CHATQ_RETRY_MAX_DELAY", "1h", func(c *config.Config) { c.RetryMaxDelay = time.Hour }},
		{"CHATQ_RETRY_JITTER", "0", func(c *config.Config) { c.RetryJitter = 0 }},
		{"CHATQ_RATE_PER_SECOND", "12.5", func(c *config.Config) { c.RatePerSecond = 12.5 }},
		{"CHATQ_RATE_BURST", "5", func(c *config.Config) { c.RateBurst = 5 }},
		{"CHATQ_MAX_RETRY_AFTER", "90s", func(c *config.Config) { c.MaxRetryAfter = 90 * time.Second }},
		{"CHATQ_PAIR_INTERVAL", "0", func(c *config.Config) { c.PairInterval = 0 }},
		{"CHATQ_PAIR_BURST", "1", func(c *config.Config) { c.PairBurst = 1 }},
		{"CHATQ_DAILY_RECIPIENT_LIMIT", "250", func(c *config.Config) { c.DailyRecipientLimit = 250 }},
		{"CHATQ_WINDOW_POLICY", "strict", func(c *config.Config) { c.WindowPolicy = "strict" }},
		{"CHATQ_CALLBACK_SECRET", "cbs", func(c *config.Config) { c.CallbackSecret = "cbs" }},
		{"CHATQ_SECRETS_KEY", strings.Repeat("ab", 32), func(c *config.Config) { c.SecretsKey = strings.Repeat("ab", 32) }},
		{"CHATQ_CALLBACK_ALLOW_PRIVATE", "true", func(c *config.Config) { c.CallbackAllowPrivate = true }},
		{"CHATQ_INBOUND_URL", "https://app.example.com/inbound", func(c *config.Config) { c.InboundURL = "https://app.example.com/inbound" }},
		{"CHATQ_DASHBOARD_READONLY", "true", func(c *config.Config) { c.DashboardReadonly = true }},
		{"CHATQ_METRICS_ADDR", "", func(c *config.Config) { c.MetricsAddr = "" }},
		{"CHATQ_PPROF", "true", func(c *config.Config) { c.Pprof = true }},
		{"CHATQ_RECORD_TTL", "48h", func(c *config.Config) { c.RecordTTL = 48 * time.Hour }},
		{"CHATQ_AUTH_TTL", "5m", func(c *config.Config) { c.AuthTTL = 5 * time.Minute }},
		{"CHATQ_ALLOW_US_MARKETING", "true", func(c *config.Config) { c.AllowUSMarketing = true }},
		{"CHATQ_LOG_LEVEL", "debug", func(c *config.Config) { c.LogLevel = "debug" }},
		{"CHATQ_LOG_FORMAT", "console", func(c *config.Config) { c.LogFormat = "console" }},
		{"CHATQ_SANDBOX_ADDR", "127.0.0.1:0", func(c *config.Config) { c.Sandbox.Addr = "127.0.0.1:0" }},
		{"CHATQ_SANDBOX_RATE", "100", func(c *config.Config) { c.Sandbox.Rate = 100 }},
		{"CHATQ_SANDBOX_ERROR_RATIO", "0.1", func(c *config.Config) { c.Sandbox.ErrorRatio = 0.1 }},
		{"CHATQ_SANDBOX_LATENCY", "50ms", func(c *config.Config) { c.Sandbox.Latency = 50 * time.Millisecond }},
		{"CHATQ_SANDBOX_WEBHOOK_DELAY", "0s", func(c *config.Config) { c.Sandbox.WebhookDelay = 0 }},
		{"CHATQ_SANDBOX_DUPLICATE_RATIO", "0.5", func(c *config.Config) { c.Sandbox.DuplicateRatio = 0.5 }},
		{"CHATQ_SANDBOX_REORDER_RATIO", "1", func(c *config.Config) { c.Sandbox.ReorderRatio = 1 }},
	}
	clearEnv(t)
	defaults, err := config.Load(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	covered := make(map[string]bool)
	for _, tc := range tests {
		covered[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, map[string]string{tc.name: tc.value})
			got, err := config.Load(config.Default())
			if err != nil {
				t.Fatalf("Load with %s=%q: %v", tc.name, tc.value, err)
			}
			want := defaults
			want.APIKeys = nil
			tc.set(&want)
			if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Load with %s=%q (-want +got):\n%s", tc.name, tc.value, diff)
			}
		})
	}
	// The sentinel variables go together: TestLoadSentinel reads them.
	for _, name := range []string{"CHATQ_REDIS_SENTINEL_ADDRS", "CHATQ_REDIS_SENTINEL_MASTER", "CHATQ_REDIS_SENTINEL_PASSWORD"} {
		covered[name] = true
	}
	// A new field needs a row above.
	for _, name := range knownVariables(t) {
		if !covered[name] {
			t.Errorf("%s is read by Load but not covered by this test", name)
		}
	}
}

// knownVariables lists the variables Load reads, as envconfig names them.
func knownVariables(t *testing.T) []string {
	t.Helper()
	var buf bytes.Buffer
	var c config.Config
	if err := envconfig.Usagef(config.Prefix, &c, tabwriter.NewWriter(&buf, 0, 0, 0, ' ', 0), "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		t.Fatal(err)
	}
	return strings.Fields(buf.String())
}

// chatq reads only CHATQ_ names: an unrelated REDIS_URL or LOG_LEVEL in a
// container's environment must not change it.
func TestLoadIgnoresUnprefixedNames(t *testing.T) {
	setEnv(t, map[string]string{
		"REDIS_URL":   "redis://elsewhere:6379/0",
		"HTTP_ADDR":   ":1",
		"LOG_LEVEL":   "bogus",
		"CONCURRENCY": "3",
		"ADDR":        ":2",
		"RATE":        "-1",
		"API_KEYS":    "leaked",
	})
	got, err := config.Load(config.Default())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	clearEnv(t)
	want, err := config.Load(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("unprefixed variables changed the config (-want +got):\n%s", diff)
	}
}

func TestLoadDerivedDefaults(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		wantBurst    int
		wantShutdown time.Duration
	}{
		{"burst is one whatever the rate", map[string]string{"CHATQ_RATE_PER_SECOND": "7"}, 1, 15 * time.Second},
		{"burst is one at a fractional rate", map[string]string{"CHATQ_RATE_PER_SECOND": "0.2"}, 1, 15 * time.Second},
		{"explicit burst wins", map[string]string{"CHATQ_RATE_PER_SECOND": "7", "CHATQ_RATE_BURST": "2"}, 2, 15 * time.Second},
		{"shutdown follows ca timeout", map[string]string{"CHATQ_CA_TIMEOUT": "30s"}, 1, 35 * time.Second},
		{"explicit shutdown wins", map[string]string{"CHATQ_CA_TIMEOUT": "30s", "CHATQ_SHUTDOWN_TIMEOUT": "2s"}, 1, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, tc.env)
			got, err := config.Load(config.Default())
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.RateBurst != tc.wantBurst || got.ShutdownTimeout != tc.wantShutdown {
				t.Errorf("RateBurst, ShutdownTimeout = %d, %s; want %d, %s", got.RateBurst, got.ShutdownTimeout, tc.wantBurst, tc.wantShutdown)
			}
		})
	}
}

// The base passed to Load holds what the environment does not override;
// chatq dev passes its development values this way.
func TestLoadBase(t *testing.T) {
	base := config.Default()
	base.RedisURL = "redis://127.0.0.1:7000/0"
	base.APIKeys = []string{" dev-key "}
	base.LogFormat = "console"
	setEnv(t, map[string]string{"CHATQ_LOG_FORMAT": "json"})

	got, err := config.Load(base)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.RedisURL != base.RedisURL || got.LogFormat != "json" {
		t.Errorf("RedisURL, LogFormat = %q, %q; want %q, %q", got.RedisURL, got.LogFormat, base.RedisURL, "json")
	}
	if diff := cmp.Diff([]string{"dev-key"}, got.APIKeys); diff != "" {
		t.Errorf("APIKeys (-want +got):\n%s", diff)
	}
	if base.APIKeys[0] != " dev-key " {
		t.Errorf("Load changed the caller's base.APIKeys to %q", base.APIKeys)
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	tests := []struct {
		name, value string
		// secret, if set, must not appear in the error.
		secret string
	}{
		{name: "CHATQ_CA_TIMEOUT", value: "ten seconds"},
		{name: "CHATQ_CA_TIMEOUT", value: "10"},
		{name: "CHATQ_CA_TIMEOUT", value: "0s"},
		{name: "CHATQ_CA_TIMEOUT", value: "-1s"},
		{name: "CHATQ_CA_TIMEOUT", value: "1s\nsecond line"},
		{name: "CHATQ_CONCURRENCY", value: "many"},
		{name: "CHATQ_CONCURRENCY", value: "0"},
		{name: "CHATQ_SHUTDOWN_TIMEOUT", value: "-5s"},
		{name: "CHATQ_RETRY_MAX", value: "-1"},
		{name: "CHATQ_RETRY_BASE_DELAY", value: "0s"},
		{name: "CHATQ_RETRY_MAX_DELAY", value: "1s"},
		{name: "CHATQ_RETRY_JITTER", value: "1"},
		{name: "CHATQ_RETRY_JITTER", value: "-0.1"},
		{name: "CHATQ_RETRY_JITTER", value: "NaN"},
		{name: "CHATQ_RATE_PER_SECOND", value: "-1"},
		{name: "CHATQ_RATE_PER_SECOND", value: "0"},
		{name: "CHATQ_RATE_PER_SECOND", value: "fast"},
		{name: "CHATQ_RATE_PER_SECOND", value: "NaN"},
		{name: "CHATQ_RATE_PER_SECOND", value: "+Inf"},
		{name: "CHATQ_RATE_BURST", value: "-3"},
		{name: "CHATQ_MAX_RETRY_AFTER", value: "500ms"},
		{name: "CHATQ_MAX_RETRY_AFTER", value: "soon"},
		{name: "CHATQ_PAIR_INTERVAL", value: "-1s"},
		{name: "CHATQ_PAIR_BURST", value: "0"},
		{name: "CHATQ_DAILY_RECIPIENT_LIMIT", value: "-1"},
		{name: "CHATQ_WINDOW_POLICY", value: "sometimes"},
		{name: "CHATQ_WINDOW_POLICY", value: ""},
		{name: "CHATQ_LOG_LEVEL", value: "verbose"},
		{name: "CHATQ_LOG_FORMAT", value: "xml"},
		{name: "CHATQ_QUEUE_WEIGHTS", value: "transactional=6"},
		{name: "CHATQ_QUEUE_WEIGHTS", value: "transactional=x,bulk=1"},
		{name: "CHATQ_QUEUE_WEIGHTS", value: "transactional=0,bulk=1"},
		{name: "CHATQ_QUEUE_WEIGHTS", value: "bulk"},
		{name: "CHATQ_REDIS_URL", value: "http://:hunter2@redis:6379/0", secret: "hunter2"},
		{name: "CHATQ_REDIS_URL", value: "localhost:6379"},
		{name: "CHATQ_REDIS_URL", value: "redis://:hunter2@redis:6379/0\x7f", secret: "hunter2"},
		{name: "CHATQ_CA_BASE_URL", value: "api.chatarchitect.com"},
		{name: "CHATQ_CA_BASE_URL", value: "ftp://api.chatarchitect.com"},
		{name: "CHATQ_CA_BASE_URL", value: ""},
		{name: "CHATQ_PUBLIC_URL", value: "chatq.example.com"},
		{name: "CHATQ_PUBLIC_URL", value: "http://"},
		{name: "CHATQ_INBOUND_URL", value: "mailto:ops@example.com"},
		{name: "CHATQ_CA_SOURCE", value: "12ab5678"},
		{name: "CHATQ_CA_SOURCE", value: "123"},
		{name: "CHATQ_CALLBACK_ALLOW_PRIVATE", value: "maybe"},
		{name: "CHATQ_SECRETS_KEY", value: "hunter2-not-a-key", secret: "hunter2"},
		{name: "CHATQ_SECRETS_KEY", value: strings.Repeat("ab", 31), secret: strings.Repeat("ab", 31)},
		{name: "CHATQ_SECRETS_KEY", value: "c2hvcnQ=", secret: "c2hvcnQ="},
		{name: "CHATQ_RECORD_TTL", value: "30m"},
		{name: "CHATQ_AUTH_TTL", value: "0"},
		{name: "CHATQ_AUTH_TTL", value: "-1m"},
		{name: "CHATQ_AUTH_TTL", value: "ten minutes"},
		{name: "CHATQ_ALLOW_US_MARKETING", value: "perhaps"},
		{name: "CHATQ_HTTP_ADDR", value: "8080"},
		{name: "CHATQ_METRICS_ADDR", value: "9091"},
		{name: "CHATQ_SANDBOX_ADDR", value: "localhost"},
		{name: "CHATQ_SANDBOX_RATE", value: "-1"},
		{name: "CHATQ_SANDBOX_RATE", value: "Inf"},
		{name: "CHATQ_SANDBOX_ERROR_RATIO", value: "1.5"},
		{name: "CHATQ_SANDBOX_ERROR_RATIO", value: "NaN"},
		{name: "CHATQ_SANDBOX_LATENCY", value: "-1ms"},
		{name: "CHATQ_SANDBOX_WEBHOOK_DELAY", value: "soon"},
		{name: "CHATQ_SANDBOX_DUPLICATE_RATIO", value: "2"},
		{name: "CHATQ_SANDBOX_REORDER_RATIO", value: "-0.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			setEnv(t, map[string]string{tc.name: tc.value})
			_, err := config.Load(config.Default())
			if err == nil {
				t.Fatalf("Load accepted %s=%q", tc.name, tc.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.name) {
				t.Errorf("error %q does not name %s", msg, tc.name)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error %q is more than one line", msg)
			}
			if tc.secret != "" && strings.Contains(msg, tc.secret) {
				t.Errorf("error %q shows the secret", msg)
			}
		})
	}
}

func TestLoadParseErrorsNameTheKind(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"CHATQ_CA_TIMEOUT", "10", "not a valid duration"},
		{"CHATQ_CONCURRENCY", "many", "not a valid whole number"},
		{"CHATQ_RATE_PER_SECOND", "fast", "not a valid number"},
		{"CHATQ_CALLBACK_ALLOW_PRIVATE", "maybe", "not a valid boolean"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setEnv(t, map[string]string{tc.name: tc.value})
			_, err := config.Load(config.Default())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load with %s=%q: error %v, want one saying %q", tc.name, tc.value, err, tc.want)
			}
		})
	}
}

// The sentinel variables only make sense together, so they are read in
// one environment.
func TestLoadSentinel(t *testing.T) {
	setEnv(t, map[string]string{
		"CHATQ_REDIS_SENTINEL_ADDRS":    "10.0.0.1:26379, 10.0.0.2:26379",
		"CHATQ_REDIS_SENTINEL_MASTER":   "chatq",
		"CHATQ_REDIS_SENTINEL_PASSWORD": "spw",
		"CHATQ_REDIS_PASSWORD":          "pw",
		"CHATQ_REDIS_WAIT_REPLICAS":     "1",
	})
	got, err := config.Load(config.Default())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	clearEnv(t)
	want, err := config.Load(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	want.RedisSentinelAddrs = []string{"10.0.0.1:26379", "10.0.0.2:26379"}
	want.RedisSentinelMaster = "chatq"
	want.RedisSentinelPassword = "spw"
	want.RedisPassword = "pw"
	want.RedisWaitReplicas = 1
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	if !got.RedisConfigured() {
		t.Error("RedisConfigured() = false with sentinels set")
	}
}

// Exactly one way to reach Redis, and the settings that go with it.
func TestLoadRejectsBadRedisChoices(t *testing.T) {
	tests := []struct {
		env map[string]string
		// want are the variables the error must name.
		want   []string
		secret string
	}{
		{map[string]string{"CHATQ_REDIS_URL": "redis://r:6379/0", "CHATQ_REDIS_CLUSTER_ADDRS": "r:7000"},
			[]string{"CHATQ_REDIS_URL", "CHATQ_REDIS_CLUSTER_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": "r:7000", "CHATQ_REDIS_SENTINEL_ADDRS": "s:26379", "CHATQ_REDIS_SENTINEL_MASTER": "m"},
			[]string{"CHATQ_REDIS_CLUSTER_ADDRS", "CHATQ_REDIS_SENTINEL_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_SENTINEL_ADDRS": "s:26379"}, []string{"CHATQ_REDIS_SENTINEL_MASTER"}, ""},
		{map[string]string{"CHATQ_REDIS_SENTINEL_MASTER": "m"}, []string{"CHATQ_REDIS_SENTINEL_MASTER", "CHATQ_REDIS_SENTINEL_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_SENTINEL_PASSWORD": "hunter2"}, []string{"CHATQ_REDIS_SENTINEL_PASSWORD"}, "hunter2"},
		{map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": "r"}, []string{"CHATQ_REDIS_CLUSTER_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": ":7000"}, []string{"CHATQ_REDIS_CLUSTER_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": "redis://:hunter2@r:7000"}, []string{"CHATQ_REDIS_CLUSTER_ADDRS"}, "hunter2"},
		{map[string]string{"CHATQ_REDIS_SENTINEL_ADDRS": "s", "CHATQ_REDIS_SENTINEL_MASTER": "m"}, []string{"CHATQ_REDIS_SENTINEL_ADDRS"}, ""},
		{map[string]string{"CHATQ_REDIS_URL": "redis://r:6379/0", "CHATQ_REDIS_PASSWORD": "hunter2"}, []string{"CHATQ_REDIS_PASSWORD"}, "hunter2"},
		{map[string]string{"CHATQ_REDIS_URL": "redis://r:6379/0", "CHATQ_REDIS_USERNAME": "u"}, []string{"CHATQ_REDIS_USERNAME"}, ""},
		{map[string]string{"CHATQ_REDIS_URL": "redis://r:6379/0", "CHATQ_REDIS_TLS": "true"}, []string{"CHATQ_REDIS_TLS"}, ""},
		{map[string]string{"CHATQ_REDIS_TLS": "sometimes"}, []string{"CHATQ_REDIS_TLS"}, ""},
		{map[string]string{"CHATQ_REDIS_CLUSTER_ADDRS": "r:7000", "CHATQ_REDIS_WAIT_REPLICAS": "1"}, []string{"CHATQ_REDIS_WAIT_REPLICAS"}, ""},
		{map[string]string{"CHATQ_REDIS_WAIT_REPLICAS": "-1"}, []string{"CHATQ_REDIS_WAIT_REPLICAS"}, ""},
		{map[string]string{"CHATQ_REDIS_WAIT_TIMEOUT": "0s"}, []string{"CHATQ_REDIS_WAIT_TIMEOUT"}, ""},
		{map[string]string{"CHATQ_REDIS_WAIT_TIMEOUT": "5s"}, []string{"CHATQ_REDIS_WAIT_TIMEOUT"}, ""},
		{map[string]string{"CHATQ_BULK_SHARDS": "0"}, []string{"CHATQ_BULK_SHARDS"}, ""},
		{map[string]string{"CHATQ_BULK_SHARDS": "65"}, []string{"CHATQ_BULK_SHARDS"}, ""},
		{map[string]string{"CHATQ_BULK_SHARDS": "three"}, []string{"CHATQ_BULK_SHARDS"}, ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			setEnv(t, tc.env)
			_, err := config.Load(config.Default())
			if err == nil {
				t.Fatalf("Load accepted %v", tc.env)
			}
			msg := err.Error()
			for _, name := range tc.want {
				if !strings.Contains(msg, name) {
					t.Errorf("error %q does not name %s", msg, name)
				}
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error %q is more than one line", msg)
			}
			if tc.secret != "" && strings.Contains(msg, tc.secret) {
				t.Errorf("error %q shows the secret", msg)
			}
		})
	}
}

func TestNeed(t *testing.T) {
	c := config.Default()
	c.RedisURL = "redis://127.0.0.1:7000/0"
	c.APIKeys = []string{"k"}
	tests := []struct {
		names []string
		want  string // "" for no error
	}{
		{nil, ""},
		{[]string{"CHATQ_REDIS_URL", "CHATQ_API_KEYS"}, ""},
		{[]string{"CHATQ_REDIS_URL", "CHATQ_WEBHOOK_SECRET", "CHATQ_CA_APP_ID"}, "CHATQ_WEBHOOK_SECRET is not set"},
		{[]string{"CHATQ_CA_APP_SECRET"}, "CHATQ_CA_APP_SECRET is not set"},
		{[]string{"CHATQ_NO_SUCH"}, "CHATQ_NO_SUCH"},
	}
	for _, tc := range tests {
		err := c.Need(tc.names...)
		var got string
		if err != nil {
			got = err.Error()
		}
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("Need(%q) = %q, want an error containing %q", tc.names, got, tc.want)
		}
	}
}

// CHATQ_REDIS_URL stands for any of the three ways to reach Redis.
func TestNeedRedis(t *testing.T) {
	tests := []struct {
		name string
		set  func(*config.Config)
		want string // "" for no error
	}{
		{"none", func(*config.Config) {}, "CHATQ_REDIS_URL is not set (nor CHATQ_REDIS_CLUSTER_ADDRS or CHATQ_REDIS_SENTINEL_ADDRS)"},
		{"url", func(c *config.Config) { c.RedisURL = "redis://127.0.0.1:7000/0" }, ""},
		{"cluster", func(c *config.Config) { c.RedisClusterAddrs = []string{"127.0.0.1:7000"} }, ""},
		{"sentinel", func(c *config.Config) {
			c.RedisSentinelAddrs = []string{"127.0.0.1:26379"}
			c.RedisSentinelMaster = "chatq"
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.set(&c)
			err := c.Need("CHATQ_REDIS_URL")
			var got string
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("Need(CHATQ_REDIS_URL) = %q, want %q", got, tc.want)
			}
		})
	}
}

// CHATQ_SECRETS_KEY is 32 bytes, in hex or in either base64 alphabet.
func TestSecretsKeyForms(t *testing.T) {
	key := bytes.Repeat([]byte{0xfb}, 32)
	for _, v := range []string{
		hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), base64.RawStdEncoding.EncodeToString(key),
		base64.URLEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key),
	} {
		c := config.Config{SecretsKey: v}
		got, err := c.SecretsKeyBytes()
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("SecretsKeyBytes of %q: %x, %v; want the 32 bytes", v, got, err)
		}
	}
	if got, err := (&config.Config{}).SecretsKeyBytes(); got != nil || err != nil {
		t.Errorf("SecretsKeyBytes without a key: %x, %v; want nothing", got, err)
	}
}
