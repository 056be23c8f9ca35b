package enqueue

import (
	"time"

	"github.com/chatq/chatq/internal/callback"
)

// SignatureHeader is the header that signs chatq's status callbacks and
// forwarded inbound events: "t=<unix seconds>,v1=<hex HMAC-SHA256>", the
// HMAC keyed with CHATQ_CALLBACK_SECRET over t + "." + the raw body.
const SignatureHeader = callback.SignatureHeader

// Errors of VerifySignature, for errors.Is.
var (
	// ErrNoSignature: the header is missing or malformed.
	ErrNoSignature = callback.ErrNoSignature
	// ErrBadSignature: the signature does not match the body and secret:
	// the body was changed, or the request is not from chatq.
	ErrBadSignature = callback.ErrBadSignature
	// ErrStaleSignature: the signature is older (or newer) than the
	// tolerance: a replay.
	ErrStaleSignature = callback.ErrStaleSignature
)

// VerifySignature checks a callback's Chatq-Signature header against its
// raw body, exactly as received (before any JSON decoding), and the
// callback secret. The signature's time must be within tolerance of the
// receiver's clock; zero means five minutes. It returns nil for a genuine
// callback.
func VerifySignature(secret, header string, body []byte, tolerance time.Duration) error {
	return callback.Verify(secret, header, body, tolerance, time.Now())
}

// SignCallback returns the Chatq-Signature header chatq sends with body at
// t. Receivers use it to test their own verification.
func SignCallback(secret string, t time.Time, body []byte) string {
	return callback.Sign(secret, t, body)
}
