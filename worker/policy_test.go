package worker_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// countingSender counts the sends that reach it and keeps their payloads.
type countingSender struct {
	next worker.Sender
	n    atomic.Int64

	mu   sync.Mutex
	sent map[string][]json.RawMessage
}

func (s *countingSender) Send(ctx context.Context, dest string, payload json.RawMessage) (string, error) {
	s.n.Add(1)
	s.mu.Lock()
	if s.sent == nil {
		s.sent = map[string][]json.RawMessage{}
	}
	s.sent[dest] = append(s.sent[dest], payload)
	s.mu.Unlock()
	return s.next.Send(ctx, dest, payload)
}

func TestWorkerAppliesThePolicyToWaitingMessages(t *testing.T) {
	b := setup(t, sandbox.Config{}, false)
	ctx := context.Background()
	checker := policy.New(b.rdb, policy.Config{})
	// The messages were queued before chatq learned what follows.
	fallback := &enqueue.TemplateSpec{ElementName: "welcome_offer", LanguageCode: "en_US", Params: []string{"John", "X1"}}
	msgs := []*enqueue.Message{
		text("4477100000011", "to a user who opted out since"),
		text("4477100000012", "to a closed window"),
		{Destination: "4477100000012", Payload: &enqueue.Text{Message: "the same, with a fallback"}, FallbackTemplate: fallback, Priority: enqueue.Bulk},
		{Destination: "4477100000012", Payload: &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "otp_code", LanguageCode: "en", Params: []string{"1"}}}, Priority: enqueue.Bulk},
		text("4477100000013", "to someone chatq knows nothing of"),
	}
	res, err := b.client.SendBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(res))
	for i, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		ids[i] = r.Record.ID
	}
	if err := checker.Suppressions.Add(ctx, policy.Suppression{Destination: "4477100000011", Reason: "the user opted out", Source: policy.SourceUserEvent}); err != nil {
		t.Fatal(err)
	}
	if err := checker.Windows.Closed(ctx, "4477100000012", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}

	sender := &countingSender{next: b.ca}
	b.worker(t, sender, worker.Config{Conversation: &worker.Conversation{Policy: checker}})
	recs := b.waitAll(t, ids, 10*time.Second, func(r *store.Record) bool { return r.Status.Final() })

	// Attempts count sends: a message the policy refused made none.
	type outcome struct {
		Status, Code string
		Attempts     int
	}
	var got []outcome
	for _, r := range recs {
		o := outcome{Status: string(r.Status), Attempts: r.Attempts}
		if r.Status == store.Dead {
			o.Code = r.LastError.Class + "/" + r.LastError.Code
		}
		got = append(got, o)
	}
	want := []outcome{{"dead", "policy/suppressed", 0}, {"dead", "policy/window_closed", 0}, {"submitted", "", 1}, {"submitted", "", 1}, {"submitted", "", 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if n := sender.n.Load(); n != 3 {
		t.Errorf("%d sends reached the upstream, want 3", n)
	}
	if !hasNote(recs[2], "fallback template") {
		t.Errorf("the fallback is not in the history: %+v", recs[2].History)
	}
	var kinds []string
	sender.mu.Lock()
	for _, payload := range sender.sent["4477100000012"] {
		var p struct {
			Type     string
			Template struct{ ElementName string }
		}
		_ = json.Unmarshal(payload, &p)
		kinds = append(kinds, p.Type+":"+p.Template.ElementName)
	}
	sender.mu.Unlock()
	slices.Sort(kinds)
	if diff := cmp.Diff([]string{"template:otp_code", "template:welcome_offer"}, kinds); diff != "" {
		t.Errorf("sent to the closed window (-want +got):\n%s", diff)
	}
}

// refusingSender answers every send as the upstream does for a user who
// opted out, or whose window is closed.
type refusingSender struct{ code string }

func (s refusingSender) Send(context.Context, string, json.RawMessage) (string, error) {
	class, _ := chatarchitect.ClassifyCode(s.code)
	return "", &chatarchitect.APIError{StatusCode: 400, Code: s.code, Reason: "refused", Class: class}
}

func TestWorkerLearnsFromSendAnswers(t *testing.T) {
	for _, tt := range []struct {
		code string
		want func(*policy.Checker, string) bool
	}{
		{"131050", func(c *policy.Checker, d string) bool {
			s, _ := c.Suppressions.Get(context.Background(), d)
			return s != nil
		}},
		{"1006", func(c *policy.Checker, d string) bool {
			w, _ := c.Windows.Get(context.Background(), d)
			return w.KnownClosed(time.Now())
		}},
	} {
		t.Run(tt.code, func(t *testing.T) {
			b := setup(t, sandbox.Config{}, false)
			checker := policy.New(b.rdb, policy.Config{})
			b.worker(t, refusingSender{tt.code}, worker.Config{Conversation: &worker.Conversation{Policy: checker}})
			rec, err := b.client.Send(context.Background(), text("4477200000011", "hi"))
			if err != nil {
				t.Fatal(err)
			}
			b.waitAll(t, []string{rec.ID}, 10*time.Second, func(r *store.Record) bool { return r.Status == store.Dead })
			if !tt.want(checker, "4477200000011") {
				t.Errorf("nothing learned from %s", tt.code)
			}
		})
	}
}
