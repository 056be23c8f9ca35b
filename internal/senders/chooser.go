package senders

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
)

// Chooser picks the sender of a message that names none.
type Chooser interface {
	Choose(ctx context.Context, tenant, destination string) (Sender, error)
}

// DefaultChooser chooses the tenant's default sender (Registry.Default).
type DefaultChooser struct{ Registry *Registry }

// Choose returns the tenant's default sender, or ErrNoSender.
func (c DefaultChooser) Choose(_ context.Context, tenant, _ string) (Sender, error) {
	s, ok := c.Registry.Default(tenant)
	if !ok {
		return Sender{}, fmt.Errorf("choose a sender of %s: %w", tenant, ErrNoSender)
	}
	return s, nil
}

// WindowChooser chooses as the contract says: among the tenant's senders,
// the one whose 24h window with the recipient is open (the one the user
// wrote to last, when several are), else the one the tenant last submitted
// a message to the recipient from (the sender of its newest record there,
// store.QueueNewestTo), else the tenant's default sender. A free-form reply
// thus goes from the number the user wrote to, and a conversation stays on
// one number. A tenant with one sender costs no round trip; with more, one
// pipelined read, and one more to read the last sender when no window is
// open.
type WindowChooser struct {
	Registry *Registry
	// Policy knows the senders' windows.
	Policy *policy.Checker
	Redis  redis.UniversalClient
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Choose returns the sender of a message of tenant to destination, or
// ErrNoSender when the tenant has none.
func (c WindowChooser) Choose(ctx context.Context, tenant, destination string) (Sender, error) {
	all := c.Registry.OfTenant(tenant)
	def, hasDefault := c.Registry.Default(tenant)
	switch {
	case len(all) == 0 || !hasDefault:
		return Sender{}, fmt.Errorf("choose a sender of %s: %w", tenant, ErrNoSender)
	case len(all) == 1:
		return all[0], nil
	}
	pipe := c.Redis.Pipeline()
	wins := make([]func() policy.Window, len(all))
	for i, x := range all {
		wins[i] = c.Policy.WindowsOf(x.Number).Queue(ctx, pipe, destination)
	}
	newest := store.QueueNewestTo(ctx, pipe, tenant, destination)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Sender{}, fmt.Errorf("choose a sender of %s: %w", tenant, err)
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	best, bestAt := -1, time.Time{}
	for i, get := range wins {
		if w := get(); w.Open(now) && w.LastInbound.After(bestAt) {
			best, bestAt = i, w.LastInbound
		}
	}
	if best >= 0 {
		return all[best], nil
	}
	if ids := newest.Val(); len(ids) == 1 {
		n, err := store.SenderOf(ctx, c.Redis, ids[0])
		if err != nil {
			return Sender{}, fmt.Errorf("choose a sender of %s: %w", tenant, err)
		}
		for _, x := range all {
			if x.Number == n {
				return x, nil
			}
		}
	}
	return def, nil
}
