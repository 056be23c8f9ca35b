package worker

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/store"
)

// release hands the turn in rec's conversation (store's line.go) to the
// next message, once rec left chatq's phase: submitted, dead or expired.
// The next message gets its pair slot here, at once, so that it needs one
// handler run: a task now when the slot is within MaxSleep, else a due
// entry before the slot, which has the sweeper give it its task in time
// for its handler to sleep until the slot. Whatever fails here
// only delays the next message until the sweeper's check of its line.
func (h *Handler) release(ctx context.Context, log *zap.Logger, rec *store.Record) {
	if !rec.Ordered {
		return
	}
	// The outcome is recorded: the next message must get its turn even
	// when the worker is stopping.
	ctx = context.WithoutCancel(ctx)
	next, err := h.store.Release(ctx, rec)
	if err != nil {
		log.Warn("releasing the next message of the conversation failed; the sweeper lets it go later", zap.Error(err))
		return
	}
	h.turnTo(ctx, log, next)
}

// turnTo gives next, released by the message before it, its turn; nil is
// no message.
func (h *Handler) turnTo(ctx context.Context, log *zap.Logger, next *store.Record) {
	if next == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := h.turn(ctx, next); err != nil {
		log.Warn("giving the next message of the conversation its turn failed; the sweeper lets it go later",
			zap.String("next_message_id", next.ID), zap.Error(err))
	}
}

// turn gives next, first in its line and waiting for its turn, its pair
// slot and its task. The turn is claimed first, so that a message is
// reserved one slot however many release it at once.
func (h *Handler) turn(ctx context.Context, next *store.Record) error {
	fl := h.flow
	if h.senders != nil {
		var hd *hold
		var err error
		if fl, _, hd, err = h.senders.route(ctx, next); hd != nil || err != nil {
			fl = nil
		}
	}
	now := h.now()
	if fl == nil {
		// Paused, unknown or without flow control: the handler decides
		// what becomes of it.
		return h.store.Postpone(ctx, next.ID, now)
	}
	// Should this worker be lost before the task is written, the sweeper
	// hands it on after SendLease.
	claim := store.Waiting{Reason: store.WaitPairRate, Since: now}
	task, err := h.store.Turn(ctx, next, claim, now.Add(h.store.SendLease()))
	if err != nil || task == "" {
		return err // "": given its turn by another meanwhile
	}
	wait, err := fl.limiter.ReservePair(ctx, next.Destination)
	if err != nil {
		return err
	}
	if wait > 0 {
		// Past the burst, the slots lie one interval apart on the
		// recipient's schedule, and each message goes a little after its
		// own (its send takes that long): two could reach ChatArchitect
		// less than an interval apart. The one before was accepted just
		// now, so this one goes a full interval after it, however late it
		// was.
		wait = max(wait, fl.limiter.Config().PairInterval)
	}
	slot := now.Add(wait)
	w := store.Waiting{Reason: store.WaitPairRate, Since: now, Until: &slot}
	if wait > fl.cfg.MaxSleep {
		fl.waited("pair", wait)
		// Due as soon as its handler may sleep until the slot
		// (heldSlotSleep): whenever the sweep comes, it sends at the slot
		// itself, not up to a sweep later.
		return h.store.Wait(ctx, next, task, w, slot.Add(-fl.heldSlotSleep()), slot)
	}
	// The sweeper checks after a grace that the task exists.
	if err := h.store.Wait(ctx, next, task, w, now.Add(h.store.Grace()), slot); err != nil {
		return err
	}
	if h.tasks == nil {
		return h.store.Postpone(ctx, next.ID, now)
	}
	return h.tasks.Requeue(ctx, []*store.Record{next})[0]
}

// orderRecheck is how long after this check a message still waiting for
// its turn is checked again: the longer it has waited, the later, from
// the store's OrderRecheck up to ten times it.
func orderRecheck(st *store.Store, rec *store.Record, now time.Time) time.Time {
	base := st.OrderRecheck()
	return now.Add(min(max(now.Sub(rec.Waiting.Since), base), 10*base))
}

// inLine is the sweeper's check of a message waiting for its turn in its
// conversation, whose due entry came due: its release may have been lost
// with its worker. It reports whether the message has its turn (first in
// its line), for the check to give it its task; otherwise it is checked
// again later, and a first message of its line that waits for its turn
// too (its own release lost) is woken.
func (r *recovery) inLine(ctx context.Context, rec *store.Record) (bool, error) {
	first, next, err := r.store.First(ctx, rec)
	if err != nil || first {
		return first, err
	}
	now := r.now()
	if next != nil {
		if err := r.store.Postpone(ctx, next.ID, now); err != nil {
			return false, err
		}
	}
	return false, r.store.Postpone(ctx, rec.ID, orderRecheck(r.store, rec, now))
}
