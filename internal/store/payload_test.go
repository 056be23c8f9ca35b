package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// longPayload is a text payload of n bytes (28 at least).
func longPayload(n int) []byte {
	return []byte(`{"type":"text","message":"` + strings.Repeat("y", max(0, n-28)) + `"}`)
}

// A payload comes back whole, whatever its length, from every read: the
// record, the take-up that sends it, a template's check, and the look
// before the send (Peek) when it is short. One of up to
// 2 KB is kept in the record's hash in parts of at most 64 bytes, so that
// Redis keeps the hash in its compact encoding and the message needs no
// key more; a longer one has a key of its own.
func TestAPayloadIsKeptWholeWhateverItsLength(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	st := store.New(rdb, store.Config{})
	now := time.Now()
	cases := []struct {
		id      string
		payload []byte
		ownKey  bool
	}{
		{"p-short", []byte(`{"type":"text","message":"hi"}`), false},
		{"p-64", longPayload(64), false},
		{"p-text", longPayload(129), false},
		{"p-utf8", []byte(`{"type":"text","message":"` + strings.Repeat("é€", 40) + `"}`), false},
		{"p-256", longPayload(256), false},
		{"p-257", longPayload(257), false},
		{"p-2k", longPayload(2048), false},
		{"p-long", longPayload(2049), true},
		{"p-huge", longPayload(60000), true},
	}
	// Each twice: one taken up as the worker does (Take), one with Begin.
	for _, c := range cases {
		b := c
		b.id += "-b"
		cases = append(cases, b)
	}
	for _, c := range cases {
		r := newRecord(c.id, "96996999601", "transactional", "", now)
		r.Payload = c.payload
		r.CallbackURL = ""
		if strings.HasPrefix(c.id, "p-text") {
			// The scripted creation path: an idempotency key.
			r.IdempotencyKey, r.Fingerprint = "idem-"+c.id, "fp"
		}
		createAll(t, st, r)
	}
	for _, c := range cases {
		own := rdb.Exists(ctx, "chatq:pl:{"+c.id+"}").Val() == 1
		if own != c.ownKey {
			t.Errorf("%s (%d bytes): payload key exists %v, want %v", c.id, len(c.payload), own, c.ownKey)
		}
		if !c.ownKey && srv.Real() {
			// miniredis has no encodings to tell.
			if enc := rdb.ObjectEncoding(ctx, "chatq:m:{"+c.id+"}").Val(); enc != "listpack" {
				t.Errorf("%s (%d bytes): record encoded %s, want listpack", c.id, len(c.payload), enc)
			}
		}
		got, err := st.Get(ctx, c.id)
		if err != nil || string(got.Payload) != string(c.payload) {
			t.Fatalf("%s: get: payload %d bytes %v, want %d bytes", c.id, len(got.Payload), err, len(c.payload))
		}
		b, err := st.Payload(ctx, c.id)
		if err != nil || string(b) != string(c.payload) {
			t.Errorf("%s: Payload: %d bytes %v, want %d", c.id, len(b), err, len(c.payload))
		}
		// The look before a send has it too when it is short (four parts
		// at most), and none of it when it is longer: never a part.
		peek, err := st.Peek(ctx, c.id)
		if err != nil || peek == nil {
			t.Fatalf("%s: peek: %v %v", c.id, peek, err)
		}
		if want := len(c.payload) <= 256; (string(peek.Payload) == string(c.payload)) != want || (!want && len(peek.Payload) > 0) {
			t.Errorf("%s: peek: payload of %d bytes, want it whole: %v", c.id, len(peek.Payload), want)
		}
		rec := takeUp(t, st, c.id, now)
		if string(rec.Payload) != string(c.payload) || !json.Valid(rec.Payload) {
			t.Errorf("%s: take-up answered a payload of %d bytes, want %d", c.id, len(rec.Payload), len(c.payload))
		}
	}
}

// takeUp takes record id up for a send: with Begin when its id ends in
// "-b", else as the worker does, with Take.
func takeUp(t *testing.T, st *store.Store, id string, now time.Time) *store.Record {
	t.Helper()
	ctx := context.Background()
	by := store.Owner{Worker: "w", Task: id}
	if strings.HasSuffix(id, "-b") {
		rec, o, err := st.Begin(ctx, id, now, by)
		if err != nil || o != store.Changed {
			t.Fatalf("%s: begin: %s %v", id, o, err)
		}
		return rec
	}
	rec, err := st.Peek(ctx, id)
	if err != nil || rec == nil {
		t.Fatalf("%s: peek: %v %v", id, rec, err)
	}
	if o, err := st.Take(ctx, rec, now, by); err != nil || o != store.Changed {
		t.Fatalf("%s: take: %s %v", id, o, err)
	}
	return rec
}

// Records written before payloads were kept in parts still give theirs:
// a payload in a key of its own, or whole in the hash's 'pl'.
func TestAnOlderRecordKeepsItsPayload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	now := time.Now()
	payload := string(longPayload(129))
	ids := []string{"old-key", "old-hash", "old-key-b", "old-hash-b"}
	for _, id := range ids {
		r := newRecord(id, "96996999601", "transactional", "", now)
		createAll(t, st, r)
		// As the store wrote it then.
		rdb.HDel(ctx, "chatq:m:{"+id+"}", "pl", "pl1", "pl2", "pn")
		if strings.HasPrefix(id, "old-key") {
			rdb.Set(ctx, "chatq:pl:{"+id+"}", payload, time.Hour)
		} else {
			rdb.HSet(ctx, "chatq:m:{"+id+"}", "pl", payload)
		}
	}
	for _, id := range ids {
		got, err := st.Get(ctx, id)
		if err != nil || string(got.Payload) != payload {
			t.Errorf("%s: get: %q %v", id, got.Payload, err)
		}
		if rec := takeUp(t, st, id, now); string(rec.Payload) != payload {
			t.Errorf("%s: take-up: payload %q", id, rec.Payload)
		}
	}
}
