package senders

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Config configures a Registry.
type Config struct {
	// Cipher seals and opens the stored secrets (CHATQ_SECRETS_KEY); nil
	// means the deployment has no key: it runs with the environment's
	// sender alone, refuses to store senders, and Start fails if Redis
	// holds some.
	Cipher *Cipher
	// Defaults are the limits of a sender that does not set its own (the
	// CHATQ_RATE_PER_SECOND ... variables).
	Defaults Limits
	// Env is the sender of the CHATQ_CA_ variables, nil when
	// CHATQ_CA_SOURCE is not set. Its Tenant is EnvTenant whatever it says.
	Env *Sender
	// Interval is how often the background reload checks the version;
	// zero means 500ms, so that every process sees a change within a
	// second.
	Interval time.Duration
	// Log reports reloads that fail; nil logs nothing.
	Log *zap.Logger
}

// Registry is the senders of a deployment: stored in Redis and changed
// through its methods (store.go), and cached in memory for lookups that
// cost no round trip. A background loop (Start) polls a version counter
// that every change increments and reloads when it moves, so that every
// process sees a new, changed, paused or removed sender within a second.
// It is safe for concurrent use.
type Registry struct {
	rdb  redis.UniversalClient
	cfg  Config
	log  *zap.Logger
	now  func() time.Time
	snap atomic.Pointer[snapshot]
	// reload serializes reloads, so that an older read never replaces a
	// newer one.
	reload sync.Mutex
	stop   context.CancelFunc
	done   chan struct{}
}

// snapshot is one immutable view of the registry.
type snapshot struct {
	version  int64
	all      []*Sender // by number
	byNumber map[string]*Sender
	byApp    map[string][]*Sender
	byHook   map[[32]byte]*Sender
	defaults map[string]*Sender // by tenant
}

// New returns a registry on rdb. It holds the environment's sender alone
// until Start or Reload reads Redis.
func New(rdb redis.UniversalClient, cfg Config) *Registry {
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Env != nil {
		env := *cfg.Env
		env.Number = Normalize(env.Number)
		env.Tenant, env.Env, env.Default = EnvTenant, true, true
		env.Portfolio = cmpOr(env.Portfolio, env.Number)
		env.Limits = env.Overrides.apply(cfg.Defaults)
		cfg.Env = &env
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	r := &Registry{rdb: rdb, cfg: cfg, log: log, now: time.Now}
	r.snap.Store(r.build(-1, nil, nil))
	return r
}

// Start reads the registry and keeps it fresh in the background until Stop.
// It fails, naming CHATQ_SECRETS_KEY, when Redis holds senders that the
// process cannot open: without a key, or with another key than theirs.
func (r *Registry) Start(ctx context.Context) error {
	if err := r.Reload(ctx); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stop, r.done = cancel, make(chan struct{})
	go r.loop(lctx)
	return nil
}

// Stop ends the background reload.
func (r *Registry) Stop() {
	if r.stop != nil {
		r.stop()
		<-r.done
	}
}

func (r *Registry) loop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
			// The last good view stays: a sender that cannot be read now
			// keeps sending as it did.
			r.log.Error("reloading the sender registry", zap.Error(err))
		}
	}
}

// Refresh reloads the registry when a process changed it since the last
// reload, and costs one GET when none did. Every Interval does it; so does
// a process that meets a sender it does not know (Find), which may have
// been added since.
func (r *Registry) Refresh(ctx context.Context) error {
	v, err := r.rdb.Get(ctx, versionKey).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read the sender registry's version: %w", err)
	}
	if v == r.snapshot().version {
		return nil
	}
	return r.Reload(ctx)
}

// Find is Lookup for a number another process may have added since the
// last reload: when the registry knows no such sender, it refreshes first.
func (r *Registry) Find(ctx context.Context, number string) (Sender, bool, error) {
	if s, ok := r.Lookup(number); ok {
		return s, true, nil
	}
	if err := r.Refresh(ctx); err != nil {
		return Sender{}, false, err
	}
	s, ok := r.Lookup(number)
	return s, ok, nil
}

// Reload reads the whole registry from Redis now.
func (r *Registry) Reload(ctx context.Context) error {
	r.reload.Lock()
	defer r.reload.Unlock()
	v, err := r.rdb.Get(ctx, versionKey).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read senders: %w", err)
	}
	numbers, err := r.rdb.SMembers(ctx, indexKey).Result()
	if err != nil {
		return fmt.Errorf("read senders: %w", err)
	}
	if len(numbers) > 0 && r.cfg.Cipher == nil {
		return fmt.Errorf("CHATQ_SECRETS_KEY is not set, but Redis holds stored senders (%d) sealed under one: set it to the key they were added with", len(numbers))
	}
	hooks := append([]string(nil), numbers...)
	if r.cfg.Env != nil {
		hooks = append(hooks, r.cfg.Env.Number)
	}
	pipe := r.rdb.Pipeline()
	hashes := make([]*redis.MapStringStringCmd, len(numbers))
	for i, n := range numbers {
		hashes[i] = pipe.HGetAll(ctx, senderKey(n))
	}
	urls := make(map[string]*redis.StringCmd, len(hooks))
	for _, n := range hooks {
		urls[n] = pipe.Get(ctx, webhookURLKey(n))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read senders: %w", err)
	}
	var stored []*Sender
	for _, c := range hashes {
		h := c.Val()
		if len(h) == 0 {
			continue // removed meanwhile
		}
		s, err := r.parse(h)
		if err != nil {
			return fmt.Errorf("read senders: %w", err)
		}
		stored = append(stored, s)
	}
	webhooks := make(map[string]string, len(urls))
	for n, c := range urls {
		webhooks[n] = c.Val()
	}
	r.snap.Store(r.build(v, stored, webhooks))
	return nil
}

// build makes a snapshot of the stored senders and the environment's.
func (r *Registry) build(version int64, stored []*Sender, webhooks map[string]string) *snapshot {
	s := &snapshot{version: version, byNumber: map[string]*Sender{}, byApp: map[string][]*Sender{},
		byHook: map[[32]byte]*Sender{}, defaults: map[string]*Sender{}}
	all := stored
	if r.cfg.Env != nil {
		env := *r.cfg.Env
		all = append(all, &env)
	}
	for _, x := range all {
		x.WebhookURL = webhooks[x.Number]
	}
	slices.SortFunc(all, func(a, b *Sender) int { return strings.Compare(a.Number, b.Number) })
	s.all = all
	for _, x := range all {
		s.byNumber[x.Number] = x
		if x.AppID != "" {
			s.byApp[x.AppID] = append(s.byApp[x.AppID], x)
		}
		if x.WebhookSecret != "" {
			s.byHook[sha256.Sum256([]byte(x.WebhookSecret))] = x
		}
		if better(x, s.defaults[x.Tenant]) {
			s.defaults[x.Tenant] = x
		}
	}
	return s
}

// better reports whether x is a better default sender of its tenant than
// cur: a stored sender marked default beats the environment's sender (the
// default of tenant default until one is marked), and among several marked
// (a change cut short), the one changed last; without any marked, the one
// added first.
func better(x, cur *Sender) bool {
	switch {
	case cur == nil:
		return true
	case x.Default != cur.Default:
		return x.Default
	case x.Env != cur.Env:
		return cur.Env
	case x.Default:
		return x.UpdatedAt.After(cur.UpdatedAt)
	}
	return x.CreatedAt.Before(cur.CreatedAt)
}

func (r *Registry) snapshot() *snapshot { return r.snap.Load() }

// Lookup returns the sender of a number ("+" or not).
func (r *Registry) Lookup(number string) (Sender, bool) {
	s, ok := r.snapshot().byNumber[Normalize(number)]
	if !ok {
		return Sender{}, false
	}
	return *s, true
}

// All returns every sender, by number.
func (r *Registry) All() []Sender {
	return copies(r.snapshot().all, func(*Sender) bool { return true })
}

// OfTenant returns the senders of a tenant, by number.
func (r *Registry) OfTenant(tenant string) []Sender {
	return copies(r.snapshot().all, func(s *Sender) bool { return s.Tenant == tenant })
}

// OfApp returns the senders of a ChatArchitect app, by number.
func (r *Registry) OfApp(appID string) []Sender {
	return copies(r.snapshot().byApp[appID], func(*Sender) bool { return true })
}

// Default returns the default sender of a tenant: the one marked default,
// else (tenant default) the environment's, else the one added first.
func (r *Registry) Default(tenant string) (Sender, bool) {
	s, ok := r.snapshot().defaults[tenant]
	if !ok {
		return Sender{}, false
	}
	return *s, true
}

// ByWebhookSecret returns the sender whose webhook secret is secret,
// compared in constant time.
func (r *Registry) ByWebhookSecret(secret string) (Sender, bool) {
	s, ok := r.snapshot().byHook[sha256.Sum256([]byte(secret))]
	if !ok || subtle.ConstantTimeCompare([]byte(secret), []byte(s.WebhookSecret)) != 1 {
		return Sender{}, false
	}
	return *s, true
}

// Stored reports whether senders can be stored: the process has
// CHATQ_SECRETS_KEY.
func (r *Registry) Stored() bool { return r.cfg.Cipher != nil }

func copies(in []*Sender, keep func(*Sender) bool) []Sender {
	out := []Sender{}
	for _, s := range in {
		if keep(s) {
			out = append(out, *s)
		}
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
