package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatq/chatq/enqueue"
)

// SendersOptions shape the fairness measurement between senders.
type SendersOptions struct {
	// Chatq is the chatq binary to start.
	Chatq string
	// Rate is each sender's rate_per_second (burst 1).
	Rate float64
	// Backlog is tenant A's bulk messages, queued first; Run is tenant
	// B's, queued once A's are.
	Backlog, Run int
	// TransactionalEvery is how often B sends a transactional message
	// while its bulk messages go.
	TransactionalEvery time.Duration
	// Concurrency is the worker's.
	Concurrency int
}

// DefaultSendersOptions are README's figures: two senders at 50/s, A's
// 100,000 bulk messages, then B's 1,000 and a transactional one every
// 100 ms.
func DefaultSendersOptions() SendersOptions {
	return SendersOptions{Rate: 50, Backlog: 100_000, Run: 1_000, TransactionalEvery: 100 * time.Millisecond, Concurrency: 50}
}

// SendersResult is what tenant B got while tenant A's backlog waited.
type SendersResult struct {
	Options SendersOptions `json:"options"`
	// BRate is B's messages (bulk and transactional) over its run, from
	// its enqueue to its last acceptance by the sandbox, per second.
	BRate float64 `json:"b_rate"`
	// BRun is that run's length.
	BRun time.Duration `json:"b_run"`
	// ARate is A's acceptances per second over B's run.
	ARate float64 `json:"a_rate"`
	// Transactional is how many transactional messages B sent, and
	// their enqueue-to-acceptance latency's p50 and p99.
	Transactional int           `json:"transactional"`
	P50           time.Duration `json:"p50"`
	P99           time.Duration `json:"p99"`
}

// Senders measures fairness between the senders of two tenants, chatq as
// deployed: "chatq sandbox", "chatq api" and "chatq worker" as processes,
// with stored senders A (tenant ta) and B (tenant tb), each at Rate. The
// worker starts, A's Backlog bulk messages are posted, then B's Run bulk
// messages at once and, until the sandbox accepted them all, one
// transactional message of B every TransactionalEvery. The times are the
// sandbox's own (received_at) and the bench's clock of each post, on the
// same machine.
func Senders(ctx context.Context, env *Env, o SendersOptions) (SendersResult, error) {
	res := SendersResult{Options: o}
	if err := env.flush(ctx); err != nil {
		return res, err
	}
	d, err := startDeployment(ctx, env, o.Chatq, o.Concurrency, 0,
		"CHATQ_SECRETS_KEY", strings.Repeat("07", 32))
	if err != nil {
		return res, err
	}
	defer d.close()
	const senderA, senderB = "15550003001", "15550003002"
	for _, s := range []struct{ number, tenant string }{{senderA, "ta"}, {senderB, "tb"}} {
		body, _ := json.Marshal(map[string]any{"number": s.number, "app_id": appID, "app_secret": appSecret,
			"tenant": s.tenant, "rate_per_second": o.Rate, "rate_burst": 1})
		code, answer, err := d.do(ctx, http.MethodPost, d.apiURL+"/v1/senders", body)
		if err != nil || code != http.StatusCreated {
			return res, fmt.Errorf("add sender %s: %d %s: %v", s.number, code, answer, err)
		}
	}
	if err := d.startWorker(ctx); err != nil {
		return res, err
	}
	env.logf("senders: posting tenant A's %d bulk messages", o.Backlog)
	if err := d.postFrom(ctx, senderA, "41", o.Backlog, enqueue.Bulk); err != nil {
		return res, err
	}
	env.logf("senders: posting tenant B's %d bulk messages, and a transactional one every %v", o.Run, o.TransactionalEvery)
	start := time.Now()
	if err := d.postFrom(ctx, senderB, "42", o.Run, enqueue.Bulk); err != nil {
		return res, err
	}
	var (
		mu     sync.Mutex
		posted = map[string]time.Time{}
		stop   = make(chan struct{})
		failed error
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		t := time.NewTicker(o.TransactionalEvery)
		defer t.Stop()
		for i := 0; ; i++ {
			dest := destination("43", i)
			at := time.Now()
			body, _ := json.Marshal(&enqueue.Message{Destination: dest, Sender: senderB, Payload: &enqueue.Text{Message: messageText(i)}})
			code, answer, err := d.do(ctx, http.MethodPost, d.apiURL+"/v1/messages", body)
			mu.Lock()
			if err != nil || code != http.StatusAccepted && code != http.StatusCreated {
				failed = fmt.Errorf("post a transactional message: %d %.200s: %v", code, answer, err)
			}
			posted[dest] = at
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	var log []sandboxMessage
	err = waitUntilErr(ctx, time.Duration(float64(o.Run)/o.Rate*float64(time.Second))*3+time.Minute, func() (bool, error) {
		var err error
		if log, err = d.sandboxMessages(ctx); err != nil {
			return false, err
		}
		n := 0
		for _, m := range log {
			if strings.HasPrefix(m.Destination, "42") {
				n++
			}
		}
		return n >= o.Run, nil
	})
	close(stop)
	wg.Wait()
	if err == nil {
		err = failed
	}
	if err != nil {
		return res, fmt.Errorf("senders: B's run: %w", err)
	}
	// The transactional messages posted last are waited for too.
	mu.Lock()
	defer mu.Unlock()
	err = waitUntilErr(ctx, time.Minute, func() (bool, error) {
		var err error
		if log, err = d.sandboxMessages(ctx); err != nil {
			return false, err
		}
		n := 0
		for _, m := range log {
			if _, ok := posted[m.Destination]; ok {
				n++
			}
		}
		return n >= len(posted), nil
	})
	if err != nil {
		return res, fmt.Errorf("senders: B's transactional messages: %w", err)
	}
	var last time.Time
	var lat []time.Duration
	nB, nA := 0, 0
	for _, m := range log {
		if at, ok := posted[m.Destination]; ok {
			lat = append(lat, m.ReceivedAt.Sub(at))
		}
		if strings.HasPrefix(m.Destination, "42") || strings.HasPrefix(m.Destination, "43") {
			nB++
			if m.ReceivedAt.After(last) {
				last = m.ReceivedAt
			}
		}
	}
	for _, m := range log {
		if strings.HasPrefix(m.Destination, "41") && !m.ReceivedAt.Before(start) && !m.ReceivedAt.After(last) {
			nA++
		}
	}
	res.BRun = last.Sub(start)
	res.BRate = float64(nB) / res.BRun.Seconds()
	res.ARate = float64(nA) / res.BRun.Seconds()
	slices.Sort(lat)
	res.Transactional = len(lat)
	if len(lat) > 0 {
		res.P50, res.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// postFrom posts n bulk messages of sender, their destinations starting
// with prefix, in batches of 1,000, four at a time.
func (d *deployment) postFrom(ctx context.Context, sender, prefix string, n int, prio enqueue.Priority) error {
	batches := splitBatches(n, 1000)
	return parallel(ctx, len(batches), 4, func(ctx context.Context, i int) error {
		b := batches[i]
		msgs := make([]*enqueue.Message, b.n)
		for j := range msgs {
			msgs[j] = textMessage(prefix, b.from+j, prio)
			msgs[j].Sender = sender
		}
		body, err := json.Marshal(struct {
			Messages []*enqueue.Message `json:"messages"`
		}{msgs})
		if err != nil {
			return fmt.Errorf("encode batch: %w", err)
		}
		got, err := d.postBatch(ctx, body)
		if err == nil && len(got) != b.n {
			err = fmt.Errorf("POST /v1/messages/batch: %d results for %d messages", len(got), b.n)
		}
		return err
	})
}

// sandboxMessage is a message as the sandbox logged it.
type sandboxMessage struct {
	Destination string    `json:"destination"`
	ReceivedAt  time.Time `json:"received_at"`
}

// sandboxMessages reads the sandbox's log of accepted messages.
func (d *deployment) sandboxMessages(ctx context.Context) ([]sandboxMessage, error) {
	code, body, err := d.do(ctx, http.MethodGet, d.sandboxURL+"/sandbox/messages", nil)
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("sandbox messages: %d: %w", code, err)
	}
	var out []sandboxMessage
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("sandbox messages: %w", err)
	}
	return out, nil
}

// WriteSenders prints the figures of a Senders run.
func WriteSenders(w io.Writer, r SendersResult) error {
	_, err := fmt.Fprintf(w, "two senders at %.0f/s; A queued %d bulk messages, then B %d bulk and a transactional one every %v\n"+
		"B's rate over its run:      %.2f/s in %v (its limit %.0f/s: %+.1f%%)\n"+
		"A's rate meanwhile:         %.2f/s\n"+
		"B's transactional messages: %d, enqueue to acceptance p50 %v, p99 %v\n",
		r.Options.Rate, r.Options.Backlog, r.Options.Run, r.Options.TransactionalEvery,
		r.BRate, r.BRun.Round(time.Millisecond), r.Options.Rate, (r.BRate/r.Options.Rate-1)*100,
		r.ARate, r.Transactional, r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond))
	return err
}
