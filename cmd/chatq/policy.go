package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// newChecker returns the conversation policy of cfg. With ChatArchitect
// credentials and the business number, its template cache refreshes
// itself from getHSM; without them it reads the cache the workers keep.
func newChecker(rdb redis.UniversalClient, cfg config.Config, log *zap.Logger) *policy.Checker {
	pc := checkerConfig(cfg, log)
	pc.TemplateStatus = templateStatus(rdb)
	return policy.New(rdb, pc)
}

// templateStatus keeps what each refresh of a template cache says of the
// templates' statuses, so that a pause or an approval that no webhook
// reported still holds or releases their messages.
func templateStatus(rdb redis.UniversalClient) func(ctx context.Context, sender, name, status string) error {
	st := store.New(rdb, store.Config{})
	return func(ctx context.Context, sender, name, status string) error {
		s, ok := store.TemplateStateFor(status)
		if !ok {
			return nil
		}
		_, err := st.SetTemplateState(ctx, sender, name, s, time.Now())
		return err
	}
}

func checkerConfig(cfg config.Config, log *zap.Logger) policy.Config {
	pc := policy.Config{
		Window:                policy.WindowPolicy(cfg.WindowPolicy),
		AllowPrivateCallbacks: cfg.CallbackAllowPrivate,
		AllowUSMarketing:      cfg.AllowUSMarketing,
		EnvSender:             cfg.CASource,
		Log:                   log,
	}
	if cfg.CAAppID != "" && cfg.CAAppSecret != "" && cfg.CASource != "" {
		pc.Source = caClient(cfg)
	}
	return pc
}

// sendersChecker returns the conversation policy of cfg whose template
// caches of the stored senders refresh themselves too, with their apps'
// credentials from reg.
func sendersChecker(rdb redis.UniversalClient, cfg config.Config, reg *senders.Registry, log *zap.Logger) *policy.Checker {
	pc := checkerConfig(cfg, log)
	pc.TemplateStatus = templateStatus(rdb)
	pc.SenderSource = func(number string) policy.Source {
		x, ok := reg.Lookup(number)
		if !ok || x.Env || x.AppID == "" {
			return nil
		}
		return chatarchitect.New(chatarchitect.Config{BaseURL: cfg.CABaseURL, AppID: x.AppID, AppSecret: x.AppSecret,
			Source: x.Number, Timeout: cfg.CATimeout}, nil)
	}
	pc.Senders = func() []string {
		var out []string
		for _, x := range reg.All() {
			if !x.Env {
				out = append(out, x.Number)
			}
		}
		return out
	}
	return policy.New(rdb, pc)
}

// runTemplateRefresh refreshes checker's template caches in the
// background, those it can; the returned func stops it.
func runTemplateRefresh(checker *policy.Checker) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		checker.RefreshTemplates(ctx, policy.DefaultRefreshInterval)
	}()
	return func() { cancel(); <-done }
}

// callbackNotifier enqueues the status callbacks of the changes a store
// makes.
func callbackNotifier(rdb redis.UniversalClient, log *zap.Logger) store.Notifier {
	return callback.NewNotifier(asynq.NewClientFromRedisClient(rdb), log.Named("callback"))
}

// inboundForwarder forwards inbound messages and user events when
// CHATQ_INBOUND_URL is set, and is nil otherwise.
func inboundForwarder(rdb redis.UniversalClient, cfg config.Config) *callback.Forwarder {
	if cfg.InboundURL == "" {
		return nil
	}
	return callback.NewForwarder(rdb, asynq.NewClientFromRedisClient(rdb), 0)
}

// conversation returns a worker's conversation policy and, given a
// callback secret, its delivery of status callbacks and inbound events.
func conversation(rdb redis.UniversalClient, cfg config.Config, m *metrics.Metrics, log *zap.Logger) (*worker.Conversation, error) {
	conv := &worker.Conversation{Policy: newChecker(rdb, cfg, log.Named("policy"))}
	if cfg.CallbackSecret == "" {
		log.Warn("CHATQ_CALLBACK_SECRET is not set: this worker delivers no status callbacks and forwards no inbound events")
		return conv, nil
	}
	d, err := callback.New(store.New(rdb, store.Config{TTL: cfg.RecordTTL}), asynq.NewClientFromRedisClient(rdb), callback.Config{
		Secret:       cfg.CallbackSecret,
		AllowPrivate: cfg.CallbackAllowPrivate,
		InboundURL:   cfg.InboundURL,
		Metrics:      m,
		WebhookURLs:  senders.WebhookURLs{Redis: rdb},
	}, log.Named("callback"))
	if err != nil {
		return nil, err
	}
	conv.Callbacks = d
	return conv, nil
}

func (p *program) suppressionsCommand() *cobra.Command {
	return group("suppressions <command>", "list, add or remove suppressed recipients",
		"Shows and edits the suppression list: recipients chatq refuses to message because they opted out.\n"+
			"Needs CHATQ_REDIS_URL.",
		p.suppressionsListCommand(), p.suppressionsAddCommand(), p.suppressionsRemoveCommand())
}

// withChecker opens Redis and runs f with the conversation policy on it.
func withChecker(ctx context.Context, needs []string, f func(*policy.Checker, config.Config) error) error {
	cfg, rdb, err := connect(ctx, needs...)
	if err != nil {
		return err
	}
	defer rdb.Close()
	return f(newChecker(rdb, cfg, zap.NewNop()), cfg)
}

func (p *program) suppressionsListCommand() *cobra.Command {
	var limit int
	cmd := command("list [--limit N]", "list the suppressed recipients", "Lists the suppressed recipients. Needs CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.suppressionsList(cmd.Context(), limit) })
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many (0: all)")
	return cmd
}

func (p *program) suppressionsList(ctx context.Context, limit int) error {
	return withChecker(ctx, nil, func(c *policy.Checker, _ config.Config) error {
		tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DESTINATION\tSINCE\tSOURCE\tCODE\tREASON")
		var cursor uint64
		n := 0
		for {
			page, next, err := c.Suppressions.List(ctx, cursor, 500)
			if err != nil {
				return err
			}
			for _, s := range page {
				if limit > 0 && n >= limit {
					return tw.Flush()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Destination, s.At.Format(time.RFC3339), s.Source, cmpOr(s.Code, "-"), s.Reason)
				n++
			}
			if cursor = next; cursor == 0 {
				return tw.Flush()
			}
		}
	})
}

func (p *program) suppressionsAddCommand() *cobra.Command {
	var reason string
	cmd := command("add NUMBER [--reason TEXT]", "suppress a recipient",
		"Suppresses a recipient: chatq refuses messages to it. Needs CHATQ_REDIS_URL.",
		oneNumber, func(cmd *cobra.Command, args []string) error {
			return p.suppressionsAdd(cmd.Context(), args[0], reason)
		})
	cmd.Flags().StringVar(&reason, "reason", "suppressed by an operator", "why, for the record")
	return cmd
}

func (p *program) suppressionsAdd(ctx context.Context, number, reason string) error {
	return withChecker(ctx, nil, func(c *policy.Checker, _ config.Config) error {
		if err := c.Suppressions.Add(ctx, policy.Suppression{Destination: number, Reason: reason, Source: policy.SourceOperator}); err != nil {
			return err
		}
		fmt.Fprintf(p.stdout, "%s suppressed\n", policy.Normalize(number))
		return nil
	})
}

func (p *program) suppressionsRemoveCommand() *cobra.Command {
	return command("remove NUMBER", "take a recipient off the suppression list",
		"Takes a recipient off the suppression list. Needs CHATQ_REDIS_URL.",
		oneNumber, func(cmd *cobra.Command, args []string) error { return p.suppressionsRemove(cmd.Context(), args[0]) })
}

func (p *program) suppressionsRemove(ctx context.Context, number string) error {
	return withChecker(ctx, nil, func(c *policy.Checker, _ config.Config) error {
		removed, err := c.Suppressions.Remove(ctx, number)
		if err != nil {
			return err
		}
		if !removed {
			return fmt.Errorf("%s is not suppressed", policy.Normalize(number))
		}
		fmt.Fprintf(p.stdout, "%s no longer suppressed\n", policy.Normalize(number))
		return nil
	})
}

// oneNumber wants a subcommand's one argument, a phone number.
func oneNumber(cmd *cobra.Command, args []string) error {
	if err := oneArg("the recipient's number")(cmd, args); err != nil {
		return err
	}
	if err := enqueue.ValidateDestination("number", args[0]); err != nil {
		return usageError(prefixed(cmd, err.Error()))
	}
	return nil
}

func (p *program) templatesCommand() *cobra.Command {
	return group("templates <command>", "list, submit or sync message templates",
		"Manages the business number's message templates (HSM).\n"+
			"Needs CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE (and CHATQ_REDIS_URL for sync).",
		p.templatesListCommand(), p.templatesSubmitCommand(), p.templatesSyncCommand())
}

var caNeeds = []string{"CHATQ_CA_APP_ID", "CHATQ_CA_APP_SECRET", "CHATQ_CA_SOURCE"}

func (p *program) templatesListCommand() *cobra.Command {
	return command("list", "list the templates as ChatArchitect's getHSM answers",
		"Lists the templates ChatArchitect's getHSM answers, with their review status.\nNeeds CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.templatesList(cmd.Context()) })
}

func (p *program) templatesList(ctx context.Context) error {
	cfg, err := loadConfig(config.Default(), caNeeds...)
	if err != nil {
		return err
	}
	list, err := caClient(cfg).Templates(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLANGUAGE\tSTATUS\tCATEGORY\tPARAMS\tTEXT")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.ElementName, t.LanguageCode, t.Status, t.Category, policy.CountParams(t.Data), oneLine(t.Data, 60))
	}
	return tw.Flush()
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		return string(r[:limit-1]) + "…"
	}
	return s
}

func (p *program) templatesSubmitCommand() *cobra.Command {
	var t chatarchitect.TemplateSubmission
	cmd := command("submit --name N --language L --category C --content TEXT --example TEXT [--type TEXT]",
		"submit a new template for WhatsApp's review",
		"Submits a template for WhatsApp's review; it starts PENDING. Content fills {{1}}..{{n}} from a send's params;\n"+
			"example is the content with sample values, which the review wants.\nNeeds CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.templatesSubmit(cmd.Context(), t) })
	fs := cmd.Flags()
	fs.StringVar(&t.ElementName, "name", "", "template name: lowercase letters, digits and underscores")
	fs.StringVar(&t.LanguageCode, "language", "", "language code, such as en or en_US")
	fs.StringVar(&t.Category, "category", "", "MARKETING, UTILITY or AUTHENTICATION")
	fs.StringVar(&t.TemplateType, "type", "TEXT", "TEXT, IMAGE, VIDEO or DOCUMENT")
	fs.StringVar(&t.Content, "content", "", "the text, with {{1}}..{{n}} placeholders")
	fs.StringVar(&t.Example, "example", "", "the text with sample values in place of the placeholders")
	_ = cmd.RegisterFlagCompletionFunc("category", choices("MARKETING", "UTILITY", "AUTHENTICATION"))
	_ = cmd.RegisterFlagCompletionFunc("type", choices("TEXT", "IMAGE", "VIDEO", "DOCUMENT"))
	return cmd
}

func (p *program) templatesSubmit(ctx context.Context, t chatarchitect.TemplateSubmission) error {
	for _, f := range []struct{ flag, value string }{{"--name", t.ElementName}, {"--language", t.LanguageCode}, {"--category", t.Category}, {"--content", t.Content}} {
		if f.value == "" {
			return usageError("templates submit: " + f.flag + " is required")
		}
	}
	if err := enqueue.ValidateTemplateSpec("template", &enqueue.TemplateSpec{ElementName: t.ElementName, LanguageCode: t.LanguageCode}); err != nil {
		return usageError("templates submit: " + err.Error())
	}
	cfg, err := loadConfig(config.Default(), caNeeds...)
	if err != nil {
		return err
	}
	got, err := caClient(cfg).SubmitTemplate(ctx, t)
	if err != nil {
		return err
	}
	return p.printJSON(got)
}

func (p *program) templatesSyncCommand() *cobra.Command {
	return command("sync", "refresh chatq's template cache, which checks template sends",
		"Refreshes chatq's template cache from getHSM now (workers also do it every 10 minutes).\n"+
			"Needs CHATQ_REDIS_URL, CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET and CHATQ_CA_SOURCE.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.templatesSync(cmd.Context()) })
}

func (p *program) templatesSync(ctx context.Context) error {
	return withChecker(ctx, caNeeds, func(c *policy.Checker, _ config.Config) error {
		cat, err := c.Templates.Sync(ctx)
		if err != nil {
			return err
		}
		approved := 0
		for _, t := range cat.Templates {
			if t.Status == chatarchitect.TemplateApproved {
				approved++
			}
		}
		fmt.Fprintf(p.stdout, "template cache refreshed: %d templates, %d approved\n", len(cat.Templates), approved)
		return nil
	})
}

func (p *program) webhookCommand() *cobra.Command {
	return group("webhook <command>", "register chatq's webhook with ChatArchitect",
		"Registers chatq's webhook with ChatArchitect: CHATQ_PUBLIC_URL + /webhooks/chatarchitect/ + CHATQ_WEBHOOK_SECRET\n"+
			"receives every message, delivery and user event of the business number; with --sender, that\n"+
			"sender's own webhook URL, registered with its app's credentials.\n"+
			"Needs CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET, CHATQ_CA_SOURCE, CHATQ_PUBLIC_URL and CHATQ_WEBHOOK_SECRET;\n"+
			"with --sender, CHATQ_REDIS_URL, CHATQ_PUBLIC_URL and CHATQ_SECRETS_KEY.",
		p.webhookRegisterCommand())
}

func (p *program) webhookRegisterCommand() *cobra.Command {
	var sender string
	cmd := command("register [--sender N]", "register chatq's webhook URL with ChatArchitect",
		"Registers CHATQ_PUBLIC_URL + /webhooks/chatarchitect/ + CHATQ_WEBHOOK_SECRET with ChatArchitect.\n"+
			"With --sender, registers CHATQ_PUBLIC_URL + that sender's webhook_path, with its app's credentials\n"+
			"and number.\n"+
			"Needs CHATQ_CA_APP_ID, CHATQ_CA_APP_SECRET, CHATQ_CA_SOURCE, CHATQ_PUBLIC_URL and CHATQ_WEBHOOK_SECRET;\n"+
			"with --sender, CHATQ_REDIS_URL, CHATQ_PUBLIC_URL and CHATQ_SECRETS_KEY.",
		noArgs, func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("sender") {
				if err := enqueue.ValidateDestination("sender", senders.Normalize(sender)); err != nil {
					return usageError(prefixed(cmd, "--"+err.Error()))
				}
				return p.webhookRegisterSender(cmd.Context(), senders.Normalize(sender))
			}
			return p.webhookRegister(cmd.Context())
		})
	cmd.Flags().StringVar(&sender, "sender", "", "the sender whose own webhook URL to register (default: the CHATQ_CA_ variables' number)")
	return cmd
}

func (p *program) webhookRegister(ctx context.Context) error {
	cfg, err := loadConfig(config.Default(), append(caNeeds, "CHATQ_PUBLIC_URL", "CHATQ_WEBHOOK_SECRET")...)
	if err != nil {
		return err
	}
	base := strings.TrimRight(cfg.PublicURL, "/") + "/webhooks/chatarchitect/"
	if err := caClient(cfg).RegisterWebhook(ctx, base+cfg.WebhookSecret); err != nil {
		return err
	}
	fmt.Fprintf(p.stdout, "webhook registered for %s: %s%s\n", cfg.CASource, base, mask(cfg.WebhookSecret))
	return nil
}

// webhookRegisterSender registers the webhook URL of the sender of number
// with ChatArchitect, as that sender's app.
func (p *program) webhookRegisterSender(ctx context.Context, number string) error {
	cfg, rdb, err := connect(ctx, "CHATQ_PUBLIC_URL")
	if err != nil {
		return err
	}
	defer rdb.Close()
	if number != senders.Normalize(cfg.CASource) {
		// A stored sender's credentials are sealed under the key.
		if err := cfg.Need("CHATQ_SECRETS_KEY"); err != nil {
			return err
		}
	}
	reg, err := newRegistry(rdb, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer reg.Stop()
	x, ok := reg.Lookup(number)
	if !ok {
		return fmt.Errorf("sender %s: %w", number, senders.ErrNotFound)
	}
	if x.WebhookSecret == "" {
		// The environment's sender without CHATQ_WEBHOOK_SECRET.
		return errors.New("CHATQ_WEBHOOK_SECRET is not set")
	}
	client := chatarchitect.New(chatarchitect.Config{BaseURL: cfg.CABaseURL, AppID: x.AppID, AppSecret: x.AppSecret,
		Source: x.Number, Timeout: cfg.CATimeout}, nil)
	base := strings.TrimRight(cfg.PublicURL, "/") + "/webhooks/chatarchitect/"
	if err := client.RegisterWebhook(ctx, base+x.WebhookSecret); err != nil {
		return fmt.Errorf("register the webhook of sender %s: %w", x.Number, err)
	}
	fmt.Fprintf(p.stdout, "webhook registered for %s: %s%s\n", x.Number, base, mask(x.WebhookSecret))
	return nil
}

// mask shows a secret's first characters only.
func mask(secret string) string {
	n := min(4, len(secret)/4)
	return secret[:n] + strings.Repeat("*", 8)
}
