package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/deadletter"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

func (p *program) dlqCommand() *cobra.Command {
	return group("dlq <command>", "list, show, retry or delete dead letters",
		"Dead letters: messages chatq gave up on (a permanent error, a policy refusal, or retries\n"+
			"exhausted), from chatq's own records, however old (asynq's archive keeps at most 10,000\n"+
			"tasks per queue for 90 days).\n"+
			"Filters: --queue, --class, --code, --batch, --older-than, --newer-than (how long ago it died).\n"+
			"Each tenant has its own dead letters: --tenant names whose (default: tenant default).\n"+
			"After an outage, for example: chatq dlq retry --class retryable --newer-than 2h\n"+
			"Needs CHATQ_REDIS_URL.",
		p.dlqListCommand(), p.dlqShowCommand(), p.dlqRetryCommand(), p.dlqDeleteCommand())
}

// dlqFilter holds the filter flags of a dlq subcommand.
type dlqFilter struct {
	params deadletter.Params
	// tenant owns the dead letters the filter selects.
	tenant string
	// tenantGiven is set when --tenant was given, not defaulted.
	tenantGiven bool
}

func (d *dlqFilter) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&d.params.Queue, "queue", "", "only this queue: transactional, bulk (every bulk shard) or bulk-N")
	fs.StringVar(&d.params.Class, "class", "", "only this error class: retryable, permanent, rate_limited, policy, account, marketing_capped, template_paused")
	fs.StringVar(&d.params.Code, "code", "", "only this error code (131026, http_400, suppressed...)")
	fs.StringVar(&d.params.BatchID, "batch", "", "only this campaign (batch_id)")
	fs.StringVar(&d.params.OlderThan, "older-than", "", "only those that died longer ago than this (10m, 2h)")
	fs.StringVar(&d.params.NewerThan, "newer-than", "", "only those that died within this (10m, 2h)")
	fs.StringVar(&d.tenant, "tenant", store.DefaultTenant, "the tenant whose dead letters these are")
	_ = cmd.RegisterFlagCompletionFunc("queue", choices("transactional", "bulk"))
	_ = cmd.RegisterFlagCompletionFunc("class", choices("retryable", "permanent", "rate_limited", "policy", "account"))
}

// filter checks the flags; a bad one is a usage error naming the flag.
func (d *dlqFilter) filter(now time.Time) (store.DeadFilter, error) {
	f, err := d.params.Filter(now)
	if err == nil {
		f.Tenant = d.tenant
		err = tenants.Validate("tenant", d.tenant)
	}
	var ve *enqueue.ValidationError
	if errors.As(err, &ve) {
		flagName := strings.ReplaceAll(ve.Field, "_", "-")
		if flagName == "batch-id" {
			flagName = "batch"
		}
		return f, usageError(fmt.Sprintf("--%s %s", flagName, ve.Reason))
	}
	return f, err
}

// dlqEnv is what the dlq subcommands work with.
type dlqEnv struct {
	dead    *deadletter.Manager
	store   *store.Store
	archive *asynq.Inspector
}

// withDeadLetters opens Redis and runs f with the dead letters on it.
func withDeadLetters(ctx context.Context, f func(env dlqEnv) error) error {
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	client := enqueueClient(rdb, cfg)
	defer client.Close()
	archive := asynq.NewInspectorFromRedisClient(rdb)
	// A retried message with a callback URL gets its "queued" callback.
	st := store.New(rdb, store.Config{TTL: cfg.RecordTTL, Notifier: callbackNotifier(rdb, zap.NewNop())})
	return f(dlqEnv{dead: deadletter.New(st, client, archive), store: st, archive: archive})
}

// dlqListFlags are chatq dlq list's flags.
type dlqListFlags struct {
	filter dlqFilter
	limit  int
	asJSON bool
}

func (p *program) dlqListCommand() *cobra.Command {
	var f dlqListFlags
	cmd := command("list [filters] [--limit N] [--json]", "list dead letters, the most recent death first",
		"Lists dead letters, the most recent death first. Needs CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.dlqList(cmd.Context(), f) })
	f.filter.register(cmd)
	cmd.Flags().IntVar(&f.limit, "limit", 50, "stop after this many (0: all)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print one JSON object per dead letter (the job record and died_at)")
	return cmd
}

func (p *program) dlqList(ctx context.Context, lf dlqListFlags) error {
	if lf.limit < 0 {
		return usageError("--limit must not be negative")
	}
	f, err := lf.filter.filter(time.Now())
	if err != nil {
		return err
	}
	return withDeadLetters(ctx, func(env dlqEnv) error {
		tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
		enc := json.NewEncoder(p.stdout)
		if !lf.asJSON {
			fmt.Fprintln(tw, "ID\tDIED\tQUEUE\tCLASS\tCODE\tATTEMPTS\tBATCH\tREASON")
		}
		size := store.MaxPage
		if lf.limit > 0 {
			size = min(lf.limit, size)
		}
		n, cursor := 0, ""
		for {
			page, err := env.dead.List(ctx, f, cursor, size)
			if err != nil {
				return err
			}
			for _, d := range page.DeadLetters {
				if lf.limit > 0 && n >= lf.limit {
					return tw.Flush()
				}
				n++
				if lf.asJSON {
					if err := enc.Encode(d); err != nil {
						return err
					}
					continue
				}
				class, code, reason := "-", "-", ""
				if e := d.LastError; e != nil {
					class, code, reason = cmpOr(e.Class, "-"), cmpOr(e.Code, "-"), e.Message
				}
				batch := "-"
				if d.BatchID != nil {
					batch = *d.BatchID
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.DiedAt.Format(time.RFC3339), d.Queue, class, code, d.Attempts, batch, oneLine(reason, 80))
			}
			if cursor = page.Next; cursor == "" {
				return tw.Flush()
			}
		}
	})
}

func (p *program) dlqShowCommand() *cobra.Command {
	return command("show ID", "show a dead letter with its archived task",
		"Prints a dead letter: its job record (history, last_error) and its task in asynq's\n"+
			"archive, when it is still there. Needs CHATQ_REDIS_URL.",
		oneArg("the message id"), func(cmd *cobra.Command, args []string) error { return p.dlqShow(cmd.Context(), args[0]) })
}

func (p *program) dlqShow(ctx context.Context, id string) error {
	return withDeadLetters(ctx, func(env dlqEnv) error {
		rec, err := env.store.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no message with id %q", id)
		}
		if err != nil {
			return err
		}
		out := struct {
			Record *store.Record `json:"record"`
			Task   *archivedTask `json:"archived_task"`
		}{Record: rec, Task: archivedTaskOf(env.archive, rec)}
		if err := p.printJSON(out); err != nil {
			return err
		}
		if rec.Status != store.Dead {
			fmt.Fprintf(p.stderr, "note: %s is %s, not a dead letter\n", id, rec.Status)
		}
		return nil
	})
}

// archivedTask is what asynq's archive keeps of a dead letter's task: its
// id names the job, and it holds no body.
type archivedTask struct {
	Queue        string    `json:"queue"`
	State        string    `json:"state"`
	Retried      int       `json:"retried"`
	MaxRetry     int       `json:"max_retry"`
	LastError    string    `json:"last_error"`
	LastFailedAt time.Time `json:"last_failed_at"`
}

func archivedTaskOf(archive *asynq.Inspector, rec *store.Record) *archivedTask {
	queue := cmpOr(rec.Queue, enqueue.QueueFor(enqueue.Priority(rec.Priority)))
	info, err := archive.GetTaskInfo(queue, rec.TaskID)
	if err != nil {
		return nil
	}
	return &archivedTask{Queue: info.Queue, State: info.State.String(), Retried: info.Retried, MaxRetry: info.MaxRetry,
		LastError: info.LastErr, LastFailedAt: info.LastFailedAt.UTC()}
}

func (p *program) dlqRetryCommand() *cobra.Command {
	return p.dlqActCommand("retry", "send dead letters again, each with a fresh retry budget",
		"Sends dead letters again: each record goes back to queued, keeping its history (which notes\n"+
			"the retry), with a new task and a fresh retry budget (CHATQ_RETRY_MAX). By ids, by filter, or\n"+
			"--all. After an outage: chatq dlq retry --newer-than 2h. Needs CHATQ_REDIS_URL.",
		(*deadletter.Manager).Retry, (*deadletter.Manager).RetryMatching)
}

func (p *program) dlqDeleteCommand() *cobra.Command {
	return p.dlqActCommand("delete", "take dead letters off the list and out of asynq's archive",
		"Takes dead letters off the list and deletes their tasks from asynq's archive. Their records\n"+
			"stay, dead, until CHATQ_RECORD_TTL, so that applications can still read what became of\n"+
			"their messages. By ids, by filter, or --all. Needs CHATQ_REDIS_URL.",
		(*deadletter.Manager).Delete, (*deadletter.Manager).DeleteMatching)
}

// dlqActCommand is retry or delete, by ids or by filter.
func (p *program) dlqActCommand(verb, short, long string,
	byIDs func(*deadletter.Manager, context.Context, []string) (deadletter.Report, error),
	byFilter func(*deadletter.Manager, context.Context, store.DeadFilter) (deadletter.Report, error),
) *cobra.Command {
	var df dlqFilter
	var all bool
	cmd := command(verb+" ID... | --all | filters", short, long, cobra.ArbitraryArgs, func(cmd *cobra.Command, ids []string) error {
		df.tenantGiven = cmd.Flags().Changed("tenant")
		return p.dlqAct(cmd.Context(), verb, ids, df, all, byIDs, byFilter)
	})
	df.register(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "every dead letter (of the tenant)")
	return cmd
}

// dlqAct runs retry or delete, by ids or by filter.
func (p *program) dlqAct(ctx context.Context, verb string, ids []string, df dlqFilter, all bool,
	byIDs func(*deadletter.Manager, context.Context, []string) (deadletter.Report, error),
	byFilter func(*deadletter.Manager, context.Context, store.DeadFilter) (deadletter.Report, error),
) error {
	filtered := !df.params.Empty()
	switch {
	case len(ids) > 0 && (filtered || all):
		return usageError(fmt.Sprintf("dlq %s: give ids, or --all or filters, not both", verb))
	case len(ids) > 0 && df.tenantGiven:
		// An id names its message, whatever its tenant.
		return usageError(fmt.Sprintf("dlq %s: --tenant selects with --all or filters; ids need none", verb))
	case len(ids) == 0 && !filtered && !all:
		return usageError(fmt.Sprintf("dlq %s: give ids, filters, or --all for every dead letter", verb))
	case all && filtered:
		return usageError(fmt.Sprintf("dlq %s: --all selects every dead letter; drop it to use filters", verb))
	}
	f, err := df.filter(time.Now())
	if err != nil {
		return err
	}
	return withDeadLetters(ctx, func(env dlqEnv) error {
		var rep deadletter.Report
		var err error
		if len(ids) > 0 {
			rep, err = byIDs(env.dead, ctx, ids)
		} else {
			rep, err = byFilter(env.dead, ctx, f)
		}
		for _, r := range rep.Results {
			if r.Outcome == deadletter.NotDead {
				fmt.Fprintf(p.stdout, "%s: not a dead letter (%s), left as it is\n", r.ID, r.Status)
			}
			if r.Outcome == deadletter.NotFound {
				fmt.Fprintf(p.stdout, "%s: no such message (expired?)\n", r.ID)
			}
		}
		done := map[string]string{"retry": "retried", "delete": "deleted"}[verb]
		fmt.Fprintf(p.stdout, "%s %s", done, plural(rep.Done, "dead letter"))
		if rep.NotDead+rep.NotFound > 0 {
			fmt.Fprintf(p.stdout, " (%d not dead, %d not found)", rep.NotDead, rep.NotFound)
		}
		fmt.Fprintln(p.stdout)
		return err
	})
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
