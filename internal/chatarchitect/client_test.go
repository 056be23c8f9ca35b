package chatarchitect

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	testAppID     = "app-1"
	testAppSecret = "s3cret:with-colon"
	testSource    = "15550001111"
	testDest      = "15550002222"
	successBody   = `{"status":"submitted","messageId":"ee4a68a0-1203-4c85-8dc3-49d0b3226a35"}`
)

// newServer starts an HTTP server on 127.0.0.1:0 for the test.
func newServer(tb testing.TB, h http.HandlerFunc) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// newStallingServer starts a server whose handler is built around a channel
// that is closed at the end of the test, before the server shuts down, so
// that a handler that stalls on it never outlives the test.
func newStallingServer(tb testing.TB, h func(release <-chan struct{}) http.HandlerFunc) *httptest.Server {
	tb.Helper()
	release := make(chan struct{})
	srv := newServer(tb, h(release))
	tb.Cleanup(func() { close(release) })
	return srv
}

// newClient returns a client of srv with chatq's own transport.
func newClient(tb testing.TB, baseURL string, timeout time.Duration) *Client {
	tb.Helper()
	c := New(Config{
		BaseURL:   baseURL,
		AppID:     testAppID,
		AppSecret: testAppSecret,
		Source:    testSource,
		Timeout:   timeout,
	}, nil)
	tb.Cleanup(c.hc.CloseIdleConnections)
	return c
}

// answerWith returns a handler that answers every request alike.
func answerWith(status int, contentType, body string, header map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		for k, v := range header {
			w.Header().Set(k, v)
		}
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// asAPIError fails the test unless err is an *APIError.
func asAPIError(tb testing.TB, err error) *APIError {
	tb.Helper()
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		tb.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return apiErr
}

var ignoreErr = cmpopts.IgnoreFields(APIError{}, "Err")

func TestSendSuccess(t *testing.T) {
	// Odd spacing, key order, escapes and number forms must reach the
	// upstream untouched.
	payload := json.RawMessage("{ \"message\" : \"caf\\u00e9 <b>&amp;\\n\" ,\"type\":\"text\", \"n\": 1.0e2 }")
	wantBody := `{"channel":"whatsapp","destination":"` + testDest + `","payload":` + string(payload) + `}`
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testAppID+":"+testAppSecret))

	var got struct {
		method, path, auth, user, pass, contentType, body string
		basicOK                                           bool
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.method, got.path, got.body = r.Method, r.URL.Path, string(b)
		got.auth, got.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		got.user, got.pass, got.basicOK = r.BasicAuth()
		// Gupshup labels its JSON text/html.
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		_, _ = io.WriteString(w, successBody)
	})
	c := newClient(t, srv.URL+"/", time.Second)

	id, err := c.Send(context.Background(), testDest, payload)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if id != "ee4a68a0-1203-4c85-8dc3-49d0b3226a35" {
		t.Errorf("messageId = %q", id)
	}
	if got.method != http.MethodPost || got.path != "/whatsappmessage" {
		t.Errorf("request = %s %s, want POST /whatsappmessage", got.method, got.path)
	}
	if got.auth != wantAuth || !got.basicOK || got.user != testAppID || got.pass != testAppSecret {
		t.Errorf("Authorization = %q (user %q, pass ok %v), want %q", got.auth, got.user, got.pass == testAppSecret, wantAuth)
	}
	if got.contentType != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got.contentType)
	}
	if got.body != wantBody {
		t.Errorf("body:\n got %s\nwant %s", got.body, wantBody)
	}
	if !json.Valid([]byte(got.body)) {
		t.Errorf("body is not valid JSON: %s", got.body)
	}
}

func TestSendAccepts2xxWithMessageID(t *testing.T) {
	for _, status := range []int{200, 201, 202} {
		srv := newServer(t, answerWith(status, "application/json", successBody, nil))
		c := newClient(t, srv.URL, time.Second)
		if _, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`)); err != nil {
			t.Errorf("status %d: Send: %v", status, err)
		}
	}
}

func TestSendClassifiesAnswers(t *testing.T) {
	html := "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
	big := `{"status":"submitted","messageId":"x","pad":"` + strings.Repeat("a", maxAnswer) + `"}`
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		header      map[string]string
		want        APIError
	}{
		{
			name: "2xx without messageId", status: 200, contentType: "text/html", body: `{"status":"submitted"}`,
			want: APIError{StatusCode: 200, Reason: "answer without a messageId", Class: ClassRetryable, Ambiguous: true},
		},
		{
			name: "2xx empty object", status: 200, body: `{}`,
			want: APIError{StatusCode: 200, Reason: "answer without a messageId", Class: ClassRetryable, Ambiguous: true},
		},
		{
			name: "2xx empty body", status: 200,
			want: APIError{StatusCode: 200, Reason: "answer without a messageId", Class: ClassRetryable, Ambiguous: true},
		},
		{
			name: "2xx garbage", status: 200, contentType: "text/html", body: "OK!",
			want: APIError{StatusCode: 200, Reason: "answer without a messageId", Class: ClassRetryable, Ambiguous: true},
		},
		{
			name: "2xx answer larger than the bound", status: 200, body: big,
			want: APIError{StatusCode: 200, Reason: "answer without a messageId", Class: ClassRetryable, Ambiguous: true},
		},
		{
			name: "2xx status error", status: 202, body: `{"status":"error","message":"Invalid app"}`,
			want: APIError{StatusCode: 202, Reason: "Invalid app", Class: ClassRetryable},
		},
		{
			name: "400 invalid destination", status: 400, contentType: "text/html", body: `{"status":"error","message":"Invalid Destination"}`,
			want: APIError{StatusCode: 400, Reason: "Invalid Destination", Class: ClassPermanent},
		},
		{
			name: "messageId in a refusal", status: 400, body: `{"status":"error","messageId":"x","message":"Invalid Destination"}`,
			want: APIError{StatusCode: 400, Reason: "Invalid Destination", Class: ClassPermanent},
		},
		{
			name: "400 garbage body", status: 400, body: "\x00\xffnot json",
			want: APIError{StatusCode: 400, Reason: "Bad Request", Class: ClassPermanent},
		},
		{
			name: "404 HTML page", status: 404, contentType: "text/html", body: "<html>nope</html>",
			want: APIError{StatusCode: 404, Reason: "Not Found", Class: ClassPermanent},
		},
		{
			name: "413", status: 413, body: `{"status":"error","message":"too big"}`,
			want: APIError{StatusCode: 413, Reason: "too big", Class: ClassPermanent},
		},
		{
			name: "422", status: 422, body: `{"status":"error","message":"Invalid payload"}`,
			want: APIError{StatusCode: 422, Reason: "Invalid payload", Class: ClassPermanent},
		},
		{
			name: "401", status: 401, body: `{"status":"error","message":"Authentication Failed"}`,
			want: APIError{StatusCode: 401, Reason: "Authentication Failed", Class: ClassAccount},
		},
		{
			name: "403 empty body", status: 403,
			want: APIError{StatusCode: 403, Reason: "Forbidden", Class: ClassAccount},
		},
		{
			name: "429 Retry-After seconds", status: 429, body: `{"status":"error","message":"Too Many Requests"}`,
			header: map[string]string{"Retry-After": "7"},
			want:   APIError{StatusCode: 429, Reason: "Too Many Requests", RetryAfter: 7 * time.Second, Class: ClassRateLimited},
		},
		{
			name: "429 without Retry-After", status: 429,
			want: APIError{StatusCode: 429, Reason: "Too Many Requests", Class: ClassRateLimited},
		},
		{
			name: "429 unparsable Retry-After", status: 429, header: map[string]string{"Retry-After": "soon"},
			want: APIError{StatusCode: 429, Reason: "Too Many Requests", Class: ClassRateLimited},
		},
		{
			name: "408", status: 408,
			want: APIError{StatusCode: 408, Reason: "Request Timeout", Class: ClassRetryable},
		},
		{
			name: "500 empty body", status: 500,
			want: APIError{StatusCode: 500, Reason: "Internal Server Error", Class: ClassRetryable},
		},
		{
			name: "502 HTML error page", status: 502, contentType: "text/html", body: html,
			want: APIError{StatusCode: 502, Reason: "Bad Gateway", Class: ClassRetryable},
		},
		{
			name: "503 Retry-After", status: 503, header: map[string]string{"Retry-After": "3"},
			want: APIError{StatusCode: 503, Reason: "Service Unavailable", RetryAfter: 3 * time.Second, Class: ClassRetryable},
		},
		{
			name: "redirect is not followed", status: 301, header: map[string]string{"Location": "/elsewhere"},
			want: APIError{StatusCode: 301, Reason: "Moved Permanently", Class: ClassAccount},
		},
		{
			name: "code wins over status", status: 500, body: `{"status":"error","message":"undeliverable","code":131026}`,
			want: APIError{StatusCode: 500, Code: "131026", Reason: "undeliverable", Class: ClassPermanent},
		},
		{
			name: "unknown code falls back on status", status: 400, body: `{"status":"error","message":"what","code":99999}`,
			want: APIError{StatusCode: 400, Code: "99999", Reason: "what", Class: ClassPermanent},
		},
		{
			name: "float code", status: 400, body: `{"status":"error","code":1002.0}`,
			want: APIError{StatusCode: 400, Code: "1002", Reason: "Bad Request", Class: ClassPermanent},
		},
		{
			name: "WhatsApp error object", status: 400,
			body: `{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":131047,"error_data":{"details":"more than 24 hours"}}}`,
			want: APIError{StatusCode: 400, Code: "131047", Reason: "(#131047) Re-engagement message", Class: ClassPolicy},
		},
		{
			name: "error object with title only", status: 400, body: `{"error":{"code":"131056","title":"Pair rate limit hit"}}`,
			want: APIError{StatusCode: 400, Code: "131056", Reason: "Pair rate limit hit", Class: ClassRateLimited, Marker: MarkerPairRate},
		},
		{
			name: "message as an object", status: 400, body: `{"status":"error","message":{"code":1003,"message":"Insufficient balance"}}`,
			want: APIError{StatusCode: 400, Code: "1003", Reason: "Insufficient balance", Class: ClassAccount},
		},
		{
			name: "error as a string", status: 400, body: `{"status":"error","error":"bad things"}`,
			want: APIError{StatusCode: 400, Reason: "bad things", Class: ClassPermanent},
		},
		{
			name: "fields of unexpected types", status: 400, body: `{"status":7,"message":["x"],"code":{"a":1}}`,
			want: APIError{StatusCode: 400, Reason: "Bad Request", Class: ClassPermanent},
		},
		{
			name: "long reason is bounded", status: 400, body: `{"status":"error","message":"` + strings.Repeat("é", 400) + `"}`,
			want: APIError{StatusCode: 400, Reason: strings.Repeat("é", maxReason/2) + "...", Class: ClassPermanent},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, answerWith(tt.status, tt.contentType, tt.body, tt.header))
			c := newClient(t, srv.URL, time.Second)
			id, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
			if err == nil {
				t.Fatalf("Send succeeded with id %q", id)
			}
			got := asAPIError(t, err)
			if diff := cmp.Diff(&tt.want, got, ignoreErr); diff != "" {
				t.Errorf("APIError mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSendClassifiesCodes checks every code of the table, as a number and as
// a string, at the top level and in a nested error object, under various
// statuses: a known code decides whatever the status.
func TestSendClassifiesCodes(t *testing.T) {
	codes := map[string]CodeInfo{
		"130429": {ClassRateLimited, MarkerNone}, "4001": {ClassRateLimited, MarkerNone},
		"131056": {ClassRateLimited, MarkerPairRate}, "131048": {ClassRateLimited, MarkerSenderSpam},
		"80007":  {ClassRateLimited, MarkerAccountWide},
		"131000": {ClassRetryable, MarkerNone}, "131016": {ClassRetryable, MarkerNone},
		"131057": {ClassRetryable, MarkerNotAFailure}, "2": {ClassRetryable, MarkerNone},
		"368": {ClassAccount, MarkerNone}, "131031": {ClassAccount, MarkerNone}, "131042": {ClassAccount, MarkerNone},
		"1003":   {ClassAccount, MarkerNone},
		"131026": {ClassPermanent, MarkerNone}, "1002": {ClassPermanent, MarkerNone}, "131051": {ClassPermanent, MarkerNone},
		"131052": {ClassPermanent, MarkerNone}, "131053": {ClassPermanent, MarkerNone}, "132000": {ClassPermanent, MarkerNone},
		"132012": {ClassPermanent, MarkerNone}, "130472": {ClassPermanent, MarkerHoldOut},
		"130497": {ClassPermanent, MarkerCountryRefused}, "132016": {ClassPermanent, MarkerTemplateDisabled},
		"131047": {ClassPolicy, MarkerNone}, "1004": {ClassPolicy, MarkerNone}, "1005": {ClassPolicy, MarkerNone},
		"1006": {ClassPolicy, MarkerNone}, "1007": {ClassPolicy, MarkerNone}, "1008": {ClassPolicy, MarkerNone},
		"131050": {ClassPolicy, MarkerNone}, "1012": {ClassPolicy, MarkerNone},
		"131049": {ClassMarketingCapped, MarkerNone}, "132015": {ClassTemplatePaused, MarkerNone},
	}
	shapes := []struct {
		name   string
		status int
		body   func(code string) string
	}{
		{"top-level number", 400, func(code string) string {
			return `{"status":"error","message":"m","code":` + code + `}`
		}},
		{"top-level string", 500, func(code string) string {
			return `{"status":"error","message":"m","code":"` + code + `"}`
		}},
		{"nested number", 200, func(code string) string {
			return `{"status":"error","error":{"code":` + code + `,"message":"m"}}`
		}},
		{"nested string", 429, func(code string) string {
			return `{"status":"error","error":{"code":"` + code + `","message":"m"}}`
		}},
	}
	var requests atomic.Int64
	var current atomic.Value // string: the body to answer
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		raw := current.Load().(string)
		status, body, _ := strings.Cut(raw, " ")
		var code int
		_, _ = fmt.Sscan(status, &code)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	})
	c := newClient(t, srv.URL, time.Second)
	for code, info := range codes {
		for _, shape := range shapes {
			current.Store(fmt.Sprint(shape.status) + " " + shape.body(code))
			_, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
			got := asAPIError(t, err)
			want := &APIError{StatusCode: shape.status, Code: code, Reason: "m", Class: info.Class, Marker: info.Marker}
			if diff := cmp.Diff(want, got, ignoreErr); diff != "" {
				t.Errorf("code %s, %s: APIError mismatch (-want +got):\n%s", code, shape.name, diff)
			}
		}
	}
	if n := requests.Load(); n != int64(len(codes)*len(shapes)) {
		t.Errorf("server saw %d requests, want %d", n, len(codes)*len(shapes))
	}
}

func TestSendRetryAfterDate(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		srv := newServer(t, answerWith(429, "", "", map[string]string{"Retry-After": tt.header}))
		c := newClient(t, srv.URL, time.Second)
		c.now = func() time.Time { return now }
		_, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
		got := asAPIError(t, err)
		if got.Class != ClassRateLimited || got.RetryAfter != tt.want {
			t.Errorf("Retry-After %q: class %q, RetryAfter %v; want rate_limited, %v", tt.header, got.Class, got.RetryAfter, tt.want)
		}
	}
}

func TestSendRefusesBadInputWithoutARequest(t *testing.T) {
	var requests atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.WriteString(w, successBody)
	})
	c := newClient(t, srv.URL, time.Second)
	tests := []struct {
		name        string
		destination string
		payload     string
		reason      string
	}{
		{"empty destination", "", `{"type":"text","message":"hi"}`, "empty destination"},
		{"empty payload", testDest, ``, "payload is not a JSON object"},
		{"blank payload", testDest, "  \n", "payload is not a JSON object"},
		{"not JSON", testDest, `nope`, "payload is not a JSON object"},
		{"array", testDest, `[{"type":"text"}]`, "payload is not a JSON object"},
		{"string", testDest, `"text"`, "payload is not a JSON object"},
		{"smuggled field", testDest, `{"type":"text"},"destination":"15550009999"`, "payload is not a JSON object"},
		{"truncated", testDest, `{"type":"text"`, "payload is not a JSON object"},
	}
	for _, tt := range tests {
		_, err := c.Send(context.Background(), tt.destination, json.RawMessage(tt.payload))
		want := &APIError{Class: ClassPermanent, Reason: tt.reason}
		if diff := cmp.Diff(want, asAPIError(t, err)); diff != "" {
			t.Errorf("%s: APIError mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

func TestSendQuotesDestination(t *testing.T) {
	var body []byte
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		_, _ = io.WriteString(w, successBody)
	})
	c := newClient(t, srv.URL, time.Second)
	for _, dest := range []string{`+15550002222`, `1"5`, `a\b`, "tab\there", "é<>&", "\x01"} {
		if _, err := c.Send(context.Background(), dest, json.RawMessage(`{"type":"text","message":"hi"}`)); err != nil {
			t.Fatalf("Send(%q): %v", dest, err)
		}
		var env struct {
			Channel     string          `json:"channel"`
			Destination string          `json:"destination"`
			Payload     json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("destination %q: envelope is not JSON: %v: %s", dest, err, body)
		}
		if env.Destination != dest || env.Channel != "whatsapp" || string(env.Payload) != `{"type":"text","message":"hi"}` {
			t.Errorf("destination %q: envelope %s", dest, body)
		}
	}
}

func TestSendConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "http://"+addr, time.Second)
	_, err = c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
	got := asAPIError(t, err)
	want := &APIError{Class: ClassRetryable, Reason: "request not sent"}
	if diff := cmp.Diff(want, got, ignoreErr); diff != "" {
		t.Errorf("APIError mismatch (-want +got):\n%s", diff)
	}
	if got.Err == nil {
		t.Error("Err is nil, want the transport cause")
	}
	if IsAmbiguous(err) {
		t.Error("a refused connection is ambiguous")
	}
}

func TestSendTimeoutAfterWriteIsAmbiguous(t *testing.T) {
	var received atomic.Bool
	srv := newStallingServer(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			received.Store(true)
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
	})
	c := newClient(t, srv.URL, 150*time.Millisecond)
	_, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
	got := asAPIError(t, err)
	want := &APIError{Class: ClassRetryable, Ambiguous: true, Reason: "no answer to the request: timeout"}
	if diff := cmp.Diff(want, got, ignoreErr); diff != "" {
		t.Errorf("APIError mismatch (-want +got):\n%s", diff)
	}
	if !received.Load() {
		t.Error("the server never read the request")
	}
	if !IsAmbiguous(err) {
		t.Error("IsAmbiguous = false")
	}
}

func TestSendSlowBody(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   APIError
	}{
		{
			// Headers of a success and then nothing: the upstream may well have
			// accepted the message.
			name: "success headers", status: 200,
			want: APIError{StatusCode: 200, Class: ClassRetryable, Ambiguous: true, Reason: "answer interrupted"},
		},
		{
			// A refusal stays a refusal even if its body never completes.
			name: "refusal headers", status: 400,
			want: APIError{StatusCode: 400, Class: ClassPermanent, Reason: "Bad Request"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newStallingServer(t, func(release <-chan struct{}) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Length", "200")
					w.WriteHeader(tt.status)
					_, _ = io.WriteString(w, `{"status":"submitted",`)
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
					case <-release:
					}
				}
			})
			c := newClient(t, srv.URL, 150*time.Millisecond)
			_, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
			got := asAPIError(t, err)
			if diff := cmp.Diff(&tt.want, got, ignoreErr); diff != "" {
				t.Errorf("APIError mismatch (-want +got):\n%s", diff)
			}
			if got.Err == nil {
				t.Error("Err is nil, want the read error")
			}
		})
	}
}

func TestSendCanceledBeforeSending(t *testing.T) {
	var requests atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.WriteString(w, successBody)
	})
	c := newClient(t, srv.URL, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Send(ctx, testDest, json.RawMessage(`{"type":"text","message":"hi"}`))
	got := asAPIError(t, err)
	if got.Class != ClassRetryable || got.Ambiguous {
		t.Errorf("class %q, ambiguous %v; want retryable, not ambiguous", got.Class, got.Ambiguous)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

func TestSendReusesConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(answerWith(200, "text/html", successBody, nil))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newClient(t, srv.URL, time.Second)
	for range 5 {
		if _, err := c.Send(context.Background(), testDest, json.RawMessage(`{"type":"text","message":"hi"}`)); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 sequential sends opened %d connections, want 1", n)
	}
}

func TestNewDefaults(t *testing.T) {
	c := New(Config{}, nil)
	if c.sendURL != DefaultBaseURL+"/whatsappmessage" {
		t.Errorf("send URL = %q", c.sendURL)
	}
	if c.timeout != DefaultTimeout || c.hc.Timeout != DefaultTimeout {
		t.Errorf("timeout = %v, http.Client timeout = %v; want %v", c.timeout, c.hc.Timeout, DefaultTimeout)
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T", c.hc.Transport)
	}
	if tr.MaxIdleConnsPerHost < 256 {
		t.Errorf("MaxIdleConnsPerHost = %d, want at least 256", tr.MaxIdleConnsPerHost)
	}

	hc := &http.Client{Timeout: time.Second}
	if c := New(Config{Timeout: 3 * time.Second}, hc); c.hc != hc || c.timeout != 3*time.Second {
		t.Errorf("New kept neither the given http.Client nor the timeout")
	}
}

func TestRegisterWebhook(t *testing.T) {
	const hookURL = "https://chatq.example.com/webhooks/chatarchitect/very-secret"
	var got struct {
		path, user, pass string
		body             map[string]string
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		got.path = r.URL.Path
		got.user, got.pass, _ = r.BasicAuth()
		if err := json.NewDecoder(r.Body).Decode(&got.body); err != nil {
			t.Errorf("request body: %v", err)
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `{"status":"success"}`)
	})
	c := newClient(t, srv.URL, time.Second)
	if err := c.RegisterWebhook(context.Background(), hookURL); err != nil {
		t.Fatalf("RegisterWebhook: %v", err)
	}
	want := map[string]string{
		"channel":          "whatsapp",
		"destination":      testSource,
		"webhook":          hookURL,
		"webhook_separate": "false",
	}
	if diff := cmp.Diff(want, got.body); diff != "" {
		t.Errorf("body mismatch (-want +got):\n%s", diff)
	}
	if got.path != "/webhook" || got.user != testAppID || got.pass != testAppSecret {
		t.Errorf("path %q, user %q: want /webhook with the app's credentials", got.path, got.user)
	}
}

func TestRegisterWebhookErrors(t *testing.T) {
	const hookURL = "https://chatq.example.com/webhooks/chatarchitect/very-secret"
	tests := []struct {
		name   string
		status int
		body   string
		class  Class
	}{
		{"auth failure", 401, `{"status":"error","message":"Authentication Failed"}`, ClassAccount},
		{"status error in a 200", 200, `{"status":"error","message":"Invalid webhook"}`, ClassRetryable},
		{"server error", 500, ``, ClassRetryable},
	}
	for _, tt := range tests {
		srv := newServer(t, answerWith(tt.status, "text/html", tt.body, nil))
		c := newClient(t, srv.URL, time.Second)
		err := c.RegisterWebhook(context.Background(), hookURL)
		if got := asAPIError(t, err); got.Class != tt.class {
			t.Errorf("%s: class %q, want %q", tt.name, got.Class, tt.class)
		}
		if strings.Contains(err.Error(), "very-secret") {
			t.Errorf("%s: error reveals the webhook secret: %v", tt.name, err)
		}
	}

	c := New(Config{BaseURL: "http://127.0.0.1:1"}, nil)
	if err := c.RegisterWebhook(context.Background(), hookURL); err == nil || !strings.Contains(err.Error(), "Source") {
		t.Errorf("RegisterWebhook without Source: %v, want an error naming Source", err)
	}
}

func TestTemplates(t *testing.T) {
	var body map[string]string
	var path string
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request body: %v", err)
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `{"status":"success","templates":[
			{"id":"6f5b0c1e","elementName":"welcome","languageCode":"en_US","category":"MARKETING",
			 "templateType":"TEXT","status":"APPROVED","data":"Welcome {{1}}!","vertical":"x","meta":"{}"},
			{"id":42,"elementName":"otp","languageCode":"en","category":"AUTHENTICATION",
			 "templateType":"TEXT","status":"REJECTED","data":"Code {{1}}","reason":"bad example","modifiedOn":1700000000000}
		]}`)
	})
	c := newClient(t, srv.URL, time.Second)
	got, err := c.Templates(context.Background())
	if err != nil {
		t.Fatalf("Templates: %v", err)
	}
	want := []Template{
		{ID: "6f5b0c1e", ElementName: "welcome", LanguageCode: "en_US", Category: "MARKETING", TemplateType: "TEXT", Status: TemplateApproved, Data: "Welcome {{1}}!"},
		{ID: "42", ElementName: "otp", LanguageCode: "en", Category: "AUTHENTICATION", TemplateType: "TEXT", Status: TemplateRejected, Data: "Code {{1}}", Reason: "bad example"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("templates mismatch (-want +got):\n%s", diff)
	}
	wantBody := map[string]string{"channel": "whatsapp", "destination": testSource, "getHSM": "true"}
	if diff := cmp.Diff(wantBody, body); diff != "" {
		t.Errorf("request body mismatch (-want +got):\n%s", diff)
	}
	if path != "/getHSM" {
		t.Errorf("path = %q, want /getHSM", path)
	}
}

func TestTemplatesError(t *testing.T) {
	srv := newServer(t, answerWith(403, "text/html", `{"status":"error","message":"Forbidden app"}`, nil))
	c := newClient(t, srv.URL, time.Second)
	_, err := c.Templates(context.Background())
	if got := asAPIError(t, err); got.Class != ClassAccount || got.Reason != "Forbidden app" {
		t.Errorf("error %v: want account with the upstream's reason", err)
	}
}

func TestSubmitTemplate(t *testing.T) {
	sub := TemplateSubmission{
		ElementName:  "welcome_offer",
		LanguageCode: "en_US",
		Category:     "MARKETING",
		Content:      "Welcome {{1}}! Your discount code is {{2}}.",
		Example:      "Welcome [John]! Your discount code is [12345].",
	}
	tests := []struct {
		name   string
		answer string
		want   Template
	}{
		{
			name:   "template in the answer",
			answer: `{"status":"success","template":{"id":"t-1","elementName":"welcome_offer","languageCode":"en_US","category":"MARKETING","templateType":"TEXT","status":"PENDING","data":"Welcome {{1}}! Your discount code is {{2}}."}}`,
			want:   Template{ID: "t-1", ElementName: "welcome_offer", LanguageCode: "en_US", Category: "MARKETING", TemplateType: "TEXT", Status: TemplatePending, Data: sub.Content},
		},
		{
			name:   "bare success",
			answer: `{"status":"success"}`,
			want:   Template{ElementName: "welcome_offer", LanguageCode: "en_US", Category: "MARKETING", TemplateType: "TEXT", Status: TemplatePending, Data: sub.Content},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body struct {
				Channel     string         `json:"channel"`
				Destination string         `json:"destination"`
				Submit      map[string]any `json:"submit_template"`
			}
			var path string
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				path = r.URL.Path
				if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
					t.Errorf("request body: %v", err)
				}
				_, _ = io.WriteString(w, tt.answer)
			})
			c := newClient(t, srv.URL, time.Second)
			got, err := c.SubmitTemplate(context.Background(), sub)
			if err != nil {
				t.Fatalf("SubmitTemplate: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("template mismatch (-want +got):\n%s", diff)
			}
			wantSubmit := map[string]any{
				"elementName": "welcome_offer", "languageCode": "en_US", "category": "MARKETING",
				"templateType": "TEXT", "content": sub.Content, "example": sub.Example,
			}
			if diff := cmp.Diff(wantSubmit, body.Submit); diff != "" {
				t.Errorf("submit_template mismatch (-want +got):\n%s", diff)
			}
			if path != "/submit_template" || body.Channel != "whatsapp" || body.Destination != testSource {
				t.Errorf("path %q, channel %q, destination %q", path, body.Channel, body.Destination)
			}
		})
	}
}

func TestSubmitTemplateRequiresFields(t *testing.T) {
	var requests atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.WriteString(w, `{"status":"success"}`)
	})
	c := newClient(t, srv.URL, time.Second)
	_, err := c.SubmitTemplate(context.Background(), TemplateSubmission{ElementName: "x", LanguageCode: "en", Category: "UTILITY"})
	if err == nil || !strings.Contains(err.Error(), "content is required") {
		t.Errorf("error = %v, want content is required", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("server saw %d requests, want none", n)
	}
}

func BenchmarkSend(b *testing.B) {
	srv := newServer(b, answerWith(200, "text/html", successBody, nil))
	c := newClient(b, srv.URL, 5*time.Second)
	payload := json.RawMessage(`{"type":"text","message":"Your code is 123456. It expires in 5 minutes."}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Send(context.Background(), testDest, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
