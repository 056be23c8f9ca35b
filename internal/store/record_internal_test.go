package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A new record's history is encoded by hand; it must read back as the
// history json.Marshal would have written.
func TestHistoryJSONMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 123_000_000, time.UTC)
	for _, h := range [][]HistoryEntry{
		nil,
		{{Status: Queued, At: at}},
		{{Status: Scheduled, At: at.Truncate(time.Second)}, {Status: Queued, At: at.Add(time.Hour), Note: `held: "rate" <limit> \ ü`}},
	} {
		want, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			want = []byte("[]")
		}
		if got := historyJSON(h); string(got) != string(want) {
			t.Errorf("historyJSON(%v) = %s, want %s", h, got, want)
		}
	}
}

// A short history reads back as it was written, whatever its notes hold
// and wherever its times fall, and the history as of each of its lengths
// is the history then (a callback notice's); so does a JSON one.
func TestShortHistoryReadsBackAsOfEveryLength(t *testing.T) {
	created := time.Date(2026, 11, 25, 12, 0, 0, 123_000_000, time.UTC)
	h := []HistoryEntry{
		{Status: Queued, At: created},
		{Status: Sending, At: created.Add(time.Millisecond)},
		{Status: Submitted, At: created.Add(-90 * time.Second), Note: `a "quoted" \ note, Q0 and V1 inside`},
		{Status: Sent, At: created.Add(400 * 24 * time.Hour), Note: "ünï\n\t<&>"},
		{Status: Read, At: created.Add(time.Second), Note: `\`},
		{Status: Dead, At: created.Add(2 * time.Second)},
	}
	for _, form := range []struct {
		name   string
		encode func([]HistoryEntry) []byte
	}{
		{"short", func(h []HistoryEntry) []byte { return historyField(h, created) }},
		{"json", historyJSON},
	} {
		full := string(form.encode(h))
		if form.name == "short" && strings.HasPrefix(full, "[") {
			t.Fatalf("historyField wrote JSON: %s", full)
		}
		for n := 0; n <= len(h); n++ {
			prefix := string(form.encode(h[:n]))
			if form.name == "short" && n == 0 {
				prefix = ""
			}
			got, ok := historyAsOf(full, len(prefix))
			if !ok || got != prefix {
				t.Errorf("%s: historyAsOf(%d bytes) = %q, %v; want %q", form.name, len(prefix), got, ok, prefix)
			}
			back, err := parseHistory(prefix, created.UnixMilli())
			if err != nil {
				t.Fatalf("%s: parse %q: %v", form.name, prefix, err)
			}
			if len(back) != n {
				t.Fatalf("%s: %q read %d entries, want %d", form.name, prefix, len(back), n)
			}
			for i := range back {
				if back[i].Status != h[i].Status || !back[i].At.Equal(h[i].At) || back[i].Note != h[i].Note {
					t.Errorf("%s: entry %d read %+v, want %+v", form.name, i, back[i], h[i])
				}
			}
		}
		if _, ok := historyAsOf(full, len(string(form.encode(h[:2])))+1); ok {
			t.Errorf("%s: historyAsOf took a length inside an entry", form.name)
		}
	}
	// A status without a code keeps the whole history in JSON.
	odd := []HistoryEntry{{Status: Queued, At: created}, {Status: "paused", At: created}}
	if got := string(historyField(odd, created)); got != string(historyJSON(odd)) {
		t.Errorf("history with an unknown status written as %s", got)
	}
}

// A damaged history or pricing is an error naming what is wrong, never a
// record read wrong.
func TestShortFieldsRefuseWhatTheyDoNotRead(t *testing.T) {
	for _, v := range []string{"q0", "Q", "Q0Z1", `Q0"open`, "Q0-", "Q0 "} {
		if h, err := parseHistory(v, 0); err == nil {
			t.Errorf("parseHistory(%q) = %+v, want an error", v, h)
		}
	}
	for _, v := range []string{"1|PMP|marketing", "2|PMP|marketing|regular", "{", "yes|a|b|c"} {
		if p, err := parsePricing(v); err == nil {
			t.Errorf("parsePricing(%q) = %+v, want an error", v, p)
		}
	}
	for _, p := range []*Pricing{
		{Billable: true, PricingModel: "PMP", Category: "marketing", Type: "regular"},
		{PricingModel: "CBP", Category: "service", Type: "free_customer_service"},
		{PricingModel: "a|b", Category: "", Type: "x"},
	} {
		got, err := parsePricing(shortPricing(p))
		if err != nil || *got != *p {
			t.Errorf("pricing %+v read back as %+v, %v", p, got, err)
		}
	}
	got, err := parsePricing(`{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}`)
	if err != nil || *got != (Pricing{Billable: true, PricingModel: "PMP", Category: "utility", Type: "regular"}) {
		t.Errorf("a JSON pricing read as %+v, %v", got, err)
	}
}
