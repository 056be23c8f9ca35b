package chatarchitect

import "strings"

// Marker says what a failure means beyond its class, for the one code that
// asks the worker or the policy for something particular: who is to slow
// down, what to remember, whether it counts as a failure at all. Most codes
// carry none.
type Marker string

// The markers of the code table (see codeTable).
const (
	// MarkerNone: the class says all.
	MarkerNone Marker = ""
	// MarkerPairRate: too many messages to this one recipient (131056);
	// only sends to that recipient slow down.
	MarkerPairRate Marker = "pair_rate"
	// MarkerSenderSpam: WhatsApp's spam rate limit on a sender whose
	// quality is too low (131048): halve the sender's rate for a while and
	// alert, rather than retry at the same pace.
	MarkerSenderSpam Marker = "sender_spam_limit"
	// MarkerAccountWide: the account's API call limit (80007): every
	// sender of the account backs off, not one.
	MarkerAccountWide Marker = "account_wide"
	// MarkerCountryRefused: the business may not message users in the
	// destination's country (130497): refuse further messages to that
	// country code (CountryCallingCode) from that sender.
	MarkerCountryRefused Marker = "country_refused"
	// MarkerNotAFailure: the number is briefly in maintenance (131057, a
	// throughput upgrade of up to a minute): retry after a few seconds
	// without counting it against the message.
	MarkerNotAFailure Marker = "not_a_failure"
	// MarkerHoldOut: the user is in one of Meta's marketing experiment
	// hold-out groups (130472): never retried, and not the sender's fault,
	// so it counts against nothing (quality, circuit, suppression).
	MarkerHoldOut Marker = "marketing_hold_out"
	// MarkerTemplateDisabled: the template was disabled for low quality
	// (132016): every message of it ends dead until it is edited and
	// approved again.
	MarkerTemplateDisabled Marker = "template_disabled"
)

// CodeInfo is what chatq knows of one WhatsApp or Gupshup error code.
type CodeInfo struct {
	Class  Class
	Marker Marker
}

// codeTable is CHATARCHITECT.md's classification of error codes, the one
// place that says what each means. 132xxx codes not listed are template
// errors (missing, wrong parameters...): permanent.
func codeTable(code string) (CodeInfo, bool) {
	switch code {
	case "130429", "4001":
		// Throughput of the business number; Gupshup's rate limit.
		return CodeInfo{ClassRateLimited, MarkerNone}, true
	case "131056":
		return CodeInfo{ClassRateLimited, MarkerPairRate}, true
	case "131048":
		return CodeInfo{ClassRateLimited, MarkerSenderSpam}, true
	case "80007":
		return CodeInfo{ClassRateLimited, MarkerAccountWide}, true
	case "131000", "131016", "2":
		// Something went wrong / service unavailable / API temporarily
		// down.
		return CodeInfo{ClassRetryable, MarkerNone}, true
	case "131057":
		return CodeInfo{ClassRetryable, MarkerNotAFailure}, true
	case "368", "131031", "131042", "1003":
		// Blocked for policy violations / account locked / payment problem
		// / insufficient balance: every message would fail the same way.
		return CodeInfo{ClassAccount, MarkerNone}, true
	case "131026", "1002", "131051", "131052", "131053":
		// Undeliverable / not a WhatsApp number / unsupported message type
		// / media download or upload failed.
		return CodeInfo{ClassPermanent, MarkerNone}, true
	case "130472":
		return CodeInfo{ClassPermanent, MarkerHoldOut}, true
	case "130497":
		return CodeInfo{ClassPermanent, MarkerCountryRefused}, true
	case "132016":
		return CodeInfo{ClassPermanent, MarkerTemplateDisabled}, true
	case "131047", "1004", "1005", "1006", "1007", "1008":
		// Outside the 24-hour customer service window: only a template may
		// be sent.
		return CodeInfo{ClassPolicy, MarkerNone}, true
	case "131050", "1012":
		// The user opted out.
		return CodeInfo{ClassPolicy, MarkerNone}, true
	case "131049":
		// Meta's per-user marketing cap, and every marketing template to a
		// US number since April 2025.
		return CodeInfo{ClassMarketingCapped, MarkerNone}, true
	case "132015":
		// The template is paused for low quality (3 h, then 6 h).
		return CodeInfo{ClassTemplatePaused, MarkerNone}, true
	}
	return CodeInfo{}, false
}

// LookupCode returns what chatq knows of a WhatsApp or Gupshup error code,
// as it comes in an error answer or in a failed webhook. ok is false for a
// code the table does not know.
func LookupCode(code string) (info CodeInfo, ok bool) {
	code = strings.TrimSpace(code)
	if info, ok := codeTable(code); ok {
		return info, true
	}
	if isTemplateCode(code) {
		return CodeInfo{Class: ClassPermanent}, true
	}
	return CodeInfo{}, false
}

// IsOptOutCode reports whether a failure code says that the user opted out
// of the business's messages (131050 from WhatsApp, 1012 from Gupshup):
// chatq stops messaging that user.
func IsOptOutCode(code string) bool {
	switch strings.TrimSpace(code) {
	case "131050", "1012":
		return true
	}
	return false
}

// IsWindowClosedCode reports whether a failure code says that the user's
// 24-hour customer service window is closed (131047 from WhatsApp,
// 1004-1008 from Gupshup): only a template may reach that user until they
// write again.
func IsWindowClosedCode(code string) bool {
	switch strings.TrimSpace(code) {
	case "131047", "1004", "1005", "1006", "1007", "1008":
		return true
	}
	return false
}

// CountryCallingCode returns the country calling code (ITU E.164: "1",
// "44", "971"...) a phone number starts with, "" when it is not a number.
// A 130497 refusal concerns the whole country, and this is its key.
func CountryCallingCode(number string) string {
	n := strings.TrimPrefix(strings.TrimSpace(number), "+")
	if len(n) < 4 {
		return ""
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return ""
		}
	}
	switch n[0] {
	case '1', '7':
		// The North American plan and Russia/Kazakhstan share one digit.
		return n[:1]
	}
	switch n[:2] {
	case "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
		"48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
		"66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98":
		// The two-digit codes; every other code not starting with 1 or 7
		// has three digits.
		return n[:2]
	}
	return n[:3]
}
