// Package faults is chatq's fault suite: it runs the real chatq binary (the
// API, two or more workers and the ChatArchitect sandbox) against a private
// redis-server, breaks one of them mid-run, and checks what the README's
// delivery guarantee promises: no message acknowledged by the API is lost,
// duplicates stay within their bound, every message ends in the status its
// destination calls for, and no status ever moves backwards.
//
// The package holds tests only. Run the suite with
//
//	make test-faults
//
// which sets CHATQ_TEST_FAULTS=1; without it the fault cases skip
// themselves, so that go test ./... stays quick. The end-to-end check that
// no secret nor message body reaches a log or a task payload runs either
// way. Both need redis-server on PATH (with CI=true its absence fails them).
package faults
