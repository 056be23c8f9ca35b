package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/chatarchitect"
)

// Marketing cap waits: Meta limits how many marketing messages one person
// gets from all businesses, and says when with 131049. A capped recipient
// gets no marketing message of the tenant for firstCapWait, twice as long
// each time the cap is met again right after, up to maxCapWait; the count
// starts again once capForget passed without a cap.
const (
	firstCapWait = 24 * time.Hour
	maxCapWait   = 7 * 24 * time.Hour
	capForget    = 7 * 24 * time.Hour
)

// MarketingCaps is one tenant's memory of the recipients Meta's per-user
// marketing cap (131049) refused: a hash per recipient,
// chatq:mcap:{tenant}:<recipient>, holding until when the cap lasts (u,
// unix milliseconds) and how many caps in a row it met (n). Utility and
// authentication messages ignore it.
type MarketingCaps struct {
	rdb    redis.UniversalClient
	tenant string
}

// NewMarketingCaps returns the marketing caps of tenant ("" is the
// default tenant).
func NewMarketingCaps(rdb redis.UniversalClient, tenant string) *MarketingCaps {
	if tenant == "" {
		tenant = defaultTenant
	}
	return &MarketingCaps{rdb: rdb, tenant: tenant}
}

func (mc *MarketingCaps) key(recipient string) string {
	return "chatq:mcap:{" + mc.tenant + "}:" + Normalize(recipient)
}

// capScript records a cap met at ARGV[1] (unix ms). A cap still running
// is kept as it is: several messages refused at once are one cap, not a
// doubling each. Otherwise the count grows and the wait with it: ARGV[2]
// doubled per earlier cap, up to ARGV[3]; the key outlives the cap by
// ARGV[4]. It returns {until, count}.
var capScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if u > now then
  return {u, tonumber(redis.call('HGET', KEYS[1], 'n') or '1')}
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local d = tonumber(ARGV[2]) * 2 ^ (n - 1)
if d > tonumber(ARGV[3]) then d = tonumber(ARGV[3]) end
u = now + d
redis.call('HSET', KEYS[1], 'u', string.format('%d', u))
redis.call('PEXPIRE', KEYS[1], string.format('%d', d + tonumber(ARGV[4])))
return {u, n}`)

// Capped records that the cap refused a marketing message to recipient at
// at, and returns until when the recipient's marketing messages wait.
func (mc *MarketingCaps) Capped(ctx context.Context, recipient string, at time.Time) (time.Time, error) {
	v, err := capScript.Run(ctx, mc.rdb, []string{mc.key(recipient)}, at.UnixMilli(),
		firstCapWait.Milliseconds(), maxCapWait.Milliseconds(), capForget.Milliseconds()).Int64Slice()
	if err != nil {
		return time.Time{}, fmt.Errorf("record the marketing cap of %s: %w", recipient, err)
	}
	return time.UnixMilli(v[0]).UTC(), nil
}

// Until returns until when recipient's marketing messages wait, the zero
// time when they need not.
func (mc *MarketingCaps) Until(ctx context.Context, recipient string) (time.Time, error) {
	return capUntil(recipient, mc.rdb.HGet(ctx, mc.key(recipient), "u"))
}

// Queue queues on pipe the read of Until, made before every marketing
// send with the send's other reads, and returns its answer, to call once
// pipe ran.
func (mc *MarketingCaps) Queue(ctx context.Context, pipe redis.Pipeliner, recipient string) func() (time.Time, error) {
	cmd := pipe.HGet(ctx, mc.key(recipient), "u")
	return func() (time.Time, error) { return capUntil(recipient, cmd) }
}

// capUntil is the end of recipient's cap that cmd read.
func capUntil(recipient string, cmd *redis.StringCmd) (time.Time, error) {
	ms, err := cmd.Int64()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read the marketing cap of %s: %w", recipient, err)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// IsMarketingCapCode reports whether a failure code is Meta's per-user
// marketing cap (131049).
func IsMarketingCapCode(code string) bool {
	info, _ := chatarchitect.LookupCode(code)
	return info.Class == chatarchitect.ClassMarketingCapped
}
