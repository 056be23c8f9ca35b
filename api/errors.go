package api

import (
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/policy"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// Error is an answer that is not a success: its HTTP status and the body
// {"error":{"code","message","field"}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string { return e.Message }

func errorf(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// errorCodes is every error code the API answers, with its HTTP status:
// one code means one thing. README.md's HTTP API section and openapi.yaml
// list the same; the OpenAPI test holds every error answer to this table.
var errorCodes = map[string]int{
	"invalid_request":              http.StatusBadRequest,       // bad input; field names it
	"unauthorized":                 http.StatusUnauthorized,     // no key, or a wrong one
	"forbidden":                    http.StatusForbidden,        // an admin route asked with a tenant key
	"not_found":                    http.StatusNotFound,         // no such route, message, batch or suppression
	"method_not_allowed":           http.StatusMethodNotAllowed, // the path takes other methods (Allow names them)
	"idempotency_conflict":         http.StatusConflict,         // the idempotency key was used for another body
	"status_conflict":              http.StatusConflict,         // the message's status no longer allows it (too late to cancel)
	"sender_exists":                http.StatusConflict,         // a sender with this number exists already
	"sender_from_environment":      http.StatusConflict,         // the sender is defined by CHATQ_CA_*; change it there
	"secrets_key_missing":          http.StatusConflict,         // senders cannot be stored without CHATQ_SECRETS_KEY
	"body_too_large":               http.StatusRequestEntityTooLarge,
	"unsupported_media_type":       http.StatusUnsupportedMediaType, // the body is not JSON
	policy.CodeSuppressed:          http.StatusUnprocessableEntity,
	policy.CodeWindowClosed:        http.StatusUnprocessableEntity,
	policy.CodeUnknownTemplate:     http.StatusUnprocessableEntity,
	policy.CodeTemplateNotApproved: http.StatusUnprocessableEntity,
	policy.CodeTemplateParams:      http.StatusUnprocessableEntity,
	policy.CodeCallbackURL:         http.StatusUnprocessableEntity,
	policy.CodeUSMarketing:         http.StatusUnprocessableEntity,
	policy.CodeCountryRefused:      http.StatusUnprocessableEntity,
	"unknown_sender":               http.StatusUnprocessableEntity, // the message names a sender the key's tenant does not have
	"internal":                     http.StatusInternalServerError, // a defect; logged, never bad input
	"upstream_error":               http.StatusBadGateway,          // ChatArchitect failed a call passed through to it
	"unavailable":                  http.StatusServiceUnavailable,  // Redis unreachable; try again
}

// Errors the handlers return as they are.
var (
	errUnauthorized = errorf(http.StatusUnauthorized, "unauthorized", "a valid API key is required: Authorization: Bearer <key>")
	errNotFound     = errorf(http.StatusNotFound, "not_found", "no such route")
	errNotJSON      = errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be JSON: Content-Type: application/json")
	errForbidden    = errorf(http.StatusForbidden, "forbidden", "this route needs an admin key (one of CHATQ_API_KEYS); a tenant key cannot use it")
)

// toError maps any error onto the answer a client sees. This is the one
// table of error to HTTP status; only the unexpected is logged, and it is
// shown to the client as a generic message.
func toError(err error, log *zap.Logger) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ve *enqueue.ValidationError
	var pe *enqueue.PolicyError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &ve):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: ve.Error(), Field: ve.Field}
	case errors.As(err, &pe):
		return &Error{Status: http.StatusUnprocessableEntity, Code: pe.Code, Message: pe.Error(), Field: pe.Field}
	case errors.Is(err, policy.ErrNotSuppressed):
		return errorf(http.StatusNotFound, "not_found", "this destination is not suppressed")
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "the body is larger than the limit of this route")
	case errors.Is(err, store.ErrIdempotencyConflict):
		return &Error{Status: http.StatusConflict, Code: "idempotency_conflict", Message: "this idempotency key was used for a different message", Field: "idempotency_key"}
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "no message with this id")
	case errors.Is(err, senders.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "no sender with this number")
	case errors.Is(err, senders.ErrExists):
		return &Error{Status: http.StatusConflict, Code: "sender_exists", Message: "a sender with this number exists already", Field: "number"}
	case errors.Is(err, senders.ErrNoSecretsKey):
		return errorf(http.StatusConflict, "secrets_key_missing", errorText(err))
	case errors.Is(err, senders.ErrFromEnvironment):
		return errorf(http.StatusConflict, "sender_from_environment", errorText(err))
	case errors.Is(err, tenants.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "no key with this id")
	case errors.Is(err, store.ErrRefused):
		return errorf(http.StatusConflict, "status_conflict", err.Error())
	case isUnavailable(err):
		log.Warn("redis unavailable", zap.Error(err))
		return errorf(http.StatusServiceUnavailable, "unavailable", "chatq cannot reach its store right now; try again")
	}
	log.Error("internal error", zap.Error(err))
	return errorf(http.StatusInternalServerError, "internal", "internal error")
}

// errorText is the message of the sentinel at the end of err's chain:
// what went wrong, without the operation's context (which may hold ids).
func errorText(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// requestLog is the logger of the request w answers, which the server's
// ServeHTTP passed in w; else log.
func requestLog(w http.ResponseWriter, log *zap.Logger) *zap.Logger {
	if tw, ok := w.(*tracedWriter); ok {
		return tw.log
	}
	return log
}

// writeError answers err as JSON. It logs with the request's logger when
// the server's ServeHTTP passed one in w.
func writeError(w http.ResponseWriter, err error, log *zap.Logger) {
	e := toError(err, requestLog(w, log))
	// The dashboard sets its own Basic challenge, which a browser needs
	// to ask for the password.
	if e.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatq"`)
	}
	writeJSON(w, e.Status, struct {
		Error *Error `json:"error"`
	}{e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
