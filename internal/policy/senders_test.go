package policy_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

// Senders of the tests: the environment's and two stored ones.
const (
	envSender = "15550001000"
	senderA   = "15550002000"
	senderB   = "15550003000"
)

func TestEachSenderHasItsOwnWindows(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	clk := &clock{now: t0}
	c := policy.New(rdb, policy.Config{Window: policy.WindowStrict, EnvSender: envSender, Now: clk.Now})
	const user = "4915100000001"

	// The user writes to B: B's window is open, A's and the environment's
	// sender's are not.
	if err := c.ForSender(senderB).Windows.Opened(ctx, user, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	open := func() map[string]bool {
		t.Helper()
		got := map[string]bool{}
		for _, s := range []string{"", envSender, "+" + envSender, senderA, senderB} {
			in, err := c.ForSender(s).InWindow(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			got[s] = in
		}
		return got
	}
	if got := open(); !got[senderB] || got[senderA] || got[envSender] || got[""] {
		t.Errorf("after writing to B, open windows: %v, want B's alone", got)
	}
	freeForm := []policy.Subject{{Destination: user, FreeForm: true}}
	for sender, want := range map[string]string{senderB: "", senderA: policy.CodeWindowClosed, envSender: policy.CodeWindowClosed} {
		errs, err := c.ForSender(sender).Check(ctx, freeForm)
		if err != nil {
			t.Fatal(err)
		}
		if got := code(errs[0]); got != want {
			t.Errorf("a free-form message from %s: %q, want %q", sender, got, want)
		}
		verdict, _, err := c.ForSender(sender).Decide(ctx, user, true, false)
		if err != nil {
			t.Fatal(err)
		}
		if (verdict == policy.Send) != (want == "") {
			t.Errorf("the worker's verdict for a free-form message from %s: %v", sender, verdict)
		}
	}

	// A 131047 on a send from B closes B's window alone; the user writing
	// to the environment's sender opens its own, under the keys of before.
	if _, err := c.ForSender(senderB).LearnFailure(ctx, user, "131047", "re-engagement", policy.SourceSend, t0); err != nil {
		t.Fatal(err)
	}
	if err := c.ForSender("").Windows.Opened(ctx, user, t0); err != nil {
		t.Fatal(err)
	}
	if got := open(); got[senderB] || got[senderA] || !got[envSender] || !got[""] || !got["+"+envSender] {
		t.Errorf("after B's failure and a message to the environment's sender, open windows: %v, want the environment's sender's alone", got)
	}
	if n, err := rdb.Exists(ctx, "chatq:win:{"+user+"}", "chatq:win:{"+senderB+"}:"+user).Result(); err != nil || n != 2 {
		t.Errorf("%d of the environment's sender's key of before and B's key exist (%v), want both", n, err)
	}
}

func TestEachSenderHasItsOwnTemplateCache(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	env, a := &fakeSource{}, &fakeSource{}
	env.set(nil, tpl("env_only", "en", "APPROVED", "Hi {{1}}"))
	a.set(nil, tpl("a_only", "en", "APPROVED", "Hi"))
	var mu sync.Mutex
	stored := []string{senderA, senderB}
	c := policy.New(rdb, policy.Config{Source: env, EnvSender: envSender,
		SenderSource: func(sender string) policy.Source {
			if sender == senderA {
				return a
			}
			return nil // B's app is not this process's
		},
		Senders: func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), stored...) },
	})
	refresh, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.RefreshTemplates(refresh, time.Hour) }()
	t.Cleanup(func() { stop(); <-done })
	poll.Until(t, 10*time.Second, "the refresh stores the environment's sender's catalog under the key of before and A's under its own", func() (bool, string) {
		n, err := rdb.Exists(ctx, "chatq:templates", "chatq:templates:{"+senderA+"}").Result()
		return err == nil && n == 2, fmt.Sprintf("%d of the two keys (%v)", n, err)
	})

	tests := []struct {
		sender, template, want string
	}{
		{envSender, "env_only", ""},
		{"", "env_only", ""},
		{envSender, "a_only", policy.CodeUnknownTemplate},
		{senderA, "a_only", ""},
		{senderA, "env_only", policy.CodeUnknownTemplate},
		// B's catalog was never fetched: unchecked, not checked against
		// another app's.
		{senderB, "env_only", ""},
		{senderB, "anything", ""},
	}
	for _, tt := range tests {
		params := 0
		if tt.template == "env_only" {
			params = 1
		}
		if got := code(c.ForSender(tt.sender).Templates.Check(ctx, use("payload.template", tt.template, "en", params))); got != tt.want {
			t.Errorf("template %s from sender %q: %q, want %q", tt.template, tt.sender, got, tt.want)
		}
	}
	if cat, err := c.ForTenant("acme").ForSender(senderA).Templates.Catalog(ctx); err != nil || cat == nil || len(cat.Templates) != 1 || cat.Templates[0].ElementName != "a_only" {
		t.Errorf("A's catalog through tenant acme's checker: %+v (%v)", cat, err)
	}
}

func code(err error) string {
	if pe, ok := err.(*policy.Error); ok {
		return pe.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}
