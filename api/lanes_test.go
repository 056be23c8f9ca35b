package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/store"
)

// senderStates is flow control's view of each sender, as a test sets it.
type senderStates map[string]string

func (s senderStates) States(_ context.Context, numbers []string) ([]string, error) {
	out := make([]string, len(numbers))
	for i, n := range numbers {
		out[i] = s[n]
	}
	return out, nil
}

// GET /v1/messages?waiting= lists the bulk messages that wait in their
// senders' lanes (no worker runs here, so no feeder takes them), under the
// reason GET /v1/messages/{id} shows for each: its sender's state. A
// tenant sees its own senders' messages alone, and every listing shows
// the waits GET shows.
func TestListingWaitsShowsTheLanes(t *testing.T) {
	f := newDropInFixture(t)
	ctx := context.Background()
	states := senderStates{}
	f.srv.cfg.SenderStates = states
	client := enqueue.NewClient(f.rdb, enqueue.Config{})
	t.Cleanup(func() { _ = client.Close() })
	accepted := map[string]time.Time{}
	send := func(tenant, sender, batch string, prio enqueue.Priority, sendAt time.Time) string {
		t.Helper()
		// Each to a recipient of its own: a second message to one would
		// wait for the first (conversation_order), not in the lane.
		rec, err := client.Send(ctx, &enqueue.Message{Tenant: tenant, Sender: sender, Destination: fmt.Sprintf("969969996%02d", len(accepted)), BatchID: batch,
			Priority: prio, SendAt: sendAt, Payload: &enqueue.Text{Message: "Hi"}})
		if err != nil {
			t.Fatal(err)
		}
		accepted[rec.ID] = rec.CreatedAt
		return rec.ID
	}
	// A listing's order: the newest first, by id among those of one
	// millisecond.
	newestFirst := func(ids ...string) []string {
		return slices.SortedFunc(slices.Values(ids), func(a, b string) int {
			return cmp.Or(accepted[b].Compare(accepted[a]), strings.Compare(b, a))
		})
	}
	one := []string{send("acme", acmeOne, "spring", enqueue.Bulk, time.Time{})}
	one = append(one, send("acme", acmeOne, "", enqueue.Bulk, time.Time{}))
	two := []string{send("acme", acmeTwo, "spring", enqueue.Bulk, time.Time{})}
	send("acme", acmeOne, "", enqueue.Transactional, time.Time{}) // a task of its own: not in a lane
	send("acme", acmeOne, "", enqueue.Bulk, time.Now().Add(time.Hour))
	bolt := send("bolt", boltOne, "", enqueue.Bulk, time.Time{})
	acme := f.createKey(t, "acme")
	if code, body := f.call(t, walkKey, http.MethodPost, "/v1/senders/"+acmeTwo+"/pause", ""); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}

	list := func(key, query string) []string {
		t.Helper()
		code, body := f.call(t, key, http.MethodGet, "/v1/messages?"+query, "")
		var p struct {
			Messages []store.Record `json:"messages"`
		}
		if err := json.Unmarshal([]byte(body), &p); code != http.StatusOK || err != nil {
			t.Fatalf("?%s: %d %s", query, code, body)
		}
		var ids []string
		for _, r := range p.Messages {
			ids = append(ids, r.ID)
			// What GET says of it.
			code, body := f.call(t, key, http.MethodGet, "/v1/messages/"+r.ID, "")
			var one store.Record
			if err := json.Unmarshal([]byte(body), &one); code != http.StatusOK || err != nil {
				t.Fatalf("GET %s: %d %s", r.ID, code, body)
			}
			if r.Waiting == nil || one.Waiting == nil || *r.Waiting != *one.Waiting || !r.Waiting.Since.Equal(r.CreatedAt) {
				t.Errorf("?%s: %s waits %+v, GET says %+v, want the same wait since its acceptance", query, r.ID, r.Waiting, one.Waiting)
			}
		}
		return ids
	}
	for _, tt := range []struct {
		key, query string
		want       []string
	}{
		{acme, "waiting=sender_rate", newestFirst(one...)},
		{acme, "waiting=paused", two},
		{acme, "waiting=circuit_open", nil},
		{acme, "waiting=sender_rate&limit=1", newestFirst(one...)[:1]},
		{acme, "batch_id=spring", newestFirst(two[0], one[0])},
		{walkKey, "waiting=sender_rate&tenant=bolt", []string{bolt}},
	} {
		if got := list(tt.key, tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("?%s: %v, want %v", tt.query, got, tt.want)
		}
	}
	// The sender's circuit opens: its lane's messages wait for it now.
	states[acmeOne] = StateCircuitOpen
	if got := list(acme, "waiting=circuit_open"); !slices.Equal(got, newestFirst(one...)) {
		t.Errorf("?waiting=circuit_open with the circuit open: %v, want %v", got, newestFirst(one...))
	}
	if got := list(acme, "waiting=sender_rate"); len(got) != 0 {
		t.Errorf("?waiting=sender_rate with the circuit open: %v, want none", got)
	}
}
