package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/store"
)

// tenantFixture is the walk's API with two tenants, each with a sender, a
// key, messages in a campaign of the same name ("spring") and one of its
// own, and a dead letter.
type tenantFixture struct {
	*walkFixture
	keys map[string]string // tenant -> key
	// ids are each tenant's messages; dead each one's dead letter.
	ids  map[string][]string
	dead map[string]string
}

func (f *walkFixture) call(t *testing.T, key, method, path, body string) (int, string) {
	t.Helper()
	resp, b := f.do(t, method, path, body, header("Authorization", "Bearer "+key))
	return resp.StatusCode, string(b)
}

// createKey makes a tenant key through the API.
func (f *walkFixture) createKey(t *testing.T, tenant string) string {
	t.Helper()
	code, body := f.call(t, walkKey, http.MethodPost, "/v1/keys", fmt.Sprintf(`{"tenant":%q,"name":"crm-prod"}`, tenant))
	var k struct{ ID, Key, Tenant, Name string }
	if err := json.Unmarshal([]byte(body), &k); code != http.StatusCreated || err != nil || k.Tenant != tenant || !strings.HasPrefix(k.Key, "cq_") {
		t.Fatalf("POST /v1/keys: %d %s", code, body)
	}
	return k.Key
}

func newTenantFixture(t *testing.T) *tenantFixture {
	t.Helper()
	return newTenantFixtureOf(t, store.Config{})
}

// newTenantFixtureOf is newTenantFixture with a store tuned by sc.
func newTenantFixtureOf(t *testing.T, sc store.Config) *tenantFixture {
	t.Helper()
	f := &tenantFixture{walkFixture: newWalkFixtureOf(t, policy.Config{Source: walkTemplates{}}, sc), keys: map[string]string{}, ids: map[string][]string{}, dead: map[string]string{}}
	ctx := context.Background()
	inspect := asynq.NewInspectorFromRedisClient(f.rdb)
	for i, tenant := range []string{"acme", "bolt"} {
		number := fmt.Sprintf("49151000001%02d", i)
		code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders",
			fmt.Sprintf(`{"number":%q,"app_id":"app_%s","app_secret":"s_%s","tenant":%q}`, number, tenant, tenant, tenant))
		if code != http.StatusCreated {
			t.Fatalf("POST /v1/senders: %d %s", code, body)
		}
		f.keys[tenant] = f.createKey(t, tenant)
		for j, batch := range []string{"spring", "spring", "only-" + tenant, ""} {
			msg := fmt.Sprintf(`{"destination":"4420700%02d%02d","payload":{"type":"text","message":"hi"},"batch_id":%q,"idempotency_key":"order-%d"}`, i, j, batch, j)
			code, body := f.call(t, f.keys[tenant], http.MethodPost, "/v1/messages", msg)
			var rec store.Record
			if err := json.Unmarshal([]byte(body), &rec); code != http.StatusAccepted || err != nil {
				t.Fatalf("POST /v1/messages with %s's key: %d %s", tenant, code, body)
			}
			if rec.Tenant != tenant || rec.Sender != number {
				t.Fatalf("%s's message: tenant %q sender %q, want %s and its sender %s", tenant, rec.Tenant, rec.Sender, tenant, number)
			}
			f.ids[tenant] = append(f.ids[tenant], rec.ID)
		}
		// The last message dies, as a worker makes it.
		id := f.ids[tenant][3]
		rec, err := f.store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := inspect.ArchiveTask(rec.Queue, id); err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.store.Move(ctx, id, store.Change{Status: store.Dead,
			Error: &store.ErrorInfo{Class: "permanent", Code: "1001", Message: "refused", At: time.Now()}}); err != nil {
			t.Fatal(err)
		}
		f.dead[tenant] = id
	}
	return f
}

// snapshot is what a tenant's records look like: the status and history
// length of each.
func (f *tenantFixture) snapshot(t *testing.T, tenant string) []string {
	t.Helper()
	recs, err := f.store.GetMany(context.Background(), f.ids[tenant])
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%s %s %d", r.ID, r.Status, len(r.History)))
	}
	return out
}

// adminOnly reports whether a route is refused to tenant keys with a 403:
// senders and keys are the deployment's, and so (until they are kept per
// tenant) are the suppression list and the template cache.
func adminOnly(pattern string) bool {
	for _, p := range []string{"/v1/senders", "/v1/keys", "/v1/suppressions", "/v1/templates"} {
		if strings.Contains(pattern, p) {
			return true
		}
	}
	return false
}

// TestTenantKeysSeeTheirOwnAlone walks every bearer route with acme's key
// against bolt's ids, campaign and sender: each answers 404 as for an
// unknown id, or 403 on a route for admin keys alone, never shows one of
// bolt's ids, and leaves bolt's records as they were. Lists and campaign
// operations with acme's key hold and touch acme's own alone.
func TestTenantKeysSeeTheirOwnAlone(t *testing.T) {
	f := newTenantFixture(t)
	acme, bolt := f.keys["acme"], f.keys["bolt"]
	before := f.snapshot(t, "bolt")
	leaks := func(what, body string) {
		t.Helper()
		for _, id := range f.ids["bolt"] {
			if strings.Contains(body, id) {
				t.Errorf("%s with acme's key shows bolt's message %s: %s", what, id, body)
			}
		}
	}
	// Lists hold acme's own alone, campaigns of one name are two.
	code, body := f.call(t, acme, http.MethodGet, "/v1/messages?batch_id=spring", "")
	var page struct{ Messages []store.Record }
	_ = json.Unmarshal([]byte(body), &page)
	var got []string
	for _, m := range page.Messages {
		got = append(got, m.ID)
	}
	slices.Sort(got)
	want := slices.Clone(f.ids["acme"][:2])
	slices.Sort(want)
	if code != http.StatusOK || !slices.Equal(got, want) {
		t.Errorf("acme's campaign spring: %d %v, want %v", code, got, want)
	}
	code, body = f.call(t, acme, http.MethodGet, "/v1/dead-letters", "")
	leaks("GET /v1/dead-letters", body)
	if code != http.StatusOK || !strings.Contains(body, f.dead["acme"]) {
		t.Errorf("acme's dead letters: %d %s, want its own", code, body)
	}
	code, body = f.call(t, acme, http.MethodGet, "/v1/messages?batch_id=spring&tenant=bolt", "")
	if code != http.StatusForbidden {
		t.Errorf("acme's key naming tenant bolt: %d %s, want 403", code, body)
	}
	code, body = f.call(t, acme, http.MethodPost, "/v1/dead-letters/retry", `{"ids":["`+f.dead["bolt"]+`"]}`)
	if code != http.StatusOK || !strings.Contains(body, `"not_found":1`) || !strings.Contains(body, `"retried":0`) {
		t.Errorf("acme retrying bolt's dead letter: %d %s, want it not found", code, body)
	}
	for _, path := range []string{"/v1/messages/" + f.ids["bolt"][1], "/v1/messages?batch_id=only-bolt"} {
		if code, body := f.call(t, acme, http.MethodDelete, path, ""); code != http.StatusNotFound {
			t.Errorf("DELETE %s with acme's key: %d %s, want 404", path, code, body)
		}
	}
	// A sender of another tenant is as unknown as a number nobody has.
	for _, number := range []string{"4915100000101", "4915199999999"} {
		code, body := f.call(t, acme, http.MethodPost, "/v1/messages", `{"destination":"442070009999","payload":{"type":"text","message":"hi"},"sender":"`+number+`"}`)
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, `"code":"unknown_sender"`) || !strings.Contains(body, `"field":"sender"`) {
			t.Errorf("acme sending from %s: %d %s, want 422 unknown_sender", number, code, body)
		}
	}
	// acme's operations on its own campaign and dead letters leave bolt's.
	if code, body := f.call(t, acme, http.MethodDelete, "/v1/messages?batch_id=spring", ""); code != http.StatusOK || !strings.Contains(body, `"canceled":2`) {
		t.Errorf("acme canceling its spring: %d %s, want its 2", code, body)
	}
	if code, body := f.call(t, acme, http.MethodPost, "/v1/dead-letters/retry", `{"filter":{}}`); code != http.StatusOK || !strings.Contains(body, `"retried":1`) {
		t.Errorf("acme retrying every dead letter: %d %s, want its 1", code, body)
	}
	f.consoleRoutesSeeTheirOwn(t)
	// Then every route, with bolt's ids.
	for _, r := range walkRoutes {
		if r.access != accessBearer {
			continue
		}
		method, path := r.request()
		path = strings.NewReplacer(walkID, f.ids["bolt"][0], "batch_id=walk", "batch_id=only-bolt", "/batches/walk", "/batches/only-bolt").Replace(path)
		code, body := f.call(t, acme, method, path, r.body)
		what := method + " " + path
		if !strings.Contains(body, `"code":"method_not_allowed"`) { // which repeats the path
			leaks(what, body)
		}
		switch {
		case adminOnly(r.pattern):
			if code != http.StatusForbidden || !strings.Contains(body, `"code":"forbidden"`) {
				t.Errorf("%s with a tenant key: %d %s, want 403 forbidden", what, code, body)
			}
		case strings.Contains(r.pattern, "{id}") && r.pattern != "/v1/messages/{id}",
			strings.Contains(r.pattern, "{batch_id}") && !strings.HasPrefix(r.pattern, "/"),
			strings.Contains(path, "batch_id=only-bolt"):
			// A listing of an unknown campaign is empty; the rest is 404.
			if code != http.StatusNotFound && !(r.pattern == "GET /v1/messages" && code == http.StatusOK) {
				t.Errorf("%s with acme's key: %d %s, want 404 as for an unknown id", what, code, body)
			}
			// The same answer as for an id nobody has.
			unknown := strings.NewReplacer(f.ids["bolt"][0], walkID, "only-bolt", "nobody").Replace(path)
			if code2, body2 := f.call(t, acme, method, unknown, r.body); code2 != code || body2 != body {
				t.Errorf("%s: %d %s, but for an unknown id %d %s: the answers must not differ", what, code, body, code2, body2)
			}
		case code == http.StatusUnauthorized || code >= 500:
			t.Errorf("%s with acme's key: %d %s", what, code, body)
		}
	}

	if diff := slices.Compare(before, f.snapshot(t, "bolt")); diff != 0 {
		t.Errorf("acme's key changed bolt's records:\nbefore %v\nafter  %v", before, f.snapshot(t, "bolt"))
	}
	// bolt's key still sees its own, and an admin key everything.
	if code, body := f.call(t, bolt, http.MethodGet, "/v1/messages/"+f.ids["bolt"][0], ""); code != http.StatusOK {
		t.Errorf("bolt reading its own message: %d %s", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodGet, "/v1/messages/"+f.ids["bolt"][0], ""); code != http.StatusOK {
		t.Errorf("an admin reading bolt's message: %d %s", code, body)
	}
	if code, body := f.call(t, walkKey, http.MethodGet, "/v1/messages?batch_id=spring&tenant=bolt", ""); code != http.StatusOK || !strings.Contains(body, f.ids["bolt"][0]) {
		t.Errorf("an admin listing bolt's spring: %d %s", code, body)
	}
}

// overviewAnswer is GET /v1/stats's answer as the checks below read it.
type overviewAnswer struct {
	Admin   bool             `json:"admin"`
	Tenant  string           `json:"tenant"`
	Minutes *json.RawMessage `json:"minutes"`
	Queues  *json.RawMessage `json:"queues"`
	Senders []struct {
		Number string `json:"number"`
		Tenant string `json:"tenant"`
		State  string `json:"state"`
	} `json:"senders"`
}

// consoleRoutesSeeTheirOwn checks the routes the console reads beside the
// rest with acme's key: the overview (GET /v1/stats) answers with acme's
// senders and nothing of the deployment's traffic; the campaign listing,
// a recipient's messages and a validation see acme's own alone, even
// where bolt has a campaign of the same name or wrote to the same
// recipient.
func (f *tenantFixture) consoleRoutesSeeTheirOwn(t *testing.T) {
	t.Helper()
	acme := f.keys["acme"]
	acmeSender, boltSender := "4915100000100", "4915100000101"
	notBolt := func(what, body string) {
		t.Helper()
		for _, s := range append([]string{boltSender, "only-bolt", `"bolt"`}, f.ids["bolt"]...) {
			if strings.Contains(body, s) {
				t.Errorf("%s with acme's key shows bolt's %s: %s", what, s, body)
			}
		}
	}

	code, body := f.call(t, acme, http.MethodGet, "/v1/stats", "")
	notBolt("GET /v1/stats", body)
	var o overviewAnswer
	if err := json.Unmarshal([]byte(body), &o); code != http.StatusOK || err != nil {
		t.Errorf("GET /v1/stats with acme's key: %d %s, want 200", code, body)
	}
	var numbers []string
	for _, x := range o.Senders {
		numbers = append(numbers, x.Number+" "+x.Tenant+" "+x.State)
	}
	if o.Admin || o.Tenant != "acme" || !slices.Equal(numbers, []string{acmeSender + " acme active"}) {
		t.Errorf("GET /v1/stats with acme's key: admin %v, tenant %q, senders %v; want acme and its one sender", o.Admin, o.Tenant, numbers)
	}
	if o.Minutes != nil || o.Queues != nil {
		t.Errorf("GET /v1/stats with acme's key shows the deployment's counts or queues: %s", body)
	}
	for _, secret := range []string{"webhook_path", "app_id", "/webhooks/"} {
		if strings.Contains(body, secret) {
			t.Errorf("GET /v1/stats with acme's key shows %s: %s", secret, body)
		}
	}
	code, body = f.call(t, walkKey, http.MethodGet, "/v1/stats", "")
	o = overviewAnswer{}
	_ = json.Unmarshal([]byte(body), &o)
	if code != http.StatusOK || !o.Admin || o.Tenant != "" || len(o.Senders) != 3 || o.Minutes == nil || o.Queues == nil {
		t.Errorf("GET /v1/stats with an admin key: %d %s, want every sender, the counts and the queues", code, body)
	}

	batches := func(key, path string) (int, []string) {
		t.Helper()
		code, body := f.call(t, key, http.MethodGet, path, "")
		var p struct {
			Batches []struct {
				ID string `json:"batch_id"`
			} `json:"batches"`
		}
		_ = json.Unmarshal([]byte(body), &p)
		var ids []string
		for _, b := range p.Batches {
			ids = append(ids, b.ID)
		}
		slices.Sort(ids)
		return code, ids
	}
	if code, got := batches(acme, "/v1/batches"); code != http.StatusOK || !slices.Equal(got, []string{"only-acme", "spring"}) {
		t.Errorf("GET /v1/batches with acme's key: %d %v, want only-acme and spring", code, got)
	}
	if code, body := f.call(t, acme, http.MethodGet, "/v1/batches?tenant=bolt", ""); code != http.StatusForbidden {
		t.Errorf("GET /v1/batches?tenant=bolt with acme's key: %d %s, want 403", code, body)
	}
	if code, got := batches(walkKey, "/v1/batches?tenant=bolt"); code != http.StatusOK || !slices.Equal(got, []string{"only-bolt", "spring"}) {
		t.Errorf("GET /v1/batches?tenant=bolt with an admin key: %d %v, want only-bolt and spring", code, got)
	}

	// Both tenants write to one recipient.
	const shared = "442079990001"
	own := map[string]string{}
	for _, tenant := range []string{"acme", "bolt"} {
		code, body := f.call(t, f.keys[tenant], http.MethodPost, "/v1/messages", `{"destination":"`+shared+`","payload":{"type":"text","message":"hi"}}`)
		var rec store.Record
		if err := json.Unmarshal([]byte(body), &rec); code != http.StatusAccepted || err != nil {
			t.Fatalf("POST /v1/messages with %s's key: %d %s", tenant, code, body)
		}
		own[tenant] = rec.ID
	}
	recipient := func(key, destination string) []string {
		t.Helper()
		path := "/v1/messages?destination=" + destination
		code, body := f.call(t, key, http.MethodGet, path, "")
		var page struct{ Messages []store.Record }
		if err := json.Unmarshal([]byte(body), &page); code != http.StatusOK || err != nil {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
		if key == acme && strings.Contains(body, own["bolt"]) {
			t.Errorf("GET %s with acme's key shows bolt's message %s: %s", path, own["bolt"], body)
		}
		var ids []string
		for _, m := range page.Messages {
			ids = append(ids, m.ID)
		}
		slices.Sort(ids)
		return ids
	}
	if got := recipient(acme, shared); !slices.Equal(got, []string{own["acme"]}) {
		t.Errorf("the shared recipient's messages with acme's key: %v, want acme's %s alone", got, own["acme"])
	}
	if got := recipient(acme, "44207000100"); len(got) != 0 {
		t.Errorf("bolt's recipient's messages with acme's key: %v, want none", got)
	}
	// An admin key reads one tenant's too: default's, or the one it names.
	if got := recipient(walkKey, shared); len(got) != 0 {
		t.Errorf("the shared recipient's messages with an admin key: %v, want tenant default's (none)", got)
	}
	for _, tenant := range []string{"acme", "bolt"} {
		if got := recipient(walkKey, shared+"&tenant="+tenant); !slices.Equal(got, []string{own[tenant]}) {
			t.Errorf("the shared recipient's messages of %s with an admin key: %v, want %s's %s alone", tenant, got, tenant, own[tenant])
		}
	}

	// A validation answers what the batch would: bolt's sender is as
	// unknown to acme as a number nobody has.
	validate := func(sender string) string {
		t.Helper()
		msg := `{"destination":"442070009999","payload":{"type":"text","message":"hi"}`
		if sender != "" {
			msg += `,"sender":"` + sender + `"`
		}
		code, body := f.call(t, acme, http.MethodPost, "/v1/messages/validate", `{"messages":[`+msg+`}]}`)
		if code != http.StatusOK {
			t.Errorf("POST /v1/messages/validate with acme's key, sender %q: %d %s", sender, code, body)
		}
		return body
	}
	if body := validate(""); !strings.Contains(body, `"valid":true`) {
		t.Errorf("acme validating a message from its default sender: %s, want valid", body)
	}
	if body := validate(acmeSender); !strings.Contains(body, `"valid":true`) {
		t.Errorf("acme validating a message from its own sender: %s, want valid", body)
	}
	foreign, nobody := validate(boltSender), validate("4915199999999")
	if !strings.Contains(foreign, `"code":"unknown_sender"`) || !strings.Contains(foreign, `"field":"sender"`) || foreign != nobody {
		t.Errorf("acme validating a message from bolt's sender: %s; from a number nobody has: %s; want unknown_sender for both, alike", foreign, nobody)
	}
}
