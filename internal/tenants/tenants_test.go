package tenants_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/tenants"
)

func TestKeys(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	ks := tenants.NewKeys(rdb)
	k, secret, err := ks.Create(ctx, "acme", "crm-prod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.ID, "key_") || !strings.HasPrefix(secret, "cq_") || k.Tenant != "acme" || k.Name != "crm-prod" {
		t.Errorf("created %+v with secret %.3s...", k, secret)
	}
	// Only the hash is stored.
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, key := range keys {
		if strings.Contains(key, secret) {
			t.Errorf("Redis key %s holds the secret", key)
		}
		for f, v := range rdb.HGetAll(ctx, key).Val() {
			if strings.Contains(v, secret[3:]) {
				t.Errorf("%s %s holds the secret", key, f)
			}
		}
	}
	got, ok, err := ks.Lookup(ctx, secret)
	if err != nil || !ok || got != k {
		t.Errorf("Lookup: %+v %v %v, want %+v", got, ok, err, k)
	}
	for _, miss := range []string{"", "cq_", secret + "x", secret[:len(secret)-1], strings.ToUpper(secret), "ck_admin"} {
		if _, ok, err := ks.Lookup(ctx, miss); ok || err != nil {
			t.Errorf("Lookup(%q): %v %v, want no key", miss, ok, err)
		}
	}
	list, err := ks.List(ctx)
	if err != nil || len(list) != 1 || list[0] != k {
		t.Errorf("List: %+v %v", list, err)
	}
	if _, err := ks.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ks.Lookup(ctx, secret); ok {
		t.Error("a revoked key still opens")
	}
	if _, err := ks.Revoke(ctx, k.ID); !errors.Is(err, tenants.ErrNotFound) {
		t.Errorf("revoking twice: %v, want ErrNotFound", err)
	}
	if list, _ := ks.List(ctx); len(list) != 0 {
		t.Errorf("List after revoking: %+v", list)
	}
}

func TestCreateNamesTheField(t *testing.T) {
	ks := tenants.NewKeys(redistest.Start(t).Client(t))
	for _, tc := range []struct{ tenant, name, field string }{
		{"", "x", "tenant"}, {"Acme", "x", "tenant"}, {"acme:eu", "x", "tenant"}, {"-acme", "x", "tenant"},
		{strings.Repeat("a", 65), "x", "tenant"}, {"acme", "", "name"}, {"acme", "a\nb", "name"},
	} {
		_, _, err := ks.Create(context.Background(), tc.tenant, tc.name)
		var ve *enqueue.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("Create(%q, %q): %v, want a validation error naming %s", tc.tenant, tc.name, err, tc.field)
		}
	}
}
