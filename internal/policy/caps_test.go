package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
)

// A recipient's marketing cap lasts a day, twice as long each time it is
// met again once over, up to a week; refusals while it runs are the same
// cap; another tenant's recipient is not capped by it.
func TestMarketingCapGrowsOnEachRepeat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	caps := policy.NewMarketingCaps(rdb, "acme")
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for i, want := range []time.Duration{24 * time.Hour, 48 * time.Hour, 96 * time.Hour, 168 * time.Hour, 168 * time.Hour} {
		until, err := caps.Capped(ctx, "+447700900001", at)
		if err != nil {
			t.Fatal(err)
		}
		if got := until.Sub(at); got != want {
			t.Errorf("cap %d: %s, want %s", i+1, got, want)
		}
		// Another refusal while the cap runs changes nothing.
		again, err := caps.Capped(ctx, "447700900001", at.Add(time.Hour))
		if err != nil || !again.Equal(until) {
			t.Errorf("cap %d refused again: until %v (%v), want %v", i+1, again, err, until)
		}
		if got, err := caps.Until(ctx, "447700900001"); err != nil || !got.Equal(until) {
			t.Errorf("cap %d: Until %v (%v), want %v", i+1, got, err, until)
		}
		at = until
	}
	if got, err := policy.NewMarketingCaps(rdb, "bolt").Until(ctx, "447700900001"); err != nil || !got.IsZero() {
		t.Errorf("another tenant's cap: %v (%v), want none", got, err)
	}
}
