package chatarchitect

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Class says what chatq should do about a failed request. Answers map to
// classes in classifyStatus and ClassifyCode below, and nowhere else.
type Class string

// The classes of failure. Their string values are part of chatq's API: they
// appear as last_error.class in job records.
const (
	// ClassRetryable failures are retried with exponential backoff up to the
	// retry budget: 5xx, network failures, transient WhatsApp errors.
	ClassRetryable Class = "retryable"
	// ClassPermanent failures are never retried: invalid payload or
	// destination, a number not on WhatsApp, a broken template.
	ClassPermanent Class = "permanent"
	// ClassRateLimited failures are retried after RetryAfter or a backoff
	// without using up the retry budget, and slow the whole sender down.
	ClassRateLimited Class = "rate_limited"
	// ClassPolicy failures are WhatsApp refusing the message as such: the
	// 24-hour window is closed (a template is needed) or the user opted out.
	ClassPolicy Class = "policy"
	// ClassAccount failures concern every message of the account
	// (credentials, balance, a blocked business number): sending pauses
	// instead of burning every message's retries.
	ClassAccount Class = "account"
	// ClassMarketingCapped is WhatsApp's per-user marketing cap (131049):
	// not the sender's error and not final; that recipient's marketing
	// messages are to wait a day or more, while its utility and
	// authentication messages go on.
	ClassMarketingCapped Class = "marketing_capped"
	// ClassTemplatePaused is a template paused for low quality (132015):
	// every message of that template is to wait until it is active again.
	ClassTemplatePaused Class = "template_paused"
)

// APIError is every failure of a ChatArchitect request: a refusal by the
// upstream (StatusCode set), an answer that could not be understood, or a
// transport failure (Err set, StatusCode 0 unless the headers had arrived).
type APIError struct {
	// StatusCode is the HTTP status of the answer, 0 when none arrived.
	StatusCode int
	// Code is the upstream (WhatsApp or Gupshup) error code when the answer
	// carried one, e.g. "131026".
	Code string
	// Reason is the upstream's message, or a short description of what went
	// wrong when the upstream said nothing usable.
	Reason string
	// RetryAfter is the upstream's Retry-After, 0 when absent or unparsable.
	RetryAfter time.Duration
	// Class says what to do about it.
	Class Class
	// Marker tells what the code asks for beyond its class, if anything.
	Marker Marker
	// Ambiguous is set when the request had been written in full before the
	// failure (a timeout or reset while waiting for the answer, or a 2xx
	// answer without a messageId): the upstream may have accepted the
	// message, and a resend may duplicate it, since ChatArchitect has no
	// idempotency key.
	Ambiguous bool
	// Err is the transport cause, if any.
	Err error
}

// Error describes the failure without the request's content: it ends up in
// logs and in job records.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("chatarchitect: ")
	if e.StatusCode != 0 {
		b.WriteString("http ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		if e.Code != "" {
			b.WriteString(" code ")
			b.WriteString(e.Code)
		}
		b.WriteString(": ")
	} else if e.Code != "" {
		b.WriteString("code ")
		b.WriteString(e.Code)
		b.WriteString(": ")
	}
	b.WriteString(string(e.Class))
	if e.Ambiguous {
		b.WriteString(" (ambiguous: may have been accepted)")
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the transport cause, so that errors.Is(err,
// context.DeadlineExceeded) works through an *APIError.
func (e *APIError) Unwrap() error { return e.Err }

// IsAmbiguous reports whether err is an *APIError for a request that may have
// been accepted although it failed (see APIError.Ambiguous).
func IsAmbiguous(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Ambiguous
}

// ClassifyCode returns the class of a WhatsApp or Gupshup error code, as it
// comes in an error answer or in a `failed` webhook. ok is false for a code
// the table does not know; the caller then falls back on the HTTP status (for
// an answer) or on its own default (for a webhook). LookupCode tells the
// code's marker too.
func ClassifyCode(code string) (class Class, ok bool) {
	info, ok := LookupCode(code)
	return info.Class, ok
}

// isTemplateCode reports whether code is one of WhatsApp's 132xxx template
// errors (missing, paused, wrong parameters...).
func isTemplateCode(code string) bool {
	if len(code) != 6 || !strings.HasPrefix(code, "132") {
		return false
	}
	for i := 3; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

// classifyStatus returns the class of an HTTP status that carried no known
// error code.
func classifyStatus(status int) Class {
	switch {
	case status >= 200 && status < 300:
		// Accepted without a message id: the upstream's answers are not
		// always well formed, so it is sent again (Send marks it
		// ambiguous: it may have been taken).
		return ClassRetryable
	case status == http.StatusTooManyRequests:
		return ClassRateLimited
	case status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusProxyAuthRequired:
		return ClassAccount
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly:
		return ClassRetryable
	case status >= 400 && status < 500:
		// 400, 404, 422 and every other refusal of the request as written.
		return ClassPermanent
	case status >= 500:
		return ClassRetryable
	default:
		// 1xx or 3xx: redirects are not followed, and an API that redirects
		// its POSTs points at a misconfigured base URL. Every request would
		// fail alike, so pause rather than burn each message's retries.
		return ClassAccount
	}
}

// classify builds the error for an answer that was not a success. code and
// reason come from the body when it could be parsed; a known code wins over
// the HTTP status.
func classify(status int, code, reason string, retryAfter time.Duration) *APIError {
	info, ok := LookupCode(code)
	if !ok {
		info.Class = classifyStatus(status)
	}
	if reason == "" {
		reason = http.StatusText(status)
	}
	return &APIError{
		StatusCode: status,
		Code:       code,
		Reason:     reason,
		RetryAfter: retryAfter,
		Class:      info.Class,
		Marker:     info.Marker,
	}
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP-date.
// Anything else, and a date in the past, give 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Clamped before the multiplication, which could overflow.
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// maxRetryAfter bounds a Retry-After: a longer wait is a misconfigured
// upstream, and the retry schedule must stay within a job's lifetime.
const maxRetryAfter = 24 * time.Hour
