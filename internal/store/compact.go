package store

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A record's history and pricing are kept short, so that Redis keeps the
// record in the compact encoding of a small hash (a listpack) for its whole
// life: a value over 64 bytes (hash-max-listpack-value) turns the hash into
// a hash table, which more than doubles a delivered record's memory, and a
// record lives CHATQ_RECORD_TTL after its last change. Records written
// before in JSON (a history starting with '[', a pricing with '{') still
// read, and their history grows in JSON (transition.lua).
//
// The history is its entries one after the other, each a status code (one
// capital letter, historyCodes), the entry's time in milliseconds after the
// record's creation in base 36 (a '-' before it for an earlier time: a
// provider's clock may be behind), and its note, if any, as a JSON string:
//
//	Q0G1kU4mS1ejV1gcR3p7m"repeated"
//
// transition.lua appends entries in the same form.

// historyCodes are the statuses' codes in a short history; transition.lua
// has the same table.
var historyCodes = map[Status]byte{
	Queued: 'Q', Scheduled: 'P', Sending: 'G', Retrying: 'Y', Submitted: 'U',
	Dead: 'D', Expired: 'X', Canceled: 'C', Enqueued: 'E', Sent: 'S',
	Delivered: 'V', Read: 'R', Failed: 'F',
}

// historyStatus is historyCodes the other way round.
var historyStatus = func() map[byte]Status {
	m := make(map[byte]Status, len(historyCodes))
	for s, c := range historyCodes {
		m[c] = s
	}
	return m
}()

// historyField encodes h, the history of a record created at created, as
// the record keeps it: short, or JSON if a status has no code.
func historyField(h []HistoryEntry, created time.Time) []byte {
	b := make([]byte, 0, 8*len(h))
	for _, e := range h {
		c, ok := historyCodes[e.Status]
		if !ok {
			return historyJSON(h)
		}
		b = append(b, c)
		b = strconv.AppendInt(b, e.At.UnixMilli()-created.UnixMilli(), 36)
		if e.Note != "" {
			n, _ := json.Marshal(e.Note) // a string always encodes
			b = append(b, n...)
		}
	}
	return b
}

// parseHistory reads a history field, short or JSON, of a record created at
// created (unix milliseconds).
func parseHistory(v string, created int64) ([]HistoryEntry, error) {
	if strings.HasPrefix(v, "[") {
		var h []HistoryEntry
		if err := json.Unmarshal([]byte(v), &h); err != nil {
			return nil, err
		}
		return h, nil
	}
	var h []HistoryEntry
	for i := 0; i < len(v); {
		st, ok := historyStatus[v[i]]
		if !ok {
			return nil, fmt.Errorf("byte %d: %q is no status code", i, v[i])
		}
		i++
		j := i
		if j < len(v) && v[j] == '-' {
			j++
		}
		for j < len(v) && (v[j] >= '0' && v[j] <= '9' || v[j] >= 'a' && v[j] <= 'z') {
			j++
		}
		ms, err := strconv.ParseInt(v[i:j], 36, 64)
		if err != nil {
			return nil, fmt.Errorf("byte %d: time: %w", i, err)
		}
		e := HistoryEntry{Status: st, At: time.UnixMilli(created + ms).UTC()}
		i = j
		if i < len(v) && v[i] == '"' {
			end := noteEnd(v, i)
			if end < 0 {
				return nil, fmt.Errorf("byte %d: note without its end", i)
			}
			if err := json.Unmarshal([]byte(v[i:end]), &e.Note); err != nil {
				return nil, fmt.Errorf("byte %d: note: %w", i, err)
			}
			i = end
		}
		h = append(h, e)
	}
	return h, nil
}

// noteEnd returns the end of the JSON string that starts at v[i], -1 if it
// has none.
func noteEnd(v string, i int) int {
	for j := i + 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// historyAsOf returns the history h was when it was n bytes long (a
// callback notice's 'hl'): a history only grows at its end. ok is false
// when h is not a longer one of that.
func historyAsOf(h string, n int) (string, bool) {
	if strings.HasPrefix(h, "[") {
		switch {
		case n == len(h):
			return h, true
		case n == 0 || n == 2:
			// No history then: none, or "[]", which the first entry
			// replaced.
			return "[]"[:n], true
		case n < len(h) && h[n-1] == ',':
			return h[:n-1] + "]", true
		}
		return "", false
	}
	if n == len(h) || n < len(h) && historyStatus[h[n]] != "" {
		return h[:n], true
	}
	return "", false
}

// shortPricing encodes a pricing object as its four values, '|' between
// them; one with a '|' in a value stays JSON.
func shortPricing(p *Pricing) string {
	if strings.Contains(p.PricingModel+p.Category+p.Type, "|") {
		b, _ := json.Marshal(p)
		return string(b)
	}
	billable := "0"
	if p.Billable {
		billable = "1"
	}
	return billable + "|" + p.PricingModel + "|" + p.Category + "|" + p.Type
}

// parsePricing reads a pricing field, short or JSON.
func parsePricing(v string) (*Pricing, error) {
	p := new(Pricing)
	if strings.HasPrefix(v, "{") {
		if err := json.Unmarshal([]byte(v), p); err != nil {
			return nil, err
		}
		return p, nil
	}
	parts := strings.Split(v, "|")
	if len(parts) != 4 || parts[0] != "0" && parts[0] != "1" {
		return nil, fmt.Errorf("%q is not billable|model|category|type", v)
	}
	p.Billable, p.PricingModel, p.Category, p.Type = parts[0] == "1", parts[1], parts[2], parts[3]
	return p, nil
}
