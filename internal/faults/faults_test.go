package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/store"
)

// EnvFaults turns the fault cases on (make test-faults sets it).
const EnvFaults = "CHATQ_TEST_FAULTS"

// TestFaults runs each fault case on a stack of its own, one after the
// other (they share a small machine), and prints the summary table.
func TestFaults(t *testing.T) {
	if os.Getenv(EnvFaults) != "1" {
		t.Skipf("the fault suite runs with make test-faults (%s=1); it takes a few minutes", EnvFaults)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, r *report)
	}{
		{"worker SIGKILL", workerKilled},
		{"worker SIGKILL, fast recovery", fastRecovery},
		{"redis SIGKILL", redisKilled},
		{"redis down 45s", redisDown},
		{"upstream chaos", upstreamChaos},
		{"api SIGKILL mid-batch", apiKilledMidBatch},
	}
	var reports []*report
	t.Cleanup(func() { printTable(os.Stdout, reports) })
	for _, c := range cases {
		r := &report{name: c.name}
		r.passed = t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			reports = append(reports, r) // only the cases -run selects
			start := time.Now()
			defer func() { r.took, r.skipped = time.Since(start), t.Skipped() }()
			c.run(t, r)
			r.completed = true
			r.check(t)
		})
	}
}

// workerKilled kills one of two workers with SIGKILL while 3,000 messages
// flow, and starts another. The sends it had in flight are taken for lost
// once its heartbeat lapses (3s), and handed to a new task by the worker
// that sweeps the due index; a send the sandbox accepted just before the
// kill, whose acceptance was never recorded, goes out again: a duplicate,
// at most one per send in flight, and each counted by chatq as possible.
func workerKilled(t *testing.T, r *report) {
	const concurrency = 20
	s := newStack(t, stackConfig{env: map[string]string{"CHATQ_SANDBOX_LATENCY": "50ms"}})
	victim := s.startWorker("worker-1", concurrency)
	w2 := s.startWorker("worker-2", concurrency)
	msgs := newMessages("worker-kill", 3000, "bulk", nil)
	s.sendBatches(msgs, 500)

	var atKill int64
	s.waitFor("a third of the messages to be accepted", time.Minute, func() (bool, error) {
		st, err := s.sandboxStats()
		atKill = st.Accepted
		return err == nil && st.Accepted >= int64(len(msgs)/3), nil
	})
	killedAt := time.Now()
	s.kill(victim)
	w3 := s.startWorker("worker-3", concurrency)
	s.settle(msgs, 3*time.Minute)
	s.checkAlive()

	r.outcome = s.evaluate(msgs)
	r.bound, r.boundWhy = concurrency, fmt.Sprintf("the killed worker's sends in flight (CHATQ_CONCURRENCY=%d)", concurrency)
	waits := orphanWaits(r.records, killedAt)
	if len(waits) > concurrency {
		t.Errorf("%d orphans, more than the killed worker's %d send slots", len(waits), concurrency)
	}
	// Only a send on the wire at the kill can go out twice.
	if r.duplicated > len(waits) {
		t.Errorf("%d duplicates, more than the %d sends in flight at the kill", r.duplicated, len(waits))
	}
	counted := s.checkCounted(r, w2, w3)
	r.note("killed worker-1 with %d of %d messages accepted upstream; %d of its sends were in flight, and %d of those had been accepted before the kill (sent again: the duplicates; %.0f counted as possible)",
		atKill, len(msgs), len(waits), r.duplicated, counted)
	if len(waits) > 0 {
		r.note("those %d were submitted %s to %s after the kill (median %s), through the due index once worker-1's heartbeat lapsed",
			len(waits), secs(waits[0]), secs(waits[len(waits)-1]), secs(waits[len(waits)/2]))
	}
}

// fastRecovery kills a worker with 500 sends on the wire (the sandbox
// answers after 2.5s) while a second, idle one runs, and measures the time
// from the kill to the last of its orphans submitted: the heartbeat's
// lapse (3s), the sweeper's next read (1s) and a send. It must be 10s at
// most.
func fastRecovery(t *testing.T, r *report) {
	const concurrency = 500
	s := newStack(t, stackConfig{env: map[string]string{"CHATQ_SANDBOX_LATENCY": "2500ms", "CHATQ_CA_TIMEOUT": "10s"}})
	victim := s.startWorker("worker-1", concurrency)
	msgs := newMessages("fast-recovery", concurrency, "transactional", nil)
	s.sendBatches(msgs, concurrency)
	s.waitFor("every message on worker-1's wire", time.Minute, func() (bool, error) {
		st, err := s.sandboxStats()
		return err == nil && st.Requests >= concurrency, nil
	})
	w2 := s.startWorker("worker-2", concurrency)
	st, err := s.sandboxStats()
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	s.kill(victim)
	s.settle(msgs, 2*time.Minute)
	s.checkAlive()

	r.outcome = s.evaluate(msgs)
	r.bound, r.boundWhy = concurrency, fmt.Sprintf("the killed worker's sends in flight (CHATQ_CONCURRENCY=%d)", concurrency)
	waits := orphanWaits(r.records, killedAt)
	if len(waits) == 0 {
		t.Fatal("no orphans: the kill came too late")
	}
	last := waits[len(waits)-1]
	if last > 10*time.Second {
		t.Errorf("the last orphan was submitted %s after the kill, more than 10s", secs(last))
	}
	counted := s.checkCounted(r, w2)
	r.note("killed worker-1 with %d sends on the wire (sandbox latency 2.5s; %d answered before the kill), worker-2 idle; %d of them reached the sandbox and were sent again (the duplicates; %.0f counted as possible)",
		len(waits), st.Accepted, r.duplicated, counted)
	r.note("from the kill to the last orphan submitted: %s (first %s, median %s); bound 10s",
		secs(last), secs(waits[0]), secs(waits[len(waits)/2]))
}

// checkCounted fails the case when the sandbox saw more duplicates than
// the live workers counted as possible, and returns their count.
func (s *stack) checkCounted(r *report, workers ...*proc) float64 {
	s.t.Helper()
	counted, err := s.possibleDuplicates(workers...)
	if err != nil {
		s.t.Fatalf("read chatq_possible_duplicates_total: %v", err)
	}
	if float64(r.duplicated) > counted {
		s.t.Errorf("%d duplicates, but only %.0f counted by chatq as possible", r.duplicated, counted)
	}
	return counted
}

// orphanWaits finds the sends the kill interrupted (a record taken up
// before the kill and taken up again after it, before it was submitted)
// and returns how long after the kill each was submitted, shortest first.
func orphanWaits(recs []*store.Record, killedAt time.Time) []time.Duration {
	var waits []time.Duration
	for _, r := range recs {
		if r == nil {
			continue
		}
		before, again := false, false
		for _, e := range r.History {
			switch {
			case !e.At.After(killedAt):
				before = e.Status == store.Sending
			case before && e.Status == store.Sending:
				again = true
			case again && e.Status == store.Submitted:
				waits = append(waits, e.At.Sub(killedAt))
				before = false
			}
		}
	}
	slices.Sort(waits)
	return waits
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// redisKilled kills Redis (appendfsync always) with SIGKILL while
// producers post messages one by one, keeps it down a few seconds and
// restarts it. Producers retry a 503 with the same idempotency key, as a
// careful client does. Nothing acknowledged may be lost; the API must
// answer 503 (not accept, not 500) and /readyz must say not ready while
// Redis is away; API and workers must carry on by themselves after.
func redisKilled(t *testing.T, r *report) {
	const concurrency = 20
	s := newStack(t, stackConfig{aof: true, env: map[string]string{"CHATQ_SANDBOX_LATENCY": "20ms"}})
	s.startWorker("worker-1", concurrency)
	s.startWorker("worker-2", concurrency)
	msgs := newMessages("redis-kill", 3000, "transactional", nil)

	var acked, again, unavailable atomic.Int64
	var mu sync.Mutex
	other := map[string]int{} // answers that are neither an acknowledgement nor a 503
	next := make(chan *message)
	var producers sync.WaitGroup
	for range 8 {
		producers.Go(func() {
			for m := range next {
				deadline := time.Now().Add(2 * time.Minute)
				for {
					code, body, err := s.call(http.MethodPost, "/v1/messages", m.body(), "")
					if err == nil && (code == http.StatusAccepted || code == http.StatusOK) {
						var rec store.Record
						if json.Unmarshal(body, &rec) == nil && rec.ID != "" {
							m.id = rec.ID
							acked.Add(1)
							if code == http.StatusOK {
								again.Add(1)
							}
							break
						}
					}
					switch {
					case err == nil && code == http.StatusServiceUnavailable:
						unavailable.Add(1)
					case s.ctx.Err() != nil:
						return
					default:
						mu.Lock()
						if err != nil {
							other[err.Error()]++
						} else {
							other[fmt.Sprintf("%d %s", code, strings.TrimSpace(string(body)))]++
						}
						mu.Unlock()
					}
					if time.Now().After(deadline) {
						break
					}
					// A client's backoff before it retries.
					select {
					case <-s.ctx.Done():
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	// About 300 messages a second, so that the outage falls mid-run.
	go func() {
		defer close(next)
		tick := time.NewTicker(time.Second / 300)
		defer tick.Stop()
		for _, m := range msgs {
			select {
			case <-s.ctx.Done():
				return
			case <-tick.C:
			}
			next <- m
		}
	}()
	ready := &readiness{}
	stopWatch := ready.watch(s)
	defer stopWatch()

	s.waitFor("a third of the messages to be acknowledged", time.Minute, func() (bool, error) {
		return acked.Load() >= int64(len(msgs)/3), nil
	})
	before := unavailable.Load()
	killedAt := time.Now()
	s.redis.Stop(t)
	s.waitFor("/readyz to say not ready and a POST to be answered 503", 20*time.Second, func() (bool, error) {
		return ready.sawDown.Load() && unavailable.Load() > before, nil
	})
	// The outage lasts at least three seconds whatever the checks took.
	<-time.After(time.Until(killedAt.Add(3 * time.Second)))
	ackedDuring := acked.Load()
	s.redis.Restart(t)
	restartedAt := time.Now()
	s.waitFor("/readyz to say ready again", 30*time.Second, func() (bool, error) {
		return ready.upAfter(restartedAt), nil
	})
	readyAgain := ready.lastUp()

	done := make(chan struct{})
	go func() { producers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("producers not done 3 minutes after the restart")
	}
	s.settle(msgs, 3*time.Minute)
	s.checkAlive()

	r.outcome = s.evaluate(msgs)
	r.bound, r.boundWhy = 2*concurrency, fmt.Sprintf("the workers' sends in flight at the crash (2 x %d); none expected", concurrency)
	mu.Lock()
	defer mu.Unlock()
	for answer, n := range other {
		t.Errorf("%d answers neither an acknowledgement nor a 503: %s", n, answer)
		r.mismatched += n
	}
	resumed := firstAfter(r.records, store.Submitted, restartedAt)
	late := lateAfter(r.records, restartedAt.Add(20*time.Second))
	r.note("Redis down for %s (SIGKILL, then restart with its append-only file); %d of %d messages acknowledged before the crash",
		secs(restartedAt.Sub(killedAt)), ackedDuring, len(msgs))
	r.note("meanwhile: %d POSTs answered 503 and were retried with their key (%d of the retries answered 200: stored before the 503), none answered otherwise; /readyz answered 503 from %s after the crash",
		unavailable.Load(), again.Load(), ready.firstDownAfter(killedAt))
	r.note("after the restart: /readyz ready in %s, workers submitting again in %s, without any restart of theirs; %d webhooks the API could not store meanwhile (503) were redelivered",
		secs(readyAgain.Sub(restartedAt)), secs(resumed.Sub(restartedAt)), s.relay.queued.Load())
	if len(late) > 0 {
		r.note("%d messages whose task asynq could not hand back during the outage were submitted only %s to %s after the restart, once asynq's recoverer found them",
			len(late), secs(late[0].Sub(restartedAt)), secs(late[len(late)-1].Sub(restartedAt)))
	}
}

// redisDown stops Redis for 45s, longer than asynq's 30s lease, with
// sends on the wire (the sandbox answers after 1s): asynq cancels the
// handlers and hands their tasks back, and the acceptances Redis missed
// wait in the workers' memory until it is back. Nothing may be lost, and
// every duplicate must be one chatq counted as possible.
func redisDown(t *testing.T, r *report) {
	const concurrency = 50
	s := newStack(t, stackConfig{aof: true, env: map[string]string{"CHATQ_SANDBOX_LATENCY": "1s", "CHATQ_CA_TIMEOUT": "5s"}})
	w1 := s.startWorker("worker-1", concurrency)
	w2 := s.startWorker("worker-2", concurrency)
	msgs := newMessages("redis-down", 1000, "transactional", nil)
	s.sendBatches(msgs, 500)
	var atStop int64
	s.waitFor("200 messages accepted", time.Minute, func() (bool, error) {
		st, err := s.sandboxStats()
		atStop = st.Accepted
		return err == nil && st.Accepted >= 200, nil
	})
	stoppedAt := time.Now()
	s.redis.Stop(t)
	<-time.After(45 * time.Second)
	s.redis.Restart(t)
	restartedAt := time.Now()
	s.settle(msgs, 3*time.Minute)
	s.checkAlive()

	r.outcome = s.evaluate(msgs)
	r.bound, r.boundWhy = 2*concurrency, fmt.Sprintf("the workers' sends in flight at the stop (2 x %d)", concurrency)
	counted := s.checkCounted(r, w1, w2)
	late := s.countInLogs("recorded an acceptance late")
	resumed := firstAfter(r.records, store.Submitted, restartedAt)
	r.note("Redis down for %s (SIGKILL, restart with its append-only file) with %d of %d messages accepted and up to %d sends on the wire",
		secs(restartedAt.Sub(stoppedAt)), atStop, len(msgs), 2*concurrency)
	r.note("after the restart: %d acceptances kept in the workers' memory recorded, workers submitting again in %s; %d duplicates, %.0f counted as possible",
		late, secs(resumed.Sub(restartedAt)), r.duplicated, counted)
}

// lateAfter returns the times of the submitted entries after t, earliest
// first.
func lateAfter(recs []*store.Record, t time.Time) []time.Time {
	var late []time.Time
	for _, r := range recs {
		if r == nil {
			continue
		}
		for _, e := range r.History {
			if e.Status == store.Submitted && e.Note == "" && e.At.After(t) {
				late = append(late, e.At)
			}
		}
	}
	slices.SortFunc(late, time.Time.Compare)
	return late
}

// readiness watches /readyz.
type readiness struct {
	mu      sync.Mutex
	sawDown atomic.Bool
	down    []time.Time
	up      []time.Time
}

func (rd *readiness) watch(s *stack) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			code, _, err := s.call(http.MethodGet, "/readyz", nil, "-")
			now := time.Now()
			rd.mu.Lock()
			if err == nil && code == http.StatusOK {
				rd.up = append(rd.up, now)
			} else {
				rd.down = append(rd.down, now)
				rd.sawDown.Store(true)
			}
			rd.mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (rd *readiness) upAfter(t time.Time) bool {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return len(rd.up) > 0 && rd.up[len(rd.up)-1].After(t)
}

// lastUp is the first 200 after the last 503.
func (rd *readiness) lastUp() time.Time {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	var lastDown time.Time
	if len(rd.down) > 0 {
		lastDown = rd.down[len(rd.down)-1]
	}
	for _, u := range rd.up {
		if u.After(lastDown) {
			return u
		}
	}
	return time.Time{}
}

func (rd *readiness) firstDownAfter(t time.Time) string {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	for _, d := range rd.down {
		if d.After(t) {
			return secs(d.Sub(t))
		}
	}
	return "never"
}

// firstAfter is the earliest history entry of status st after t.
func firstAfter(recs []*store.Record, st store.Status, t time.Time) time.Time {
	var first time.Time
	for _, r := range recs {
		if r == nil {
			continue
		}
		for _, e := range r.History {
			if e.Status == st && e.At.After(t) && (first.IsZero() || e.At.Before(first)) {
				first = e.At
			}
		}
	}
	return first
}

// upstreamChaos runs 3,000 messages through a hostile upstream: 10% of
// sends answered 500, 2% to destinations whose first attempt hangs until
// the client gives up, 429 storms (a 20/s limit switched on for 1.5s every
// 4s), 20% of webhooks sent twice and 20% of messages with their webhooks
// shuffled, and a few of each other magic destination. Every message must
// end in its documented status and no history may move backwards.
func upstreamChaos(t *testing.T, r *report) {
	s := newStack(t, stackConfig{})
	s.configureSandbox(map[string]any{"error_ratio": 0.1, "duplicate_ratio": 0.2, "reorder_ratio": 0.2})
	w1 := s.startWorker("worker-1", 25)
	w2 := s.startWorker("worker-2", 25)
	msgs := newMessages("chaos", 3000, "bulk", []magic{
		{suffix: "0007", count: 60, want: store.Read, accepted: true},      // hangs first
		{suffix: "0003", count: 15, want: store.Read, accepted: true},      // 500 first
		{suffix: "0004", count: 15, want: store.Read, accepted: true},      // 429 first
		{suffix: "0001", count: 15, want: store.Failed, accepted: true},    // undeliverable
		{suffix: "0005", count: 15, want: store.Delivered, accepted: true}, // never read
		{suffix: "0006", count: 10, want: store.Failed, accepted: true},    // opted out
		{suffix: "0008", count: 10, want: store.Failed, accepted: true},    // window closed
		{suffix: "0002", count: 10, want: store.Dead, accepted: false},     // invalid destination
	})
	// Shuffled, so that magic and ordinary messages mix in the queue.
	shuffled := slices.Clone(msgs)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	var storms atomic.Int64
	stopStorms := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if err := s.sandboxCall(http.MethodPut, "/sandbox/config", map[string]any{"rate": 20}, nil); err != nil {
				return
			}
			storms.Add(1)
			select {
			case <-stopStorms:
			case <-time.After(1500 * time.Millisecond):
			}
			if err := s.sandboxCall(http.MethodPut, "/sandbox/config", map[string]any{"rate": 0}, nil); err != nil {
				return
			}
			select {
			case <-stopStorms:
				return
			case <-time.After(2500 * time.Millisecond):
			}
		}
	})
	s.sendBatches(shuffled, 250)
	s.settle(msgs, 3*time.Minute)
	close(stopStorms)
	wg.Wait()
	s.checkAlive()

	r.outcome = s.evaluate(msgs)
	possible := s.countInLogs(`"possible_duplicate":true`)
	counted, err := s.possibleDuplicates(w1, w2)
	if err != nil {
		t.Error(err)
	}
	if int(counted) != possible {
		t.Errorf("chatq_possible_duplicates_total is %v, but the logs have %d possible_duplicate lines", counted, possible)
	}
	r.bound, r.boundWhy = possible, fmt.Sprintf("sends that timed out after the request was written (%d possible_duplicate log lines, chatq_possible_duplicates_total %v)", possible, counted)
	st, err := s.sandboxStats()
	if err != nil {
		t.Fatal(err)
	}
	r.note("upstream: %d requests for %d messages: %d answered 500, %d answered 429 in %d storms, %d hung until the 1s timeout",
		st.Requests, len(msgs), st.ServerErrors, st.Throttled, storms.Load(), st.Hung)
	r.note("webhooks: %d sent, %d of them extra copies; %d messages with shuffled webhooks (20%%)", st.WebhooksSent, st.WebhooksDuplicated, len(msgs)/5)
	if st.Hung == 0 || st.ServerErrors == 0 || st.Throttled == 0 || st.WebhooksDuplicated == 0 {
		t.Errorf("the chaos did not happen: %+v", st)
	}
}

// apiKilledMidBatch kills the API with SIGKILL while it stores a batch of
// 1,000 messages with per-item idempotency keys, three times at three
// points (after claiming the keys, after writing the records, while
// enqueueing the tasks), restarts it and sends the same batch twice more.
// Both answers must carry, for every item, the id the first attempt
// claimed, and nothing may be sent twice.
func apiKilledMidBatch(t *testing.T, r *report) {
	s := newStack(t, stackConfig{})
	s.startWorker("worker-1", 25)
	s.startWorker("worker-2", 25)
	var all []*message
	points := []struct {
		name    string
		reached func(st batchState) bool
	}{
		{"keys claimed", func(st batchState) bool { return st.claimed > 0 }},
		{"records written", func(st batchState) bool { return st.records > 0 }},
		{"tasks enqueued", func(st batchState) bool { return st.tasks > 0 }},
	}
	for round, point := range points {
		msgs := newMessages(fmt.Sprintf("api-kill-%d", round+1), 1000, "transactional", nil)
		all = append(all, msgs...)
		answered := make(chan error, 1)
		go func() {
			_, err := s.postBatch(msgs)
			answered <- err
		}()
		var at batchState
		s.waitFor("the batch to reach "+point.name, 30*time.Second, func() (bool, error) {
			st, err := s.batchState(msgs)
			at = st
			return err == nil && point.reached(st), err
		})
		s.kill(s.api)
		if err := <-answered; err == nil {
			r.note("round %d: the batch was answered before the kill", round+1)
		}
		after, err := s.batchState(msgs)
		if err != nil {
			t.Fatal(err)
		}
		s.startAPI()

		first, err := s.postBatch(msgs)
		if err != nil {
			t.Fatalf("round %d: resent batch: %v", round+1, err)
		}
		again, err := s.postBatch(msgs)
		if err != nil {
			t.Fatalf("round %d: batch sent a third time: %v", round+1, err)
		}
		created := 0
		for i, m := range msgs {
			m.id = first[i].ID
			if claimed := after.ids[i]; claimed != "" && claimed != m.id {
				t.Errorf("round %d item %d: resent batch answered id %s, the key was claimed for %s", round+1, i, m.id, claimed)
			}
			if again[i].ID != m.id {
				t.Errorf("round %d item %d: third answer id %s, second %s", round+1, i, again[i].ID, m.id)
			}
			if again[i].Created == nil || *again[i].Created {
				t.Errorf("round %d item %d: third answer created a message", round+1, i)
			}
			if first[i].Created != nil && *first[i].Created {
				created++
			}
		}
		r.note("round %d: killed at %q (claims %d, records %d, tasks %d; after the kill %d/%d/%d); resent: same ids for all %d items, %d records created by the resend, third send created none",
			round+1, point.name, at.claimed, at.records, at.tasks, after.claimed, after.records, after.tasks, len(msgs), created)
	}
	s.settle(all, 3*time.Minute)
	s.checkAlive()
	r.outcome = s.evaluate(all)
	r.bound, r.boundWhy = 0, "idempotency keys: nothing may be sent twice"
	once := 0
	for i, rec := range r.records {
		if rec == nil {
			continue
		}
		var applied []store.Status
		for _, e := range rec.History {
			if e.Note == "" && (e.Status == store.Submitted || e.Status == store.Read) {
				applied = append(applied, e.Status)
			}
		}
		if diff := cmp.Diff([]store.Status{store.Submitted, store.Read}, applied); diff != "" || rec.Attempts != 1 {
			t.Errorf("%s: %d attempts, submitted and read applied %v, want once each", all[i].key, rec.Attempts, applied)
			continue
		}
		once++
	}
	r.note("%d of %d records: one attempt, submitted once, read once", once, len(all))
	if swept := sweptWaits(r.records); len(swept) > 0 {
		r.note("%d records left without a task by a kill were enqueued by the workers' sweeper after %s to %s",
			len(swept), secs(swept[0]), secs(swept[len(swept)-1]))
	}
}

// batchState is how far the API got with a batch: keys claimed, records
// written, tasks enqueued (or already taken by a worker); ids are the ids
// claimed by each item's key.
type batchState struct {
	claimed, records, tasks int
	ids                     []string
}

func (s *stack) batchState(msgs []*message) (batchState, error) {
	st := batchState{ids: make([]string, len(msgs))}
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(msgs))
	for i, m := range msgs {
		gets[i] = pipe.Get(s.ctx, "chatq:idem:{"+m.key+"}")
	}
	if _, err := pipe.Exec(s.ctx); err != nil && !errors.Is(err, redis.Nil) {
		return st, err
	}
	type probe struct {
		id    string
		state *redis.SliceCmd
	}
	pipe = s.rdb.Pipeline()
	var probes []probe
	for i, g := range gets {
		id := g.Val()
		st.ids[i] = id
		if id == "" {
			continue
		}
		st.claimed++
		probes = append(probes, probe{id: id, state: pipe.HMGet(s.ctx, "chatq:m:{"+id+"}", "s", "q")})
	}
	if len(probes) == 0 {
		return st, nil
	}
	if _, err := pipe.Exec(s.ctx); err != nil && !errors.Is(err, redis.Nil) {
		return st, err
	}
	// A task exists, or existed: a worker has taken the message already.
	pipe = s.rdb.Pipeline()
	var tasks []*redis.IntCmd
	for _, p := range probes {
		v := p.state.Val()
		status, _ := v[0].(string)
		queue, _ := v[1].(string)
		if status == "" {
			continue
		}
		st.records++
		if status != string(store.Queued) {
			st.tasks++
			continue
		}
		tasks = append(tasks, pipe.Exists(s.ctx, "asynq:{"+queue+"}:t:"+p.id))
	}
	if len(tasks) > 0 {
		if _, err := pipe.Exec(s.ctx); err != nil {
			return st, err
		}
	}
	for _, c := range tasks {
		st.tasks += int(c.Val())
	}
	return st, nil
}

// sweptWaits finds records whose first attempt came more than 20s after
// their creation (their task was written by the sweeper, not by the API the
// kill interrupted) and returns those delays, shortest first.
func sweptWaits(recs []*store.Record) []time.Duration {
	var waits []time.Duration
	for _, r := range recs {
		if r == nil {
			continue
		}
		for _, e := range r.History {
			if e.Status == store.Sending {
				if w := e.At.Sub(r.CreatedAt); w > 20*time.Second {
					waits = append(waits, w)
				}
				break
			}
		}
	}
	slices.Sort(waits)
	return waits
}
