package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/callback"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
)

// Conversation is the worker's part of chatq's conversation policy and
// status callbacks. The zero value does nothing.
type Conversation struct {
	// Policy is checked before every send: a suppressed recipient's
	// message is dead-lettered without a call upstream, and a free-form
	// message outside the window gets its fallback template or is
	// dead-lettered. Send answers teach it opt-outs and closed windows.
	// Nil sends everything.
	Policy *policy.Checker
	// Callbacks, if set, delivers status callbacks and forwards inbound
	// events from the callbacks queue, and hands a new task to the notices
	// the due index finds waiting, when this worker sweeps it.
	Callbacks *callback.Deliverer
	// CallbackWeight is the callbacks queue's weight when Config.Queues
	// does not name it; zero means callback.DefaultWeight.
	CallbackWeight int
	// TemplateRefresh is how often the worker refreshes the template caches
	// from ChatArchitect, those Policy has credentials for; zero means
	// policy.DefaultRefreshInterval.
	TemplateRefresh time.Duration
}

// start runs the conversation's background work, the template refresh,
// until the returned func is called.
func (c *Conversation) start() (stop func()) {
	if c == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if c.Policy != nil {
		wg.Go(func() { c.Policy.RefreshTemplates(ctx, c.TemplateRefresh) })
	}
	return func() { cancel(); wg.Wait() }
}

// queues returns the queue weights with the callbacks queue added, if this
// worker delivers callbacks and the weights do not name it already.
func (c *Conversation) queues(q map[string]int) map[string]int {
	if c == nil || c.Callbacks == nil {
		return q
	}
	if _, ok := q[callback.Queue]; ok {
		return q
	}
	out := maps.Clone(q)
	out[callback.Queue] = cmp.Or(c.CallbackWeight, callback.DefaultWeight)
	return out
}

// register adds the callback handlers to mux.
func (c *Conversation) register(mux *asynq.ServeMux) {
	if c != nil && c.Callbacks != nil {
		c.Callbacks.Register(mux)
	}
}

// checks holds the answers of the reads made before a send, all in one
// round trip (look): the conversation policy's state, and what may hold
// the message back on its own (a marketing message's cap, its template's
// state). A nil func was not read.
type checks struct {
	policy func(hasFallback bool) (policy.Verdict, *policy.Error, error)
	capped func() (time.Time, error)
	// template is the state of the template the message names, when its
	// payload came with its record (store.Peek).
	template func() (store.TemplateState, error)
}

// look reads what the checks before rec's send need, in one round trip: a
// template message's payload came with its record, which names the
// template whose state is read.
func (h *Handler) look(ctx context.Context, rec *store.Record) (checks, error) {
	var c checks
	pipe := h.store.Redis().Pipeline()
	if h.conv != nil && h.conv.Policy != nil {
		c.policy = h.conv.Policy.ForTenant(rec.Tenant).ForSender(rec.Sender).Queue(ctx, pipe, rec.Destination, rec.Type != enqueue.TypeTemplate)
	}
	if rec.Status != store.Sending {
		// A message taken up already was checked then, and cannot wait.
		if rec.Category != nil && *rec.Category == store.CategoryMarketing {
			c.capped = h.caps(rec.Tenant).Queue(ctx, pipe, rec.Destination)
		}
		if rec.Type == enqueue.TypeTemplate {
			if name := store.TemplateName(rec.Payload); name != "" {
				c.template = h.store.QueueTemplateState(ctx, pipe, rec.Sender, name)
			}
		}
	}
	if pipe.Len() == 0 {
		return c, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return c, fmt.Errorf("check %s: %w", rec.ID, err)
	}
	return c, nil
}

// checkPolicy applies the conversation policy, as decide read it, to rec
// right before it is sent. fallback is true when the fallback template goes
// instead of the message. stop is true when the message must not be sent;
// err then tells asynq what to do.
func (h *Handler) checkPolicy(ctx context.Context, log *zap.Logger, rec *store.Record, decide func(hasFallback bool) (policy.Verdict, *policy.Error, error)) (fallback, stop bool, err error) {
	if decide == nil {
		return false, false, nil
	}
	verdict, refusal, err := decide(len(rec.FallbackTemplate) > 0)
	if err != nil {
		return false, true, fmt.Errorf("check policy of %s: %w", rec.ID, err)
	}
	switch verdict {
	case policy.SendFallback:
		fallback = true
		if err := h.store.Note(ctx, rec.ID, h.now(), "the 24h window is closed: sending the fallback template instead"); err != nil {
			log.Warn("noting the fallback template in the history", zap.Error(err))
		}
		log.Info("window closed: sending the fallback template")
	case policy.Refuse:
		info := store.ErrorInfo{Class: string(chatarchitect.ClassPolicy), Code: refusal.Code, Message: refusal.Error(), At: h.now()}
		if err := h.moveDead(ctx, rec, store.Change{Error: &info, Note: "refused by chatq's conversation policy, not sent"}); err != nil {
			return false, true, err
		}
		log.Info("message refused by the conversation policy, dead-lettered", zap.String("code", refusal.Code))
		return false, true, fmt.Errorf("send %s: %w: %w", rec.ID, refusal, asynq.SkipRetry)
	}
	return fallback, false, nil
}

// learn records what a refused send says about its recipient (an opt-out,
// a closed window), so that the next messages to them are checked before
// they are sent.
func (h *Handler) learn(ctx context.Context, log *zap.Logger, rec *store.Record, sendErr error) {
	var apiErr *chatarchitect.APIError
	if h.conv == nil || h.conv.Policy == nil || !errors.As(sendErr, &apiErr) || apiErr.Code == "" {
		return
	}
	learned, err := h.conv.Policy.ForTenant(rec.Tenant).ForSender(rec.Sender).LearnFailure(ctx, rec.Destination, apiErr.Code, apiErr.Reason, policy.SourceSend, h.now())
	switch {
	case err != nil:
		log.Warn("recording what a refused send says about its recipient", zap.Error(err))
	case learned != policy.LearnedNothing:
		log.Info("learned from a refused send", zap.String("learned", string(learned)))
	}
}
