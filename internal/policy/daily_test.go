package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

// The daily cap on unique recipients counts business-initiated messages
// only: a recipient inside the window the user opened is answered, and
// does not count. The checker is the cap's Window.
func TestDailyCapSparesRecipientsInsideTheirWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	checker := policy.New(rdb, policy.Config{})
	limiter := ratelimit.New(rdb, ratelimit.Config{Sender: "15550001234", DailyRecipients: 1}, checker)
	reserve := func(recipient string) ratelimit.Decision {
		t.Helper()
		d, err := limiter.Reserve(ctx, ratelimit.Request{Recipient: recipient, MaxWait: time.Second, MaxHold: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	if d := reserve("447300000011"); !d.Reserved {
		t.Fatalf("the first recipient: %+v", d)
	}
	if d := reserve("447300000012"); d.Reserved || d.Reason != ratelimit.ReasonDaily {
		t.Fatalf("a second recipient past the cap of 1: %+v", d)
	}
	// The user writes: replies to them are not business-initiated.
	if err := checker.Windows.Opened(ctx, "447300000012", time.Now()); err != nil {
		t.Fatal(err)
	}
	if d := reserve("447300000012"); !d.Reserved {
		t.Errorf("a recipient inside its window: %+v", d)
	}
	// A closed-window failure since: they count again.
	if err := checker.Windows.Closed(ctx, "447300000012", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if d := reserve("447300000012"); d.Reserved || d.Reason != ratelimit.ReasonDaily {
		t.Errorf("a recipient whose window closed: %+v", d)
	}
}
