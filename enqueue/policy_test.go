package enqueue_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
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

// Records carry their category: the template's, as the template cache
// (here synced from the sandbox's getHSM) knows it, or "service" for a
// free-form message. An authentication template without expires_at gets
// one AuthTTL after its acceptance (after its send_at when scheduled); a
// marketing template to a +1 number is refused.
func TestClientCategoriesAndAuthExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	sb, err := sandbox.New(sandbox.Config{AppID: "app", AppSecret: "secret"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	upstream := httptest.NewServer(sb)
	defer upstream.Close()
	checker := policy.New(rdb, policy.Config{Source: chatarchitect.New(chatarchitect.Config{
		BaseURL: upstream.URL, AppID: "app", AppSecret: "secret", Source: "15550001234"}, nil)})
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	client := enqueue.NewClient(rdb, enqueue.Config{Policy: enqueue.CheckerPolicy(checker), AuthTTL: 5 * time.Minute,
		Now: func() time.Time { return now }})
	defer client.Close()

	tpl := func(dest, name, lang string, params ...string) *enqueue.Message {
		return &enqueue.Message{Destination: dest, Payload: &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: name, LanguageCode: lang, Params: params}}}
	}
	otpWithExpiry := tpl("447700900001", "otp_code", "en", "123456")
	otpWithExpiry.ExpiresAt = now.Add(time.Minute)
	otpScheduled := tpl("447700900002", "otp_code", "en", "123456")
	otpScheduled.SendAt = now.Add(time.Hour)
	msgs := []*enqueue.Message{
		{Destination: "447700900003", Payload: &enqueue.Text{Message: "hi"}},
		tpl("447700900004", "welcome_offer", "en_US", "John", "X1"),
		tpl("447700900005", "order_update", "en_US", "1234", "shipped"),
		tpl("447700900006", "otp_code", "en", "123456"),
		otpWithExpiry,
		otpScheduled,
		tpl("+14155550123", "welcome_offer", "en_US", "John", "X1"),
		tpl("14155550124", "otp_code", "en", "123456"),
	}
	res, err := client.SendBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		Category  string
		ExpiresIn time.Duration
		Err       string
	}
	var got []outcome
	for _, r := range res {
		var o outcome
		var pe *enqueue.PolicyError
		switch {
		case errors.As(r.Err, &pe):
			o.Err = pe.Code + " " + pe.Field
		case r.Err != nil:
			o.Err = r.Err.Error()
		default:
			stored, err := client.Get(ctx, r.Record.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Category != nil {
				o.Category = *stored.Category
			}
			if stored.ExpiresAt != nil {
				o.ExpiresIn = stored.ExpiresAt.Sub(now)
			}
		}
		got = append(got, o)
	}
	want := []outcome{
		{Category: "service"},
		{Category: "marketing"},
		{Category: "utility"},
		{Category: "authentication", ExpiresIn: 5 * time.Minute},
		{Category: "authentication", ExpiresIn: time.Minute},
		{Category: "authentication", ExpiresIn: time.Hour + 5*time.Minute},
		{Err: "us_marketing_blocked destination"},
		{Category: "authentication", ExpiresIn: 5 * time.Minute},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}
