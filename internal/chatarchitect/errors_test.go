package chatarchitect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestLookupCode(t *testing.T) {
	tests := []struct {
		code string
		want CodeInfo
		ok   bool
	}{
		{"130429", CodeInfo{ClassRateLimited, MarkerNone}, true},
		{"4001", CodeInfo{ClassRateLimited, MarkerNone}, true},
		{"131056", CodeInfo{ClassRateLimited, MarkerPairRate}, true},
		{"131048", CodeInfo{ClassRateLimited, MarkerSenderSpam}, true},
		{"80007", CodeInfo{ClassRateLimited, MarkerAccountWide}, true},
		{"131000", CodeInfo{ClassRetryable, MarkerNone}, true},
		{"131016", CodeInfo{ClassRetryable, MarkerNone}, true},
		{"131057", CodeInfo{ClassRetryable, MarkerNotAFailure}, true},
		{"2", CodeInfo{ClassRetryable, MarkerNone}, true},
		{"368", CodeInfo{ClassAccount, MarkerNone}, true},
		{"131031", CodeInfo{ClassAccount, MarkerNone}, true},
		{"131042", CodeInfo{ClassAccount, MarkerNone}, true},
		{"1003", CodeInfo{ClassAccount, MarkerNone}, true},
		{"131026", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"1002", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"131051", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"131052", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"131053", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"130472", CodeInfo{ClassPermanent, MarkerHoldOut}, true},
		{"130497", CodeInfo{ClassPermanent, MarkerCountryRefused}, true},
		{"132000", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"132001", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"132015", CodeInfo{ClassTemplatePaused, MarkerNone}, true},
		{"132016", CodeInfo{ClassPermanent, MarkerTemplateDisabled}, true},
		{"132999", CodeInfo{ClassPermanent, MarkerNone}, true},
		{"131049", CodeInfo{ClassMarketingCapped, MarkerNone}, true},
		{"131047", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1004", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1005", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1006", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1007", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1008", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"131050", CodeInfo{ClassPolicy, MarkerNone}, true},
		{"1012", CodeInfo{ClassPolicy, MarkerNone}, true},
		{" 131026 ", CodeInfo{ClassPermanent, MarkerNone}, true},
		{" 132015", CodeInfo{ClassTemplatePaused, MarkerNone}, true},
		{"", CodeInfo{}, false},
		{"0", CodeInfo{}, false},
		{"1009", CodeInfo{}, false},
		{"132", CodeInfo{}, false},
		{"13200", CodeInfo{}, false},
		{"1320000", CodeInfo{}, false},
		{"13200x", CodeInfo{}, false},
		{"x32000", CodeInfo{}, false},
		{"131026a", CodeInfo{}, false},
		{"80008", CodeInfo{}, false},
	}
	for _, tt := range tests {
		got, ok := LookupCode(tt.code)
		if got != tt.want || ok != tt.ok {
			t.Errorf("LookupCode(%q) = %+v, %v; want %+v, %v", tt.code, got, ok, tt.want, tt.ok)
		}
		class, ok := ClassifyCode(tt.code)
		if class != tt.want.Class || ok != tt.ok {
			t.Errorf("ClassifyCode(%q) = %q, %v; want %q, %v", tt.code, class, ok, tt.want.Class, tt.ok)
		}
	}
}

func TestClassifyCarriesMarker(t *testing.T) {
	tests := []struct {
		status int
		code   string
		class  Class
		marker Marker
	}{
		{400, "131048", ClassRateLimited, MarkerSenderSpam},
		{400, "130497", ClassPermanent, MarkerCountryRefused},
		{400, "132016", ClassPermanent, MarkerTemplateDisabled},
		{400, "132015", ClassTemplatePaused, MarkerNone},
		{400, "131049", ClassMarketingCapped, MarkerNone},
		{429, "80007", ClassRateLimited, MarkerAccountWide},
		{503, "131057", ClassRetryable, MarkerNotAFailure},
		{400, "", ClassPermanent, MarkerNone},
		{400, "999999", ClassPermanent, MarkerNone},
	}
	for _, tt := range tests {
		e := classify(tt.status, tt.code, "", 0)
		if e.Class != tt.class || e.Marker != tt.marker {
			t.Errorf("classify(%d, %q) = %q %q; want %q %q", tt.status, tt.code, e.Class, e.Marker, tt.class, tt.marker)
		}
	}
}

func TestCountryCallingCode(t *testing.T) {
	tests := []struct{ number, want string }{
		{"+14155550123", "1"},
		{"14155550123", "1"},
		{"79161234567", "7"},
		{"447700900123", "44"},
		{"+4915112345678", "49"},
		{"919876543210", "91"},
		{"971501234567", "971"},
		{"2348012345678", "234"},
		{"35312345678", "353"},
		{"5511912345678", "55"},
		{"", ""},
		{"+", ""},
		{"123", ""},
		{"44abc", ""},
	}
	for _, tt := range tests {
		if got := CountryCallingCode(tt.number); got != tt.want {
			t.Errorf("CountryCallingCode(%q) = %q, want %q", tt.number, got, tt.want)
		}
	}
}

func TestClassifyStatus(t *testing.T) {
	tests := []struct {
		status int
		want   Class
	}{
		{200, ClassRetryable},
		{204, ClassRetryable},
		{301, ClassAccount},
		{400, ClassPermanent},
		{401, ClassAccount},
		{403, ClassAccount},
		{404, ClassPermanent},
		{407, ClassAccount},
		{408, ClassRetryable},
		{413, ClassPermanent},
		{422, ClassPermanent},
		{425, ClassRetryable},
		{429, ClassRateLimited},
		{500, ClassRetryable},
		{502, ClassRetryable},
		{503, ClassRetryable},
		{504, ClassRetryable},
	}
	for _, tt := range tests {
		if got := classifyStatus(tt.status); got != tt.want {
			t.Errorf("classifyStatus(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"99999999999999", maxRetryAfter},
		{"soon", 0},
		{"1.5", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(30 * 24 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
		{"Wed, 25 Nov 2026 10:00:45 GMT", 45 * time.Second},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.header, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestAPIErrorString(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:1: connection refused")
	tests := []struct {
		err  *APIError
		want string
	}{
		{
			&APIError{StatusCode: 400, Reason: "Invalid Destination", Class: ClassPermanent},
			"chatarchitect: http 400: permanent: Invalid Destination",
		},
		{
			&APIError{StatusCode: 400, Code: "131026", Reason: "Message undeliverable", Class: ClassPermanent},
			"chatarchitect: http 400 code 131026: permanent: Message undeliverable",
		},
		{
			&APIError{Code: "131047", Class: ClassPolicy},
			"chatarchitect: code 131047: policy",
		},
		{
			&APIError{Class: ClassRetryable, Reason: "request not sent", Err: cause},
			"chatarchitect: retryable: request not sent: dial tcp 127.0.0.1:1: connection refused",
		},
		{
			&APIError{Class: ClassRetryable, Ambiguous: true, Reason: "no answer to the request: timeout", Err: context.DeadlineExceeded},
			"chatarchitect: retryable (ambiguous: may have been accepted): no answer to the request: timeout: context deadline exceeded",
		},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q\nwant      %q", got, tt.want)
		}
	}
}

func TestAPIErrorUnwrapAndAmbiguous(t *testing.T) {
	err := fmt.Errorf("send job 1: %w", &APIError{Class: ClassRetryable, Ambiguous: true, Err: context.DeadlineExceeded})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("errors.Is(err, context.DeadlineExceeded) = false through *APIError")
	}
	if !IsAmbiguous(err) {
		t.Error("IsAmbiguous(wrapped ambiguous error) = false")
	}
	if IsAmbiguous(fmt.Errorf("x: %w", &APIError{Class: ClassRetryable})) {
		t.Error("IsAmbiguous(unambiguous) = true")
	}
	if IsAmbiguous(errors.New("plain")) || IsAmbiguous(nil) {
		t.Error("IsAmbiguous(non-APIError) = true")
	}
}
