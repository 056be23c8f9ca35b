// Package poll lets a test wait for an outcome: it checks a condition every
// few milliseconds until it holds or a deadline passes, so that the test
// waits as long as the outcome takes and no longer, instead of guessing with
// a sleep.
package poll

import (
	"testing"
	"time"
)

// Interval is how often Until checks its condition.
const Interval = 10 * time.Millisecond

// Until calls cond every Interval until it reports true, and fails tb if
// timeout passes first, with what and cond's last description of the
// state it saw.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() (done bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				tb.Fatalf("%s: not after %s; last: %s", what, timeout, state)
			}
			tb.Fatalf("%s: not after %s", what, timeout)
		}
		<-tick.C
	}
}
