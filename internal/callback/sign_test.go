package callback_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/callback"
)

func TestSignAndVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1764064800, 0)
	body := []byte(`{"id":"01J","status":"delivered"}`)
	good := callback.Sign("s3cret", now, body)
	if !strings.HasPrefix(good, "t=1764064800,v1=") || len(good) != len("t=1764064800,v1=")+64 {
		t.Fatalf("signature %q", good)
	}
	tests := []struct {
		name   string
		secret string
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"genuine", "s3cret", good, body, now, nil},
		{"a little later", "s3cret", good, body, now.Add(4 * time.Minute), nil},
		{"tampered body", "s3cret", good, []byte(`{"id":"01J","status":"read"}`), now, callback.ErrBadSignature},
		{"other secret", "other", good, body, now, callback.ErrBadSignature},
		{"replayed later", "s3cret", good, body, now.Add(6 * time.Minute), callback.ErrStaleSignature},
		{"from the future", "s3cret", good, body, now.Add(-6 * time.Minute), callback.ErrStaleSignature},
		{"no header", "s3cret", "", body, now, callback.ErrNoSignature},
		{"no v1", "s3cret", "t=1764064800", body, now, callback.ErrNoSignature},
		{"bad time", "s3cret", strings.Replace(good, "t=1764064800", "t=soon", 1), body, now, callback.ErrNoSignature},
		{"time changed", "s3cret", strings.Replace(good, "t=1764064800", "t=1764064801", 1), body, now, callback.ErrBadSignature},
		{"rotated secrets", "s3cret", callback.Sign("old", now, body) + "," + strings.Split(good, ",")[1], body, now, nil},
		{"spaces", "s3cret", strings.ReplaceAll(good, ",", ", "), body, now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := callback.Verify(tt.secret, tt.header, tt.body, 0, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPublicAddresses(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true, "93.184.216.34": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "100.64.0.1": false, "0.0.0.0": false,
		"::": false, "224.0.0.1": false, "255.255.255.255": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
		"64:ff9b::a00:1": false, "198.18.0.1": false,
	}
	for addr, want := range tests {
		if got := callback.IsPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url     string
		private bool // refused as a private address
		ok      bool
	}{
		{"https://8.8.8.8/cb", false, true},
		{"https://[2001:4860:4860::8888]:8443/cb", false, true},
		{"http://127.0.0.1:8080/cb", true, false},
		{"http://[::1]/cb", true, false},
		{"http://169.254.169.254/latest/meta-data", true, false},
		{"http://10.0.0.7/cb", true, false},
		{"http://localhost:9/cb", true, false}, // resolved from the hosts file
		{"ftp://8.8.8.8/cb", false, false},
		{"not a url", false, false},
	}
	for _, tt := range tests {
		err := callback.CheckURL(context.Background(), nil, tt.url)
		if (err == nil) != tt.ok || errors.Is(err, callback.ErrPrivateAddress) != tt.private {
			t.Errorf("CheckURL(%s) = %v", tt.url, err)
		}
	}
}
