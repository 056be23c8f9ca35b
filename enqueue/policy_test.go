package enqueue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
)

func TestClientAppliesItsPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	checker := policy.New(rdb, policy.Config{})
	if err := checker.Suppressions.Add(ctx, policy.Suppression{Destination: "96996990001", Reason: "the user opted out", Source: policy.SourceUserEvent}); err != nil {
		t.Fatal(err)
	}
	if err := checker.Windows.Closed(ctx, "96996990002", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	client := enqueue.NewClient(rdb, enqueue.Config{Policy: enqueue.NewPolicy(rdb, enqueue.PolicyConfig{})})
	defer client.Close()

	text := func(dest string) *enqueue.Message {
		return &enqueue.Message{Destination: dest, Payload: &enqueue.Text{Message: "hi"}}
	}
	withCallback := text("96996990003")
	withCallback.CallbackURL = "http://127.0.0.1:8080/events"
	withFallback := text("96996990002")
	withFallback.FallbackTemplate = &enqueue.TemplateSpec{ElementName: "we_miss_you", LanguageCode: "en", Params: []string{"John"}}
	msgs := []*enqueue.Message{
		text("+96996990001"), // suppressed
		text("96996990002"),  // window known closed
		withFallback,         // the fallback goes instead
		withCallback,         // a private callback URL
		text("96996990004"),  // nothing known: sent
		{Destination: "123"}, // invalid: never reaches the policy
	}
	res, err := client.SendBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		var pe *enqueue.PolicyError
		var ve *enqueue.ValidationError
		switch {
		case errors.As(r.Err, &pe):
			got = append(got, pe.Code+" "+pe.Field)
		case errors.As(r.Err, &ve):
			got = append(got, "invalid "+ve.Field)
		case r.Err != nil:
			got = append(got, r.Err.Error())
		default:
			got = append(got, string(r.Record.Status))
		}
	}
	want := []string{"suppressed destination", "window_closed destination", "queued", "callback_url_refused callback_url", "queued", "invalid destination"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
}

// refuseAll is an application's own policy.
type refuseAll struct{ err error }

func (p refuseAll) CheckMessages(_ context.Context, msgs []*enqueue.Message) ([]error, error) {
	if p.err != nil {
		return nil, p.err
	}
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = &enqueue.PolicyError{Code: "house_rule", Field: "destination", Reason: "is not on our list"}
	}
	return errs, nil
}

func TestClientWithItsOwnPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	m := &enqueue.Message{Destination: "96996999699", Payload: &enqueue.Text{Message: "hi"}}

	client := enqueue.NewClient(rdb, enqueue.Config{Policy: refuseAll{}})
	defer client.Close()
	if _, err := client.Send(ctx, m); err == nil || err.Error() != "destination is not on our list" {
		t.Errorf("Send = %v", err)
	}
	broken := enqueue.NewClient(rdb, enqueue.Config{Policy: refuseAll{err: errors.New("policy store down")}})
	defer broken.Close()
	if _, err := broken.SendBatch(ctx, []*enqueue.Message{m}); err == nil {
		t.Error("a failing policy let the batch through")
	}
	if n, _ := rdb.Keys(ctx, "chatq:m:*").Result(); len(n) != 0 {
		t.Errorf("refused messages were stored: %v", n)
	}
}
