package callback

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a callback's signature.
const SignatureHeader = "Chatq-Signature"

// DefaultTolerance is how far a signature's time may be from the
// receiver's clock before Verify refuses it as a replay.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify, for errors.Is.
var (
	// ErrNoSignature: the header is missing or has no t= or v1= part.
	ErrNoSignature = errors.New("no chatq signature")
	// ErrBadSignature: no v1= part matches the body and the secret.
	ErrBadSignature = errors.New("chatq signature does not match the body")
	// ErrStaleSignature: the signature's time is too far from now.
	ErrStaleSignature = errors.New("chatq signature is too old (or from the future)")
)

// Sign returns the Chatq-Signature header value of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Verify checks that header is a valid signature of body with secret, made
// within tolerance of now (zero tolerance means DefaultTolerance). Several
// v1= parts are allowed, so that a sender can sign with an old and a new
// secret while the secret is rotated; one match is enough.
func Verify(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: t=%q is not a unix time", ErrNoSignature, ts)
	}
	// The body is checked first: a forged request learns nothing of the
	// clock check.
	want := []byte(mac(secret, ts, body))
	matched := false
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			matched = true
		}
	}
	if !matched {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStaleSignature
	}
	return nil
}
