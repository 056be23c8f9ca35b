package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
)

// Senders lets a worker send from every sender of the registry, each
// through its own app's credentials and with its own flow control: its
// rate, pair limit, throttle and circuit breaker, and its portfolio's
// daily count.
type Senders struct {
	// Registry is the deployment's senders; a change (a new sender, new
	// credentials or limits, a pause) applies within a second.
	Registry *senders.Registry
	// Upstream is the ChatArchitect API of the apps' clients: its BaseURL
	// and Timeout. The credentials are each sender's.
	Upstream chatarchitect.Config
}

// senderSet is a worker's per-sender state: a ChatArchitect client per
// app and flow control per sender, built on a sender's first message and
// rebuilt when the registry changes what they are made of. The sender of
// the CHATQ_CA_ variables keeps the worker's own client and flow.
type senderSet struct {
	reg      *senders.Registry
	upstream chatarchitect.Config
	hc       *http.Client
	rdb      redis.UniversalClient
	store    *store.Store
	// base is the flow configuration each sender's limits are laid over.
	base FlowConfig
	// main is the flow of the environment's sender, and the deployment's
	// circuit; mainSender its client.
	main       *flow
	mainSender Sender
	log        *zap.Logger

	mu      sync.Mutex
	clients map[string]*appClient // by app id
	flows   map[string]*senderFlow
	stopped bool
	// endWatch ends watch; watched is done once it has.
	endWatch context.CancelFunc
	watched  chan struct{}
}

// watchEvery is how often a worker looks for resumed senders.
const watchEvery = 500 * time.Millisecond

// watch releases the messages that wait for a sender's pause within a
// second of its resume, rather than at their next look, until ctx ends.
func (ss *senderSet) watch(ctx context.Context) {
	defer close(ss.watched)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	paused := map[string]bool{}
	for {
		for _, s := range ss.reg.All() {
			if paused[s.Number] && !s.Paused {
				released, err := ss.store.ReleaseWaits(ctx, []string{s.Number, ""}, store.WaitPaused, 0)
				switch {
				case err != nil && ctx.Err() == nil:
					ss.log.Warn("releasing the messages of a resumed sender failed; they look again on their own", zap.String("sender", s.Number), zap.Error(err))
				case released > 0:
					ss.log.Info("sender resumed: its waiting messages go", zap.String("sender", s.Number), zap.Int("messages", released))
				}
			}
			paused[s.Number] = s.Paused
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// appClient is the client of one app, with what it was built from.
type appClient struct {
	secret, source string
	client         *chatarchitect.Client
}

// senderFlow is one stored sender's flow control, with what it was built
// from: a change of any of it builds a new one.
type senderFlow struct {
	made flowMade
	flow *flow
}

type flowMade struct {
	limits            senders.Limits
	portfolio         string
	daily             int
	app, secret       string
	severalSendersApp bool
}

func newSenderSet(s *Senders, rdb redis.UniversalClient, st *store.Store, base FlowConfig, main *flow, mainSender Sender, log *zap.Logger) *senderSet {
	ctx, cancel := context.WithCancel(context.Background())
	ss := &senderSet{
		reg: s.Registry, upstream: s.Upstream, hc: chatarchitect.NewHTTPClient(s.Upstream.Timeout),
		rdb: rdb, store: st, base: base, main: main, mainSender: mainSender, log: log,
		clients: map[string]*appClient{}, flows: map[string]*senderFlow{},
		endWatch: cancel, watched: make(chan struct{}),
	}
	go ss.watch(ctx)
	return ss
}

// errUnknownSender fails a message whose sender the registry does not
// know (removed since the message was accepted): it is retried, in case
// the sender comes back, and dead-lettered when its retries run out.
type errUnknownSender struct{ number string }

func (e *errUnknownSender) Error() string {
	return fmt.Sprintf("sender %s is not registered (removed?): add it again to send its messages", e.number)
}

// route returns the flow control and the client of rec's sender, or a
// hold when the sender is paused. A record without a sender (accepted
// before senders existed) goes from its tenant's default sender. A sender
// the registry does not know fails the message (errUnknownSender) once
// the registry is fresh: it may have been added since the last reload.
func (ss *senderSet) route(ctx context.Context, rec *store.Record) (*flow, Sender, *hold, error) {
	s, err := ss.senderOf(rec)
	if err != nil {
		if rerr := ss.reg.Refresh(ctx); rerr != nil {
			return nil, nil, nil, fmt.Errorf("sender of %s: %w", rec.ID, rerr)
		}
		if s, err = ss.senderOf(rec); err != nil {
			return nil, nil, nil, err
		}
	}
	if s.Paused {
		ss.main.waited("paused", circuitHold)
		return nil, nil, &hold{delay: circuitHold, note: "sending paused: sender " + s.Number + " is paused", reason: store.WaitPaused, open: true}, nil
	}
	if s.Env {
		return ss.main, ss.mainSender, nil, nil
	}
	f, send := ss.flowOf(s)
	return f, send, nil, nil
}

// senderOf returns the registry's sender of rec, or errUnknownSender.
func (ss *senderSet) senderOf(rec *store.Record) (senders.Sender, error) {
	number := rec.Sender
	if number == "" {
		tenant := cmp.Or(rec.Tenant, senders.EnvTenant)
		d, ok := ss.reg.Default(tenant)
		if !ok {
			return senders.Sender{}, &errUnknownSender{number: "of tenant " + tenant}
		}
		number = d.Number
	}
	s, ok := ss.reg.Lookup(number)
	if !ok {
		return senders.Sender{}, &errUnknownSender{number: number}
	}
	return s, nil
}

// flowOf returns the flow control and client of a stored sender.
func (ss *senderSet) flowOf(s senders.Sender) (*flow, Sender) {
	app := ss.reg.OfApp(s.AppID)
	made := flowMade{limits: s.Limits, portfolio: cmp.Or(s.Portfolio, s.Number), daily: ss.dailyLimit(s),
		app: s.AppID, secret: s.AppSecret, severalSendersApp: len(app) > 1}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	client := ss.clientOf(s, app)
	send := Sender(sourced{client: client})
	if made.severalSendersApp {
		send = sourced{client: client, source: s.Number}
	}
	if sf, ok := ss.flows[s.Number]; ok && sf.made == made {
		return sf.flow, send
	}
	if old, ok := ss.flows[s.Number]; ok {
		// Its messages waiting for a slot are handed back, and come back
		// to the new flow.
		go old.flow.stop()
	}
	cfg := ss.base
	cfg.Probe = nil
	cfg.Limits.Sender = s.Number
	cfg.Limits.Portfolio = made.portfolio
	cfg.Limits.Rate = s.Limits.RatePerSecond
	cfg.Limits.Burst = s.Limits.RateBurst
	cfg.Limits.PairInterval = s.Limits.PairInterval
	cfg.Limits.PairBurst = s.Limits.PairBurst
	cfg.Limits.DailyRecipients = made.daily
	if c, ok := cfg.Window.(*policy.Checker); ok {
		// A recipient inside this sender's window is exempt from the cap.
		cfg.Window = c.ForSender(s.Number)
	}
	log := ss.log.With(zap.String("sender", s.Number))
	f := newFlow(ss.rdb, cfg, send, log)
	f.circuit = newSenderCircuit(ss.rdb, s.Number, log.Named("circuit"))
	f.global, f.sender, f.metrics = ss.main, s.Number, ss.main.metrics
	f.waits, f.waitKeys = ss.store, []string{s.Number, ""}
	if !ss.stopped {
		f.start()
	}
	ss.flows[s.Number] = &senderFlow{made: made, flow: f}
	return f, send
}

// clientOf returns the client of s's app, built anew when the app's
// credentials changed. The client's own source, for its probe (getHSM),
// is the app's first number. ss.mu is held.
func (ss *senderSet) clientOf(s senders.Sender, app []senders.Sender) *chatarchitect.Client {
	source := s.Number
	if len(app) > 0 {
		source = app[0].Number
	}
	if c, ok := ss.clients[s.AppID]; ok && c.secret == s.AppSecret && c.source == source {
		return c.client
	}
	cfg := ss.upstream
	cfg.AppID, cfg.AppSecret, cfg.Source = s.AppID, s.AppSecret, source
	c := chatarchitect.New(cfg, ss.hc)
	ss.clients[s.AppID] = &appClient{secret: s.AppSecret, source: source, client: c}
	return c
}

// dailyLimit is the daily cap of s's portfolio: the lowest that its
// senders set (0, no cap, sets none).
func (ss *senderSet) dailyLimit(s senders.Sender) int {
	portfolio := cmp.Or(s.Portfolio, s.Number)
	limit := 0
	for _, o := range ss.reg.All() {
		if cmp.Or(o.Portfolio, o.Number) != portfolio || o.Limits.DailyRecipientLimit <= 0 {
			continue
		}
		if limit == 0 || o.Limits.DailyRecipientLimit < limit {
			limit = o.Limits.DailyRecipientLimit
		}
	}
	return limit
}

// stop stops every sender's flow: their waiting messages are handed back.
func (ss *senderSet) stop() {
	if ss == nil {
		return
	}
	ss.endWatch()
	<-ss.watched
	ss.mu.Lock()
	ss.stopped = true
	flows := make([]*flow, 0, len(ss.flows))
	for _, sf := range ss.flows {
		flows = append(flows, sf.flow)
	}
	ss.mu.Unlock()
	for _, f := range flows {
		f.stop()
	}
}

// sourced sends through an app's client from one of its numbers: source
// is "" for an app of one number, whose body is the overview's.
type sourced struct {
	client *chatarchitect.Client
	source string
}

func (s sourced) Send(ctx context.Context, destination string, payload json.RawMessage) (string, error) {
	return s.client.SendFrom(ctx, s.source, destination, payload)
}

// Templates is the probe of the sender's open circuit: an authenticated
// call that sends nothing.
func (s sourced) Templates(ctx context.Context) ([]chatarchitect.Template, error) {
	return s.client.Templates(ctx)
}
