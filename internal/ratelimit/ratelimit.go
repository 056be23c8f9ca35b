// Package ratelimit keeps chatq's flow-control state in Redis, where every
// worker process shares it: the sender's rate (with slot reservations and
// adaptive throttling), the per-recipient pair limit, the daily cap on
// unique recipients, a recipient's back-off after a pair-rate refusal, and
// the circuit breaker's state.
//
// Every key of one sender carries the hash tag {<sender>}, so that a single
// script reads and writes them together on Redis Cluster too.
package ratelimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxRetryAfter is the longest Retry-After a sender honours unless
// Config.MaxRetryAfter says otherwise (CHATQ_MAX_RETRY_AFTER): the
// upstream's answer may say a day, and one such answer must not stop a
// sender for a day.
const DefaultMaxRetryAfter = 5 * time.Minute

// sendersKey lists every sender the upstream ever throttled, so that
// /readyz and chatq resume, which know no sender, find their throttles.
const sendersKey = "chatq:rl:senders"

// Defaults of the zero Config fields, and fixed parameters of the
// throttling.
const (
	defaultSender           = "default"
	defaultThrottleRecovery = time.Minute
	// dailyWindow is WhatsApp's moving window of the messaging tiers.
	dailyWindow = 24 * time.Hour
	// minFactor is the lowest share of its rate throttling leaves a sender:
	// a sixteenth still probes whether the upstream has room again.
	minFactor = 1.0 / 16
	// throttleHoldoff groups the refusals of sends that were on the wire
	// together into one halving.
	throttleHoldoff = time.Second
	// stateKeep is how long a sender's state outlives its last use: long
	// enough for a throttled rate to recover.
	stateKeep = time.Hour
	// Back-off of a recipient after 131056: 1, 4, 16, 64 s, forgotten after
	// ten quiet minutes.
	backoffFirst = time.Second
	backoffSteps = 4
	backoffKeep  = 10 * time.Minute
)

var (
	//go:embed common.lua
	commonSource string
	//go:embed reserve.lua
	reserveSource string
	//go:embed throttle.lua
	throttleSource string
	//go:embed state.lua
	stateSource string
	//go:embed backoff.lua
	backoffSource string
	//go:embed unthrottle.lua
	unthrottleSource string
	//go:embed daily.lua
	dailySource string
	//go:embed pair.lua
	pairSource string
	//go:embed pace.lua
	paceSource string

	// The sender's limit and the pair limit are not plain rate limits that
	// answer "allowed now or not": chatq needs reservations (take the next
	// free slot, possibly a little in the future, and sleep until it) so that
	// the achieved rate is the configured rate and messages leave in queue
	// order. Doing it in one script also lets the daily cap, the back-off and
	// the Retry-After be checked in the same atomic step, so that a message
	// they hold back takes no slot.
	reserveScript    = redis.NewScript(commonSource + reserveSource)
	throttleScript   = redis.NewScript(commonSource + throttleSource)
	stateScript      = redis.NewScript(commonSource + stateSource)
	backoffScript    = redis.NewScript(commonSource + backoffSource)
	unthrottleScript = redis.NewScript(commonSource + unthrottleSource)
	dailyScript      = redis.NewScript(commonSource + dailySource)
	pairScript       = redis.NewScript(commonSource + pairSource)
	paceScript       = redis.NewScript(commonSource + paceSource)
)

// Config sets the limits of one sender. The zero value limits nothing.
type Config struct {
	// Sender is the business number the limits belong to
	// (CHATQ_CA_SOURCE); empty means "default".
	Sender string
	// Portfolio names the daily count the sender shares with the other
	// senders of its portfolio; empty means the sender's own number, whose
	// count is checked in the same atomic step as its rate.
	Portfolio string
	// Rate is the sender's messages per second across every worker; zero
	// means no limit.
	Rate float64
	// Burst is how many messages may leave back to back after a quiet
	// spell; zero means 1. Keep it below the upstream's own burst, or
	// timing jitter alone gets sends refused.
	Burst int
	// PairInterval is the steady spacing of sends to one recipient; zero
	// turns the pair limit off.
	PairInterval time.Duration
	// PairBurst is how many sends to one recipient may go back to back
	// before PairInterval applies; zero means 1.
	PairBurst int
	// DailyRecipients caps the unique recipients of business-initiated
	// messages in a moving 24 hours, those of the whole portfolio; zero
	// turns the cap off.
	DailyRecipients int
	// ThrottleRecovery is how long a rate halved by upstream throttling
	// takes to climb back to full; zero means 1m.
	ThrottleRecovery time.Duration
	// MaxRetryAfter caps the upstream's Retry-After; zero means
	// DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Now, if set, replaces Redis's clock in every limit (tests). Left
	// nil, all workers share the clock of Redis.
	Now func() time.Time
}

// Window tells the daily cap which recipients are inside their 24-hour
// customer service window: a message to them answers the user, is not
// business-initiated, and does not count.
type Window interface {
	// InWindow reports whether recipient wrote to the business within the
	// last 24 hours.
	InWindow(ctx context.Context, recipient string) (bool, error)
}

// Reason names the limit that holds a send back.
type Reason string

// The reasons of a Decision that reserved nothing.
const (
	// ReasonRate: the sender's next free slot is further away than the
	// request's MaxWait.
	ReasonRate Reason = "rate"
	// ReasonBlocked: the upstream's Retry-After still holds the sender.
	ReasonBlocked Reason = "blocked"
	// ReasonRecipient: the recipient is backed off after a pair-rate
	// refusal (131056).
	ReasonRecipient Reason = "recipient"
	// ReasonDaily: the daily cap on unique recipients is reached and this
	// recipient is not among them.
	ReasonDaily Reason = "daily"
	// ReasonPair: the recipient's slot on its pair schedule (the pair
	// limit) lies ahead. Unlike the others, that slot is reserved: the
	// caller waits for it, then asks again without Request.Pair.
	ReasonPair Reason = "pair"
)

// Request asks for a send slot.
type Request struct {
	// Recipient is the destination number.
	Recipient string
	// MaxWait is how far ahead a slot may be reserved: a further one is not
	// taken, and the Decision says ReasonRate.
	MaxWait time.Duration
	// MaxHold is the longest back-off or Retry-After reserved through; a
	// longer one is reported (ReasonRecipient, ReasonBlocked).
	MaxHold time.Duration
	// Pair also reserves the recipient's slot on its pair schedule (as
	// ReservePair does), first and in the same step: when it lies ahead,
	// only it is reserved and the Decision says ReasonPair.
	Pair bool
}

// Decision is the answer to a Request.
type Decision struct {
	// Reserved is true when the send has its slot: it may go once Wait has
	// passed, and it counts against the daily cap from then on.
	Reserved bool
	// Wait is the time until the reserved slot or, when nothing was
	// reserved, until the limit named by Reason may let the send go.
	Wait time.Duration
	// Reason names the limit that holds the send back; empty when Reserved.
	Reason Reason
}

// SenderState is what the upstream's throttling left of a sender's rate.
type SenderState struct {
	// Factor is the share of the configured rate the sender may use now, 1
	// when it is not throttled.
	Factor float64
	// Blocked is how long the upstream's Retry-After still holds the
	// sender, 0 when it does not.
	Blocked time.Duration
	// Code and Reason are the upstream's answer that throttled the sender
	// last, empty when it never did or chatq resume cleared it.
	Code, Reason string
}

// Cause is the upstream's answer that throttles a sender, as /readyz
// shows it.
type Cause struct {
	// Code is the error code ("http_429", "130429").
	Code string
	// Reason is the upstream's words.
	Reason string
}

// Limiter applies one sender's limits. It is safe for concurrent use.
type Limiter struct {
	rdb    redis.UniversalClient
	cfg    Config
	window Window
	// prefix starts every key of the sender: chatq:rl:{<sender>}:
	prefix string
	// daily is the portfolio's daily count, chatq:rl:{<portfolio>}:daily.
	daily string
}

// Claim is what a reservation counted against the daily cap: a send that
// the upstream then refuses reached nobody and gives it back (Uncount).
type Claim struct {
	// Recipient is the recipient counted, "" when the reservation added
	// nobody (no cap, a recipient counted before, or inside the window).
	Recipient string
}

// New returns the limiter of cfg.Sender. window may be nil: then every
// recipient counts against the daily cap.
func New(rdb redis.UniversalClient, cfg Config, window Window) *Limiter {
	if cfg.Sender == "" {
		cfg.Sender = defaultSender
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 1
	}
	if cfg.PairBurst <= 0 {
		cfg.PairBurst = 1
	}
	if cfg.ThrottleRecovery <= 0 {
		cfg.ThrottleRecovery = defaultThrottleRecovery
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if cfg.Portfolio == "" {
		cfg.Portfolio = cfg.Sender
	}
	return &Limiter{
		rdb:    rdb,
		cfg:    cfg,
		window: window,
		prefix: keyPrefix(cfg.Sender),
		daily:  keyPrefix(cfg.Portfolio) + "daily",
	}
}

// keyPrefix starts every key of sender.
func keyPrefix(sender string) string { return "chatq:rl:{" + sender + "}:" }

// Config returns the limiter's configuration, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// ReservePair reserves one send to recipient its slot on the recipient's
// schedule (the pair limit: PairBurst back to back, then one per
// PairInterval) and returns the wait until it; 0 means go now. The slot is
// taken however far it lies: the caller waits for it, in its worker or on
// the due index, and no later message to the recipient takes it.
func (l *Limiter) ReservePair(ctx context.Context, recipient string) (time.Duration, error) {
	if l.cfg.PairInterval <= 0 {
		return 0, nil
	}
	wait, err := pairScript.Run(ctx, l.rdb, []string{l.prefix + "pslot:" + recipient},
		l.now(), micros(l.cfg.PairInterval), l.cfg.PairBurst).Text()
	if err != nil {
		return 0, fmt.Errorf("pair limit: %w", err)
	}
	us, err := strconv.ParseInt(wait, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pair limit: unexpected answer %q", wait)
	}
	return time.Duration(max(us, 0)) * time.Microsecond, nil
}

// Pace returns how many bulk messages of the sender may be handed to the
// workers now, at most most: the slots within ahead of the schedule Pace
// keeps of what it handed over, which follows the handlers' schedule once
// that runs more than horizon-ahead further (see pace.lua). None while the
// upstream's Retry-After holds the sender beyond ahead; a throttled rate
// counts fewer. Without a rate limit it is most.
func (l *Limiter) Pace(ctx context.Context, ahead, horizon time.Duration, most int) (int, error) {
	res, err := paceScript.Run(ctx, l.rdb, []string{l.prefix + "sender"},
		l.now(), micros(l.interval()), l.cfg.Burst, micros(l.cfg.ThrottleRecovery),
		micros(ahead), most, micros(stateKeep), micros(max(horizon-ahead, 0))).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected answer %v", res)
	}
	if err != nil {
		return 0, fmt.Errorf("pace: %w", err)
	}
	return int(res[0]), nil
}

// Reserve asks every other limit for a send slot: the recipient's
// back-off, the sender's Retry-After, the daily cap and the sender's rate,
// in one atomic step. It takes the slot only when all of them let the send
// go within the request's bounds.
func (l *Limiter) Reserve(ctx context.Context, req Request) (Decision, error) {
	d, _, err := l.Admit(ctx, req)
	return d, err
}

// Admit is Reserve that also returns what the reservation counted against
// the daily cap. A sender whose portfolio is its own number checks the cap
// in the same atomic step as its rate; one that shares a portfolio counts
// the recipient in the portfolio's hash slot first and gives it back when
// the rest of the limits hold the send back.
func (l *Limiter) Admit(ctx context.Context, req Request) (Decision, Claim, error) {
	member := ""
	if l.cfg.DailyRecipients > 0 {
		member = req.Recipient
		if l.window != nil {
			in, err := l.window.InWindow(ctx, req.Recipient)
			if err != nil {
				return Decision{}, Claim{}, fmt.Errorf("reserve: window of the recipient: %w", err)
			}
			if in {
				member = ""
			}
		}
	}
	limit, claimed := l.cfg.DailyRecipients, false
	if member != "" && l.cfg.Portfolio != l.cfg.Sender {
		d, added, err := l.countDaily(ctx, member)
		if err != nil || !d.Reserved {
			return d, Claim{}, err
		}
		limit, claimed, member = 0, added, ""
	}
	keys := []string{l.prefix + "sender", l.daily, l.prefix + "backoff:" + req.Recipient}
	args := []any{l.now(), micros(l.interval()), l.cfg.Burst, micros(l.cfg.ThrottleRecovery),
		micros(req.MaxWait), micros(req.MaxHold),
		limit, member, micros(dailyWindow), micros(stateKeep)}
	if req.Pair && l.cfg.PairInterval > 0 {
		keys = append(keys, l.prefix+"pslot:"+req.Recipient)
		args = append(args, micros(l.cfg.PairInterval), l.cfg.PairBurst)
	}
	res, err := reserveScript.Run(ctx, l.rdb, keys, args...).Slice()
	if err == nil && len(res) != 3 && len(res) != 4 { // 3: nothing reserved
		err = fmt.Errorf("unexpected answer %v", res)
	}
	if err != nil {
		if claimed {
			err = errors.Join(err, l.Uncount(context.WithoutCancel(ctx), Claim{Recipient: req.Recipient}))
		}
		return Decision{}, Claim{}, fmt.Errorf("reserve: %w", err)
	}
	reserved, _ := res[0].(int64)
	wait, _ := res[1].(int64)
	reason, _ := res[2].(string)
	var added int64
	if len(res) == 4 {
		added, _ = res[3].(int64)
	}
	d := Decision{Reserved: reserved == 1, Wait: time.Duration(max(wait, 0)) * time.Microsecond, Reason: Reason(reason)}
	var c Claim
	if d.Reserved && (added == 1 || claimed) {
		c.Recipient = req.Recipient
	}
	if !d.Reserved && claimed {
		if err := l.Uncount(ctx, Claim{Recipient: req.Recipient}); err != nil {
			return Decision{}, Claim{}, fmt.Errorf("reserve: %w", err)
		}
	}
	return d, c, nil
}

// countDaily counts recipient against the portfolio's daily cap, unless
// the cap is reached; added reports whether it was not counted before.
func (l *Limiter) countDaily(ctx context.Context, recipient string) (d Decision, added bool, err error) {
	res, err := dailyScript.Run(ctx, l.rdb, []string{l.daily},
		l.now(), l.cfg.DailyRecipients, recipient, micros(dailyWindow)).Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected answer %v", res)
	}
	if err != nil {
		return Decision{}, false, fmt.Errorf("daily count of %s: %w", l.cfg.Portfolio, err)
	}
	ok, _ := res[0].(int64)
	wait, _ := res[1].(int64)
	n, _ := res[2].(int64)
	if ok != 1 {
		return Decision{Wait: time.Duration(max(wait, 0)) * time.Microsecond, Reason: ReasonDaily}, false, nil
	}
	return Decision{Reserved: true}, n == 1, nil
}

// Uncount gives back what a reservation counted against the daily cap,
// after the upstream refused the send: it reached nobody.
func (l *Limiter) Uncount(ctx context.Context, c Claim) error {
	if c.Recipient == "" {
		return nil
	}
	if err := l.rdb.ZRem(ctx, l.daily, c.Recipient).Err(); err != nil {
		return fmt.Errorf("uncount %s: %w", c.Recipient, err)
	}
	return nil
}

// Throttle lowers the sender's rate after the upstream refused a send as
// too many, and holds every worker back for retryAfter (0 if the upstream
// gave none), at most MaxRetryAfter.
func (l *Limiter) Throttle(ctx context.Context, retryAfter time.Duration, cause Cause) (SenderState, error) {
	retryAfter = min(retryAfter, l.cfg.MaxRetryAfter)
	res, err := throttleScript.Run(ctx, l.rdb, []string{l.prefix + "sender"},
		l.now(), micros(l.interval()), l.cfg.Burst, micros(l.cfg.ThrottleRecovery),
		micros(retryAfter), strconv.FormatFloat(minFactor, 'f', -1, 64), micros(throttleHoldoff), micros(stateKeep),
		cause.Code, cause.Reason,
	).Slice()
	if err != nil {
		return SenderState{}, fmt.Errorf("throttle: %w", err)
	}
	if err := l.rdb.SAdd(ctx, sendersKey, l.cfg.Sender).Err(); err != nil {
		return SenderState{}, fmt.Errorf("throttle: list the sender: %w", err)
	}
	return senderState(res)
}

// State returns what throttling left of the sender's rate.
func (l *Limiter) State(ctx context.Context) (SenderState, error) {
	return senderStateOf(ctx, l.rdb, l.prefix+"sender", l.now(), l.cfg.ThrottleRecovery)
}

func senderStateOf(ctx context.Context, rdb redis.UniversalClient, key string, now int64, recovery time.Duration) (SenderState, error) {
	return stateAnswer(stateScript.Run(ctx, rdb, []string{key}, now, micros(recovery)))
}

// queueState queues on pipe the read of the state of the sender whose
// hash is key, by Redis's clock (readPipelined runs it; stateAnswer
// reads the answer).
func queueState(ctx context.Context, pipe redis.Pipeliner, key string) *redis.Cmd {
	return stateScript.EvalSha(ctx, pipe, []string{key}, 0, micros(defaultThrottleRecovery))
}

// stateAnswer reads the answer of the state script.
func stateAnswer(cmd *redis.Cmd) (SenderState, error) {
	res, err := cmd.Slice()
	if err != nil {
		return SenderState{}, fmt.Errorf("sender state: %w", err)
	}
	return senderState(res)
}

// readPipelined runs the reads that build queues in one round trip,
// however many senders they read. When Redis lacks the state script (a
// restart emptied its script cache) it loads it and runs them again:
// reads change nothing.
func readPipelined(ctx context.Context, rdb redis.UniversalClient, build func(pipe redis.Pipeliner)) error {
	for try := 0; ; try++ {
		pipe := rdb.Pipeline()
		build(pipe)
		_, err := pipe.Exec(ctx)
		if err == nil || try > 0 || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
			return err
		}
		if err := stateScript.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("load the state script: %w", err)
		}
	}
}

// senderState reads the answer of the throttle and state scripts:
// {factor in millionths, wait until the Retry-After has passed, code,
// reason}.
func senderState(res []any) (SenderState, error) {
	if len(res) != 4 {
		return SenderState{}, fmt.Errorf("sender state: unexpected answer %v", res)
	}
	f, ok1 := res[0].(int64)
	blocked, ok2 := res[1].(int64)
	code, _ := res[2].(string)
	reason, _ := res[3].(string)
	if !ok1 || !ok2 {
		return SenderState{}, fmt.Errorf("sender state: unexpected answer %v", res)
	}
	return SenderState{Factor: float64(f) / 1e6, Blocked: time.Duration(max(blocked, 0)) * time.Microsecond, Code: code, Reason: reason}, nil
}

// BackOffRecipient holds sends to recipient back after the upstream
// refused one as too frequent for that recipient (131056): 1, 4, 16, then
// 64 s for each further refusal. It returns the back-off.
func (l *Limiter) BackOffRecipient(ctx context.Context, recipient string) (time.Duration, error) {
	wait, err := backoffScript.Run(ctx, l.rdb, []string{l.prefix + "backoff:" + recipient, l.prefix + "sender"},
		l.now(), micros(backoffFirst), backoffSteps, micros(backoffKeep)).Int64()
	if err != nil {
		return 0, fmt.Errorf("back off recipient: %w", err)
	}
	return time.Duration(wait) * time.Microsecond, nil
}

// interval is the spacing of slots at the full rate, 0 for no limit. The
// scripts count in microseconds, so it is rounded up to one: rounded down,
// a rate of 3/s would put a fourth slot 999999µs after the first, inside
// the same second.
func (l *Limiter) interval() time.Duration {
	if l.cfg.Rate <= 0 {
		return 0
	}
	return max(time.Duration(math.Ceil(float64(time.Second)/l.cfg.Rate/float64(time.Microsecond)))*time.Microsecond, time.Microsecond)
}

// now is the scripts' clock argument: 0 lets them read Redis's clock.
func (l *Limiter) now() int64 {
	if l.cfg.Now == nil {
		return 0
	}
	return l.cfg.Now().UnixMicro()
}

func micros(d time.Duration) int64 { return d.Microseconds() }
