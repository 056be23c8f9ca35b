package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
)

// campaignChunk is how many messages one SendBatch call of chatq campaign
// send carries, and one policy check looks at.
const campaignChunk = 500

func (p *program) campaignCommand() *cobra.Command {
	return group("campaign <command>", "send a template to the recipients of a CSV file, and watch it",
		"A campaign is the messages that share a batch id: chatq campaign send sends a template to every\n"+
			"recipient of a CSV file, chatq campaign watch follows them until they have ended.\n"+
			"Needs CHATQ_REDIS_URL.",
		p.campaignSendCommand(), p.campaignWatchCommand())
}

// campaignSendFlags are chatq campaign send's flags.
type campaignSendFlags struct {
	csv, template, language, sender, batch, sendAt, priority string
	dryRun                                                   bool
}

func (p *program) campaignSendCommand() *cobra.Command {
	var f campaignSendFlags
	cmd := command("send --csv FILE --template NAME --language CODE [flags]", "send a template to every recipient of a CSV file",
		"Sends a template message to every row of a CSV file. Its header names a destination column; every\n"+
			"other column is a template parameter: by number when they are named 1, 2, 3..., else in the\n"+
			"order of the file. Every row is checked first (the number, each parameter, the suppression list,\n"+
			"the template and its number of parameters); a bad row stops the campaign before anything is\n"+
			"sent, with the line and the field of each. Then the messages are queued, in batches, and the\n"+
			"batch id is printed. Running the same command again (after a crash, say) sends nothing twice:\n"+
			"each row's idempotency key is the batch id and the row's number, and the batch id, unless\n"+
			"--batch names one, comes from the file and the flags. Needs CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.campaignSend(cmd.Context(), f) })
	fs := cmd.Flags()
	fs.StringVar(&f.csv, "csv", "", "the CSV `FILE` of recipients (\"-\" reads stdin)")
	fs.StringVar(&f.template, "template", "", "the approved template's `NAME` (elementName)")
	fs.StringVar(&f.language, "language", "", "the template's language `CODE`, such as en or en_US")
	fs.StringVar(&f.sender, "sender", "", "the business `NUMBER` to send from: today only CHATQ_CA_SOURCE")
	fs.StringVar(&f.batch, "batch", "", "the campaign's batch `ID` (default: derived from the file and the flags)")
	fs.StringVar(&f.sendAt, "send-at", "", "RFC 3339 `TIME` to send at, such as 2026-12-24T09:00:00+01:00")
	fs.StringVar(&f.priority, "priority", string(enqueue.Bulk), "bulk or transactional")
	fs.BoolVar(&f.dryRun, "dry-run", false, "check every row, print a summary and send nothing")
	_ = cmd.MarkFlagFilename("csv", "csv")
	_ = cmd.RegisterFlagCompletionFunc("priority", choices(string(enqueue.Bulk), string(enqueue.Transactional)))
	return cmd
}

// campaign is the messages chatq campaign send is about to send.
type campaign struct {
	batch string
	file  *campaignFile
	msgs  []*enqueue.Message
}

func (p *program) campaignSend(ctx context.Context, f campaignSendFlags) error {
	for _, fl := range []struct{ name, value string }{{"--csv", f.csv}, {"--template", f.template}, {"--language", f.language}} {
		if fl.value == "" {
			return usageError("campaign send: " + fl.name + " is required")
		}
	}
	spec := enqueue.TemplateSpec{ElementName: f.template, LanguageCode: f.language}
	if err := enqueue.ValidateTemplateSpec("payload.template", &spec); err != nil {
		msg, _ := campaignFlagError(err)
		return usageError("campaign send: " + msg)
	}
	prio := enqueue.Priority(f.priority)
	if prio != enqueue.Bulk && prio != enqueue.Transactional {
		return usageError(fmt.Sprintf("campaign send: --priority must be %s or %s, not %q", enqueue.Bulk, enqueue.Transactional, f.priority))
	}
	var sendAt time.Time
	if f.sendAt != "" {
		t, err := time.Parse(time.RFC3339, f.sendAt)
		if err != nil {
			return usageError(fmt.Sprintf("campaign send: --send-at: not an RFC 3339 time: %q", f.sendAt))
		}
		sendAt = t
	}
	file, err := readCampaignFile(f.csv, p.stdin)
	if err != nil {
		return err
	}
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if f.sender != "" && (cfg.CASource == "" || policy.Normalize(f.sender) != policy.Normalize(cfg.CASource)) {
		return usageError(fmt.Sprintf("campaign send: --sender %s: senders are not configured: chatq sends from CHATQ_CA_SOURCE (%s) only",
			f.sender, cmpOr(cfg.CASource, "not set")))
	}
	c := &campaign{batch: cmpOr(f.batch, campaignBatchID(file, f, sendAt)), file: file}
	for i, row := range file.rows {
		c.msgs = append(c.msgs, &enqueue.Message{
			Destination: row.destination,
			Payload: &enqueue.Template{Template: enqueue.TemplateSpec{
				ElementName: f.template, LanguageCode: f.language, Params: row.params,
			}},
			Priority:       prio,
			SendAt:         sendAt,
			BatchID:        c.batch,
			IdempotencyKey: c.batch + ":" + strconv.Itoa(i+1),
		})
	}

	checker := newChecker(rdb, cfg, zap.NewNop())
	bad, err := checkCampaign(ctx, c, checker, &spec)
	if err != nil {
		return err
	}
	for _, e := range bad {
		fmt.Fprintln(p.stdout, e)
	}
	rows := len(file.rows) + len(file.bad)
	if len(bad) > 0 {
		return fmt.Errorf("campaign send: %d of %s bad: nothing sent", len(bad), plural(rows, "row"))
	}
	if len(c.msgs) == 0 {
		return fmt.Errorf("campaign send: --csv %s has no rows below its header", f.csv)
	}
	what := fmt.Sprintf("template %s (%s) with %s", f.template, f.language, plural(len(file.params), "parameter"))
	if len(file.params) > 0 {
		what += " (" + strings.Join(file.params, ", ") + ")"
	}
	if f.dryRun {
		fmt.Fprintf(p.stdout, "%s checked, all good: %s, batch %s\nnothing sent (--dry-run)\n", plural(rows, "row"), what, c.batch)
		return nil
	}
	fmt.Fprintf(p.stdout, "%s checked, all good: %s\n", plural(rows, "row"), what)
	client := enqueueClientWith(rdb, cfg, checker, nil)
	defer client.Close()
	return p.sendCampaign(ctx, c, client)
}

// campaignBatchID names a campaign after its template, its file and its
// flags, so that the same command run again names the same campaign.
func campaignBatchID(file *campaignFile, f campaignSendFlags, sendAt time.Time) string {
	h := sha256.New()
	h.Write(file.digest[:])
	for _, s := range []string{f.template, f.language, f.priority} {
		fmt.Fprintf(h, "\x00%s", s)
	}
	if !sendAt.IsZero() {
		fmt.Fprintf(h, "\x00%d", sendAt.UnixMilli())
	}
	name := f.template
	if len(name) > 64 {
		name = name[:64]
	}
	return fmt.Sprintf("%s-%x", name, h.Sum(nil)[:6])
}

// checkCampaign checks the template once, then every row, with the
// validation and the conversation policy that sending applies. It returns
// the bad rows; the error is for a campaign that is wrong as a whole (a
// flag, the template, the file's columns) or a check that failed.
func checkCampaign(ctx context.Context, c *campaign, checker *policy.Checker, spec *enqueue.TemplateSpec) ([]rowError, error) {
	use := &policy.TemplateUse{Field: "payload.template", Name: spec.ElementName, Language: spec.LanguageCode, Params: len(c.file.params)}
	if err := checker.Templates.Check(ctx, use); err != nil {
		var pe *policy.Error
		if !errors.As(err, &pe) {
			return nil, fmt.Errorf("campaign send: check the template: %w", err)
		}
		if pe.Code == policy.CodeTemplateParams {
			return nil, fmt.Errorf("campaign send: template %s (%s) %s: the file has %s (%s)", spec.ElementName, spec.LanguageCode,
				pe.Reason, plural(len(c.file.params), "parameter column"), strings.Join(c.file.params, ", "))
		}
		msg, _ := campaignFlagError(err)
		return nil, errors.New("campaign send: " + msg)
	}
	bad := append([]rowError(nil), c.file.bad...)
	now := time.Now()
	var valid []int
	for i, m := range c.msgs {
		err := m.Validate(now)
		if err == nil {
			valid = append(valid, i)
			continue
		}
		if msg, ok := campaignFlagError(err); ok {
			return nil, usageError("campaign send: " + msg)
		}
		bad = append(bad, rowError{c.file.rows[i].line, c.rowReason(err)})
	}
	pol := enqueue.CheckerPolicy(checker)
	for start := 0; start < len(valid); start += campaignChunk {
		idx := valid[start:min(start+campaignChunk, len(valid))]
		msgs := make([]*enqueue.Message, len(idx))
		for j, i := range idx {
			msgs[j] = c.msgs[i]
		}
		errs, err := pol.CheckMessages(ctx, msgs)
		if err != nil {
			return nil, fmt.Errorf("campaign send: check the conversation policy: %w", err)
		}
		for j, err := range errs {
			if err != nil {
				bad = append(bad, rowError{c.file.rows[idx[j]].line, c.rowReason(err)})
			}
		}
	}
	sortRowErrors(bad)
	return bad, nil
}

// sortRowErrors puts the rows of the wrong length, found while reading,
// in their place among the others.
func sortRowErrors(errs []rowError) {
	slices.SortStableFunc(errs, func(a, b rowError) int { return cmp.Compare(a.line, b.line) })
}

// campaignFlagError says what is wrong with a flag of chatq campaign send
// when err is about a field the flags set, the same in every row (ok), and
// what is wrong otherwise.
func campaignFlagError(err error) (msg string, ok bool) {
	field, reason := fieldOf(err)
	flag := map[string]string{
		"payload.template.elementName":  "--template",
		"payload.template.languageCode": "--language",
		"send_at":                       "--send-at",
		"priority":                      "--priority",
		"batch_id":                      "--batch",
	}[field]
	if flag == "" {
		return err.Error(), false
	}
	return flag + " " + reason, true
}

// fieldOf returns the field a validation or policy error names, and what
// is wrong with it.
func fieldOf(err error) (field, reason string) {
	var ve *enqueue.ValidationError
	if errors.As(err, &ve) {
		return ve.Field, ve.Reason
	}
	var pe *policy.Error
	if errors.As(err, &pe) {
		return pe.Field, pe.Reason
	}
	return "", err.Error()
}

// rowReason says what is wrong with a row, naming its column.
func (c *campaign) rowReason(err error) string {
	field, reason := fieldOf(err)
	if rest, ok := strings.CutPrefix(field, "payload.template.params["); ok {
		if n, err := strconv.Atoi(strings.TrimSuffix(rest, "]")); err == nil && n < len(c.file.params) {
			return fmt.Sprintf("column %q (parameter %d) %s", c.file.params[n], n+1, reason)
		}
	}
	if field == "" {
		return reason
	}
	return field + " " + reason
}

// sendCampaign queues a checked campaign's messages, showing the progress.
func (p *program) sendCampaign(ctx context.Context, c *campaign, client *enqueue.Client) error {
	prog := newProgress(p.stdout, len(c.msgs), "queueing")
	var created, earlier int
	var failed []rowError
	for start := 0; start < len(c.msgs); start += campaignChunk {
		end := min(start+campaignChunk, len(c.msgs))
		results, err := client.SendBatch(ctx, c.msgs[start:end])
		if err != nil {
			prog.stop()
			return fmt.Errorf("campaign send: batch %s: %d of %d messages queued, then: %w (the same command queues the rest)",
				c.batch, created+earlier, len(c.msgs), err)
		}
		for j, r := range results {
			switch {
			case r.Err != nil:
				failed = append(failed, rowError{c.file.rows[start+j].line, c.rowReason(r.Err)})
			case r.Created:
				created++
			default:
				earlier++
			}
		}
		prog.add(end - start)
	}
	prog.stop()
	for _, e := range failed {
		fmt.Fprintln(p.stdout, e)
	}
	fmt.Fprintf(p.stdout, "queued %s", plural(created, "message"))
	if earlier > 0 {
		fmt.Fprintf(p.stdout, " (and %d queued before, by an earlier run)", earlier)
	}
	fmt.Fprintf(p.stdout, "; follow them with: chatq campaign watch %s\nbatch %s\n", c.batch, c.batch)
	if len(failed) > 0 {
		return fmt.Errorf("campaign send: batch %s: %s not queued", c.batch, plural(len(failed), "message"))
	}
	return nil
}

// progress shows how far a long command has come: a bar on a terminal, a
// line at every tenth otherwise.
type progress interface {
	add(n int)
	stop()
}

func newProgress(w io.Writer, total int, what string) progress {
	if isTerminal(w) {
		return barProgress{progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(40), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))}
	}
	return &lineProgress{w: w, what: what, total: total}
}

type barProgress struct{ bar *progressbar.ProgressBar }

func (b barProgress) add(n int) { _ = b.bar.Add(n) }
func (b barProgress) stop()     { _ = b.bar.Exit() }

type lineProgress struct {
	w                  io.Writer
	what               string
	total, done, shown int
}

func (l *lineProgress) add(n int) {
	l.done += n
	// The tenth reached, so that a long run prints ten lines.
	if tenth := l.done * 10 / max(l.total, 1); tenth > l.shown || l.done == l.total {
		l.shown = tenth
		fmt.Fprintf(l.w, "%s: %d of %d\n", l.what, l.done, l.total)
	}
}

func (l *lineProgress) stop() {}

// isTerminal reports whether w is a terminal, where output may redraw
// itself.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
