package poll_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/poll"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	poll.Until(t, time.Second, "third call", func() (bool, string) {
		calls++
		return calls == 3, fmt.Sprint(calls)
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

// fakeTB records a failure instead of ending the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f)
}

func TestUntilFailsWithTheLastState(t *testing.T) {
	tb := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != tb {
				panic(r)
			}
		}()
		poll.Until(tb, 50*time.Millisecond, "never", func() (bool, string) { return false, "still 0" })
	}()
	if !strings.Contains(tb.failed, "never: not after 50ms; last: still 0") {
		t.Errorf("failure = %q", tb.failed)
	}
}
