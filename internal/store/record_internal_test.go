package store

import (
	"encoding/json"
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
