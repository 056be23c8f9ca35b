// Package tenants names chatq's tenants (the clients of an agency or a CRM
// that share one deployment) and keeps their API keys: each key is shown
// once, stored only as its SHA-256 hash, and resolves to its tenant.
package tenants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/jsontime"
)

// Default is the tenant of the sender the CHATQ_CA_ variables define, and
// of every message sent with an admin key and no sender of another tenant.
const Default = "default"

// KeyPrefix starts every tenant key, so that it is told from an admin key
// (CHATQ_API_KEYS) at a glance, and found by secret scanners.
const KeyPrefix = "cq_"

// MaxName bounds a tenant's name and a key's name.
const MaxName = 64

// Validate checks a tenant name: 1 to 64 lower-case letters, digits, dots,
// dashes and underscores, starting with a letter or digit. The name is part
// of Redis keys, so braces and colons are out.
func Validate(field, tenant string) error {
	if tenant == "" {
		return &enqueue.ValidationError{Field: field, Reason: "is required"}
	}
	if len(tenant) > MaxName {
		return &enqueue.ValidationError{Field: field, Reason: fmt.Sprintf("must be at most %d characters", MaxName)}
	}
	for i, c := range tenant {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '-' || c == '_')
		if !ok {
			return &enqueue.ValidationError{Field: field, Reason: "must be lower-case letters, digits, dots, dashes and underscores, starting with a letter or digit, such as acme or acme-eu"}
		}
	}
	return nil
}

// ErrNotFound: no key has that id.
var ErrNotFound = errors.New("no key with this id")

// Key is a tenant key as it is listed: never its secret.
type Key struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// MarshalJSON writes CreatedAt as every timestamp of chatq's JSON.
func (k Key) MarshalJSON() ([]byte, error) {
	type plain Key
	return json.Marshal(struct {
		plain
		CreatedAt jsontime.Time `json:"created_at"`
	}{plain(k), jsontime.Time(k.CreatedAt)})
}

// Keys stores tenant keys in Redis: chatq:tkey:{<id>} is a key's hash (its
// tenant, name, creation time and secret's hash), chatq:tkeyhash:{<hash>}
// the same fields found by the hash of the secret, which is how a request's
// bearer token is looked up, and chatq:tkeys the set of ids.
type Keys struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// NewKeys returns the tenant keys kept in rdb.
func NewKeys(rdb redis.UniversalClient) *Keys { return &Keys{rdb: rdb, now: time.Now} }

const keysIndex = "chatq:tkeys"

func keyKey(id string) string       { return "chatq:tkey:{" + id + "}" }
func hashKey(hashHex string) string { return "chatq:tkeyhash:{" + hashHex + "}" }
func hashOf(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }
func hexOf(sum [32]byte) string     { return hex.EncodeToString(sum[:]) }
func random(n int) []byte           { b := make([]byte, n); _, _ = rand.Read(b); return b }
func encode(b []byte) string        { return base64.RawURLEncoding.EncodeToString(b) }
func millis(t time.Time) string     { return strconv.FormatInt(t.UnixMilli(), 10) }
func parseMillis(s string) time.Time {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(n).UTC()
}
func fieldsOf(k Key, sum string) []any {
	return []any{"id", k.ID, "tenant", k.Tenant, "name", k.Name, "created_at", millis(k.CreatedAt), "hash", sum}
}

// Create makes a key for tenant, named name (which says where it is used,
// such as crm-prod), and returns it with its secret: the only time the
// secret is seen.
func (ks *Keys) Create(ctx context.Context, tenant, name string) (Key, string, error) {
	if err := Validate("tenant", tenant); err != nil {
		return Key{}, "", err
	}
	if strings.TrimSpace(name) == "" {
		return Key{}, "", &enqueue.ValidationError{Field: "name", Reason: "is required: say where the key is used, such as crm-prod"}
	}
	if utf8.RuneCountInString(name) > MaxName || strings.ContainsAny(name, "\r\n") {
		return Key{}, "", &enqueue.ValidationError{Field: "name", Reason: fmt.Sprintf("must be one line of at most %d characters", MaxName)}
	}
	k := Key{ID: "key_" + encode(random(12)), Tenant: tenant, Name: name, CreatedAt: ks.now().UTC().Truncate(time.Millisecond)}
	secret := KeyPrefix + encode(random(32))
	sum := hexOf(hashOf(secret))
	pipe := ks.rdb.TxPipeline()
	pipe.HSet(ctx, hashKey(sum), fieldsOf(k, sum)...)
	pipe.HSet(ctx, keyKey(k.ID), fieldsOf(k, sum)...)
	pipe.SAdd(ctx, keysIndex, k.ID)
	if _, err := pipe.Exec(ctx); err != nil {
		return Key{}, "", fmt.Errorf("create key for %s: %w", tenant, err)
	}
	return k, secret, nil
}

// List returns every tenant key, oldest first.
func (ks *Keys) List(ctx context.Context) ([]Key, error) {
	ids, err := ks.rdb.SMembers(ctx, keysIndex).Result()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	pipe := ks.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, keyKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := []Key{}
	for _, c := range cmds {
		if h := c.Val(); h["id"] != "" {
			out = append(out, Key{ID: h["id"], Tenant: h["tenant"], Name: h["name"], CreatedAt: parseMillis(h["created_at"])})
		}
	}
	slices.SortFunc(out, func(a, b Key) int { return cmpKeys(a, b) })
	return out, nil
}

func cmpKeys(a, b Key) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// Revoke deletes a key: a request that carries it is refused from then on.
func (ks *Keys) Revoke(ctx context.Context, id string) (Key, error) {
	h, err := ks.rdb.HGetAll(ctx, keyKey(id)).Result()
	if err != nil {
		return Key{}, fmt.Errorf("revoke key %s: %w", id, err)
	}
	if h["id"] == "" {
		return Key{}, fmt.Errorf("revoke key %s: %w", id, ErrNotFound)
	}
	// The lookup entry goes first: a failure after it leaves a listed key
	// that no longer opens anything, never a revoked key that still does.
	if err := ks.rdb.Del(ctx, hashKey(h["hash"])).Err(); err != nil {
		return Key{}, fmt.Errorf("revoke key %s: %w", id, err)
	}
	pipe := ks.rdb.Pipeline()
	pipe.Del(ctx, keyKey(id))
	pipe.SRem(ctx, keysIndex, id)
	if _, err := pipe.Exec(ctx); err != nil {
		return Key{}, fmt.Errorf("revoke key %s: %w", id, err)
	}
	return Key{ID: id, Tenant: h["tenant"], Name: h["name"], CreatedAt: parseMillis(h["created_at"])}, nil
}

// Lookup returns the key whose secret is secret, and false when there is
// none. The secret is found by its hash, and the stored hash is compared in
// constant time.
func (ks *Keys) Lookup(ctx context.Context, secret string) (Key, bool, error) {
	if !strings.HasPrefix(secret, KeyPrefix) {
		return Key{}, false, nil
	}
	sum := hashOf(secret)
	h, err := ks.rdb.HGetAll(ctx, hashKey(hexOf(sum))).Result()
	if err != nil {
		return Key{}, false, fmt.Errorf("look up key: %w", err)
	}
	stored, err := hex.DecodeString(h["hash"])
	if err != nil || subtle.ConstantTimeCompare(stored, sum[:]) != 1 {
		return Key{}, false, nil
	}
	return Key{ID: h["id"], Tenant: h["tenant"], Name: h["name"], CreatedAt: parseMillis(h["created_at"])}, true, nil
}
