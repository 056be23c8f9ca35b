package callback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Inbound event types, as ChatArchitect names its webhooks.
const (
	InboundMessage   = "message"
	InboundUserEvent = "user-event"
)

// Inbound is what a chatbot behind CHATQ_INBOUND_URL receives: a user
// wrote to the business number, or opted in or out.
type Inbound struct {
	// Type is InboundMessage or InboundUserEvent.
	Type string `json:"type"`
	// Phone is the user's number.
	Phone string `json:"phone"`
	// At is when the upstream emitted the event (or chatq received it).
	At time.Time `json:"at"`
	// Message is set for an inbound message.
	Message *InboundText `json:"message,omitempty"`
	// Event is the user event's type ("opted-in", "opted-out", ...).
	Event string `json:"event,omitempty"`
	// Webhook is ChatArchitect's webhook as chatq received it, for what
	// the fields above leave out (media URLs, replies' ids).
	Webhook json.RawMessage `json:"webhook"`
}

// InboundText is the content of an inbound message.
type InboundText struct {
	ID         string `json:"id,omitempty"`
	Type       string `json:"type"`
	Text       string `json:"text,omitempty"`
	SenderName string `json:"sender_name,omitempty"`
}

// DefaultInboundTTL is how long an inbound event waits for its delivery.
const DefaultInboundTTL = 72 * time.Hour

// Forwarder hands inbound events to the callbacks queue. It is safe for
// concurrent use.
type Forwarder struct {
	rdb redis.UniversalClient
	q   *asynq.Client
	ttl time.Duration
}

// NewForwarder returns a Forwarder that keeps events in rdb for up to ttl
// (zero means DefaultInboundTTL) and enqueues through q, which stays the
// caller's.
func NewForwarder(rdb redis.UniversalClient, q *asynq.Client, ttl time.Duration) *Forwarder {
	if ttl <= 0 {
		ttl = DefaultInboundTTL
	}
	return &Forwarder{rdb: rdb, q: q, ttl: ttl}
}

func inboundKey(key string) string { return "chatq:in:{" + key + "}" }

// Forward stores in and enqueues its delivery. A webhook the upstream
// repeats (the same message id, or the same body) is forwarded once.
func (f *Forwarder) Forward(ctx context.Context, in *Inbound) error {
	key := inboundID(in)
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("forward %s: %w", in.Type, err)
	}
	fresh, err := f.rdb.SetNX(ctx, inboundKey(key), body, f.ttl).Result()
	if err != nil {
		return fmt.Errorf("forward %s: %w", in.Type, err)
	}
	if !fresh {
		return nil
	}
	_, err = f.q.EnqueueContext(ctx, asynq.NewTask(TaskInbound, []byte(key)),
		asynq.Queue(Queue), asynq.MaxRetry(MaxRetry), asynq.TaskID("in:"+key))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		// Without its task the event would never go out, and the dedupe
		// key would refuse the upstream's retry of the webhook: drop it,
		// so that the retry is forwarded.
		_ = f.rdb.Del(context.WithoutCancel(ctx), inboundKey(key)).Err()
		return fmt.Errorf("forward %s: %w", in.Type, err)
	}
	return nil
}

// inboundID identifies an inbound event among the upstream's retries.
func inboundID(in *Inbound) string {
	if in.Message != nil && in.Message.ID != "" {
		return "m:" + in.Message.ID
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", in.Type, in.Phone, in.At.UnixMilli())
	h.Write(in.Webhook)
	return "h:" + hex.EncodeToString(h.Sum(nil)[:16])
}
