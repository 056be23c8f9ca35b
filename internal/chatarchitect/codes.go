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
var codeTable = map[string]CodeInfo{
	// Throughput of the business number; Gupshup's rate limit.
	"130429": {ClassRateLimited, MarkerNone},
	"4001":   {ClassRateLimited, MarkerNone},
	"131056": {ClassRateLimited, MarkerPairRate},
	"131048": {ClassRateLimited, MarkerSenderSpam},
	"80007":  {ClassRateLimited, MarkerAccountWide},
	// Something went wrong / service unavailable / API temporarily down.
	"131000": {ClassRetryable, MarkerNone},
	"131016": {ClassRetryable, MarkerNone},
	"2":      {ClassRetryable, MarkerNone},
	"131057": {ClassRetryable, MarkerNotAFailure},
	// Blocked for policy violations / account locked / payment problem /
	// insufficient balance: every message would fail the same way.
	"368":    {ClassAccount, MarkerNone},
	"131031": {ClassAccount, MarkerNone},
	"131042": {ClassAccount, MarkerNone},
	"1003":   {ClassAccount, MarkerNone},
	// Undeliverable / not a WhatsApp number / unsupported message type /
	// media download or upload failed.
	"131026": {ClassPermanent, MarkerNone},
	"1002":   {ClassPermanent, MarkerNone},
	"131051": {ClassPermanent, MarkerNone},
	"131052": {ClassPermanent, MarkerNone},
	"131053": {ClassPermanent, MarkerNone},
	"130472": {ClassPermanent, MarkerHoldOut},
	"130497": {ClassPermanent, MarkerCountryRefused},
	"132016": {ClassPermanent, MarkerTemplateDisabled},
	// Outside the 24-hour customer service window: only a template may be
	// sent.
	"131047": {ClassPolicy, MarkerNone},
	"1004":   {ClassPolicy, MarkerNone},
	"1005":   {ClassPolicy, MarkerNone},
	"1006":   {ClassPolicy, MarkerNone},
	"1007":   {ClassPolicy, MarkerNone},
	"1008":   {ClassPolicy, MarkerNone},
	// The user opted out.
	"131050": {ClassPolicy, MarkerNone},
	"1012":   {ClassPolicy, MarkerNone},
	// Meta's per-user marketing cap, and every marketing template to a
	// US number since April 2025.
	"131049": {ClassMarketingCapped, MarkerNone},
	// The template is paused for low quality (3 h, then 6 h).
	"132015": {ClassTemplatePaused, MarkerNone},
}

// LookupCode returns what chatq knows of a WhatsApp or Gupshup error code,
// as it comes in an error answer or in a failed webhook. ok is false for a
// code the table does not know.
func LookupCode(code string) (info CodeInfo, ok bool) {
	code = strings.TrimSpace(code)
	if info, ok := codeTable[code]; ok {
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
	if twoDigitCodes[n[:2]] {
		return n[:2]
	}
	return n[:3]
}

// twoDigitCodes are the two-digit country calling codes; every other code
// not starting with 1 or 7 has three digits.
var twoDigitCodes = map[string]bool{
	"20": true, "27": true, "30": true, "31": true, "32": true, "33": true, "34": true, "36": true,
	"39": true, "40": true, "41": true, "43": true, "44": true, "45": true, "46": true, "47": true,
	"48": true, "49": true, "51": true, "52": true, "53": true, "54": true, "55": true, "56": true,
	"57": true, "58": true, "60": true, "61": true, "62": true, "63": true, "64": true, "65": true,
	"66": true, "81": true, "82": true, "84": true, "86": true, "90": true, "91": true, "92": true,
	"93": true, "94": true, "95": true, "98": true,
}
