package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
)

// templateLook is how long a message waiting for its paused template waits
// before it looks again on its own. An approval releases it at once; this
// only covers a release that went missing.
const templateLook = time.Hour

// ownWait is a wait of the message's own kind: what holds it back is its
// recipient (Meta's marketing cap) or its template (paused), not a limit
// it shares with the messages around it.
type ownWait struct {
	reason store.WaitReason
	// until is when the wait ends; zero when unknown (a paused template).
	until time.Time
	// template is the name of the paused template the message waits for.
	template string
}

// checkOwn holds back, before its send, a message that would meet a wait
// of its own, as c read it: a marketing message to a recipient at Meta's
// marketing cap, a template message whose template is paused. A message of
// a disabled template ends dead. stop is true when the message goes no
// further; err then tells asynq what to do.
func (h *Handler) checkOwn(ctx context.Context, log *zap.Logger, rec *store.Record, c checks) (stop bool, err error) {
	if c.capped != nil {
		until, err := c.capped()
		if err != nil {
			return true, fmt.Errorf("check %s: %w", rec.ID, err)
		}
		if until.After(h.now()) {
			return true, h.waitOwn(ctx, log, rec, ownWait{reason: store.WaitMarketingCapped, until: until})
		}
	}
	if rec.Type != enqueue.TypeTemplate {
		return false, nil
	}
	payload := rec.Payload
	if len(payload) == 0 {
		// A payload too long to come with the record: read now, and its
		// template's state after it.
		if payload, err = h.store.Payload(ctx, rec.ID); err != nil {
			return true, fmt.Errorf("check %s: %w", rec.ID, err)
		}
	}
	name := store.TemplateName(payload)
	if name == "" {
		return false, nil
	}
	if c.template == nil {
		c.template = func() (store.TemplateState, error) { return h.store.TemplateStateOf(ctx, rec.Sender, name) }
	}
	state, err := c.template()
	if err != nil {
		return true, fmt.Errorf("check %s: %w", rec.ID, err)
	}
	switch state {
	case store.TemplatePaused:
		return true, h.waitOwn(ctx, log, rec, ownWait{reason: store.WaitTemplatePaused, template: name})
	case store.TemplateDisabled, store.TemplateRejected:
		info := store.ErrorInfo{Class: string(chatarchitect.ClassPolicy), Code: codeTemplateDisabled,
			Message: "template " + name + " was disabled by WhatsApp for low quality", At: h.now()}
		if state == store.TemplateRejected {
			info.Code, info.Message = policy.CodeTemplateNotApproved, "template "+name+" was rejected in review"
		}
		if err := h.moveDead(ctx, rec, store.Change{Error: &info, Note: "its template is disabled, not sent"}); err != nil {
			return true, err
		}
		log.Info("message of a disabled or rejected template dead-lettered", zap.String("template", name))
		return true, fmt.Errorf("send %s: template %s %s: %w", rec.ID, name, state, asynq.SkipRetry)
	}
	return false, nil
}

// codeTemplateDisabled is WhatsApp's code for a template disabled for low
// quality, which the messages chatq ends for it carry too.
const codeTemplateDisabled = "132016"

// waitOwn records a wait of the message's own kind, its status unchanged,
// and ends its task: a marketing cap's wait ends at its until (or at the
// message's expiry, should that come first), a paused template's when an
// approval releases the template's messages. Such a wait holds this message
// alone: it steps out of its conversation line, and the messages behind it
// go on, which is why every such wait is recorded here.
func (h *Handler) waitOwn(ctx context.Context, log *zap.Logger, rec *store.Record, ow ownWait) error {
	now := h.now()
	w := store.Waiting{Reason: ow.reason, Since: now}
	if rec.Waiting != nil && rec.Waiting.Reason == ow.reason {
		w.Since = rec.Waiting.Since // the same wait goes on
	}
	var err error
	if ow.template != "" {
		err = h.store.WaitForTemplate(ctx, rec, taskOf(ctx), ow.template, w, now.Add(templateLook))
	} else {
		due := ow.until
		if rec.ExpiresAt != nil && rec.ExpiresAt.Before(due) {
			due = *rec.ExpiresAt
		}
		w.Until = &ow.until
		err = h.store.Wait(ctx, rec, taskOf(ctx), w, due, time.Time{})
	}
	if errors.Is(err, store.ErrRefused) {
		log.Debug("not held: the message moved on meanwhile", zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("record wait of %s: %w", rec.ID, err)
	}
	log.Info("message waits", zap.String("reason", string(ow.reason)), zap.Timep("until", w.Until), zap.String("template", ow.template))
	// A wait of its own steps out of its conversation's line: the messages
	// behind it go on (a capped promotion must not hold a one-time code for
	// a day), and it goes when its wait ends.
	h.release(ctx, log, rec)
	return nil
}

// refusedOwn answers a send refused for a reason of the message's own:
// Meta's marketing cap (131049) or a paused template (132015). The attempt
// was real, so the message moves to retrying with the refusal as its
// last_error; then it waits, without using its retry budget, until the cap
// ends or the template is approved again.
func (h *Handler) refusedOwn(ctx context.Context, log *zap.Logger, rec *store.Record, info store.ErrorInfo) error {
	now := h.now()
	ow := ownWait{reason: store.WaitMarketingCapped}
	var note string
	switch chatarchitect.Class(info.Class) {
	case chatarchitect.ClassMarketingCapped:
		until, err := h.caps(rec.Tenant).Capped(ctx, rec.Destination, now)
		if err != nil {
			return fmt.Errorf("record retry of %s: %w", rec.ID, err)
		}
		ow.until = until
		note = "Meta's marketing cap for this user (131049): the tenant's marketing messages to them wait until " + until.Format(time.RFC3339)
	default: // 132015
		ow.reason, ow.template = store.WaitTemplatePaused, store.TemplateName(rec.Payload)
		if ow.template == "" {
			return fmt.Errorf("record retry of %s: a template paused (132015) for a message that names none", rec.ID)
		}
		if _, err := h.store.SetTemplateState(ctx, rec.Sender, ow.template, store.TemplatePaused, now); err != nil {
			return fmt.Errorf("record retry of %s: %w", rec.ID, err)
		}
		note = "template " + ow.template + " is paused for low quality (132015): its messages wait until it is approved again"
	}
	c := store.Change{Status: store.Retrying, Error: &info, Note: note, At: now, Due: now.Add(templateLook), Task: taskOf(ctx)}
	if ow.reason == store.WaitMarketingCapped {
		c.Due = ow.until
	}
	if _, _, err := h.store.Move(ctx, rec.ID, c); err != nil {
		return fmt.Errorf("record retry of %s: %w", rec.ID, err)
	}
	h.metrics.Retry(info.Class, false)
	h.metrics.SenderRetry(h.senderLabel(rec), info.Class)
	log.Warn("send refused for the message's own reason: it waits", zap.String("reason", info.Message))
	waiting := *rec
	waiting.Status, waiting.Waiting = store.Retrying, nil
	return h.waitOwn(ctx, log, &waiting, ow)
}

// caps is the marketing caps of tenant.
func (h *Handler) caps(tenant string) *policy.MarketingCaps {
	return policy.NewMarketingCaps(h.store.Redis(), tenant)
}
