package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/internal/sandbox"
)

func (p *program) sandboxCommand() *cobra.Command {
	return command("sandbox", "a standalone ChatArchitect sandbox for integration tests",
		"Serves a ChatArchitect sandbox on CHATQ_SANDBOX_ADDR (default :8090) for offline integration tests.\nCredentials: CHATQ_CA_APP_ID and CHATQ_CA_APP_SECRET (generated and printed when unset).\nKnobs: CHATQ_SANDBOX_RATE, _ERROR_RATIO, _LATENCY, _WEBHOOK_DELAY, _DUPLICATE_RATIO, _REORDER_RATIO.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.sandbox(cmd.Context()) })
}

func (p *program) sandbox(ctx context.Context) error {
	base := config.Default()
	base.LogFormat = "console"
	cfg, err := loadConfig(base)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	generated := fillSandboxCredentials(&cfg)
	sb, err := newSandbox(cfg, nil, log)
	if err != nil {
		return err
	}
	defer sb.Close()
	ln, err := net.Listen("tcp", cfg.Sandbox.Addr)
	if err != nil {
		return fmt.Errorf("CHATQ_SANDBOX_ADDR: %w", err)
	}
	url := httpURL(ln.Addr())
	fmt.Fprintf(p.stdout, "ChatArchitect sandbox on %s\n  app id: %s\n", url, cfg.CAAppID)
	if generated {
		fmt.Fprintf(p.stdout, "  app secret (generated): %s\n", cfg.CAAppSecret)
	}
	fmt.Fprintf(p.stdout, "  try: curl -u '%s:<secret>' -H 'Content-Type: application/json' %s/whatsappmessage \\\n"+
		"         -d '{\"channel\":\"whatsapp\",\"destination\":\"96996999699\",\"payload\":{\"type\":\"text\",\"message\":\"Hi John!\"}}'\n", cfg.CAAppID, url)
	p.announce(map[string]string{"sandbox": url})
	return serve(ctx, ln, sb, log.Named("http"))
}

// fillSandboxCredentials gives the sandbox credentials when none are set,
// and reports whether it made the secret up.
func fillSandboxCredentials(cfg *config.Config) bool {
	if cfg.CAAppID == "" {
		cfg.CAAppID = "chatq-dev"
	}
	if cfg.CAAppSecret == "" {
		cfg.CAAppSecret = randomSecret("sbx_")
		return true
	}
	return false
}

// newSandbox returns the sandbox of cfg; authorize, if set, accepts the
// credentials of apps beyond CHATQ_CA_APP_ID's (chatq dev's senders).
func newSandbox(cfg config.Config, authorize func(appID, secret string) bool, log *zap.Logger) (*sandbox.Server, error) {
	s := cfg.Sandbox
	return sandbox.New(sandbox.Config{
		AppID: cfg.CAAppID, AppSecret: cfg.CAAppSecret, Authorize: authorize,
		Rate: s.Rate, ErrorRatio: s.ErrorRatio, Latency: s.Latency, WebhookDelay: s.WebhookDelay,
		DuplicateRatio: s.DuplicateRatio, ReorderRatio: s.ReorderRatio,
	}, log.Named("sandbox"))
}
