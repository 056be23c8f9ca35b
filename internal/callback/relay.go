package callback

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/store"
)

// The relay forwards ChatArchitect's webhooks, in ChatArchitect's own
// format, to the webhook URL an application registered for a sender
// through chatq's drop-in POST /webhook: an application that talked to
// ChatArchitect keeps receiving what it received, with chatq's message id
// where ChatArchitect put its messageId.
//
// The webhooks of one message wait in a list of their own (a lane, named
// after the provider's message id that every event of it carries), in the
// order they arrived; a task per webhook drains the lane in order under a
// short lock, and removes a webhook only once the application answered
// 2xx, as status callbacks do. The record and its sender are found when
// the webhook is delivered, so that an event that arrived before chatq
// knew the message (parked) is forwarded once it does.

// TaskRelay forwards the webhooks waiting in one lane. Its payload is the
// lane's name: the webhooks themselves stay in Redis.
const TaskRelay = "callback:relay"

// RelayMaxRetry is the number of retries of a relay task: with backoff
// capped at MaxDelay they span more than the default GiveUpAfter.
const RelayMaxRetry = 60

// ResolveWindow is how long a forwarded event waits for chatq to know its
// message (an event that outran the send's answer waits parked as long).
// An event still unknown after it is not of a message chatq sent: it goes
// to the application of the sender whose URL it came to, unchanged.
const ResolveWindow = time.Hour

// DefaultRelayTTL is how long a lane is kept after its last webhook.
const DefaultRelayTTL = 72 * time.Hour

// WebhookURLs tells where the application of a sender wants its webhooks:
// the URL it registered through the drop-in POST /webhook, "" for none.
type WebhookURLs interface {
	WebhookURL(ctx context.Context, sender string) (string, error)
}

// Kinds of relayed webhooks.
const (
	relayEvent   = "event"   // a message-event: ids rewritten to chatq's
	relayInbound = "inbound" // a message or user-event: forwarded unchanged
)

// relayItem is one webhook waiting in a lane.
type relayItem struct {
	// N identifies the forwarded webhook: its Chatq-Event-Id.
	N    string `json:"n"`
	Kind string `json:"k"`
	// Record is chatq's message id when the webhook was correlated on
	// arrival; ID and GsID are the event's ids, to find it later.
	Record string `json:"r,omitempty"`
	ID     string `json:"i,omitempty"`
	GsID   string `json:"g,omitempty"`
	// Sender is the sender whose webhook URL the webhook came to.
	Sender string `json:"s,omitempty"`
	// Queued is when it arrived, in Unix milliseconds.
	Queued int64           `json:"t"`
	Body   json.RawMessage `json:"b"`
}

func relayKey(lane string) string { return "chatq:fwd:{" + lane + "}" }

// relayAckScript removes a lane's first webhook if it is still the given
// one: a slow deliverer whose lock expired must not remove another's.
var relayAckScript = redis.NewScript(`
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) and 1 end
return 0`)

// Relay hands webhooks to the callbacks queue for forwarding to the
// senders' applications. It is safe for concurrent use.
type Relay struct {
	rdb redis.UniversalClient
	q   *asynq.Client
	ttl time.Duration
	now func() time.Time
}

// NewRelay returns a Relay that keeps webhooks in rdb for up to ttl after
// a lane's last one (zero means DefaultRelayTTL) and enqueues through q,
// which stays the caller's.
func NewRelay(rdb redis.UniversalClient, q *asynq.Client, ttl time.Duration) *Relay {
	if ttl <= 0 {
		ttl = DefaultRelayTTL
	}
	return &Relay{rdb: rdb, q: q, ttl: ttl, now: time.Now}
}

// Event queues a message-event webhook, raw as ChatArchitect sent it, for
// the application of the message's sender. record is chatq's message id
// when the event was correlated ("" when it waits parked); id and gsID are
// the event's own ids; sender is the sender whose webhook URL it came to,
// which receives it when the message stays unknown.
func (r *Relay) Event(ctx context.Context, record, id, gsID, sender string, raw []byte) error {
	lane := "m:" + cmp.Or(gsID, id)
	return r.push(ctx, lane, relayItem{Kind: relayEvent, Record: record, ID: id, GsID: gsID, Sender: sender, Body: raw})
}

// Inbound queues a message or user-event webhook, raw as ChatArchitect
// sent it, for the application of sender, unchanged.
func (r *Relay) Inbound(ctx context.Context, sender string, raw []byte) error {
	return r.push(ctx, "i:"+nonce(), relayItem{Kind: relayInbound, Sender: sender, Body: raw})
}

func (r *Relay) push(ctx context.Context, lane string, it relayItem) error {
	it.N, it.Queued = nonce(), r.now().UnixMilli()
	b, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("relay webhook: %w", err)
	}
	pipe := r.rdb.Pipeline()
	pipe.RPush(ctx, relayKey(lane), b)
	pipe.PExpire(ctx, relayKey(lane), r.ttl)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("relay webhook: %w", err)
	}
	_, err = r.q.EnqueueContext(ctx, asynq.NewTask(TaskRelay, []byte(lane)), asynq.Queue(Queue), asynq.MaxRetry(RelayMaxRetry))
	if err != nil {
		// Without a task the webhook would wait for the lane's next one:
		// take it back, so that the upstream's retry of the webhook (the
		// receiver answers an error) is forwarded instead.
		_ = r.rdb.LRem(context.WithoutCancel(ctx), relayKey(lane), 1, b).Err()
		return fmt.Errorf("relay webhook: %w", err)
	}
	return nil
}

func nonce() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deliverRelay forwards the webhooks of one lane in order, until none is
// left or one fails.
func (d *Deliverer) deliverRelay(ctx context.Context, t *asynq.Task) error {
	lane := string(t.Payload())
	if lane == "" {
		return fmt.Errorf("relay task without a lane: %w", asynq.SkipRetry)
	}
	token, err := d.lock(ctx, "fwd:"+lane)
	if err != nil {
		return err
	}
	defer func() {
		_ = unlockScript.Run(context.WithoutCancel(ctx), d.rdb, []string{lockKey("fwd:" + lane)}, token).Err()
	}()
	for {
		raw, err := d.rdb.LIndex(ctx, relayKey(lane), 0).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("forward webhooks of %s: %w", lane, err)
		}
		var it relayItem
		if err := json.Unmarshal([]byte(raw), &it); err != nil {
			d.log.Error("dropping an unreadable forwarded webhook", zap.String("lane", lane), zap.Error(err))
		} else if err := d.relay(ctx, token, lane, &it); err != nil {
			return err
		}
		if err := relayAckScript.Run(ctx, d.rdb, []string{relayKey(lane)}, raw).Err(); err != nil {
			return fmt.Errorf("forward webhooks of %s: %w", lane, err)
		}
	}
}

// relay forwards one webhook; nil means it is done with (delivered, or
// nobody wants it).
func (d *Deliverer) relay(ctx context.Context, token, lane string, it *relayItem) error {
	age := d.now().Sub(time.UnixMilli(it.Queued))
	if age > d.cfg.GiveUpAfter {
		d.log.Error("forwarded webhook given up", zap.String("event", it.N), zap.String("sender", it.Sender),
			zap.Duration("after", d.cfg.GiveUpAfter))
		return nil
	}
	sender, body := it.Sender, []byte(it.Body)
	if it.Kind == relayEvent {
		id, err := d.recordOf(ctx, it, age)
		if err != nil {
			return err
		}
		if id != "" {
			rec, err := d.store.Get(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				// The record expired: forwarded as it came.
			case err != nil:
				return fmt.Errorf("forward webhook %s: %w", it.N, err)
			default:
				sender = cmp.Or(rec.Sender, sender)
				pid := ""
				if rec.ProviderMessageID != nil {
					pid = *rec.ProviderMessageID
				}
				if body, err = WithChatqID(it.Body, id, pid); err != nil {
					d.log.Warn("forwarding a webhook whose ids cannot be rewritten as it came", zap.String("event", it.N), zap.Error(err))
					body = it.Body
				}
			}
		}
	}
	if sender == "" || d.cfg.WebhookURLs == nil {
		return nil
	}
	url, err := d.cfg.WebhookURLs.WebhookURL(ctx, sender)
	if err != nil {
		return fmt.Errorf("forward webhook %s: %w", it.N, err)
	}
	if url == "" {
		return nil
	}
	if err := extendScript.Run(ctx, d.rdb, []string{lockKey("fwd:" + lane)}, token, d.lockTTL().Milliseconds()).Err(); err != nil {
		return fmt.Errorf("forward webhook %s: %w", it.N, err)
	}
	if err := d.post(ctx, d.callback, url, it.N, body); err != nil {
		var de *deliveryError
		retryAfter := time.Duration(0)
		if errors.As(err, &de) {
			retryAfter = de.retryAfter
		}
		err = retryLater(ctx, fmt.Errorf("forward webhook %s to the application of sender %s: %w", it.N, sender, err), retryAfter)
		d.log.Info("webhook forwarding failed, will retry", zap.String("event", it.N), zap.String("sender", sender), zap.Error(err))
		return err
	}
	return nil
}

// errNotKnownYet: the event's message is not known yet; its send's answer
// has not been recorded.
var errNotKnownYet = errors.New("the message of this event is not known yet")

// recordOf returns chatq's id of the event's message: "" once ResolveWindow
// has passed without it, and a retryable error before.
func (d *Deliverer) recordOf(ctx context.Context, it *relayItem, age time.Duration) (string, error) {
	if it.Record != "" {
		return it.Record, nil
	}
	id, err := d.store.Correlate(ctx, it.ID, it.GsID)
	if err != nil {
		return "", fmt.Errorf("forward webhook %s: %w", it.N, err)
	}
	if id == "" && age < ResolveWindow {
		return "", retryLater(ctx, fmt.Errorf("forward webhook %s (%s): %w", it.N, cmp.Or(it.GsID, it.ID), errNotKnownYet), 0)
	}
	return id, nil
}

// WithChatqID returns a message-event webhook with chatq's message id
// where ChatArchitect put its own messageId (the provider id pid): in
// whichever of the payload's id and gsId holds it, or, when neither does
// (the short form, or gsId gone after a week), in id for enqueued and
// failed and in gsId for sent, delivered and read. Everything else stays.
func WithChatqID(raw []byte, id, pid string) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("rewrite webhook: %w", err)
	}
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(top["payload"], &payload); err != nil {
		return nil, fmt.Errorf("rewrite webhook payload: %w", err)
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(payload[k], &s)
		return s
	}
	quoted, _ := json.Marshal(id)
	replaced := false
	for _, k := range []string{"gsId", "id"} {
		if pid != "" && str(k) == pid {
			payload[k], replaced = quoted, true
		}
	}
	if !replaced {
		switch str("type") {
		case "sent", "delivered", "read":
			payload["gsId"] = quoted
		default:
			payload["id"] = quoted
		}
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("rewrite webhook: %w", err)
	}
	top["payload"] = b
	return json.Marshal(top)
}
