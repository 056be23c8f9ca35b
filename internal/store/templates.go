package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// TemplateState is what chatq knows of one sender's template beyond its
// approval: whether WhatsApp paused it (132015) or disabled it (132016)
// for low quality. Its messages wait while it is paused and end dead once
// it is disabled.
type TemplateState string

// The states of a template. TemplateActive is the absence of a state: the
// template goes as its approval says. A template that a new review
// rejected ends its messages dead, as a disabled one does.
const (
	TemplateActive   TemplateState = ""
	TemplatePaused   TemplateState = "paused"
	TemplateDisabled TemplateState = "disabled"
	TemplateRejected TemplateState = "rejected"
)

// templateStateKey holds the state of the sender's template called name.
// Its hash tag is the sender's, with the index of the template's waiting
// messages that it is updated with.
func templateStateKey(sender, name string) string {
	return "chatq:tpl:{" + senderTag(sender) + "}:" + name
}

// templateWaitKey indexes the messages waiting for the sender's paused
// template called name, scored by their acceptance: an approval releases
// them in that order. An entry whose record no longer waits is stale and
// costs the release a look.
func templateWaitKey(sender, name string) string {
	return "chatq:tplwait:{" + senderTag(sender) + "}:" + name
}

// senderTag is the sender part of a key: "default" for the environment's
// sender, which records and webhooks name "".
func senderTag(sender string) string {
	if sender == "" {
		return "default"
	}
	return sender
}

// TemplateStateOf returns the state of the sender's template called name.
func (s *Store) TemplateStateOf(ctx context.Context, sender, name string) (TemplateState, error) {
	return templateState(name, s.rdb.Get(ctx, templateStateKey(sender, name)))
}

// QueueTemplateState queues on pipe the read of TemplateStateOf, for a
// caller that reads more in the same round trip, and returns its answer,
// to call once pipe ran.
func (s *Store) QueueTemplateState(ctx context.Context, pipe redis.Pipeliner, sender, name string) func() (TemplateState, error) {
	cmd := pipe.Get(ctx, templateStateKey(sender, name))
	return func() (TemplateState, error) { return templateState(name, cmd) }
}

// templateState is the state of template name that cmd read.
func templateState(name string, cmd *redis.StringCmd) (TemplateState, error) {
	v, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return TemplateActive, nil
	}
	if err != nil {
		return TemplateActive, fmt.Errorf("read the state of template %s: %w", name, err)
	}
	return TemplateState(v), nil
}

// SetTemplateState records the state of the sender's template called name,
// as a template-event webhook or a refresh of the template cache tells it.
// A template that is no longer paused (approved again, or disabled)
// releases every message waiting for it: they are due at once, in the
// order chatq accepted them, and each then goes, or ends dead when the
// template was disabled. It returns how many messages it released.
func (s *Store) SetTemplateState(ctx context.Context, sender, name string, st TemplateState, at time.Time) (int, error) {
	key := templateStateKey(sender, name)
	var err error
	if st == TemplateActive {
		err = s.rdb.Del(ctx, key).Err()
	} else {
		err = s.rdb.Set(ctx, key, string(st), 0).Err()
	}
	if err != nil {
		return 0, fmt.Errorf("record the state of template %s: %w", name, err)
	}
	if st == TemplatePaused {
		return 0, nil
	}
	return s.releaseTemplate(ctx, sender, name, at)
}

// releaseTemplate makes every message waiting for the template due at at,
// in acceptance order: the scores lie a millisecond apart, the last at at,
// so that the sweeper reads them oldest first, and the index goes.
func (s *Store) releaseTemplate(ctx context.Context, sender, name string, at time.Time) (int, error) {
	wk := templateWaitKey(sender, name)
	ids, err := s.rdb.ZRange(ctx, wk, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("read the messages waiting for template %s: %w", name, err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	first := at.UnixMilli() - int64(len(ids)-1)
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Score: float64(first + int64(i)), Member: id}
	}
	err = s.exec(ctx, func(pipe redis.Pipeliner) {
		pipe.ZAdd(ctx, dueKey, zs...)
		// Only the entries read: a message that began to wait meanwhile
		// keeps its own.
		members := make([]any, len(ids))
		for i, id := range ids {
			members[i] = id
		}
		pipe.ZRem(ctx, wk, members...)
	})
	if err != nil {
		return 0, fmt.Errorf("release the messages waiting for template %s: %w", name, err)
	}
	return len(ids), nil
}

// WaitForTemplate records that the message of rec waits for its paused
// template (the sender's template called name), as Wait does, and puts it
// on the template's index, which an approval releases. due is when the
// message looks again whatever happens: a release that went missing
// (Redis away at the wrong time) delays it, never strands it.
func (s *Store) WaitForTemplate(ctx context.Context, rec *Record, task, name string, w Waiting, due time.Time) error {
	z := redis.Z{Score: float64(rec.CreatedAt.UnixMilli()), Member: rec.ID}
	if err := s.rdb.ZAdd(ctx, templateWaitKey(rec.Sender, name), z).Err(); err != nil {
		return fmt.Errorf("wait %s for template %s: %w", rec.ID, name, err)
	}
	return s.Wait(ctx, rec, task, w, due, time.Time{})
}

// learnTemplate gives the template of record id's payload state st for
// the record's sender (an event said so), and returns its name: "" when
// the record is gone or sends no template. A disabled template's waiting
// messages are due now, however old the event: they end at once.
func (s *Store) learnTemplate(ctx context.Context, id string, st TemplateState) (string, error) {
	recs, err := s.GetMany(ctx, []string{id})
	if err != nil {
		return "", fmt.Errorf("learn the template of %s: %w", id, err)
	}
	if recs[0] == nil {
		return "", nil
	}
	name := TemplateName(recs[0].Payload)
	if name == "" {
		return "", nil
	}
	if _, err := s.SetTemplateState(ctx, recs[0].Sender, name, st, time.Now()); err != nil {
		return "", fmt.Errorf("learn the template of %s: %w", id, err)
	}
	return name, nil
}

// TemplateName returns the name of the template a stored payload sends,
// "" for any other payload.
func TemplateName(payload []byte) string {
	var p struct {
		Type     string `json:"type"`
		Template struct {
			ElementName string `json:"elementName"`
		} `json:"template"`
	}
	if json.Unmarshal(payload, &p) != nil || p.Type != "template" {
		return ""
	}
	return p.Template.ElementName
}

// Payload reads the payload of record id, nil when it has none (the record
// expired).
func (s *Store) Payload(ctx context.Context, id string) ([]byte, error) {
	recs, err := s.GetMany(ctx, []string{id})
	if err != nil {
		return nil, fmt.Errorf("read the payload of %s: %w", id, err)
	}
	if recs[0] == nil || len(recs[0].Payload) == 0 {
		return nil, nil
	}
	return recs[0].Payload, nil
}

// TemplateStateFor returns the state a template status of getHSM or of a
// template-event webhook (APPROVED, PAUSED, DISABLED, REJECTED) puts a
// template in; ok is false for a status that changes nothing (PENDING,
// or one chatq does not know).
func TemplateStateFor(status string) (st TemplateState, ok bool) {
	switch strings.ToUpper(strings.TrimSpace(status)) {
	case "APPROVED":
		return TemplateActive, true
	case "PAUSED":
		return TemplatePaused, true
	case "DISABLED":
		return TemplateDisabled, true
	case "REJECTED":
		return TemplateRejected, true
	}
	return TemplateActive, false
}
