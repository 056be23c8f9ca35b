// Package jsontime is how chatq writes a timestamp in JSON: RFC 3339 in UTC
// with exactly three decimals (2026-11-25T10:00:00.123Z), one width and one
// zone everywhere, so that clients can compare them as strings and parse
// them with any RFC 3339 parser.
package jsontime

import "time"

// Layout is the timestamp layout of chatq's JSON.
const Layout = "2006-01-02T15:04:05.000Z07:00"

// Format writes t in Layout, in UTC.
func Format(t time.Time) string { return t.UTC().Format(Layout) }

// Time is a time.Time that encodes in Layout. Types with time.Time fields
// encode through it in their MarshalJSON; decoding takes any RFC 3339 time,
// so what was stored before in another precision still reads.
type Time time.Time

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(Layout)+2)
	b = append(b, '"')
	b = time.Time(t).UTC().AppendFormat(b, Layout)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	return (*time.Time)(t).UnmarshalJSON(b)
}

// Ptr converts an optional time; nil stays nil.
func Ptr(t *time.Time) *Time {
	if t == nil {
		return nil
	}
	j := Time(*t)
	return &j
}
