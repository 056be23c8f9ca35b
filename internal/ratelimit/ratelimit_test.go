package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

// clock is a clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// limiter returns a limiter on a fresh Redis, on a clock of the test's.
func limiter(tb testing.TB, cfg ratelimit.Config, window ratelimit.Window) (*ratelimit.Limiter, *clock) {
	tb.Helper()
	c := newClock()
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	if cfg.Sender == "" {
		cfg.Sender = "15550001234"
	}
	return ratelimit.New(redistest.Start(tb).Client(tb), cfg, window), c
}

// step is one request of a table test, after moving the clock by advance.
type step struct {
	advance   time.Duration
	recipient string
	maxWait   time.Duration
	want      ratelimit.Decision
}

func run(t *testing.T, l *ratelimit.Limiter, c *clock, steps []step, opts ...cmp.Option) {
	t.Helper()
	for i, s := range steps {
		c.Add(s.advance)
		maxWait := s.maxWait
		if maxWait == 0 {
			maxWait = time.Minute
		}
		got, err := l.Reserve(context.Background(), ratelimit.Request{Recipient: s.recipient, MaxWait: maxWait, MaxHold: time.Second})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if diff := cmp.Diff(s.want, got, opts...); diff != "" {
			t.Errorf("step %d (%s at +%s): decision (-want +got):\n%s", i, s.recipient, c.Now().Sub(newClock().Now()), diff)
		}
	}
}

func reserved(wait time.Duration) ratelimit.Decision {
	return ratelimit.Decision{Reserved: true, Wait: wait}
}

func TestSenderSlotsAreReservedAtTheRate(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{Rate: 10, Burst: 3}, nil)
	ms := time.Millisecond
	run(t, l, c, []step{
		// A burst of three, then one slot every 100ms, reserved ahead.
		{recipient: "1", want: reserved(0)},
		{recipient: "2", want: reserved(0)},
		{recipient: "3", want: reserved(0)},
		{recipient: "4", want: reserved(100 * ms)},
		{recipient: "5", want: reserved(200 * ms)},
		{recipient: "6", want: reserved(300 * ms)},
		// Beyond the request's horizon nothing is taken...
		{recipient: "7", maxWait: 250 * ms, want: ratelimit.Decision{Wait: 400 * ms, Reason: ratelimit.ReasonRate}},
		// ...so the next free slot is still the one at 400ms.
		{advance: 400 * ms, recipient: "7", maxWait: ms, want: reserved(0)},
		{recipient: "8", want: reserved(100 * ms)},
		// A quiet second refills the burst, and no more than it.
		{advance: 2 * time.Second, recipient: "9", want: reserved(0)},
		{recipient: "10", want: reserved(0)},
		{recipient: "11", want: reserved(0)},
		{recipient: "12", want: reserved(100 * ms)},
	})
}

func TestNoSenderLimitReservesAtOnce(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{}, nil)
	var steps []step
	for range 100 {
		steps = append(steps, step{recipient: "1", want: reserved(0)})
	}
	run(t, l, c, steps)
}

// window is a Window that knows a fixed set of recipients inside theirs.
type window map[string]bool

func (w window) InWindow(_ context.Context, recipient string) (bool, error) { return w[recipient], nil }

func TestDailyLimitAdmitsExactlyItsNumberOfRecipients(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{DailyRecipients: 3}, window{"in-window": true})
	h := time.Hour
	daily := func(wait time.Duration) ratelimit.Decision {
		return ratelimit.Decision{Wait: wait, Reason: ratelimit.ReasonDaily}
	}
	run(t, l, c, []step{
		{recipient: "a", want: reserved(0)},
		{advance: h, recipient: "b", want: reserved(0)},
		{advance: h, recipient: "c", want: reserved(0)},
		// The fourth waits until the first has been quiet for 24h.
		{advance: h, recipient: "d", want: daily(21 * h)},
		// Recipients already counted always go, and stay counted longer.
		{recipient: "a", want: reserved(0)},
		{recipient: "c", want: reserved(0)},
		{recipient: "d", want: daily(22 * h)},
		// A recipient inside its 24h window is not business-initiated.
		{recipient: "in-window", want: reserved(0)},
		{recipient: "d", want: daily(22 * h)},
		// b drops out exactly 24h after its send, not a moment before.
		{advance: 22*h - time.Microsecond, recipient: "d", want: daily(time.Microsecond)},
		{advance: time.Microsecond, recipient: "d", want: reserved(0)},
		{recipient: "e", want: daily(2 * h)},
		{recipient: "b", want: daily(2 * h)},
	})
}

func TestPairLimitReservesEachSendItsOwnSlot(t *testing.T) {
	const interval = 300 * time.Millisecond
	l := ratelimit.New(redistest.Start(t).Client(t), ratelimit.Config{Sender: "15550001234", PairInterval: interval, PairBurst: 3}, nil)
	ctx := context.Background()
	take := func(recipient string) time.Duration {
		t.Helper()
		wait, err := l.ReservePair(ctx, recipient)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	for i := range 3 {
		if wait := take("4477001"); wait != 0 {
			t.Fatalf("send %d of the burst of 3 held back %s", i+1, wait)
		}
	}
	// Every later send is told its own slot, one interval after the one
	// before: K sends cost K reservations, none is told to come back and
	// ask again.
	const margin = 50 * time.Millisecond
	for k := 1; k <= 5; k++ {
		want := time.Duration(k) * interval
		if wait := take("4477001"); wait < want-margin || wait > want {
			t.Fatalf("send %d waits %s, want about %s", 3+k, wait, want)
		}
	}
	if w := take("4477002"); w != 0 {
		t.Errorf("another recipient is held back %s", w)
	}
}

// A send asks for its pair slot and its sender slot in one step: a pair
// slot free now comes with the send slot; one that lies ahead is reserved
// alone, and the send slot is asked for once it comes, without a second
// pair slot.
func TestAdmitReservesThePairSlotWithTheSendSlot(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{Rate: 10, PairInterval: 6 * time.Second}, nil)
	ctx := context.Background()
	admit := func(recipient string, pair bool) ratelimit.Decision {
		t.Helper()
		d, _, err := l.Admit(ctx, ratelimit.Request{Recipient: recipient, MaxWait: time.Minute, MaxHold: time.Second, Pair: pair})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	ms := time.Millisecond
	steps := []struct {
		recipient string
		pair      bool
		want      ratelimit.Decision
	}{
		{"4477001", true, reserved(0)},
		// The second send to 4477001 gets its pair slot 6s ahead, and no
		// send slot: the next recipient's send is not pushed back.
		{"4477001", true, ratelimit.Decision{Wait: 6 * time.Second, Reason: ratelimit.ReasonPair}},
		{"4477002", true, reserved(100 * ms)},
		// After the wait, the send slot alone.
		{"4477001", false, reserved(200 * ms)},
	}
	for i, s := range steps {
		if diff := cmp.Diff(s.want, admit(s.recipient, s.pair)); diff != "" {
			t.Fatalf("step %d (-want +got):\n%s", i, diff)
		}
	}
	// A third send to 4477001 is told the slot after the second's.
	c.Add(time.Second)
	if d := admit("4477001", true); d.Reason != ratelimit.ReasonPair || d.Wait != 11*time.Second {
		t.Errorf("third send to 4477001: %+v, want its pair slot 11s ahead", d)
	}
}

// A recipient no send went to lately, as a campaign's recipients are, has
// its pair slot taken with one command on its schedule (SET ... NX GET),
// not a read and a write; one with a schedule still has it read.
func TestAFreshPairSlotCostsOneCommand(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	c := newClock()
	l := ratelimit.New(rdb, ratelimit.Config{Sender: "15550001234", Rate: 10, PairInterval: 6 * time.Second, Now: c.Now}, nil)
	ctx := context.Background()
	admit := func(recipient string) (ratelimit.Decision, map[string]int64) {
		t.Helper()
		redistest.Commands(t, rdb)
		d, _, err := l.Admit(ctx, ratelimit.Request{Recipient: recipient, MaxWait: time.Minute, MaxHold: time.Second, Pair: true})
		if err != nil {
			t.Fatal(err)
		}
		return d, redistest.Commands(t, rdb)
	}
	admit("4477000") // the script loaded
	d, cmds := admit("4477001")
	if d != reserved(100*time.Millisecond) {
		t.Fatalf("first send to 4477001: %+v", d)
	}
	if cmds["get"] != 0 || cmds["set"] != 1 {
		t.Errorf("a fresh pair slot ran %v, want one SET and no GET", cmds)
	}
	d, cmds = admit("4477001")
	if d.Reason != ratelimit.ReasonPair || d.Wait != 6*time.Second {
		t.Errorf("second send to 4477001: %+v, want its pair slot 6s ahead", d)
	}
	if cmds["set"] != 2 {
		t.Errorf("a held pair slot ran %v, want its SET ... NX GET and its SET", cmds)
	}
}

func TestPairLimitOff(t *testing.T) {
	l := ratelimit.New(redistest.Start(t).Client(t), ratelimit.Config{}, nil)
	for range 50 {
		if wait, err := l.ReservePair(context.Background(), "4477001"); err != nil || wait != 0 {
			t.Fatalf("ReservePair = %s, %v with the pair limit off", wait, err)
		}
	}
}

// approx compares the throttle's figures, which move with the clock.
var approx = cmp.Options{
	cmpopts.EquateApprox(0, 1e-5),
	cmp.Comparer(func(a, b time.Duration) bool { return (a - b).Abs() <= time.Millisecond }),
}

func TestThrottleHalvesTheRateOnceThenRecovers(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{Rate: 10, Burst: 5, ThrottleRecovery: time.Minute}, nil)
	ctx := context.Background()
	check := func(what string, got ratelimit.SenderState, err error, want ratelimit.SenderState) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, approx); diff != "" {
			t.Errorf("%s at +%s (-want +got):\n%s", what, c.Now().Sub(newClock().Now()), diff)
		}
	}
	st, err := l.State(ctx)
	check("state", st, err, ratelimit.SenderState{Factor: 1})
	st, err = l.Throttle(ctx, 2*time.Second, ratelimit.Cause{})
	check("throttle", st, err, ratelimit.SenderState{Factor: 0.5, Blocked: 2 * time.Second})
	// Refusals of sends that were on the wire together halve it once.
	c.Add(500 * time.Millisecond)
	st, err = l.Throttle(ctx, 0, ratelimit.Cause{})
	check("throttle", st, err, ratelimit.SenderState{Factor: 0.5 + 0.5*0.5/60, Blocked: 1500 * time.Millisecond})
	c.Add(time.Second)
	st, err = l.Throttle(ctx, 0, ratelimit.Cause{})
	f := (0.5 + 1.5*0.5/60) / 2
	check("throttle", st, err, ratelimit.SenderState{Factor: f, Blocked: 500 * time.Millisecond})
	// It climbs back by half the rate a minute.
	c.Add(30 * time.Second)
	st, err = l.State(ctx)
	check("state", st, err, ratelimit.SenderState{Factor: f + 0.25})
	c.Add(time.Minute)
	st, err = l.State(ctx)
	check("state", st, err, ratelimit.SenderState{Factor: 1})
}

func TestThrottledSenderWaitsForRetryAfterWithoutBurst(t *testing.T) {
	// A recovery so slow that the rate stays halved while the test runs.
	l, c := limiter(t, ratelimit.Config{Rate: 10, Burst: 5, ThrottleRecovery: 1000 * time.Hour}, nil)
	if _, err := l.Throttle(context.Background(), 2*time.Second, ratelimit.Cause{}); err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	run(t, l, c, []step{
		// Held for the Retry-After: longer than MaxHold, so reported.
		{recipient: "1", want: ratelimit.Decision{Wait: 2 * time.Second, Reason: ratelimit.ReasonBlocked}},
		// Within MaxHold it is reserved through; after it, no burst, and
		// slots at half the rate.
		{advance: 1500 * ms, recipient: "1", want: reserved(500 * ms)},
		{recipient: "2", want: reserved(700 * ms)},
		{recipient: "3", want: reserved(900 * ms)},
	}, approx)
}

func TestRecipientBackOffGrowsFourfold(t *testing.T) {
	l, c := limiter(t, ratelimit.Config{Rate: 100}, nil)
	ctx := context.Background()
	var got []time.Duration
	for range 5 {
		d, err := l.BackOffRecipient(ctx, "4477001")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	s := time.Second
	if diff := cmp.Diff([]time.Duration{s, 4 * s, 16 * s, 64 * s, 64 * s}, got); diff != "" {
		t.Errorf("back-offs (-want +got):\n%s", diff)
	}
	run(t, l, c, []step{
		{recipient: "4477001", want: ratelimit.Decision{Wait: 64 * s, Reason: ratelimit.ReasonRecipient}},
		{recipient: "4477002", want: reserved(0)},
		{advance: 63500 * time.Millisecond, recipient: "4477001", want: reserved(500 * time.Millisecond)},
	})
}

func TestSendersOfAPortfolioShareItsDailyCount(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	c := newClock()
	one := ratelimit.New(rdb, ratelimit.Config{Sender: "15550000001", Portfolio: "acme", DailyRecipients: 3, Rate: 1, Now: c.Now}, nil)
	two := ratelimit.New(rdb, ratelimit.Config{Sender: "15550000002", Portfolio: "acme", DailyRecipients: 3, Rate: 1, Now: c.Now}, nil)
	ctx := context.Background()
	admit := func(l *ratelimit.Limiter, recipient string, maxWait time.Duration) (ratelimit.Decision, ratelimit.Claim) {
		t.Helper()
		d, claim, err := l.Admit(ctx, ratelimit.Request{Recipient: recipient, MaxWait: maxWait, MaxHold: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return d, claim
	}
	if d, claim := admit(one, "a", time.Minute); !d.Reserved || claim.Recipient != "a" {
		t.Fatalf("a from one: %+v %+v", d, claim)
	}
	if d, claim := admit(two, "b", time.Minute); !d.Reserved || claim.Recipient != "b" {
		t.Fatalf("b from two: %+v %+v", d, claim)
	}
	// Counted already, by the other sender: it goes, and adds nobody.
	if d, claim := admit(two, "a", time.Minute); !d.Reserved || claim.Recipient != "" {
		t.Fatalf("a from two: %+v %+v", d, claim)
	}
	// Held back by its sender's rate: it gives its place in the count back.
	if d, _ := admit(one, "c", 0); d.Reserved || d.Reason != ratelimit.ReasonRate {
		t.Fatalf("c from one, right after a: %+v", d)
	}
	_, claim := admit(two, "c", time.Minute)
	if d, _ := admit(one, "d", time.Minute); d.Reserved || d.Reason != ratelimit.ReasonDaily {
		t.Fatalf("d, the fourth of the portfolio: %+v", d)
	}
	// A refused send reached nobody: its recipient does not count.
	if err := two.Uncount(ctx, claim); err != nil {
		t.Fatal(err)
	}
	if d, _ := admit(one, "d", time.Minute); !d.Reserved {
		t.Fatalf("d after c was given back: %+v", d)
	}
}
