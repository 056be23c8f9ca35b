package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
)

// SendRate measures how fast a worker of concurrency sends brings n queued
// messages to "submitted": from the worker's start to the last record's
// "submitted" time in its history. The sandbox answers at once and no
// webhook is registered, so nothing but the sends themselves runs.
func SendRate(ctx context.Context, env *Env, n, concurrency int) (Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, err
	}
	s := newStack(env)
	defer s.close()
	if err := s.startSandbox(sandbox.Config{}); err != nil {
		return Rate{}, err
	}
	client := s.enqueueClient(72, enqueue.Config{})
	ids, err := enqueueAll(ctx, client, 0, n, "")
	if err != nil {
		return Rate{}, fmt.Errorf("send rate: %w", err)
	}
	start := time.Now()
	if _, err := s.startWorker(workerConfig(concurrency)); err != nil {
		return Rate{}, fmt.Errorf("send rate: %w", err)
	}
	if err := waitCount(ctx, "send rate: sends accepted", &s.sent.n, int64(n), time.Duration(n)*5*time.Millisecond+time.Minute); err != nil {
		return Rate{}, err
	}
	st := store.New(s.redis(4), store.Config{})
	end, err := lastSubmitted(ctx, st, ids, time.Minute)
	if err != nil {
		return Rate{}, fmt.Errorf("send rate: %w", err)
	}
	r := Rate{Count: n, Elapsed: end.Sub(start)}
	env.logf("send rate: %d messages to submitted, concurrency %d, in %s: %.0f/s", n, concurrency, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// enqueueAll enqueues n text messages, numbered from first, in batches of
// 1000 and returns their ids.
func enqueueAll(ctx context.Context, client *enqueue.Client, first, n int, prio enqueue.Priority) ([]string, error) {
	ids := make([]string, 0, n)
	for _, b := range splitBatches(n, 1000) {
		res, err := client.SendBatch(ctx, textMessages(first+b.from, b.n, prio))
		if err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
		for _, r := range res {
			if r.Err != nil {
				return nil, fmt.Errorf("enqueue: %w", r.Err)
			}
			ids = append(ids, r.Record.ID)
		}
	}
	return ids, nil
}

// waitRecords polls the records of ids until done holds for every one and
// returns them, in the order of ids. Each round reads only the records not
// done yet. After timeout the error is a *notDoneError, and the records
// not done are nil.
func waitRecords(ctx context.Context, st *store.Store, ids []string, timeout time.Duration, done func(*store.Record) bool) ([]*store.Record, error) {
	out := make([]*store.Record, len(ids))
	pending := make([]int, len(ids))
	for i := range pending {
		pending[i] = i
	}
	deadline := time.Now().Add(timeout)
	for {
		var still []int
		for from := 0; from < len(pending); from += 1000 {
			chunk := pending[from:min(from+1000, len(pending))]
			want := make([]string, len(chunk))
			for j, i := range chunk {
				want[j] = ids[i]
			}
			recs, err := st.GetMany(ctx, want)
			if err != nil {
				return nil, err
			}
			for j, r := range recs {
				if r != nil && done(r) {
					out[chunk[j]] = r
					continue
				}
				still = append(still, chunk[j])
			}
		}
		pending = still
		if len(pending) == 0 {
			return out, nil
		}
		if time.Now().After(deadline) {
			e := &notDoneError{pending: len(pending), total: len(ids), timeout: timeout, example: "missing"}
			if r, _ := st.Get(ctx, ids[pending[0]]); r != nil {
				e.example = string(r.Status)
			}
			return out, e
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// notDoneError says how many records were not done in time.
type notDoneError struct {
	pending, total int
	timeout        time.Duration
	example        string
}

func (e *notDoneError) Error() string {
	return fmt.Sprintf("%d of %d records not done after %s (one is %s)", e.pending, e.total, e.timeout, e.example)
}

// historyAt returns when a record's history first shows status st.
func historyAt(r *store.Record, st store.Status) (time.Time, bool) {
	for _, h := range r.History {
		if h.Status == st {
			return h.At, true
		}
	}
	return time.Time{}, false
}

// lastSubmitted waits until every record reached "submitted" and returns
// the latest time one did.
func lastSubmitted(ctx context.Context, st *store.Store, ids []string, timeout time.Duration) (time.Time, error) {
	recs, err := waitRecords(ctx, st, ids, timeout, func(r *store.Record) bool {
		_, ok := historyAt(r, store.Submitted)
		return ok
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("wait for submitted: %w", err)
	}
	var last time.Time
	for _, r := range recs {
		if at, _ := historyAt(r, store.Submitted); at.After(last) {
			last = at
		}
	}
	return last, nil
}
