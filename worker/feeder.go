package worker

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/store"
)

// The feeders. Each sender's bulk messages wait in its lane (enqueue's
// lane.go) until its feeder moves them into asynq's bulk queue: only what
// the sender may send within the flow's horizon, and nothing while its
// circuit is open, it is paused, or the upstream's Retry-After holds it.
// So a sender's backlog waits in its own lane, not in the queue every
// sender shares, and no bulk message waits in a worker for a slot far
// ahead. One worker feeds a sender at a time (a lease per sender); any
// worker may feed any sender.
const (
	// feedTick is how often a feeder moves its lanes.
	feedTick = 50 * time.Millisecond
	// feedAhead is how far ahead of its slot a message is handed to the
	// workers (at most the flow's horizon): enough for a worker to take it
	// up, and short, as it may sleep in its worker until its slot.
	feedAhead = 200 * time.Millisecond
	// feederLease is how long a worker's lease on feeding a sender lasts
	// without renewal; feederRenew how often it is renewed, and lanes
	// whose feeder lapsed are looked for. A new lane is taken up at the
	// next tick.
	feederLease = 3 * time.Second
	feederRenew = time.Second
	// feedBatch is the most one move of a lane writes; a sender without a
	// rate limit has its lane moved a batch at a time, as fast as it fills.
	feedBatch = 1000
	// feedRounds bounds the batches of one lane per tick.
	feedRounds = 10
)

// feeder is one worker's part of the feeding: the lanes whose lease it
// holds.
type feeder struct {
	store   *store.Store
	client  *enqueue.Client
	handler *Handler
	worker  string
	horizon time.Duration
	log     *zap.Logger
	// held are the lanes this worker feeds; known those it has seen.
	held, known map[string]bool
}

// run feeds the lanes this worker holds every feedTick, and renews its
// leases every feederRenew, until ctx ends; then it gives them up.
func (f *feeder) run(ctx context.Context) {
	tick := time.NewTicker(feedTick)
	defer tick.Stop()
	var renewed time.Time
	failing := false
	for {
		renew := time.Since(renewed) >= feederRenew
		if renew {
			renewed = time.Now()
		}
		err := f.lease(ctx, renew)
		if err == nil {
			err = f.feed(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			f.log.Warn("feeding the senders' lanes failed", zap.Error(err))
		case err == nil && failing:
			failing = false
			f.log.Info("feeding the senders' lanes works again")
		}
		select {
		case <-ctx.Done():
			f.release()
			return
		case <-tick.C:
		}
	}
}

// lease takes up the lanes no worker knew of yet; with renew, it also
// renews this worker's leases and takes those of lanes whose feeder
// lapsed.
func (f *feeder) lease(ctx context.Context, renew bool) error {
	lanes, err := f.store.Lanes(ctx)
	if err != nil {
		return err
	}
	if f.held == nil {
		f.held, f.known = map[string]bool{}, map[string]bool{}
	}
	for _, l := range lanes {
		if !renew && f.known[l] {
			continue
		}
		f.known[l] = true
		ok, err := f.store.HoldFeeder(ctx, l, f.worker, feederLease)
		if err != nil {
			return err
		}
		if ok && !f.held[l] {
			f.log.Debug("this worker feeds a sender's lane now", zap.String("lane", l))
		}
		if ok {
			f.held[l] = true
		} else {
			delete(f.held, l)
		}
	}
	return nil
}

// release gives up the leases this worker holds, so that another worker
// feeds those senders at once.
func (f *feeder) release() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for l := range f.held {
		if err := f.store.ReleaseFeeder(ctx, l, f.worker); err != nil {
			f.log.Warn("giving up a sender's lane", zap.String("lane", l), zap.Error(err))
			return
		}
	}
}

// feed moves, for each lane held that has messages to go, what its sender
// may send next.
func (f *feeder) feed(ctx context.Context) error {
	if len(f.held) == 0 {
		return nil
	}
	lanes := make([]string, 0, len(f.held))
	for l := range f.held {
		lanes = append(lanes, l)
	}
	_, due, err := f.store.LaneSizes(ctx, lanes, time.Now())
	if err != nil {
		return err
	}
	// One lane's failure does not hold the others back.
	var first error
	for _, l := range lanes {
		if due[l] == 0 {
			continue
		}
		if err := f.feedLane(ctx, l); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// feedLane moves what one sender may send next.
func (f *feeder) feedLane(ctx context.Context, lane string) error {
	for range feedRounds {
		n, err := f.budget(ctx, lane)
		if err != nil || n == 0 {
			return err
		}
		moved, err := f.client.MoveLane(ctx, lane, n)
		if err != nil || moved < n || n < feedBatch {
			return err
		}
	}
	return nil
}

// budget is how many messages of a lane its sender may be handed now.
func (f *feeder) budget(ctx context.Context, lane string) (int, error) {
	fl, ok := f.handler.laneFlow(lane)
	if !ok {
		return 0, nil
	}
	if fl == nil {
		// A sender the registry does not know: its handler fails the
		// messages as it would have.
		return feedBatch, nil
	}
	if g := fl.global; g != nil {
		if gs := g.state.Load().circuit; gs.Manual && gs.IsOpen() {
			return 0, nil
		}
	}
	cs := fl.state.Load().circuit
	switch {
	case cs.State == ratelimit.CircuitHalfOpen && !cs.Manual:
		// One message at a time goes as the trial, when none is on its
		// way.
		if cs.Trial != "" {
			return 0, nil
		}
		return 1, nil
	case cs.IsOpen():
		return 0, nil
	}
	return fl.limiter.Pace(ctx, min(feedAhead, f.horizon), f.horizon, feedBatch)
}

// laneFlow returns the flow control of a lane's sender, and false when
// the sender is paused: its lane holds. A nil flow with true is a sender
// the registry no longer knows.
func (h *Handler) laneFlow(lane string) (*flow, bool) {
	if h.senders == nil || lane == "default" {
		return h.flow, true
	}
	s, ok := h.senders.reg.Lookup(lane)
	switch {
	case !ok:
		return nil, true
	case s.Paused:
		return nil, false
	case s.Env:
		return h.flow, true
	}
	fl, _ := h.senders.flowOf(s)
	return fl, true
}
