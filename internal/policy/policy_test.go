package policy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/redistest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestWindowPolicies(t *testing.T) {
	t.Parallel()
	now := t0
	windows := map[string]policy.Window{
		"unknown":             {},
		"wrote 1h ago":        {LastInbound: now.Add(-time.Hour)},
		"wrote 25h ago":       {LastInbound: now.Add(-25 * time.Hour)},
		"failed since":        {LastInbound: now.Add(-2 * time.Hour), ClosedAt: now.Add(-time.Hour)},
		"failed, wrote since": {LastInbound: now.Add(-time.Hour), ClosedAt: now.Add(-2 * time.Hour)},
		"failed, never wrote": {ClosedAt: now.Add(-time.Hour)},
	}
	want := map[policy.WindowPolicy]map[string]bool{
		policy.WindowLearn: {"unknown": true, "wrote 1h ago": true, "wrote 25h ago": false, "failed since": false,
			"failed, wrote since": true, "failed, never wrote": false},
		policy.WindowStrict: {"unknown": false, "wrote 1h ago": true, "wrote 25h ago": false, "failed since": false,
			"failed, wrote since": true, "failed, never wrote": false},
		policy.WindowOff: {"unknown": true, "wrote 1h ago": true, "wrote 25h ago": true, "failed since": true,
			"failed, wrote since": true, "failed, never wrote": true},
	}
	for p, cases := range want {
		got := map[string]bool{}
		for name, w := range windows {
			got[name] = p.Allows(w, now)
		}
		if diff := cmp.Diff(cases, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
}

func TestCountParams(t *testing.T) {
	t.Parallel()
	tests := map[string]int{
		"Hello":                              0,
		"Welcome {{1}}! Your code is {{2}}.": 2,
		"{{1}} and {{1}} again":              1,
		"{{ 3 }} spaced, {{1}}":              3,
		"{{x}} is not one":                   0,
	}
	for data, want := range tests {
		if got := policy.CountParams(data); got != want {
			t.Errorf("CountParams(%q) = %d, want %d", data, got, want)
		}
	}
}

// fakeSource is getHSM: a list that can change or fail.
type fakeSource struct {
	mu    sync.Mutex
	list  []chatarchitect.Template
	err   error
	calls int
}

func (f *fakeSource) Templates(context.Context) ([]chatarchitect.Template, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return append([]chatarchitect.Template(nil), f.list...), f.err
}

func (f *fakeSource) set(err error, list ...chatarchitect.Template) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list, f.err = list, err
}

func tpl(name, lang, status, data string) chatarchitect.Template {
	return chatarchitect.Template{ElementName: name, LanguageCode: lang, Status: status, Data: data, Category: "UTILITY"}
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func use(field, name, lang string, params int) *policy.TemplateUse {
	return &policy.TemplateUse{Field: field, Name: name, Language: lang, Params: params}
}

func errCode(err error) string {
	var pe *policy.Error
	if errors.As(err, &pe) {
		return pe.Code + ": " + pe.Error()
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

func TestTemplateChecks(t *testing.T) {
	t.Parallel()
	src := &fakeSource{}
	src.set(nil,
		tpl("welcome_offer", "en_US", "APPROVED", "Welcome {{1}}! Your discount code is {{2}}."),
		tpl("otp_code", "en", "APPROVED", "Your code is {{1}}."),
		tpl("paused_one", "en", "PAUSED", "Hi"),
		tpl("fresh", "en", "PENDING", "Hi {{1}}"),
		tpl("bad", "en", "REJECTED", "Hi"),
	)
	clk := &clock{now: t0}
	c := policy.New(redistest.Start(t).Client(t), policy.Config{Source: src, Now: clk.Now})
	ctx := context.Background()
	tests := []struct {
		use  *policy.TemplateUse
		want string
	}{
		{use("payload.template", "welcome_offer", "en_US", 2), ""},
		{use("payload.template", "welcome_offer", "en_US", 1), "template_params: payload.template.params must hold 2 parameters, not 1"},
		{use("fallback_template", "otp_code", "en", 0), "template_params: fallback_template.params must hold 1 parameter, not 0"},
		{use("payload.template", "otp_code", "en_US", 1), `unknown_template: payload.template.elementName names no known template "otp_code" in language "en_US" (it exists in en)`},
		{use("payload.template", "nope", "en", 0), `unknown_template: payload.template.elementName names no known template "nope" in language "en"`},
		// A paused template's messages are taken, and wait in the worker
		// until it is approved again.
		{use("payload.template", "paused_one", "en", 0), ""},
		{use("payload.template", "fresh", "en", 1), "template_not_approved: payload.template.elementName names template fresh (en), which is PENDING, not APPROVED"},
		{use("payload.template", "bad", "en", 0), "template_not_approved: payload.template.elementName names template bad (en), which is REJECTED, not APPROVED"},
	}
	for _, tt := range tests {
		if got := errCode(c.Templates.Check(ctx, tt.use)); got != tt.want {
			t.Errorf("%+v:\n got %s\nwant %s", *tt.use, got, tt.want)
		}
	}
	if src.calls != 1 {
		t.Errorf("getHSM called %d times for one cold cache, want 1 (misses within 30s do not refetch)", src.calls)
	}

	// A template approved since is found on a miss, once the miss
	// interval has passed.
	src.set(nil, tpl("welcome_offer", "en_US", "APPROVED", "{{1}} {{2}}"), tpl("brand_new", "en", "APPROVED", "{{1}}"))
	clk.add(31 * time.Second)
	if got := errCode(c.Templates.Check(ctx, use("payload.template", "brand_new", "en", 1))); got != "" {
		t.Errorf("a new template: %s", got)
	}
	cat, err := c.Templates.Catalog(ctx)
	if err != nil || len(cat.Templates) != 2 || cat.Templates[0].ElementName != "brand_new" || cat.Templates[0].Params != 1 {
		t.Errorf("catalog after refresh: %+v %v", cat, err)
	}

	// A stale cache is trusted when ChatArchitect is away.
	src.set(errors.New("connection refused"))
	clk.add(time.Minute)
	if got := errCode(c.Templates.Check(ctx, use("payload.template", "gone", "en", 0))); got == "" {
		t.Error("an unknown template was accepted on a stale cache")
	}
}

func TestTemplatesWithoutAnyCacheAreAccepted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	src := &fakeSource{err: errors.New("connection refused")}
	for name, c := range map[string]*policy.Checker{
		"unreachable":    policy.New(rdb, policy.Config{Source: src}),
		"no credentials": policy.New(rdb, policy.Config{}),
	} {
		if got := errCode(c.Templates.Check(ctx, use("payload.template", "anything", "en", 3))); got != "" {
			t.Errorf("%s: %s, want accepted", name, got)
		}
	}
	// A process without credentials reads the cache another one synced.
	src.set(nil, tpl("otp_code", "en", "APPROVED", "Your code is {{1}}."))
	if _, err := policy.New(rdb, policy.Config{Source: src}).Templates.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reader := policy.New(rdb, policy.Config{})
	if got := errCode(reader.Templates.Check(ctx, use("payload.template", "otp_code", "en", 2))); got == "" {
		t.Error("a reader without credentials did not check against the synced cache")
	}
	if _, err := reader.Templates.Sync(ctx); err == nil {
		t.Error("Sync without a source succeeded")
	}
}

func TestSuppressionList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := policy.New(redistest.Start(t).Client(t), policy.Config{})
	for i := range 25 {
		if err := c.Suppressions.Add(ctx, policy.Suppression{Destination: fmt.Sprintf("+4470000%05d", i), Reason: "test", Source: policy.SourceOperator, At: t0}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Suppressions.Get(ctx, "447000000007")
	if err != nil || got == nil {
		t.Fatalf("get without +: %v %v", got, err)
	}
	want := policy.Suppression{Destination: "447000000007", Reason: "test", Source: policy.SourceOperator, At: t0}
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}
	seen := map[string]bool{}
	var cursor uint64
	for {
		page, next, err := c.Suppressions.List(ctx, cursor, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page {
			seen[s.Destination] = true
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(seen) != 25 {
		t.Errorf("listed %d, want 25", len(seen))
	}
	if removed, err := c.Suppressions.Remove(ctx, "+447000000007"); err != nil || !removed {
		t.Errorf("remove: %v %v", removed, err)
	}
	if removed, _ := c.Suppressions.Remove(ctx, "447000000007"); removed {
		t.Error("removed twice")
	}
}

func TestLearning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := policy.New(redistest.Start(t).Client(t), policy.Config{Now: func() time.Time { return t0 }})
	tests := []struct {
		code string
		want policy.Learned
	}{
		{"131050", policy.LearnedOptOut}, {"1012", policy.LearnedOptOut},
		{"131047", policy.LearnedWindowClosed}, {"1004", policy.LearnedWindowClosed}, {"1008", policy.LearnedWindowClosed},
		{"131026", policy.LearnedNothing}, {"", policy.LearnedNothing},
	}
	for i, tt := range tests {
		dest := fmt.Sprintf("44710000%04d", i)
		got, err := c.LearnFailure(ctx, dest, tt.code, "", policy.SourceWebhook, t0.Add(-time.Minute))
		if err != nil || got != tt.want {
			t.Errorf("code %q: %q %v, want %q", tt.code, got, err, tt.want)
		}
		v, refusal, err := c.Decide(ctx, dest, true, false)
		if err != nil {
			t.Fatal(err)
		}
		wantVerdict := map[policy.Learned]policy.Verdict{policy.LearnedNothing: policy.Send, policy.LearnedOptOut: policy.Refuse, policy.LearnedWindowClosed: policy.Refuse}[tt.want]
		if v != wantVerdict {
			t.Errorf("code %q: verdict %v (%v), want %v", tt.code, v, refusal, wantVerdict)
		}
	}

	// The user writes: the window opens; a template always goes; a
	// closed window with a fallback sends the fallback.
	dest := "447100000002" // 131047 above
	if v, _, _ := c.Decide(ctx, dest, true, true); v != policy.SendFallback {
		t.Errorf("closed window with fallback: %v", v)
	}
	if v, _, _ := c.Decide(ctx, dest, false, false); v != policy.Send {
		t.Errorf("template to a closed window: %v", v)
	}
	if err := c.Windows.Opened(ctx, dest, t0.Add(-30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := c.Decide(ctx, dest, true, false); v != policy.Send {
		t.Errorf("after the user wrote: %v", v)
	}
	if in, err := c.InWindow(ctx, dest); err != nil || !in {
		t.Errorf("InWindow after the user wrote: %v %v", in, err)
	}
	// An older webhook arriving late does not move the window back.
	if err := c.Windows.Opened(ctx, dest, t0.Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if w, _ := c.Windows.Get(ctx, dest); !w.LastInbound.Equal(t0.Add(-30 * time.Second)) {
		t.Errorf("window moved back to %v", w.LastInbound)
	}

	// Opted-out and opted-in user events.
	if _, err := c.UserEvent(ctx, "+447199999999", "opted-out", t0); err != nil {
		t.Fatal(err)
	}
	if v, refusal, _ := c.Decide(ctx, "447199999999", false, false); v != policy.Refuse || refusal.Code != policy.CodeSuppressed {
		t.Errorf("after opted-out: %v %v", v, refusal)
	}
	if _, err := c.UserEvent(ctx, "447199999999", "opted-in", t0); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := c.Decide(ctx, "447199999999", false, false); v != policy.Send {
		t.Errorf("after opted-in: %v", v)
	}
}

func TestCheckABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	src := &fakeSource{}
	src.set(nil, tpl("otp_code", "en", "APPROVED", "Your code is {{1}}."))
	c := policy.New(rdb, policy.Config{Source: src, Now: func() time.Time { return t0 }})
	if err := c.Suppressions.Add(ctx, policy.Suppression{Destination: "447200000001", Reason: "the user opted out", Source: policy.SourceUserEvent, At: t0}); err != nil {
		t.Fatal(err)
	}
	if err := c.Windows.Closed(ctx, "447200000002", t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	otp := use("payload.template", "otp_code", "en", 1)
	fb := use("fallback_template", "otp_code", "en", 1)
	subjects := []policy.Subject{
		{Destination: "447200000001", Template: otp},                                          // suppressed
		{Destination: "447200000002", FreeForm: true},                                         // window closed
		{Destination: "447200000002", FreeForm: true, Fallback: fb},                           // fallback: fine
		{Destination: "447200000002", Template: otp},                                          // a template: fine
		{Destination: "447200000003", FreeForm: true},                                         // unknown window: fine
		{Destination: "447200000003", Template: use("payload.template", "otp_code", "en", 2)}, // params
		{Destination: "447200000003", FreeForm: true, CallbackURL: "http://127.0.0.1:9/cb"},   // private
		{Destination: "447200000003", FreeForm: true, CallbackURL: "https://[2001:4860::8888]/cb"},
		{Destination: "971500000001", FreeForm: true}, // a country the sender may not message
	}
	if err := c.Countries.Refuse(ctx, "971"); err != nil {
		t.Fatal(err)
	}
	// The templates' cache filled, as in a process that ran a while.
	if _, err := c.Check(ctx, subjects); err != nil {
		t.Fatal(err)
	}
	trips := redistest.CountRoundTrips(rdb)
	errs, err := c.Check(ctx, subjects)
	if err != nil {
		t.Fatal(err)
	}
	// The suppressions, the refused countries and the windows, at once.
	if n := trips.Take(); n != 1 {
		t.Errorf("checking %d messages made %d round trips to Redis, want 1", len(subjects), n)
	}
	var got []string
	for _, e := range errs {
		var pe *policy.Error
		if errors.As(e, &pe) {
			got = append(got, pe.Code+" "+pe.Field)
		} else {
			got = append(got, fmt.Sprint(e))
		}
	}
	want := []string{"suppressed destination", "window_closed destination", "<nil>", "<nil>", "<nil>",
		"template_params payload.template.params", "callback_url_refused callback_url", "<nil>", "country_refused destination"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}

	strict := policy.New(rdb, policy.Config{Window: policy.WindowStrict, AllowPrivateCallbacks: true, Now: func() time.Time { return t0 }})
	errs, err = strict.Check(ctx, []policy.Subject{{Destination: "447200000003", FreeForm: true, CallbackURL: "http://127.0.0.1:9/cb"}})
	if err != nil || errCode(errs[0]) == "" || !errors.As(errs[0], new(*policy.Error)) {
		t.Errorf("strict, unknown window: %v %v", errs, err)
	} else if pe := errs[0].(*policy.Error); pe.Code != policy.CodeWindowClosed {
		t.Errorf("strict, unknown window: %v", pe)
	}
}

// TestUserEventsApplyByTheirOwnTime is a regression test: user events were
// applied in arrival order, and ChatArchitect retries webhooks for days, so
// a late opted-in from 09:00 lifted an opt-out from 10:00. And a webhook
// could lift a suppression an operator had added.
func TestUserEventsApplyByTheirOwnTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := t0.Add(3 * time.Hour)
	c := policy.New(redistest.Start(t).Client(t), policy.Config{Now: func() time.Time { return now }})
	at := func(hour int) time.Time { return time.Date(2026, 11, 25, hour, 0, 0, 0, time.UTC) }
	suppressed := func(dest string) bool {
		t.Helper()
		s, err := c.Suppressions.Get(ctx, dest)
		if err != nil {
			t.Fatal(err)
		}
		return s != nil
	}
	event := func(dest, typ string, when time.Time) {
		t.Helper()
		if _, err := c.UserEvent(ctx, dest, typ, when); err != nil {
			t.Fatal(err)
		}
	}

	const user = "447300000001"
	event(user, "opted-out", at(10))
	event(user, "opted-in", at(9)) // a retry of an older event
	if !suppressed(user) {
		t.Fatal("an opted-in from 09:00 arriving late lifted the opt-out from 10:00")
	}
	event(user, "opted-in", at(11))
	if suppressed(user) {
		t.Fatal("an opted-in from 11:00 did not lift the opt-out from 10:00")
	}
	event(user, "opted-out", at(10)) // the 10:00 opt-out, delivered again
	if suppressed(user) {
		t.Fatal("a retried opt-out from 10:00 undid the opt-in from 11:00")
	}

	// A failed delivery with an opt-out code counts as an opt-out at its
	// own time.
	const failed = "447300000002"
	if _, err := c.LearnFailure(ctx, failed, "131050", "", policy.SourceWebhook, at(10)); err != nil {
		t.Fatal(err)
	}
	event(failed, "opted-in", at(9))
	if !suppressed(failed) {
		t.Fatal("an opted-in from 09:00 lifted a suppression learned from a failure at 10:00")
	}

	// An operator's suppression: no webhook lifts it, only the operator.
	const operator = "447300000003"
	if err := c.Suppressions.Add(ctx, policy.Suppression{Destination: operator, Reason: "asked by phone", Source: policy.SourceOperator, At: at(10)}); err != nil {
		t.Fatal(err)
	}
	event(operator, "opted-in", at(12))
	event(operator, "opted-out", at(12))
	event(operator, "opted-in", at(13))
	s, err := c.Suppressions.Get(ctx, operator)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil || s.Source != policy.SourceOperator || s.Reason != "asked by phone" {
		t.Fatalf("after user events, the operator's suppression is %+v", s)
	}
	if removed, err := c.Suppressions.Remove(ctx, operator); err != nil || !removed {
		t.Fatalf("the operator's remove: %v, %v", removed, err)
	}
	// The operator's remove is newer than anything sent before it.
	event(operator, "opted-out", at(12))
	if suppressed(operator) {
		t.Fatal("an opt-out from before the operator's remove suppressed the user again")
	}
	event(operator, "opted-out", now.Add(time.Minute))
	if !suppressed(operator) {
		t.Fatal("an opt-out after the operator's remove did not suppress")
	}
}

// A template that passes the check tells its category; a marketing
// template to a +1 number is refused unless CHATQ_ALLOW_US_MARKETING, and
// every other category, or country, goes through.
func TestCategoriesAndUSMarketing(t *testing.T) {
	t.Parallel()
	src := &fakeSource{}
	marketing := tpl("welcome_offer", "en_US", "APPROVED", "Welcome {{1}}!")
	marketing.Category = "MARKETING"
	auth := tpl("otp_code", "en", "APPROVED", "Your code is {{1}}.")
	auth.Category = "AUTHENTICATION"
	src.set(nil, marketing, auth, tpl("order_update", "en_US", "APPROVED", "Order {{1}}"))
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	subject := func(dest, name, lang string, fallback bool) policy.Subject {
		u := use("payload.template", name, lang, 1)
		if fallback {
			return policy.Subject{Destination: dest, FreeForm: true, Fallback: use("fallback_template", name, lang, 1)}
		}
		return policy.Subject{Destination: dest, Template: u}
	}
	subjects := []policy.Subject{
		subject("+14155550123", "welcome_offer", "en_US", false),
		subject("447700900123", "welcome_offer", "en_US", false),
		subject("14155550123", "otp_code", "en", false),
		subject("14155550123", "order_update", "en_US", false),
		subject("14155550123", "welcome_offer", "en_US", true),
	}
	for _, allow := range []bool{false, true} {
		c := policy.New(rdb, policy.Config{Source: src, AllowUSMarketing: allow, Window: policy.WindowOff})
		for i := range subjects {
			for _, u := range []*policy.TemplateUse{subjects[i].Template, subjects[i].Fallback} {
				if u != nil {
					u.Category = ""
				}
			}
		}
		errs, err := c.Check(ctx, subjects)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range errs {
			got = append(got, errCode(e))
		}
		us := "us_marketing_blocked: destination is refused: welcome_offer is a marketing template and +14155550123 a +1 (US) number, and WhatsApp delivers no marketing templates to US numbers since 1 April 2025 (error 131049); CHATQ_ALLOW_US_MARKETING=true sends them anyway"
		usFallback := "us_marketing_blocked: fallback_template.elementName is refused: welcome_offer is a marketing template and 14155550123 a +1 (US) number, and WhatsApp delivers no marketing templates to US numbers since 1 April 2025 (error 131049); CHATQ_ALLOW_US_MARKETING=true sends them anyway"
		want := []string{us, "", "", "", usFallback}
		if allow {
			want = []string{"", "", "", "", ""}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("allow %v: errors (-want +got):\n%s", allow, diff)
		}
		cats := []string{subjects[1].Template.Category, subjects[2].Template.Category, subjects[3].Template.Category}
		if diff := cmp.Diff([]string{"marketing", "authentication", "utility"}, cats); diff != "" {
			t.Errorf("categories (-want +got):\n%s", diff)
		}
	}
}

func TestEachTenantHasItsOwnSuppressionList(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	c := policy.New(rdb, policy.Config{})
	const dest = "4915100000077"
	if err := c.ForTenant("acme").Suppressions.Add(ctx, policy.Suppression{Destination: dest, Source: policy.SourceOperator, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]bool{"acme": true, "beta": false, "default": false, "": false} {
		sup, err := c.ForTenant(tenant).Suppressions.Get(ctx, dest)
		if err != nil || (sup != nil) != want {
			t.Errorf("tenant %q: suppressed %v (%v), want %v", tenant, sup != nil, err, want)
		}
	}
	// Tenant default's list keeps its key of before tenants.
	if err := c.ForTenant("default").Suppressions.Add(ctx, policy.Suppression{Destination: dest, Source: policy.SourceOperator, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.HLen(ctx, "chatq:suppressed").Result(); err != nil || n != 1 {
		t.Errorf("chatq:suppressed holds %d entries (%v), want tenant default's one", n, err)
	}
}
