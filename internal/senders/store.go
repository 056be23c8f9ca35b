package senders

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The registry's Redis keys. Each sender's hash has its number as hash tag,
// so that it sits in a slot of its own on Redis Cluster; the index and the
// version live apart and are written after the hash, so that a reader finds
// at worst an index entry without its sender, which it skips.
const (
	indexKey   = "chatq:senders"
	versionKey = "chatq:senders:version"
)

func senderKey(number string) string { return "chatq:sender:{" + number + "}" }

// webhookURLKey holds the URL an application registered with POST /webhook
// for a sender. It is apart from the sender's hash because the
// environment's sender, which has no hash, takes one too.
func webhookURLKey(number string) string { return "chatq:sender:{" + number + "}:webhook_url" }

// Hash fields of a stored sender.
const (
	fNumber    = "number"
	fAppID     = "app_id"
	fAppSecret = "app_secret" // sealed
	fTenant    = "tenant"
	fPortfolio = "portfolio"
	fDefault   = "default"
	fPaused    = "paused"
	fHook      = "webhook_secret" // sealed
	fCreated   = "created_at"
	fUpdated   = "updated_at"
	fRate      = "rate_per_second"
	fBurst     = "rate_burst"
	fPairIvl   = "pair_interval"
	fPairBurst = "pair_burst"
	fDaily     = "daily_recipient_limit"
)

// createScript writes a sender's hash unless the number is taken.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`)

// replaceScript rewrites an existing sender's hash: ARGV[1] is the number
// of fields to delete that follow it, then field/value pairs to set.
var replaceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
for i = 2, n + 1 do redis.call('HDEL', KEYS[1], ARGV[i]) end
if #ARGV > n + 1 then redis.call('HSET', KEYS[1], unpack(ARGV, n + 2)) end
return 1`)

// pauseScript sets the paused field of an existing sender.
var pauseScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', ARGV[1], 'updated_at', ARGV[2])
return 1`)

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// fields lays a sender out as its hash, secrets sealed, and lists the
// limit fields it does not set.
func (r *Registry) fields(sp Spec, hookSecret string, created, updated time.Time) (set []any, unset []any) {
	set = []any{
		fNumber, sp.Number, fAppID, sp.AppID, fAppSecret, r.cfg.Cipher.seal(sp.Number, sp.AppSecret),
		fTenant, sp.Tenant, fPortfolio, sp.Portfolio, fDefault, boolField(sp.Default), fPaused, boolField(sp.Paused),
		fHook, r.cfg.Cipher.seal(sp.Number, hookSecret),
		fCreated, strconv.FormatInt(created.UnixMilli(), 10), fUpdated, strconv.FormatInt(updated.UnixMilli(), 10),
	}
	o := sp.Overrides
	for _, l := range []struct {
		field string
		value any
		ok    bool
	}{
		{fRate, o.RatePerSecond, o.RatePerSecond != nil},
		{fBurst, o.RateBurst, o.RateBurst != nil},
		{fPairIvl, o.PairInterval, o.PairInterval != nil},
		{fPairBurst, o.PairBurst, o.PairBurst != nil},
		{fDaily, o.DailyRecipientLimit, o.DailyRecipientLimit != nil},
	} {
		if !l.ok {
			unset = append(unset, l.field)
			continue
		}
		switch v := l.value.(type) {
		case *float64:
			set = append(set, l.field, strconv.FormatFloat(*v, 'g', -1, 64))
		case *int:
			set = append(set, l.field, strconv.Itoa(*v))
		case *time.Duration:
			set = append(set, l.field, v.String())
		}
	}
	return set, unset
}

// parse builds a sender from its hash, opening its secrets.
func (r *Registry) parse(h map[string]string) (*Sender, error) {
	number := h[fNumber]
	if r.cfg.Cipher == nil {
		return nil, fmt.Errorf("sender %s: %w", number, ErrNoSecretsKey)
	}
	secret, err := r.cfg.Cipher.open(number, h[fAppSecret])
	if err != nil {
		return nil, fmt.Errorf("sender %s: app_secret: %w", number, err)
	}
	hook, err := r.cfg.Cipher.open(number, h[fHook])
	if err != nil {
		return nil, fmt.Errorf("sender %s: webhook secret: %w", number, err)
	}
	s := &Sender{
		Number: number, AppID: h[fAppID], AppSecret: secret, Tenant: h[fTenant], Portfolio: h[fPortfolio],
		Default: h[fDefault] == "1", Paused: h[fPaused] == "1", WebhookSecret: hook,
		CreatedAt: parseMillis(h[fCreated]), UpdatedAt: parseMillis(h[fUpdated]),
	}
	o := &s.Overrides
	if v, ok := h[fRate]; ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("sender %s: %s: %w", number, fRate, err)
		}
		o.RatePerSecond = &f
	}
	for _, l := range []struct {
		field string
		dst   **int
	}{{fBurst, &o.RateBurst}, {fPairBurst, &o.PairBurst}, {fDaily, &o.DailyRecipientLimit}} {
		if v, ok := h[l.field]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("sender %s: %s: %w", number, l.field, err)
			}
			*l.dst = &n
		}
	}
	if v, ok := h[fPairIvl]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("sender %s: %s: %w", number, fPairIvl, err)
		}
		o.PairInterval = &d
	}
	s.Limits = o.apply(r.cfg.Defaults)
	return s, nil
}

func parseMillis(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(n).UTC()
}

func (s *Sender) spec() Spec {
	return Spec{Number: s.Number, AppID: s.AppID, AppSecret: s.AppSecret, Tenant: s.Tenant, Portfolio: s.Portfolio,
		Overrides: s.Overrides, Default: s.Default, Paused: s.Paused}
}

// writable checks that senders can be stored and that number is not the
// environment's sender.
func (r *Registry) writable(number string) error {
	if r.cfg.Env != nil && r.cfg.Env.Number == number {
		return ErrFromEnvironment
	}
	if r.cfg.Cipher == nil {
		return ErrNoSecretsKey
	}
	return nil
}

// Add stores a new sender and returns it as the registry now sees it.
func (r *Registry) Add(ctx context.Context, sp Spec) (Sender, error) {
	sp.Number = Normalize(sp.Number)
	if err := sp.validate(); err != nil {
		return Sender{}, err
	}
	if r.cfg.Env != nil && r.cfg.Env.Number == sp.Number {
		return Sender{}, fmt.Errorf("add sender %s: %w", sp.Number, ErrExists)
	}
	if err := r.writable(sp.Number); err != nil {
		return Sender{}, fmt.Errorf("add sender %s: %w", sp.Number, err)
	}
	if sp.Portfolio == "" {
		sp.Portfolio = sp.Number
	}
	now := r.now().UTC().Truncate(time.Millisecond)
	set, _ := r.fields(sp, hex.EncodeToString(randomBytes(24)), now, now)
	ok, err := createScript.Run(ctx, r.rdb, []string{senderKey(sp.Number)}, set...).Int()
	if err != nil {
		return Sender{}, fmt.Errorf("add sender %s: %w", sp.Number, err)
	}
	if ok == 0 {
		return Sender{}, fmt.Errorf("add sender %s: %w", sp.Number, ErrExists)
	}
	if err := r.rdb.SAdd(ctx, indexKey, sp.Number).Err(); err != nil {
		return Sender{}, fmt.Errorf("add sender %s: %w", sp.Number, err)
	}
	return r.changed(ctx, sp.Number, sp.Tenant, sp.Default)
}

// Update applies p to a stored sender.
func (r *Registry) Update(ctx context.Context, number string, p Patch) (Sender, error) {
	number = Normalize(number)
	if err := r.writable(number); err != nil {
		return Sender{}, fmt.Errorf("update sender %s: %w", number, err)
	}
	cur, err := r.load(ctx, number)
	if err != nil {
		return Sender{}, fmt.Errorf("update sender %s: %w", number, err)
	}
	sp, err := p.apply(cur.spec())
	if err != nil {
		return Sender{}, fmt.Errorf("update sender %s: %w", number, err)
	}
	if err := sp.validate(); err != nil {
		return Sender{}, err
	}
	if sp.Portfolio == "" {
		sp.Portfolio = sp.Number
	}
	set, unset := r.fields(sp, cur.WebhookSecret, cur.CreatedAt, r.now())
	args := append(append([]any{len(unset)}, unset...), set...)
	ok, err := replaceScript.Run(ctx, r.rdb, []string{senderKey(number)}, args...).Int()
	if err != nil {
		return Sender{}, fmt.Errorf("update sender %s: %w", number, err)
	}
	if ok == 0 {
		return Sender{}, fmt.Errorf("update sender %s: %w", number, ErrNotFound)
	}
	return r.changed(ctx, number, sp.Tenant, sp.Default)
}

// SetPaused pauses or resumes a stored sender: its messages wait, with
// reason "paused", until it is resumed.
func (r *Registry) SetPaused(ctx context.Context, number string, paused bool) (Sender, error) {
	number = Normalize(number)
	if err := r.writable(number); err != nil {
		return Sender{}, fmt.Errorf("pause sender %s: %w", number, err)
	}
	ok, err := pauseScript.Run(ctx, r.rdb, []string{senderKey(number)}, boolField(paused), r.now().UnixMilli()).Int()
	if err != nil {
		return Sender{}, fmt.Errorf("pause sender %s: %w", number, err)
	}
	if ok == 0 {
		return Sender{}, fmt.Errorf("pause sender %s: %w", number, ErrNotFound)
	}
	return r.changed(ctx, number, "", false)
}

// Remove deletes a stored sender. Its messages that still wait are not
// sent from it any more (the worker finds no sender for them).
func (r *Registry) Remove(ctx context.Context, number string) error {
	number = Normalize(number)
	if r.cfg.Env != nil && r.cfg.Env.Number == number {
		return fmt.Errorf("remove sender %s: %w", number, ErrFromEnvironment)
	}
	n, err := r.rdb.Del(ctx, senderKey(number)).Result()
	if err != nil {
		return fmt.Errorf("remove sender %s: %w", number, err)
	}
	if n == 0 {
		return fmt.Errorf("remove sender %s: %w", number, ErrNotFound)
	}
	pipe := r.rdb.Pipeline()
	pipe.SRem(ctx, indexKey, number)
	pipe.Del(ctx, webhookURLKey(number))
	pipe.Incr(ctx, versionKey)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("remove sender %s: %w", number, err)
	}
	return r.Reload(ctx)
}

// SetWebhookURL records where the application wants the sender's webhooks
// (ChatArchitect's POST /webhook, on chatq's drop-in endpoints). It works
// for the environment's sender too.
func (r *Registry) SetWebhookURL(ctx context.Context, number, url string) error {
	number = Normalize(number)
	if _, ok := r.Lookup(number); !ok {
		return fmt.Errorf("set webhook of %s: %w", number, ErrNotFound)
	}
	pipe := r.rdb.Pipeline()
	pipe.Set(ctx, webhookURLKey(number), url, 0)
	pipe.Incr(ctx, versionKey)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("set webhook of %s: %w", number, err)
	}
	return r.Reload(ctx)
}

// changed finishes a change of number: a new default of tenant unmarks the
// others, the version moves on so that every process reloads, and this
// process reloads at once, so that its next request sees the change.
func (r *Registry) changed(ctx context.Context, number, tenant string, isDefault bool) (Sender, error) {
	if isDefault {
		for _, other := range r.snapshot().all {
			if other.Default && other.Tenant == tenant && other.Number != number && !other.Env {
				// A failure leaves two defaults; the registry then picks the
				// one changed last, so the outcome is the same.
				_ = replaceScript.Run(ctx, r.rdb, []string{senderKey(other.Number)}, 0, fDefault, "0").Err()
			}
		}
	}
	if err := r.rdb.Incr(ctx, versionKey).Err(); err != nil {
		return Sender{}, fmt.Errorf("sender %s: %w", number, err)
	}
	if err := r.Reload(ctx); err != nil {
		return Sender{}, err
	}
	s, ok := r.Lookup(number)
	if !ok {
		return Sender{}, fmt.Errorf("sender %s: %w", number, ErrNotFound)
	}
	return s, nil
}

// load reads one stored sender from Redis.
func (r *Registry) load(ctx context.Context, number string) (*Sender, error) {
	h, err := r.rdb.HGetAll(ctx, senderKey(number)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, ErrNotFound
	}
	return r.parse(h)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
