package chatarchitect

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// flexString decodes a JSON string or number into its text: the upstream
// sends error codes and ids either way ("code":1002 and "code":"1002").
// Any other JSON value leaves it empty rather than failing the whole
// document, because a half-understood event is still worth recording.
type flexString string

// UnmarshalJSON implements json.Unmarshaler.
func (s *flexString) UnmarshalJSON(b []byte) error {
	*s = ""
	if len(b) == 0 {
		return nil
	}
	switch c := b[0]; {
	case c == '"' && len(b) >= 2:
		inner := b[1 : len(b)-1]
		if bytes.IndexByte(inner, '\\') < 0 {
			*s = flexString(strings.TrimSpace(string(inner)))
			return nil
		}
		var v string
		if json.Unmarshal(b, &v) == nil {
			*s = flexString(strings.TrimSpace(v))
		}
	case c == '-' || (c >= '0' && c <= '9'):
		*s = flexString(trimZeroFraction(b))
	}
	return nil
}

// trimZeroFraction turns 131026.0 into 131026, so that a code sent as a
// float still matches the table.
func trimZeroFraction(b []byte) []byte {
	for i, c := range b {
		if c == '.' {
			for _, d := range b[i+1:] {
				if d != '0' {
					return b
				}
			}
			return b[:i]
		}
	}
	return b
}

// flexInt decodes a JSON number or a string holding one into an int64, for
// timestamps. Fractions are dropped; anything else, or a value out of range,
// gives 0.
type flexInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *flexInt) UnmarshalJSON(b []byte) error {
	*n = 0
	if len(b) >= 2 && b[0] == '"' {
		b = b[1 : len(b)-1]
	}
	if len(b) == 0 {
		return nil
	}
	if v, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		*n = flexInt(v)
		return nil
	}
	if f, err := strconv.ParseFloat(string(b), 64); err == nil && f > -(1<<62) && f < 1<<62 {
		*n = flexInt(f)
	}
	return nil
}

// appendJSONString appends s as a JSON string. Phone numbers take the fast
// path; anything else goes through encoding/json so that the envelope stays
// valid JSON whatever the caller passed.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&' {
			quoted, _ := json.Marshal(s) // a string always marshals
			return append(dst, quoted...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// isTypeError reports whether err from json.Unmarshal only says that some
// value had an unexpected type. The document was valid JSON and the rest of
// it was decoded, so it is still usable.
func isTypeError(err error) bool {
	var typeErr *json.UnmarshalTypeError
	return errors.As(err, &typeErr)
}

// truncate bounds a string taken from the upstream before it goes into
// errors, logs and job records, cutting on a rune boundary.
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
