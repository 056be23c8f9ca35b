package chatarchitect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestClassifyCode(t *testing.T) {
	tests := []struct {
		code  string
		class Class
		ok    bool
	}{
		{"130429", ClassRateLimited, true},
		{"4001", ClassRateLimited, true},
		{"131056", ClassRateLimited, true},
		{"131000", ClassRetryable, true},
		{"131016", ClassRetryable, true},
		{"131057", ClassRetryable, true},
		{"2", ClassRetryable, true},
		{"368", ClassAccount, true},
		{"131031", ClassAccount, true},
		{"131042", ClassAccount, true},
		{"1003", ClassAccount, true},
		{"131026", ClassPermanent, true},
		{"1002", ClassPermanent, true},
		{"131051", ClassPermanent, true},
		{"131052", ClassPermanent, true},
		{"131053", ClassPermanent, true},
		{"132000", ClassPermanent, true},
		{"132001", ClassPermanent, true},
		{"132015", ClassPermanent, true},
		{"132999", ClassPermanent, true},
		{"131047", ClassPolicy, true},
		{"1004", ClassPolicy, true},
		{"1005", ClassPolicy, true},
		{"1006", ClassPolicy, true},
		{"1007", ClassPolicy, true},
		{"1008", ClassPolicy, true},
		{"131050", ClassPolicy, true},
		{"1012", ClassPolicy, true},
		{" 131026 ", ClassPermanent, true},
		{"", "", false},
		{"0", "", false},
		{"1009", "", false},
		{"132", "", false},
		{"13200", "", false},
		{"1320000", "", false},
		{"13200x", "", false},
		{"x32000", "", false},
		{"131026a", "", false},
	}
	for _, tt := range tests {
		class, ok := ClassifyCode(tt.code)
		if class != tt.class || ok != tt.ok {
			t.Errorf("ClassifyCode(%q) = %q, %v; want %q, %v", tt.code, class, ok, tt.class, tt.ok)
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
