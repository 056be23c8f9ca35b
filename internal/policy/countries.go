package policy

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Countries is the set of country calling codes ("44", "971") one sender
// may not message: WhatsApp refused a message of it to that country
// (130497), and would refuse every other. It lives in one Redis set per
// sender, chatq:countries:{sender} (chatq:countries for the environment's
// sender), and never expires: only Meta lifts such a restriction, and an
// operator deletes the key when it does.
type Countries struct {
	rdb redis.UniversalClient
	// sender is the number whose refusals these are, "" for the
	// environment's sender.
	sender string
}

func (cs *Countries) key() string {
	if cs.sender == "" {
		return "chatq:countries"
	}
	return "chatq:countries:{" + cs.sender + "}"
}

// Refuse records that the sender may not message country code cc.
func (cs *Countries) Refuse(ctx context.Context, cc string) error {
	if cc == "" {
		return nil
	}
	if err := cs.rdb.SAdd(ctx, cs.key(), cc).Err(); err != nil {
		return fmt.Errorf("record refused country %s: %w", cc, err)
	}
	return nil
}

// queueRefused queues on pipe the read of the country codes the sender
// may not message; the returned func gives them once pipe ran.
func (cs *Countries) queueRefused(ctx context.Context, pipe redis.Pipeliner) func() (map[string]bool, error) {
	cmd := pipe.SMembers(ctx, cs.key())
	return func() (map[string]bool, error) {
		ccs, err := cmd.Result()
		if err != nil {
			return nil, fmt.Errorf("read refused countries: %w", err)
		}
		out := make(map[string]bool, len(ccs))
		for _, cc := range ccs {
			out[cc] = true
		}
		return out, nil
	}
}

func countryRefusedError(cc string) *Error {
	return &Error{Code: CodeCountryRefused, Field: "destination",
		Reason: fmt.Sprintf("is refused: WhatsApp refused a message of this sender to country code +%s (error 130497, the business may not message users in that country), and would refuse every other", cc)}
}
