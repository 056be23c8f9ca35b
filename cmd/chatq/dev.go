package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/senders"
)

// devSource is the business number chatq dev uses when CHATQ_CA_SOURCE is
// not set: the embedded sandbox's, and the key of the worker's limits.
const devSource = "15550001234"

func (p *program) devCommand() *cobra.Command {
	return command("dev", "everything in one process: API, worker, dashboard, sandbox, embedded Redis",
		"Runs everything in one process for a first try: the HTTP API, a worker and an embedded\n"+
			"ChatArchitect sandbox (unless CHATQ_CA_BASE_URL is set), on an embedded Redis (unless\n"+
			"CHATQ_REDIS_URL is set). Every CHATQ_ variable that is set is honoured; the others get\n"+
			"development values, and the API key is generated and printed.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.dev(cmd.Context()) })
}

func (p *program) dev(ctx context.Context) error {
	base := config.Default()
	base.LogFormat = "console"
	base.CallbackAllowPrivate = true
	cfg, err := loadConfig(base)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// devSenders is the registry the embedded sandbox asks, once it runs.
	var devSenders atomic.Pointer[senders.Registry]

	generatedKey := ""
	if len(cfg.APIKeys) == 0 {
		generatedKey = randomSecret("dev_")
		cfg.APIKeys = []string{generatedKey}
	}
	if cfg.WebhookSecret == "" {
		cfg.WebhookSecret = randomSecret("")
	}
	if cfg.CallbackSecret == "" {
		cfg.CallbackSecret = randomSecret("cb_")
	}
	if cfg.SecretsKey == "" {
		// Senders added during the run are sealed under a key of the run:
		// with an embedded Redis they end with it anyway.
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		cfg.SecretsKey = hex.EncodeToString(key)
	}

	urls := map[string]string{}
	if !cfg.RedisConfigured() {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		defer mr.Close()
		cfg.RedisURL = "redis://" + mr.Addr()
		cfg.RedisWaitReplicas = 0 // no replica to wait for
		urls["redis"] = "embedded (" + mr.Addr() + ")"
	}

	if cfg.CASource == "" {
		cfg.CASource = devSource
	}
	embedded := false
	if _, set := os.LookupEnv(config.Prefix + "_CA_BASE_URL"); !set {
		embedded = true
		fillSandboxCredentials(&cfg)
		// The embedded sandbox accepts the credentials of the senders added
		// to this chatq dev, so that they send through it too.
		sb, err := newSandbox(cfg, func(appID, secret string) bool {
			r := devSenders.Load()
			if r == nil {
				return false
			}
			for _, s := range r.OfApp(appID) {
				if subtle.ConstantTimeCompare([]byte(secret), []byte(s.AppSecret)) == 1 {
					return true
				}
			}
			return false
		}, log)
		if err != nil {
			return err
		}
		defer sb.Close()
		ln, err := net.Listen("tcp", cfg.Sandbox.Addr)
		if err != nil {
			return fmt.Errorf("CHATQ_SANDBOX_ADDR: %w", err)
		}
		cfg.CABaseURL = httpURL(ln.Addr())
		urls["sandbox"] = cfg.CABaseURL
		go func() {
			if err := serve(ctx, ln, sb, log.Named("sandbox.http")); err != nil {
				log.Error("sandbox stopped", zap.Error(err))
			}
		}()
	} else if err := cfg.Need("CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET"); err != nil {
		return err
	}

	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("CHATQ_HTTP_ADDR: %w", err)
	}
	m := metrics.New(asynq.NewInspectorFromRedisClient(rdb))
	counter := startCounter(rdb, log)
	defer stopCounter(counter)
	h, closeAPI, err := apiHandler(rdb, cfg, m, counter, log)
	if err != nil {
		return err
	}
	defer closeAPI()
	apiURL := httpURL(ln.Addr())
	urls["api"] = apiURL

	reg, err := newRegistry(rdb, cfg, log)
	if err != nil {
		return err
	}
	devSenders.Store(reg)
	defer reg.Stop()
	w, err := newWorker(rdb, cfg, reg, m, counter, log)
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()

	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, h, log.Named("http")) }()

	if embedded {
		hook := strings.TrimRight(cmpOr(cfg.PublicURL, apiURL), "/") + "/webhooks/chatarchitect/" + cfg.WebhookSecret
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := caClient(cfg).RegisterWebhook(rctx, hook)
		cancel()
		if err != nil {
			return fmt.Errorf("register the webhook on the sandbox: %w", err)
		}
	}
	p.banner(urls, generatedKey)
	p.announce(map[string]string{"api": apiURL, "sandbox": urls["sandbox"], "key": cfg.APIKeys[0]})

	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("shutting down: finishing sends on the wire", zap.Duration("timeout", cfg.ShutdownTimeout))
	return nil
}

func (p *program) banner(urls map[string]string, key string) {
	var b strings.Builder
	b.WriteString("\nchatq dev is running\n\n")
	fmt.Fprintf(&b, "  API        %s\n", urls["api"])
	fmt.Fprintf(&b, "  console    %s/console/   (sign in with an API key)\n", urls["api"])
	fmt.Fprintf(&b, "  dashboard  %s/monitoring/   (any user name, an API key as the password)\n", urls["api"])
	if u, ok := urls["sandbox"]; ok {
		fmt.Fprintf(&b, "  sandbox    %s   (ChatArchitect stand-in; GET /sandbox/messages, /sandbox/stats)\n", u)
	}
	if u, ok := urls["redis"]; ok {
		fmt.Fprintf(&b, "  redis      %s\n", u)
	}
	shown := key
	if shown == "" {
		shown = "<one of CHATQ_API_KEYS>"
	} else {
		fmt.Fprintf(&b, "  API key    %s   (generated for this run)\n", key)
	}
	fmt.Fprintf(&b, "\nSend a message:\n\n  curl -s -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \\\n"+
		"    %s/v1/messages \\\n    -d '{\"destination\":\"96996999699\",\"payload\":{\"type\":\"text\",\"message\":\"Hi John!\"}}'\n", shown, urls["api"])
	fmt.Fprintf(&b, "\nThen read its status:\n\n  curl -s -H 'Authorization: Bearer %s' %s/v1/messages/<id>\n\n", shown, urls["api"])
	fmt.Fprint(p.stdout, b.String())
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
