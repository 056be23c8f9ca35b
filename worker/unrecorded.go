package worker

import (
	"context"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
)

// acceptance is a send ChatArchitect accepted whose submission the worker
// has not recorded yet.
type acceptance struct {
	providerID string
	at         time.Time
	priority   string
	enqueuedAt time.Time
}

// unrecorded keeps, in the worker's memory, the acceptances it could not
// record because Redis was away, and records them in the background, with
// a context of its own, as soon as Redis answers: whatever asynq did
// meanwhile with the task (after its 30s lease it cancels the handler's
// context and hands the task back), an accepted message must end
// submitted, not be sent again unknowingly. Should the message have been
// sent again meanwhile, that send was counted as a possible duplicate, and
// its history says "accepted again" once this one is recorded.
type unrecorded struct {
	store   *store.Store
	log     *zap.Logger
	metrics *metrics.Metrics

	mu      sync.Mutex
	pending map[string]acceptance
	wake    chan struct{}
}

func newUnrecorded(st *store.Store, log *zap.Logger) *unrecorded {
	return &unrecorded{store: st, log: log, pending: map[string]acceptance{}, wake: make(chan struct{}, 1)}
}

// add keeps an acceptance to record.
func (u *unrecorded) add(id string, a acceptance) {
	u.mu.Lock()
	u.pending[id] = a
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// has reports whether message id's acceptance waits to be recorded: a
// task of it that runs meanwhile must not send it again.
func (u *unrecorded) has(id string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.pending[id]
	return ok
}

// run records the acceptances kept, retrying every few hundred
// milliseconds while Redis is away, until ctx ends.
func (u *unrecorded) run(ctx context.Context) {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.wake:
		case <-time.After(delay):
		}
		if u.record(ctx) == 0 {
			delay = 100 * time.Millisecond
		} else {
			delay = min(2*delay, time.Second)
		}
	}
}

// record tries once to record every acceptance kept and returns how many
// are left.
func (u *unrecorded) record(ctx context.Context) int {
	u.mu.Lock()
	todo := maps.Clone(u.pending)
	u.mu.Unlock()
	left := 0
	for id, a := range todo {
		o, err := u.store.Submit(ctx, id, a.providerID, a.at)
		if err != nil {
			left++
			continue
		}
		u.mu.Lock()
		delete(u.pending, id)
		u.mu.Unlock()
		log := u.log.With(zap.String("message_id", id), zap.String("provider_message_id", a.providerID))
		switch o {
		case store.Changed:
			u.metrics.Submitted(a.priority, a.at.Sub(a.enqueuedAt))
			log.Info("recorded an acceptance late, once Redis answered")
			u.release(ctx, log, id)
		case store.Duplicate:
			// The first write went through; only its answer was lost.
			log.Info("recorded an acceptance late: it had been recorded already")
		default:
			log.Warn("recorded an acceptance late: the message had been sent again meanwhile (counted as a possible duplicate)", zap.String("outcome", string(o)))
		}
	}
	return left
}

// flush records what is kept until nothing is left or ctx ends, and logs
// what could not be recorded: those messages are sent again, as possible
// duplicates, when their sends are found lost.
func (u *unrecorded) flush(ctx context.Context) {
	for u.record(ctx) > 0 {
		select {
		case <-ctx.Done():
			u.mu.Lock()
			defer u.mu.Unlock()
			for id, a := range u.pending {
				u.log.Error("an accepted message could not be recorded before the worker stopped: it will be sent again",
					zap.String("message_id", id), zap.String("provider_message_id", a.providerID), zap.Bool("possible_duplicate", true))
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// release lets the next message of the conversation of id, accepted late,
// go: through the sweeper, which gives it its task. Should it fail, the
// sweeper's check of the next message's line does it later.
func (u *unrecorded) release(ctx context.Context, log *zap.Logger, id string) {
	rec, err := u.store.Peek(ctx, id)
	if err == nil && rec != nil {
		err = u.store.StepOut(ctx, rec)
	}
	if err != nil {
		log.Warn("releasing the next message of the conversation failed; the sweeper lets it go later", zap.Error(err))
	}
}
