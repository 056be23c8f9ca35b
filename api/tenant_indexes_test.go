package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/store"
)

// TestTenantListingsReadTheirOwnIndex: bolt writes many messages to a
// recipient acme also wrote to, and has many dead letters; acme has one
// of each there. acme's listings of that recipient and of its dead
// letters, a message a page with a scan budget far below bolt's volume,
// never show bolt's records, never hand out a cursor that holds one of
// bolt's ids or times, and reach acme's own on the first page.
func TestTenantListingsReadTheirOwnIndex(t *testing.T) {
	const budget, many = 10, 30
	f := newTenantFixtureOf(t, store.Config{ScanBudget: budget})
	ctx := context.Background()
	acme, bolt := f.keys["acme"], f.keys["bolt"]
	const shared = "442079990002"
	send := func(key string) string {
		t.Helper()
		code, body := f.call(t, key, http.MethodPost, "/v1/messages", `{"destination":"`+shared+`","payload":{"type":"text","message":"hi"}}`)
		var rec store.Record
		if err := json.Unmarshal([]byte(body), &rec); code != http.StatusAccepted || err != nil {
			t.Fatalf("POST /v1/messages: %d %s", code, body)
		}
		return rec.ID
	}
	// acme's message is the oldest, its death the earliest: bolt's come
	// first in a listing, newest first.
	mine := send(acme)
	var items []string
	for range many {
		items = append(items, `{"destination":"`+shared+`","payload":{"type":"text","message":"hi"}}`)
	}
	code, body := f.call(t, bolt, http.MethodPost, "/v1/messages/batch", `{"messages":[`+strings.Join(items, ",")+`]}`)
	var batch struct {
		Results []struct{ ID string }
	}
	if err := json.Unmarshal([]byte(body), &batch); code != http.StatusOK || err != nil || len(batch.Results) != many {
		t.Fatalf("bolt's batch: %d %s", code, body)
	}
	theirs := slices.Clone(f.ids["bolt"])
	for _, r := range batch.Results {
		theirs = append(theirs, r.ID)
	}
	died := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	kill := func(id string, at time.Time) {
		t.Helper()
		if _, _, err := f.store.Move(ctx, id, store.Change{Status: store.Dead, At: at,
			Error: &store.ErrorInfo{Class: "permanent", Code: "1001", Message: "refused", At: at}}); err != nil {
			t.Fatal(err)
		}
	}
	kill(mine, died)
	for i, r := range batch.Results {
		kill(r.ID, died.Add(time.Duration(i+1)*time.Minute))
	}

	// What a cursor may not hold: bolt's ids, and the times of bolt's
	// records that are not also acme's.
	recs, err := f.store.GetMany(ctx, append(slices.Clone(theirs), append(slices.Clone(f.ids["acme"]), mine)...))
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{}
	for _, r := range recs[len(theirs):] {
		own[strconv.FormatInt(r.CreatedAt.UnixMilli(), 10)] = true
		for _, h := range r.History {
			own[strconv.FormatInt(h.At.UnixMilli(), 10)] = true
		}
	}
	secret := slices.Clone(theirs)
	for i, r := range recs[:len(theirs)] {
		if r == nil {
			t.Fatalf("bolt's %s is missing", theirs[i])
		}
		times := []int64{r.CreatedAt.UnixMilli()}
		for _, h := range r.History {
			times = append(times, h.At.UnixMilli())
		}
		for _, ms := range times {
			if s := strconv.FormatInt(ms, 10); !own[s] {
				secret = append(secret, s)
			}
		}
	}

	// walk follows a listing's cursors with key and returns the ids it
	// listed, in order; with acme's key, it fails on any page that shows
	// one of bolt's messages or hands out a cursor holding a secret.
	walk := func(key, path, field string) []string {
		t.Helper()
		var ids []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 2*many {
				t.Fatalf("GET %s: no end after %d pages", path, pages)
			}
			p := path + "&limit=1"
			if cursor != "" {
				p += "&cursor=" + cursor
			}
			code, body := f.call(t, key, http.MethodGet, p, "")
			var page map[string]json.RawMessage
			if err := json.Unmarshal([]byte(body), &page); code != http.StatusOK || err != nil {
				t.Fatalf("GET %s: %d %s", p, code, body)
			}
			var recs []store.Record
			var next *string
			_ = json.Unmarshal(page[field], &recs)
			_ = json.Unmarshal(page["next_cursor"], &next)
			for _, r := range recs {
				ids = append(ids, r.ID)
				if key == acme && slices.Contains(theirs, r.ID) {
					t.Fatalf("GET %s with acme's key shows bolt's message %s: %s", p, r.ID, body)
				}
			}
			if next == nil {
				return ids
			}
			cursor = *next
			if key != acme {
				continue
			}
			raw, err := base64.RawURLEncoding.DecodeString(cursor)
			if err != nil {
				raw = []byte(cursor)
			}
			for _, s := range secret {
				if strings.Contains(string(raw), s) || strings.Contains(cursor, s) {
					t.Fatalf("GET %s with acme's key: next_cursor %s (%s) holds bolt's %s", p, cursor, raw, s)
				}
			}
		}
	}
	if got, want := walk(acme, "/v1/messages?destination="+shared, "messages"), []string{mine}; !slices.Equal(got, want) {
		t.Errorf("the shared recipient's messages with acme's key: %v, want %v", got, want)
	}
	if got, want := walk(acme, "/v1/dead-letters?class=permanent", "dead_letters"), []string{f.dead["acme"], mine}; !slices.Equal(got, want) {
		t.Errorf("acme's dead letters: %v, want %v", got, want)
	}
	// bolt's key and an admin key naming bolt see bolt's own, all of them.
	for _, c := range []struct{ key, query string }{{bolt, ""}, {walkKey, "&tenant=bolt"}} {
		if got := walk(c.key, "/v1/messages?destination="+shared+c.query, "messages"); len(got) != many {
			t.Errorf("the shared recipient's messages of bolt%s: %d, want %d", c.query, len(got), many)
		}
		if got := walk(c.key, "/v1/dead-letters?class=permanent"+c.query, "dead_letters"); len(got) != many+1 {
			t.Errorf("bolt's dead letters%s: %d, want %d", c.query, len(got), many+1)
		}
	}
}
