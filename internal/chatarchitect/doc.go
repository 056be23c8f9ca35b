// Package chatarchitect is chatq's client for the ChatArchitect REST API and
// its webhooks, and the one place that knows their wire format and
// WhatsApp's error codes.
//
// ChatArchitect documents little beyond its overview; its field names, event
// names and example ids are Gupshup's, so this package assumes Gupshup's
// WhatsApp behaviour underneath, and Meta's error codes beneath that. Each
// assumption lives in one place here, to be corrected against a live
// account:
//
//   - Endpoints and request bodies: the path constants and the request
//     structs in client.go (JSON bodies, Basic auth APP_ID:APP_SECRET).
//   - A send is accepted when a 2xx answer carries "messageId", whatever its
//     Content-Type; refusals are {"status":"error","message":...}, with an
//     error code at the top level or in a nested "error" (or "message")
//     object, as a number or a string: answer and errorDetail in client.go.
//   - The getHSM answer lists "templates"; the submit_template answer
//     carries the new "template" (assumed after Gupshup; Template, answer).
//   - What each HTTP status and error code means for chatq: classifyStatus
//     in errors.go, and codeTable in codes.go (each code's class and marker).
//   - Webhooks: Gupshup's v2 envelope and the overview's short form, event
//     ids and timestamps: ParseWebhook in webhook.go; where a status event's
//     pricing object sits and what it holds: Pricing; the shape of template
//     status webhooks: TemplateEvent.
package chatarchitect
