package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatq/chatq/internal/store"
)

// campaignWatchFlags are chatq campaign watch's flags.
type campaignWatchFlags struct {
	settle, timeout time.Duration
}

func (p *program) campaignWatchCommand() *cobra.Command {
	var f campaignWatchFlags
	cmd := command("watch ID [--settle D] [--timeout D]", "show a campaign's messages by status until they have ended",
		"Shows how many of a campaign's messages are in each status (the counts of GET /v1/batches/{id}),\n"+
			"every second: a bar per status on a terminal, a line per change otherwise. It stops when every\n"+
			"message has ended: delivered, read, failed, dead, expired or canceled. With --settle, messages\n"+
			"that ChatArchitect accepted (submitted, enqueued, sent) count as ended once nothing else is left\n"+
			"in chatq (scheduled, queued, sending, retrying) and no count has changed for that long: a phone\n"+
			"that stays off never reports delivery. Exits 0 once everything ended, 1 at --timeout.\n"+
			"Needs CHATQ_REDIS_URL.",
		oneArg("the campaign's batch id"), func(cmd *cobra.Command, args []string) error {
			return p.campaignWatch(cmd.Context(), args[0], f)
		})
	cmd.Flags().DurationVar(&f.settle, "settle", 0, "count accepted messages as ended once no count has changed for this long (0: wait for their delivery)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 0, "give up after this long, with exit status 1 (0: never)")
	return cmd
}

// funnelStatuses are the statuses in the order a campaign shows them:
// chatq's own phase, then those awaiting a delivery event, then the ends.
func funnelStatuses() [13]store.Status {
	return [...]store.Status{
		store.Scheduled, store.Queued, store.Sending, store.Retrying,
		store.Submitted, store.Enqueued, store.Sent,
		store.Delivered, store.Read, store.Failed, store.Dead, store.Expired, store.Canceled,
	}
}

// funnel is a campaign's count of messages in each of funnelStatuses.
type funnel [13]int

func funnelOf(counts map[store.Status]int) funnel {
	var f funnel
	for i, st := range funnelStatuses() {
		f[i] = counts[st]
	}
	return f
}

// awaitsDelivery reports whether ChatArchitect accepted a message whose
// delivery event is still to come.
func awaitsDelivery(s store.Status) bool {
	return s == store.Submitted || s == store.Enqueued || s == store.Sent
}

// phases counts the messages chatq has yet to hand to ChatArchitect, those
// ChatArchitect accepted that await a delivery event, and those that have
// ended.
func (f funnel) phases() (inChatq, accepted, ended int) {
	for i, st := range funnelStatuses() {
		switch {
		case st.Pending():
			inChatq += f[i]
		case awaitsDelivery(st):
			accepted += f[i]
		default:
			ended += f[i]
		}
	}
	return inChatq, accepted, ended
}

func (p *program) campaignWatch(ctx context.Context, batch string, f campaignWatchFlags) error {
	if f.settle < 0 || f.timeout < 0 {
		return usageError("campaign watch: --settle and --timeout must not be negative")
	}
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := store.New(rdb, store.Config{TTL: cfg.RecordTTL})
	start := time.Now()
	var deadline <-chan time.Time
	if f.timeout > 0 {
		t := time.NewTimer(f.timeout)
		defer t.Stop()
		deadline = t.C
	}
	view := newFunnelView(p.stdout, batch)
	var last funnel
	var changed time.Time
	for {
		c, err := st.BatchCounts(ctx, batch)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("campaign watch: %w", ctx.Err())
			}
			return err
		}
		if c.Total == 0 {
			return fmt.Errorf("campaign watch: no messages with batch id %q", batch)
		}
		total := c.Total
		now := time.Now()
		fun := funnelOf(c.Status)
		if changed.IsZero() || fun != last {
			last, changed = fun, now
			view.show(fun, total, now.Sub(start))
		}
		inChatq, accepted, ended := fun.phases()
		if inChatq == 0 && (accepted == 0 || f.settle > 0 && now.Sub(changed) >= f.settle) {
			fmt.Fprintf(p.stdout, "campaign %s: %s ended", batch, plural(ended+accepted, "message"))
			if accepted > 0 {
				fmt.Fprintf(p.stdout, " (%d of them accepted by ChatArchitect with no delivery event for %s)", accepted, f.settle)
			}
			fmt.Fprintf(p.stdout, ": %s\n", fun)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("campaign watch: %w", ctx.Err())
		case <-deadline:
			return fmt.Errorf("campaign watch: %s has not ended after %s: %d in chatq, %d awaiting delivery, %d ended",
				batch, f.timeout, inChatq, accepted, ended)
		case <-time.After(time.Second):
			// A second after the last count, not every second: counting
			// a large campaign takes a while, and Redis serves others.
		}
	}
}

// String lists the statuses that have messages, as in "read 9990, failed 10".
func (f funnel) String() string {
	var parts []string
	for i, st := range funnelStatuses() {
		if f[i] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, f[i]))
		}
	}
	return strings.Join(parts, ", ")
}

// funnelView shows a campaign's funnel as it changes.
type funnelView interface {
	show(f funnel, total int, elapsed time.Duration)
}

func newFunnelView(w io.Writer, batch string) funnelView {
	if isTerminal(w) {
		return &barsView{w: w, batch: batch}
	}
	return lineView{w}
}

// lineView prints a line per change.
type lineView struct{ w io.Writer }

func (v lineView) show(f funnel, total int, elapsed time.Duration) {
	_, _, ended := f.phases()
	fmt.Fprintf(v.w, "%s  %d of %d ended: %s\n", elapsed.Round(time.Second), ended, total, f)
}

// barsView redraws a bar per status in place.
type barsView struct {
	w     io.Writer
	batch string
	drawn int // lines of the last frame
}

const barWidth = 40

func (v *barsView) show(f funnel, total int, elapsed time.Duration) {
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn) // back to the frame's first line
	}
	_, _, ended := f.phases()
	fmt.Fprintf(&b, "\x1b[2Kcampaign %s: %d of %d ended (%s)\n", v.batch, ended, total, elapsed.Round(time.Second))
	for i, st := range funnelStatuses() {
		n := f[i]
		fill := min(n*barWidth/total, barWidth)
		if n > 0 && fill == 0 {
			fill = 1
		}
		fmt.Fprintf(&b, "\x1b[2K  %-10s %s%s %7d\n", st, strings.Repeat("█", fill), strings.Repeat("░", barWidth-fill), n)
	}
	v.drawn = len(f) + 1
	_, _ = io.WriteString(v.w, b.String())
}
