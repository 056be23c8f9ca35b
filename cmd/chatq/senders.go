package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/config"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/jsontime"
	"github.com/chatq/chatq/internal/senders"
)

// The senders commands work on the registry in Redis directly, with the
// same fields and checks as /v1/senders; every chatq process sees their
// changes within a second.

func (p *program) sendersCommand() *cobra.Command {
	return group("senders <command>", "add, list, show, change, pause or remove senders",
		"Manages the senders: the business numbers chatq sends from, each with its ChatArchitect app's\n"+
			"credentials, its tenant and its limits (the same fields as POST /v1/senders).\n"+
			"Needs CHATQ_REDIS_URL, and CHATQ_SECRETS_KEY for add, update, pause and resume (and for any\n"+
			"command once senders are stored: their secrets are sealed under it).",
		p.sendersAddCommand(), p.sendersListCommand(), p.sendersShowCommand(), p.sendersUpdateCommand(),
		p.sendersRemoveCommand(), p.sendersPauseCommand(true), p.sendersPauseCommand(false))
}

// withRegistry opens Redis and runs f with the sender registry on it.
func withRegistry(ctx context.Context, needs []string, f func(*senders.Registry, config.Config) error) error {
	cfg, rdb, err := connect(ctx, needs...)
	if err != nil {
		return err
	}
	defer rdb.Close()
	reg, err := newRegistry(rdb, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer reg.Stop()
	return f(reg, cfg)
}

// senderFlags are the flags of senders add and update, named after the
// fields of POST /v1/senders.
type senderFlags struct {
	number, appID, appSecret, tenant, portfolio string
	secretStdin                                 bool
	rate                                        float64
	burst, pairBurst, daily                     int
	pairInterval                                time.Duration
	isDefault, paused, json                     bool
	reset                                       []string
}

func (f *senderFlags) register(fs *pflag.FlagSet, add bool) {
	if add {
		fs.StringVar(&f.number, "number", "", "the business's WhatsApp number (required)")
	}
	fs.StringVar(&f.appID, "app-id", "", "its ChatArchitect app's id"+requiredOnAdd(add))
	fs.StringVar(&f.appSecret, "app-secret", "", "its ChatArchitect app's secret; --app-secret-stdin keeps it off the command line")
	fs.BoolVar(&f.secretStdin, "app-secret-stdin", false, "read the app secret from the first line of stdin")
	fs.StringVar(&f.tenant, "tenant", "", "the tenant that owns it"+requiredOnAdd(add))
	fs.StringVar(&f.portfolio, "portfolio", "", "the portfolio whose daily limit it shares (default: its own number)")
	fs.Float64Var(&f.rate, "rate-per-second", 0, "messages/s (default: CHATQ_RATE_PER_SECOND)")
	fs.IntVar(&f.burst, "rate-burst", 0, "burst of that rate (default: a second's worth of its own rate, or CHATQ_RATE_BURST)")
	fs.DurationVar(&f.pairInterval, "pair-interval", 0, "spacing of sends to one recipient, such as 6s; 0s turns it off (default: CHATQ_PAIR_INTERVAL)")
	fs.IntVar(&f.pairBurst, "pair-burst", 0, "sends to one recipient allowed back to back (default: CHATQ_PAIR_BURST)")
	fs.IntVar(&f.daily, "daily-recipient-limit", 0, "unique recipients per moving 24h, 0 off (default: CHATQ_DAILY_RECIPIENT_LIMIT)")
	fs.BoolVar(&f.isDefault, "default", false, "make it its tenant's default sender (--default=false unmarks it)")
	if add {
		fs.BoolVar(&f.paused, "paused", false, "add it paused: its messages wait until senders resume")
	} else {
		fs.StringSliceVar(&f.reset, "reset", nil, "set these limits back to the deployment's: "+strings.Join(senders.LimitNames, ", "))
	}
	fs.BoolVar(&f.json, "json", false, "print the sender as JSON, as the API answers")
}

func requiredOnAdd(add bool) string {
	if add {
		return " (required)"
	}
	return ""
}

// secret returns the app secret of --app-secret or --app-secret-stdin, and
// whether one was given.
func (f *senderFlags) secret(cmd *cobra.Command, stdin io.Reader) (string, bool, error) {
	switch {
	case f.secretStdin && cmd.Flags().Changed("app-secret"):
		return "", false, usageError(prefixed(cmd, "give --app-secret or --app-secret-stdin, not both"))
	case f.secretStdin:
		line, err := bufio.NewReader(io.LimitReader(stdin, 4<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("read the app secret from stdin: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", false, usageError(prefixed(cmd, "--app-secret-stdin: stdin holds no secret"))
		}
		return line, true, nil
	case cmd.Flags().Changed("app-secret"):
		return f.appSecret, true, nil
	}
	return "", false, nil
}

// overrides returns the limits whose flags were given.
func (f *senderFlags) overrides(fs *pflag.FlagSet) senders.Overrides {
	var o senders.Overrides
	if fs.Changed("rate-per-second") {
		o.RatePerSecond = &f.rate
	}
	if fs.Changed("rate-burst") {
		o.RateBurst = &f.burst
	}
	if fs.Changed("pair-interval") {
		o.PairInterval = &f.pairInterval
	}
	if fs.Changed("pair-burst") {
		o.PairBurst = &f.pairBurst
	}
	if fs.Changed("daily-recipient-limit") {
		o.DailyRecipientLimit = &f.daily
	}
	return o
}

// flagError turns the registry's refusal of a field into a mistake in the
// command line that names the field's flag.
func flagError(cmd *cobra.Command, err error) error {
	var ve *enqueue.ValidationError
	if errors.As(err, &ve) && ve.Field != "" {
		return usageError(prefixed(cmd, "--"+strings.ReplaceAll(ve.Field, "_", "-")+" "+ve.Reason))
	}
	return err
}

func (p *program) sendersAddCommand() *cobra.Command {
	var f senderFlags
	cmd := command("add --number N --app-id ID (--app-secret S | --app-secret-stdin) --tenant T [flags]", "add a sender",
		"Adds a sender, as POST /v1/senders does. A limit not given is the deployment's (its CHATQ_ variable).\n"+
			"Prefer --app-secret-stdin (printf '%s\\n' \"$SECRET\" | chatq senders add ...): a command line is seen by\n"+
			"every user of the machine and kept in shell histories.\n"+
			"Needs CHATQ_REDIS_URL and CHATQ_SECRETS_KEY.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.sendersAdd(cmd, &f) })
	f.register(cmd.Flags(), true)
	return cmd
}

func (p *program) sendersAdd(cmd *cobra.Command, f *senderFlags) error {
	secret, ok, err := f.secret(cmd, p.stdin)
	if err != nil {
		return err
	}
	for _, req := range []struct{ flag, value string }{{"--number", f.number}, {"--app-id", f.appID}, {"--tenant", f.tenant}} {
		if req.value == "" {
			return usageError(prefixed(cmd, req.flag+" is required"))
		}
	}
	if !ok {
		return usageError(prefixed(cmd, "--app-secret or --app-secret-stdin is required"))
	}
	sp := senders.Spec{Number: f.number, AppID: f.appID, AppSecret: secret, Tenant: f.tenant, Portfolio: f.portfolio,
		Overrides: f.overrides(cmd.Flags()), Default: f.isDefault, Paused: f.paused}
	ctx := cmd.Context()
	return withRegistry(ctx, []string{"CHATQ_SECRETS_KEY"}, func(reg *senders.Registry, cfg config.Config) error {
		x, err := reg.Add(ctx, sp)
		if err != nil {
			return flagError(cmd, err)
		}
		return p.printSender(x, cfg, f.json, "added")
	})
}

func (p *program) sendersListCommand() *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := command("list [--tenant T] [--json]", "list the senders",
		"Lists the senders by number, the environment's (CHATQ_CA_SOURCE) among them when it is set.\n"+
			"Needs CHATQ_REDIS_URL (and CHATQ_SECRETS_KEY once senders are stored).",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.sendersList(cmd.Context(), tenant, asJSON) })
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's senders")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"senders":[...]} as GET /v1/senders answers`)
	return cmd
}

func (p *program) sendersList(ctx context.Context, tenant string, asJSON bool) error {
	return withRegistry(ctx, nil, func(reg *senders.Registry, cfg config.Config) error {
		all := reg.All()
		if tenant != "" {
			all = reg.OfTenant(tenant)
		}
		views := make([]api.SenderView, len(all))
		for i, x := range all {
			views[i] = api.ViewSender(x, cfg.WebhookSecret)
		}
		if asJSON {
			return p.printJSON(map[string]any{"senders": views})
		}
		tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NUMBER\tTENANT\tAPP_ID\tPORTFOLIO\tRATE\tBURST\tPAIR\tPAIR_BURST\tDAILY\tDEFAULT\tSTATE\tSOURCE")
		for _, v := range views {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\n", v.Number, v.Tenant, v.AppID, v.Portfolio,
				strconv.FormatFloat(v.RatePerSecond, 'g', -1, 64), v.RateBurst, v.PairInterval, v.PairBurst, daily(v.DailyRecipientLimit),
				yesNo(v.Default), v.State, v.Source)
		}
		return tw.Flush()
	})
}

func daily(n int) string {
	if n == 0 {
		return "off"
	}
	return strconv.Itoa(n)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printSender prints a sender, as JSON or as one field a line; done, if
// set, says what just happened to it.
func (p *program) printSender(x senders.Sender, cfg config.Config, asJSON bool, done string) error {
	v := api.ViewSender(x, cfg.WebhookSecret)
	if asJSON {
		return p.printJSON(v)
	}
	if done != "" {
		fmt.Fprintf(p.stdout, "sender %s %s\n", v.Number, done)
	}
	// The webhook path holds the sender's webhook secret: --json shows it
	// whole, as the API does.
	secret := strings.TrimPrefix(v.WebhookPath, "/webhooks/chatarchitect/")
	tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"number", v.Number}, {"app_id", v.AppID}, {"tenant", v.Tenant}, {"portfolio", v.Portfolio},
		{"rate_per_second", strconv.FormatFloat(v.RatePerSecond, 'g', -1, 64)}, {"rate_burst", strconv.Itoa(v.RateBurst)},
		{"pair_interval", v.PairInterval}, {"pair_burst", strconv.Itoa(v.PairBurst)},
		{"daily_recipient_limit", daily(v.DailyRecipientLimit)}, {"default", yesNo(v.Default)}, {"state", v.State},
		{"webhook_path", "/webhooks/chatarchitect/" + mask(secret)}, {"webhook_url", derefOr(v.WebhookURL, "-")},
		{"source", v.Source}, {"created_at", timeOr(v.CreatedAt)}, {"updated_at", timeOr(v.UpdatedAt)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func derefOr(s *string, or string) string {
	if s == nil {
		return or
	}
	return *s
}

func timeOr(t *jsontime.Time) string {
	if t == nil {
		return "-"
	}
	return time.Time(*t).Format(time.RFC3339)
}

// oneSender wants a subcommand's one argument, a sender's number.
func oneSender(cmd *cobra.Command, args []string) error {
	if err := oneArg("the sender's number")(cmd, args); err != nil {
		return err
	}
	if err := enqueue.ValidateDestination("number", senders.Normalize(args[0])); err != nil {
		return usageError(prefixed(cmd, err.Error()))
	}
	return nil
}

func (p *program) sendersShowCommand() *cobra.Command {
	var asJSON bool
	cmd := command("show NUMBER [--json]", "show one sender",
		"Shows one sender (its webhook secret masked; --json shows it whole, as GET /v1/senders/{number}).\n"+
			"Needs CHATQ_REDIS_URL (and CHATQ_SECRETS_KEY once senders are stored).",
		oneSender, func(cmd *cobra.Command, args []string) error {
			return withRegistry(cmd.Context(), nil, func(reg *senders.Registry, cfg config.Config) error {
				x, ok := reg.Lookup(args[0])
				if !ok {
					return fmt.Errorf("sender %s: %w", senders.Normalize(args[0]), senders.ErrNotFound)
				}
				return p.printSender(x, cfg, asJSON, "")
			})
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the sender as JSON, as the API answers")
	return cmd
}

func (p *program) sendersUpdateCommand() *cobra.Command {
	var f senderFlags
	cmd := command("update NUMBER [flags]", "change a sender's credentials, tenant, portfolio or limits",
		"Changes the fields given, as PATCH /v1/senders/{number} does; --reset sets limits back to the\n"+
			"deployment's. The number cannot change (remove the sender and add the new one); pause and resume\n"+
			"have commands of their own.\nNeeds CHATQ_REDIS_URL and CHATQ_SECRETS_KEY.",
		oneSender, func(cmd *cobra.Command, args []string) error { return p.sendersUpdate(cmd, args[0], &f) })
	f.register(cmd.Flags(), false)
	_ = cmd.RegisterFlagCompletionFunc("reset", choices(senders.LimitNames...))
	return cmd
}

func (p *program) sendersUpdate(cmd *cobra.Command, number string, f *senderFlags) error {
	secret, ok, err := f.secret(cmd, p.stdin)
	if err != nil {
		return err
	}
	fs := cmd.Flags()
	var pt senders.Patch
	if ok {
		pt.AppSecret = &secret
	}
	for flag, dst := range map[string]**string{"app-id": &pt.AppID, "tenant": &pt.Tenant, "portfolio": &pt.Portfolio} {
		if fs.Changed(flag) {
			v := fs.Lookup(flag).Value.String()
			*dst = &v
		}
	}
	if fs.Changed("default") {
		pt.Default = &f.isDefault
	}
	pt.Overrides = f.overrides(fs)
	for _, name := range f.reset {
		if !slices.Contains(senders.LimitNames, name) {
			return usageError(prefixed(cmd, fmt.Sprintf("--reset: %q is not a limit (%s)", name, strings.Join(senders.LimitNames, ", "))))
		}
		if fs.Changed(strings.ReplaceAll(name, "_", "-")) {
			return usageError(prefixed(cmd, fmt.Sprintf("--reset %s and --%s contradict each other", name, strings.ReplaceAll(name, "_", "-"))))
		}
	}
	pt.Reset = f.reset
	changed := false
	fs.Visit(func(fl *pflag.Flag) { changed = changed || fl.Name != "json" })
	if !changed {
		return usageError(prefixed(cmd, "nothing to change: give the fields to change as flags (see --help)"))
	}
	ctx := cmd.Context()
	return withRegistry(ctx, []string{"CHATQ_SECRETS_KEY"}, func(reg *senders.Registry, cfg config.Config) error {
		x, err := reg.Update(ctx, number, pt)
		if err != nil {
			return flagError(cmd, err)
		}
		return p.printSender(x, cfg, f.json, "changed")
	})
}

func (p *program) sendersRemoveCommand() *cobra.Command {
	return command("remove NUMBER", "remove a sender",
		"Removes a sender: its messages that still wait are not sent from it. Needs CHATQ_REDIS_URL\n"+
			"(and CHATQ_SECRETS_KEY once senders are stored).",
		oneSender, func(cmd *cobra.Command, args []string) error {
			return withRegistry(cmd.Context(), nil, func(reg *senders.Registry, _ config.Config) error {
				if err := reg.Remove(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(p.stdout, "sender %s removed\n", senders.Normalize(args[0]))
				return nil
			})
		})
}

// sendersPauseCommand is senders pause, or senders resume.
func (p *program) sendersPauseCommand(pause bool) *cobra.Command {
	use, short, long, done := "pause NUMBER", "hold a sender's messages back",
		"Pauses a sender: its messages are still accepted and wait (reason paused) until it is resumed.", "paused"
	if !pause {
		use, short, long, done = "resume NUMBER", "let a paused sender's messages go",
			"Resumes a paused sender: its waiting messages go.", "resumed"
	}
	var asJSON bool
	cmd := command(use, short, long+"\nNeeds CHATQ_REDIS_URL and CHATQ_SECRETS_KEY.",
		oneSender, func(cmd *cobra.Command, args []string) error {
			return withRegistry(cmd.Context(), []string{"CHATQ_SECRETS_KEY"}, func(reg *senders.Registry, cfg config.Config) error {
				x, err := reg.SetPaused(cmd.Context(), args[0], pause)
				if err != nil {
					return err
				}
				return p.printSender(x, cfg, asJSON, done)
			})
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the sender as JSON, as the API answers")
	return cmd
}
