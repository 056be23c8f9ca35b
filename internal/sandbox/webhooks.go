package sandbox

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Webhook retries: a failed POST is tried again after 100ms, 200ms and
// 400ms before it is given up. The real provider retries for much longer;
// tests want the outcome quickly.
const (
	webhookRetries   = 3
	webhookRetryBase = 100 * time.Millisecond
	// webhookDrainLimit is how much of a receiver's answer is read so that
	// its connection can be reused.
	webhookDrainLimit = 64 << 10
)

// Webhook envelope types.
const (
	kindMessageEvent = "message-event"
	kindMessage      = "message"
	kindUserEvent    = "user-event"
	// kindTemplateEvent reports a template's new status; its shape is
	// chatq's assumption after Gupshup's (see chatarchitect.TemplateEvent).
	kindTemplateEvent = "template-event"
)

// event is one webhook. Its body is encoded when it is sent, from values
// fixed when it was made, so a duplicate or a retry carries the very same
// bytes (receivers deduplicate on id, type and timestamp).
type event struct {
	kind    string    // envelope type
	at      time.Time // when it happened: the envelope's timestamp
	payload any
}

// envelope is Gupshup's v2 webhook body.
type envelope struct {
	App       string `json:"app"`
	Timestamp int64  `json:"timestamp"` // unix milliseconds
	Version   int    `json:"version"`
	Type      string `json:"type"`
	Payload   any    `json:"payload"`
}

func (e *event) encode() ([]byte, error) {
	body, err := json.Marshal(envelope{App: appName, Timestamp: e.at.UnixMilli(), Version: 2, Type: e.kind, Payload: e.payload})
	if err != nil {
		return nil, fmt.Errorf("encode %s webhook: %w", e.kind, err)
	}
	return body, nil
}

// arrange returns the order in which events are sent. With probability
// reorder the order is shuffled (and never left as it was); each event is,
// with probability duplicate, sent once more at a random later point. It
// also returns the number of copies added.
func arrange(events []*event, reorder, duplicate float64) ([]*event, int) {
	if len(events) > 1 && reorder > 0 && rand.Float64() < reorder {
		shuffled := make([]*event, len(events))
		copy(shuffled, events)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if same(shuffled, events) {
			// A shuffle that changes nothing would make the knob lie.
			for i, j := 0, len(shuffled)-1; i < j; i, j = i+1, j-1 {
				shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
			}
		}
		events = shuffled
	}
	if duplicate <= 0 {
		return events, 0
	}
	copies := 0
	out := events
	// From the end, so that inserting after position i never moves an
	// event not yet considered.
	for i := len(events) - 1; i >= 0; i-- {
		if rand.Float64() >= duplicate {
			continue
		}
		if copies == 0 {
			out = append(make([]*event, 0, 2*len(events)), events...)
		}
		copies++
		at := i + 1 + rand.IntN(len(out)-i)
		out = append(out, nil)
		copy(out[at+1:], out[at:])
		out[at] = events[i]
	}
	return out, copies
}

func same(a, b []*event) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// job is the webhooks of one message (or one inbound or user event), sent
// one at a time so that their order holds whatever the pool size.
type job struct {
	due     time.Time
	seq     uint64 // tie-break: FIFO among jobs due at the same time
	gen     uint64 // the dispatcher generation it belongs to; see reset
	delay   time.Duration
	events  []*event // in sending order
	next    int      // index of the event to send
	attempt int      // failed POSTs of events[next] so far
}

// jobHeap is a min-heap of jobs by due time.
type jobHeap []*job

func (h jobHeap) Len() int { return len(h) }
func (h jobHeap) Less(i, j int) bool {
	if h[i].due.Equal(h[j].due) {
		return h[i].seq < h[j].seq
	}
	return h[i].due.Before(h[j].due)
}
func (h jobHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)   { *h = append(*h, x.(*job)) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return j
}

type dispatcherConfig struct {
	logger  *zap.Logger
	client  *http.Client
	stats   *stats
	url     *atomic.Pointer[string]
	workers int
	backlog int
}

// dispatcher sends webhooks. Jobs wait in a min-heap ordered by due time,
// watched by one scheduler goroutine, which hands due jobs through a small
// channel to a fixed pool of sender goroutines. So a delay costs a heap
// entry, never a goroutine or a timer of its own, and the number of jobs
// waiting is bounded by the backlog: a new job over it is dropped (and
// counted), never blocking the API handler that made it.
type dispatcher struct {
	logger  *zap.Logger
	client  *http.Client
	stats   *stats
	url     *atomic.Pointer[string]
	backlog int64

	pending atomic.Int64  // jobs submitted and not finished
	gen     atomic.Uint64 // bumped by reset: older jobs are abandoned
	failing atomic.Bool   // the last delivery was given up

	mu   sync.Mutex
	jobs jobHeap
	seq  uint64
	wake chan struct{} // a job became the earliest

	queue  chan *job
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDispatcher(cfg dispatcherConfig) *dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dispatcher{
		logger:  cfg.logger,
		client:  cfg.client,
		stats:   cfg.stats,
		url:     cfg.url,
		backlog: int64(cfg.backlog),
		wake:    make(chan struct{}, 1),
		queue:   make(chan *job, cfg.workers),
		ctx:     ctx,
		cancel:  cancel,
	}
	d.wg.Add(1 + cfg.workers)
	go d.schedule()
	for range cfg.workers {
		go d.work()
	}
	return d
}

// submit schedules events (in sending order), the first after delay and
// each next one delay after the previous was sent. The webhooks are
// dropped, and counted, when no webhook URL is registered or the backlog
// is full.
func (d *dispatcher) submit(events []*event, delay time.Duration) {
	if len(events) == 0 || d.ctx.Err() != nil {
		return
	}
	if d.url.Load() == nil {
		d.stats.webhooksUnrouted.Add(int64(len(events)))
		return
	}
	if d.pending.Add(1) > d.backlog {
		d.pending.Add(-1)
		d.stats.webhooksDropped.Add(int64(len(events)))
		return
	}
	d.push(&job{due: time.Now().Add(delay), gen: d.gen.Load(), delay: delay, events: events})
}

func (d *dispatcher) push(j *job) {
	d.mu.Lock()
	d.seq++
	j.seq = d.seq
	heap.Push(&d.jobs, j)
	first := d.jobs[0] == j
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// schedule hands each job to the senders when it is due.
func (d *dispatcher) schedule() {
	defer d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var due *job
		wait := time.Duration(-1)
		d.mu.Lock()
		if len(d.jobs) > 0 {
			if w := time.Until(d.jobs[0].due); w > 0 {
				wait = w
			} else {
				due = heap.Pop(&d.jobs).(*job)
			}
		}
		d.mu.Unlock()

		if due != nil {
			select {
			case d.queue <- due:
				continue
			case <-d.ctx.Done():
				return
			}
		}
		var fire <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-d.ctx.Done():
			timer.Stop()
			return
		case <-d.wake:
		case <-fire:
		}
		timer.Stop()
	}
}

func (d *dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case j := <-d.queue:
			d.deliver(j)
		}
	}
}

// deliver sends the job's next event, then schedules what remains: a retry
// of the same event, or the event after it.
func (d *dispatcher) deliver(j *job) {
	if j.gen != d.gen.Load() {
		d.pending.Add(-1)
		return
	}
	target := d.url.Load()
	if target == nil {
		d.stats.webhooksUnrouted.Add(1)
	} else if err := d.post(*target, j.events[j.next]); err != nil {
		if d.ctx.Err() != nil {
			return // stopping: what is left is abandoned
		}
		if j.attempt < webhookRetries {
			d.stats.webhooksRetried.Add(1)
			j.due = time.Now().Add(webhookRetryBase << j.attempt)
			j.attempt++
			d.push(j)
			return
		}
		d.stats.webhooksFailed.Add(1)
		d.logger.Debug("webhook given up", zap.Int("attempts", j.attempt+1), zap.Error(err))
		if d.failing.CompareAndSwap(false, true) {
			d.logger.Warn("webhook deliveries failing", zap.Int("attempts", j.attempt+1), zap.Error(err))
		}
	} else {
		d.stats.webhooksSent.Add(1)
		if d.failing.CompareAndSwap(true, false) {
			d.logger.Info("webhook deliveries recovered")
		}
	}
	j.attempt = 0
	j.next++
	if j.next == len(j.events) {
		d.pending.Add(-1)
		return
	}
	j.due = time.Now().Add(j.delay)
	d.push(j)
}

// post sends one webhook. Its errors never carry the URL: chatq's webhook
// URL holds its secret.
func (d *dispatcher) post(target string, e *event) error {
	body, err := e.encode()
	if err != nil {
		return err
	}
	ctx := d.ctx
	if d.client.Timeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWebhookTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return errors.New("post webhook: invalid webhook URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", appName)
	resp, err := d.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return fmt.Errorf("post webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookDrainLimit))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post webhook: receiver answered %d", resp.StatusCode)
	}
	return nil
}

// reset abandons every job: those waiting are removed, those already handed
// to a sender are dropped by the generation check.
func (d *dispatcher) reset() {
	d.gen.Add(1)
	d.mu.Lock()
	n := len(d.jobs)
	d.jobs = nil
	d.mu.Unlock()
	d.pending.Add(-int64(n))
}

// stop ends the scheduler and the senders, aborting POSTs in flight.
func (d *dispatcher) stop() {
	d.cancel()
	d.wg.Wait()
}
