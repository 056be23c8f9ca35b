package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Event is a delivery status reported by ChatArchitect for one message.
type Event struct {
	// ID is the id the event names: the provider id or the WhatsApp id.
	ID string `json:"id"`
	// GsID is the provider id when ID is the WhatsApp id (it disappears
	// from events about a week after the send).
	GsID string `json:"gs_id,omitempty"`
	// WhatsAppID is the WhatsApp id an enqueued event reveals.
	WhatsAppID string `json:"wa_id,omitempty"`
	// Status is enqueued, sent, delivered, read or failed.
	Status Status `json:"status"`
	// At is when the event happened (or arrived, if it carries no time).
	At time.Time `json:"at"`
	// Error describes a failed event.
	Error *ErrorInfo `json:"error,omitempty"`
	// Pricing is the event's pricing object, if it carried one.
	Pricing *Pricing `json:"pricing,omitempty"`
	// Key identifies the event among redeliveries (id, type, timestamp);
	// an event whose Key was applied before changes nothing.
	Key string `json:"key"`
	// Template, on a failed event, is what the failure says of the
	// message's template (WhatsApp paused or disabled it for low
	// quality): applied, the event gives the template that state for the
	// message's sender, as a refused send does, so that the template's
	// messages still to be sent wait for it, or end.
	Template TemplateState `json:"template,omitempty"`
}

// Correlation says how an event found its record.
type Correlation string

// Correlation outcomes, the labels of chatq's webhook metrics.
const (
	// Matched: the event was applied to its record (or kept in its history).
	Matched Correlation = "matched"
	// Parked: no record knows the id yet; the event waits for it.
	Parked Correlation = "parked"
	// Duplicated: the event had been applied before.
	Duplicated Correlation = "duplicate"
	// Unknown: the id maps to a record that no longer exists.
	Unknown Correlation = "unknown"
)

// EventResult is what became of one event.
type EventResult struct {
	Correlation Correlation
	// RecordID is the record the event was applied to, if any.
	RecordID string
	// Outcome and Status are the transition's outcome and the status after.
	Outcome Outcome
	Status  Status
	// Billable is the pricing category under which this event (or a parked
	// one it released) made the message billable, "" unless it carried the
	// first billable pricing object of the message: each message counts
	// once.
	Billable string
	// Template is the template the event gave a state (Event.Template),
	// "" when it gave none.
	Template string
}

// ApplyEvent correlates a delivery event with its record (by provider id,
// then gsId, then WhatsApp id) and applies it. An event whose id is not
// known yet is parked until Submit or an enqueued event stores the id.
func (s *Store) ApplyEvent(ctx context.Context, ev Event) (EventResult, error) {
	if ev.ID == "" || !ev.Status.Valid() {
		return EventResult{}, fmt.Errorf("apply event: needs an id and a status, got %q %q", ev.ID, ev.Status)
	}
	id, err := s.lookup(ctx, ev)
	if err != nil {
		return EventResult{}, err
	}
	if id == "" {
		return s.park(ctx, ev)
	}
	return s.applyTo(ctx, id, ev)
}

// lookup finds the record id of an event's ids, "" if none is known.
func (s *Store) lookup(ctx context.Context, ev Event) (string, error) {
	if id, ok := s.refs.get(ev.ID); ok {
		return id, nil
	}
	if id, ok := s.refs.get(ev.GsID); ok {
		return id, nil
	}
	refs := []string{ev.ID}
	if ev.GsID != "" && ev.GsID != ev.ID {
		refs = append(refs, ev.GsID)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(refs))
	for i, r := range refs {
		cmds[i] = pipe.Get(ctx, refKey(r))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("look up %s: %w", ev.ID, err)
	}
	for i, c := range cmds {
		if id := c.Val(); id != "" {
			s.refs.put(refs[i], id)
			return id, nil
		}
	}
	return "", nil
}

// parkRef is the id an unknown event waits under: the provider id when the
// event carries it, which Submit stores.
func parkRef(ev Event) string {
	if ev.GsID != "" {
		return ev.GsID
	}
	return ev.ID
}

func (s *Store) park(ctx context.Context, ev Event) (EventResult, error) {
	ref := parkRef(ev)
	b, err := json.Marshal(ev)
	if err != nil {
		return EventResult{}, fmt.Errorf("park %s: %w", ref, err)
	}
	pipe := s.rdb.Pipeline()
	pipe.RPush(ctx, parkKey(ref), b)
	pipe.PExpire(ctx, parkKey(ref), s.cfg.ParkTTL)
	// Read the mapping after parking: Submit writes it before it reads the
	// parking lot, so the event cannot slip between the two. The keys share
	// the hash tag {ref}, so that Redis Cluster runs these commands on one
	// node, in order, too.
	mapped := pipe.Get(ctx, refKey(ref))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return EventResult{}, fmt.Errorf("park %s: %w", ref, err)
	}
	id := mapped.Val()
	if id == "" {
		return EventResult{Correlation: Parked}, nil
	}
	billable, err := s.drain(ctx, id, []string{string(b)})
	if err != nil {
		return EventResult{}, err
	}
	return EventResult{Correlation: Matched, RecordID: id, Billable: billable}, nil
}

// drain applies parked events to record id and removes each once applied.
// Two drains of the same events are harmless: the events' keys dedupe them.
// It returns the category under which one of them made the message
// billable, if one did.
func (s *Store) drain(ctx context.Context, id string, parked []string) (string, error) {
	billable := ""
	for _, raw := range parked {
		var ev Event
		if err := json.Unmarshal([]byte(raw), &ev); err != nil {
			return billable, fmt.Errorf("drain events of %s: %w", id, err)
		}
		res, err := s.applyTo(ctx, id, ev)
		if err != nil {
			return billable, err
		}
		billable = cmp.Or(billable, res.Billable)
		if err := s.rdb.LRem(ctx, parkKey(parkRef(ev)), 1, raw).Err(); err != nil {
			return billable, fmt.Errorf("drain events of %s: %w", id, err)
		}
	}
	return billable, nil
}

func (s *Store) applyTo(ctx context.Context, id string, ev Event) (EventResult, error) {
	c := Change{Status: ev.Status, At: ev.At, Error: ev.Error, Dedupe: ev.Key, WhatsAppID: ev.WhatsAppID, Pricing: ev.Pricing}
	var cmd *redis.Cmd
	var parked *redis.StringSliceCmd
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		cmd = transitionScript.EvalSha(ctx, pipe, transitionKeys(id), s.transitionArgs("event", c)...)
		if ev.WhatsAppID != "" {
			// Later events name the message by its WhatsApp id alone. On
			// Redis Cluster the mapping may land before the transition (a
			// different node); an event that finds it that early is only
			// one more out of order, which the state machine absorbs.
			pipe.Set(ctx, refKey(ev.WhatsAppID), id, s.cfg.TTL)
			parked = pipe.LRange(ctx, parkKey(ev.WhatsAppID), 0, -1)
		}
	})
	if err != nil {
		return EventResult{}, fmt.Errorf("apply %s event to %s: %w", ev.Status, id, err)
	}
	o, st, rest, err := s.outcome(ctx, id, cmd, "apply event to "+id)
	if err != nil {
		return EventResult{}, err
	}
	res := EventResult{Correlation: Matched, RecordID: id, Outcome: o, Status: st}
	if len(rest) > 0 {
		if billed, _ := rest[0].(int64); billed == 1 && ev.Pricing != nil {
			res.Billable = billableCategory(ev.Pricing)
		}
	}
	switch o {
	case Missing:
		res.Correlation = Unknown
	case Duplicate:
		res.Correlation = Duplicated
	}
	if o != Missing {
		s.refs.put(ev.WhatsAppID, id)
	}
	if o == Changed && ev.Template != TemplateActive {
		name, err := s.learnTemplate(ctx, id, ev.Template)
		if err != nil {
			return res, err
		}
		res.Template = name
	}
	if parked != nil && len(parked.Val()) > 0 {
		billable, err := s.drain(ctx, id, parked.Val())
		res.Billable = cmp.Or(res.Billable, billable)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// billableCategory is the category a billable pricing object counts under.
func billableCategory(p *Pricing) string {
	if p.Category == "" {
		return "unknown"
	}
	return p.Category
}
