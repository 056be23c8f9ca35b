package callback

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/store"
)

// Config tunes a Deliverer. Zero values take the defaults named on each
// field.
type Config struct {
	// Secret is the HMAC key of the Chatq-Signature header
	// (CHATQ_CALLBACK_SECRET). It is required.
	Secret string
	// AllowPrivate lets status callbacks go to loopback, private and
	// link-local addresses (CHATQ_CALLBACK_ALLOW_PRIVATE). The inbound URL
	// is the operator's own setting and is never checked.
	AllowPrivate bool
	// InboundURL receives inbound messages and user events
	// (CHATQ_INBOUND_URL); empty drops them.
	InboundURL string
	// Timeout bounds one POST, from connecting to reading the answer; zero
	// means 10s.
	Timeout time.Duration
	// GiveUpAfter is how long a status notice is retried: an older one is
	// dropped, with an error in the log, so that the next can go. Zero
	// means 24h.
	GiveUpAfter time.Duration
	// Metrics, if set, counts the delivery attempts; nil counts nothing.
	Metrics *metrics.Metrics
	// WebhookURLs tells where the applications of senders want their
	// webhooks forwarded (relay.go); nil forwards none.
	WebhookURLs WebhookURLs
}

// maxAnswer bounds what is read of a receiver's answer, which is ignored
// but for its status: reading a little lets the connection be reused.
const maxAnswer = 64 << 10

// Deliverer is the asynq handler of TaskStatus, TaskInbound and
// TaskRelay, and the sweeper of notices left without a task.
type Deliverer struct {
	cfg      Config
	store    *store.Store
	rdb      redis.UniversalClient
	q        *asynq.Client
	callback *http.Client // status callbacks: public addresses only, unless allowed
	inbound  *http.Client // the operator's inbound URL
	log      *zap.Logger
	now      func() time.Time
}

// New returns a Deliverer reading notices from st and inbound events from
// rdb; q enqueues the sweeper's tasks and stays the caller's.
func New(st *store.Store, q *asynq.Client, cfg Config, log *zap.Logger) (*Deliverer, error) {
	if cfg.Secret == "" {
		return nil, errors.New("callback: a secret is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = 24 * time.Hour
	}
	return &Deliverer{
		cfg:      cfg,
		store:    st,
		rdb:      st.Redis(),
		q:        q,
		callback: newHTTPClient(cfg.Timeout, !cfg.AllowPrivate),
		inbound:  newHTTPClient(cfg.Timeout, false),
		log:      log,
		now:      time.Now,
	}, nil
}

// newHTTPClient returns a client that follows no redirect (a receiver that
// moved must be given the new URL) and, when guarded, connects to public
// addresses only. It uses no proxy: a proxy would make the address check
// look at the proxy.
func newHTTPClient(timeout time.Duration, guarded bool) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if guarded {
		dialer.Control = publicOnly
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: min(timeout, 10*time.Second),
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Register adds the Deliverer's handlers to mux.
func (d *Deliverer) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(TaskStatus, d.deliverStatus)
	mux.HandleFunc(TaskInbound, d.deliverInbound)
	mux.HandleFunc(TaskRelay, d.deliverRelay)
}

// lockKey guards the delivery of one message's notices: one deliverer at
// a time, so that they go out in order.
func lockKey(id string) string { return "chatq:cbl:{" + id + "}" }

var (
	extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// errBusy: another deliverer holds the message's lock for longer than a
// task waits for it.
var errBusy = errors.New("another delivery of this message's callbacks is under way")

func (d *Deliverer) deliverStatus(ctx context.Context, t *asynq.Task) error {
	var p statusTask
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.ID == "" {
		return fmt.Errorf("status callback task %q: %w", t.Payload(), asynq.SkipRetry)
	}
	err := d.drain(ctx, p.ID)
	if err == nil || errors.Is(err, errBusy) {
		return err
	}
	// The sweeper must not add attempts between the retries of a failing
	// receiver: it waits for the next retry's time, and the store's
	// NoticeGrace after it.
	next := MaxDelay // a sweep tries once; the next sweep tries again
	var re *retryError
	if !p.Sweep && errors.As(err, &re) {
		next = re.delay
	}
	if derr := d.store.DeferNotices(context.WithoutCancel(ctx), d.now().Add(next), p.ID); derr != nil {
		d.log.Warn("deferring status callbacks", zap.String("message_id", p.ID), zap.Error(derr))
	}
	if p.Sweep {
		d.log.Info("status callback still failing", zap.String("message_id", p.ID), zap.Duration("next_sweep_in", next), zap.Error(err))
		return nil
	}
	if re != nil {
		d.log.Info("status callback failed, will retry", zap.String("message_id", p.ID),
			zap.Duration("retry_in", re.delay), zap.Error(err))
	}
	return err
}

// drain delivers the pending notices of message id in order, under its
// lock, until none is left or one fails.
func (d *Deliverer) drain(ctx context.Context, id string) error {
	token, err := d.lock(ctx, id)
	if err != nil {
		return err
	}
	defer func() {
		// The lock must go even when ctx has ended (shutdown), or the
		// next delivery would wait for it to expire.
		_ = unlockScript.Run(context.WithoutCancel(ctx), d.rdb, []string{lockKey(id)}, token).Err()
	}()
	for {
		n, err := d.store.NextNotice(ctx, id)
		if err != nil {
			return err
		}
		if n == nil {
			return d.store.NoticesDrained(ctx, id)
		}
		if n.Record == nil {
			// A notice holds only what its change wrote: without the
			// record, there is no body to send.
			d.log.Error("status callback given up: the message's record is gone", zap.String("message_id", id),
				zap.Int64("notice", n.Seq))
			if _, err := d.store.AckNotice(ctx, id, n); err != nil {
				return err
			}
			continue
		}
		if d.now().Sub(n.Queued) > d.cfg.GiveUpAfter {
			d.log.Error("status callback given up", zap.String("message_id", id), zap.Int64("notice", n.Seq),
				zap.String("status", string(n.Record.Status)), zap.Duration("after", d.cfg.GiveUpAfter))
			if _, err := d.store.AckNotice(ctx, id, n); err != nil {
				return err
			}
			continue
		}
		if err := extendScript.Run(ctx, d.rdb, []string{lockKey(id)}, token, d.lockTTL().Milliseconds()).Err(); err != nil {
			return fmt.Errorf("status callback of %s: %w", id, err)
		}
		body, err := json.Marshal(n.Record)
		if err != nil {
			return fmt.Errorf("status callback of %s: %w", id, err)
		}
		eventID := id + "." + strconv.FormatInt(n.Seq, 10)
		if err := d.post(ctx, d.callback, n.Record.CallbackURL, eventID, body); err != nil {
			var de *deliveryError
			retryAfter := time.Duration(0)
			if errors.As(err, &de) {
				retryAfter = de.retryAfter
			}
			return retryLater(ctx, fmt.Errorf("status callback %s (%s) of %s: %w", eventID, n.Record.Status, id, err), retryAfter)
		}
		if _, err := d.store.AckNotice(ctx, id, n); err != nil {
			return err
		}
	}
}

func (d *Deliverer) lockTTL() time.Duration { return d.cfg.Timeout + 5*time.Second }

// lock takes message id's delivery lock, waiting a little for another
// deliverer to finish; it returns the token that releases it.
func (d *Deliverer) lock(ctx context.Context, id string) (string, error) {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	token := hex.EncodeToString(b)
	deadline := d.now().Add(2 * time.Second)
	for {
		ok, err := d.rdb.SetNX(ctx, lockKey(id), token, d.lockTTL()).Result()
		if err != nil {
			return "", fmt.Errorf("lock callbacks of %s: %w", id, err)
		}
		if ok {
			return token, nil
		}
		if d.now().After(deadline) {
			return "", &retryError{err: errBusy, delay: time.Second}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Deliverer) deliverInbound(ctx context.Context, t *asynq.Task) error {
	key := string(t.Payload())
	body, err := d.rdb.Get(ctx, inboundKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		d.log.Warn("inbound event expired before it could be forwarded", zap.String("event", key))
		return nil
	}
	if err != nil {
		return fmt.Errorf("read inbound event %s: %w", key, err)
	}
	if d.cfg.InboundURL == "" {
		d.log.Warn("inbound event dropped: CHATQ_INBOUND_URL is not set on this worker", zap.String("event", key))
		return nil
	}
	if err := d.post(ctx, d.inbound, d.cfg.InboundURL, key, body); err != nil {
		var de *deliveryError
		retryAfter := time.Duration(0)
		if errors.As(err, &de) {
			retryAfter = de.retryAfter
		}
		err = retryLater(ctx, fmt.Errorf("forward inbound event %s: %w", key, err), retryAfter)
		d.log.Info("inbound forwarding failed, will retry", zap.String("event", key), zap.Error(err))
		return err
	}
	// The key also dedupes the upstream's retries of the webhook, so it
	// stays until it expires; only its content goes.
	if err := d.rdb.Set(ctx, inboundKey(key), "{}", redis.KeepTTL).Err(); err != nil {
		d.log.Warn("clearing a forwarded inbound event", zap.String("event", key), zap.Error(err))
	}
	return nil
}

// post sends one signed callback and reports whether the receiver took it
// (any 2xx).
func (d *Deliverer) post(ctx context.Context, hc *http.Client, url, eventID string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "chatq")
	req.Header.Set(SignatureHeader, Sign(d.cfg.Secret, d.now(), body))
	req.Header.Set("Chatq-Event-Id", eventID)
	resp, err := hc.Do(req)
	if err != nil {
		d.cfg.Metrics.Callback("failed")
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		d.cfg.Metrics.Callback("delivered")
		return nil
	}
	d.cfg.Metrics.Callback("failed")
	return &deliveryError{status: resp.StatusCode, retryAfter: retryAfterHeader(resp.Header.Get("Retry-After"))}
}

func retryAfterHeader(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// Sweep hands a new task to the messages ids whose notices the due index
// found waiting (store.Store.Due): their notifier failed or died before
// enqueueing, or their receiver keeps failing. Each is left alone for the
// store's NoticeGrace after. It returns how many tasks it enqueued.
func (d *Deliverer) Sweep(ctx context.Context, ids []string) (int, error) {
	n := 0
	var handed []string
	for _, id := range ids {
		b, _ := json.Marshal(statusTask{ID: id, Sweep: true})
		// Retention 0 and a task that never fails: its id is free again
		// once it ran, and taken while it waits, so sweeps do not pile up.
		_, err := d.q.EnqueueContext(ctx, asynq.NewTask(TaskStatus, b),
			asynq.Queue(Queue), asynq.MaxRetry(0), asynq.TaskID("cb:"+id+":sweep"))
		switch {
		case errors.Is(err, asynq.ErrTaskIDConflict):
		case err != nil:
			_ = d.store.DeferNotices(ctx, d.now(), handed...)
			return n, fmt.Errorf("sweep callbacks: %w", err)
		default:
			n++
		}
		handed = append(handed, id)
	}
	if err := d.store.DeferNotices(ctx, d.now(), handed...); err != nil {
		return n, fmt.Errorf("sweep callbacks: %w", err)
	}
	return n, nil
}
