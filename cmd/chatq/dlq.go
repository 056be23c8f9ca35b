package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/deadletter"
	"github.com/chatq/chatq/internal/store"
)

const dlqUsage = "dlq list|show|retry|delete\n\n" +
	"Dead letters: messages chatq gave up on (a permanent error, a policy refusal, or retries\n" +
	"exhausted), from chatq's own records, however old (asynq's archive keeps at most 10,000\n" +
	"tasks per queue for 90 days).\n" +
	"  chatq dlq list [filters] [--limit N] [--json]\n" +
	"  chatq dlq show ID\n" +
	"  chatq dlq retry ID... | --all | filters     send them again, each with a fresh retry budget\n" +
	"  chatq dlq delete ID... | --all | filters    take them off the list and out of asynq's archive\n" +
	"Filters: --queue, --class, --code, --batch, --older-than, --newer-than (how long ago it died).\n" +
	"After an outage, for example: chatq dlq retry --class retryable --newer-than 2h\n" +
	"Needs CHATQ_REDIS_URL."

func (p *program) dlq(ctx context.Context, args []string) error {
	return p.subcommand(ctx, "dlq", dlqUsage, args, map[string]func(context.Context, []string) error{
		"list":   p.dlqList,
		"show":   p.dlqShow,
		"retry":  p.dlqRetry,
		"delete": p.dlqDelete,
	})
}

// dlqFilter holds the filter flags of a dlq subcommand.
type dlqFilter struct {
	params deadletter.Params
}

func (d *dlqFilter) register(fs *flag.FlagSet) {
	fs.StringVar(&d.params.Queue, "queue", "", "only this queue: transactional, bulk (every bulk shard) or bulk-N")
	fs.StringVar(&d.params.Class, "class", "", "only this error class: retryable, permanent, rate_limited, policy, account")
	fs.StringVar(&d.params.Code, "code", "", "only this error code (131026, http_400, suppressed...)")
	fs.StringVar(&d.params.BatchID, "batch", "", "only this campaign (batch_id)")
	fs.StringVar(&d.params.OlderThan, "older-than", "", "only those that died longer ago than this (10m, 2h)")
	fs.StringVar(&d.params.NewerThan, "newer-than", "", "only those that died within this (10m, 2h)")
}

// filter checks the flags; a bad one is a usage error naming the flag.
func (d *dlqFilter) filter(now time.Time) (store.DeadFilter, error) {
	f, err := d.params.Filter(now)
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

func (p *program) dlqList(ctx context.Context, args []string) error {
	fs := p.flags("dlq list", "dlq list [filters] [--limit N] [--json]\n\n"+
		"Lists dead letters, the most recent death first. Needs CHATQ_REDIS_URL.")
	var df dlqFilter
	df.register(fs)
	limit := fs.Int("limit", 50, "stop after this many (0: all)")
	asJSON := fs.Bool("json", false, "print one JSON object per dead letter (the job record and died_at)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *limit < 0 {
		return usageError("--limit must not be negative")
	}
	f, err := df.filter(time.Now())
	if err != nil {
		return err
	}
	return withDeadLetters(ctx, func(env dlqEnv) error {
		tw := tabwriter.NewWriter(p.stdout, 2, 4, 2, ' ', 0)
		enc := json.NewEncoder(p.stdout)
		if !*asJSON {
			fmt.Fprintln(tw, "ID\tDIED\tQUEUE\tCLASS\tCODE\tATTEMPTS\tBATCH\tREASON")
		}
		size := store.MaxPage
		if *limit > 0 {
			size = min(*limit, size)
		}
		n, cursor := 0, ""
		for {
			page, err := env.dead.List(ctx, f, cursor, size)
			if err != nil {
				return err
			}
			for _, d := range page.DeadLetters {
				if *limit > 0 && n >= *limit {
					return tw.Flush()
				}
				n++
				if *asJSON {
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

func (p *program) dlqShow(ctx context.Context, args []string) error {
	fs := p.flags("dlq show", "dlq show ID\n\n"+
		"Prints a dead letter: its job record (history, last_error) and its task in asynq's\n"+
		"archive, when it is still there. Needs CHATQ_REDIS_URL.")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("dlq show: the message id is required")
	}
	id := fs.Arg(0)
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

// archivedTask is what asynq's archive keeps of a dead letter's task: the
// payload is the job id, never the body.
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

func (p *program) dlqRetry(ctx context.Context, args []string) error {
	return p.dlqAct(ctx, args, "retry", "dlq retry ID... | --all | filters\n\n"+
		"Sends dead letters again: each record goes back to queued, keeping its history (which notes\n"+
		"the retry), with a new task and a fresh retry budget (CHATQ_RETRY_MAX). By ids, by filter, or\n"+
		"--all. After an outage: chatq dlq retry --newer-than 2h. Needs CHATQ_REDIS_URL.",
		(*deadletter.Manager).Retry, (*deadletter.Manager).RetryMatching)
}

func (p *program) dlqDelete(ctx context.Context, args []string) error {
	return p.dlqAct(ctx, args, "delete", "dlq delete ID... | --all | filters\n\n"+
		"Takes dead letters off the list and deletes their tasks from asynq's archive. Their records\n"+
		"stay, dead, until CHATQ_RECORD_TTL, so that applications can still read what became of\n"+
		"their messages. By ids, by filter, or --all. Needs CHATQ_REDIS_URL.",
		(*deadletter.Manager).Delete, (*deadletter.Manager).DeleteMatching)
}

// dlqAct runs retry or delete, by ids or by filter.
func (p *program) dlqAct(ctx context.Context, args []string, verb, usage string,
	byIDs func(*deadletter.Manager, context.Context, []string) (deadletter.Report, error),
	byFilter func(*deadletter.Manager, context.Context, store.DeadFilter) (deadletter.Report, error),
) error {
	fs := p.flags("dlq "+verb, usage)
	var df dlqFilter
	df.register(fs)
	all := fs.Bool("all", false, "every dead letter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids := fs.Args()
	filtered := !df.params.Empty()
	switch {
	case len(ids) > 0 && (filtered || *all):
		return usageError(fmt.Sprintf("dlq %s: give ids, or --all or filters, not both (flags go before ids)", verb))
	case len(ids) == 0 && !filtered && !*all:
		return usageError(fmt.Sprintf("dlq %s: give ids, filters, or --all for every dead letter", verb))
	case *all && filtered:
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
