package faults

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/internal/store"
)

// message is one message a case sends, and what should become of it.
type message struct {
	key      string // idempotency key
	dest     string
	text     string // unique, so that the sandbox's duplicates counter is exact
	priority string
	// want is the status it must end in; accepted whether the sandbox must
	// accept it (all but destination 0002).
	want     store.Status
	accepted bool
	// id is the API's answer.
	id string
}

func (m *message) body() []byte {
	b, _ := json.Marshal(map[string]any{
		"destination":     m.dest,
		"payload":         map[string]string{"type": "text", "message": m.text},
		"idempotency_key": m.key,
		"priority":        m.priority,
	})
	return b
}

// magic is a share of a case's messages sent to one of the sandbox's magic
// destinations, and the status the README documents for it.
type magic struct {
	suffix   string
	count    int
	want     store.Status
	accepted bool
}

// newMessages returns n messages of case name: those of mix first, to
// destinations ending in their magic digits, then ordinary ones that must
// end read. Every destination is used once: an opted-out or window-closed
// number would change the fate of the next message to it.
func newMessages(name string, n int, priority string, mix []magic) []*message {
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	run := hex.EncodeToString(nonce)
	msgs := make([]*message, 0, n)
	add := func(dest string, want store.Status, accepted bool) {
		i := len(msgs)
		msgs = append(msgs, &message{
			key:  fmt.Sprintf("%s-%s-%d", name, run, i),
			dest: dest,
			text: fmt.Sprintf("%s message %d of run %s", name, i, run),
			want: want, accepted: accepted, priority: priority,
		})
	}
	for _, m := range mix {
		for range m.count {
			add(fmt.Sprintf("4478%06d%s", len(msgs), m.suffix), m.want, m.accepted)
		}
	}
	for len(msgs) < n {
		// Ends in 9: never one of the magic 0001-0008.
		add(fmt.Sprintf("4477%07d9", len(msgs)), store.Read, true)
	}
	return msgs
}

// batchResult is one item of POST /v1/messages/batch's answer.
type batchResult struct {
	Index   int    `json:"index"`
	ID      string `json:"id"`
	Status  string `json:"status"`
	Created *bool  `json:"created"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func batchBody(msgs []*message) []byte {
	items := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		items[i] = m.body()
	}
	b, _ := json.Marshal(map[string]any{"messages": items})
	return b
}

// postBatch posts msgs as one batch and returns the API's results.
func (s *stack) postBatch(msgs []*message) ([]batchResult, error) {
	code, body, err := s.call(http.MethodPost, "/v1/messages/batch", batchBody(msgs), "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("batch answered %d: %s", code, body)
	}
	var res struct {
		Results []batchResult `json:"results"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("batch answer: %w", err)
	}
	if len(res.Results) != len(msgs) {
		return nil, fmt.Errorf("batch of %d answered %d results", len(msgs), len(res.Results))
	}
	for i, r := range res.Results {
		if r.Error != nil || r.ID == "" {
			return nil, fmt.Errorf("batch item %d refused: %+v", i, r.Error)
		}
	}
	return res.Results, nil
}

// sendBatches sends msgs in batches of size and records their ids.
func (s *stack) sendBatches(msgs []*message, size int) {
	s.t.Helper()
	for start := 0; start < len(msgs); start += size {
		part := msgs[start:min(start+size, len(msgs))]
		res, err := s.postBatch(part)
		if err != nil {
			s.t.Fatal(err)
		}
		for i, r := range res {
			part[i].id = r.ID
		}
	}
}

// records reads the records of msgs (nil for a missing one).
func (s *stack) records(msgs []*message) ([]*store.Record, error) {
	out := make([]*store.Record, 0, len(msgs))
	for start := 0; start < len(msgs); start += 500 {
		part := msgs[start:min(start+500, len(msgs))]
		ids := make([]string, len(part))
		for i, m := range part {
			ids[i] = m.id
		}
		recs, err := s.store.GetMany(s.ctx, ids)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// settle waits until every message has its wanted status, or timeout
// passes (then the evaluation tells what is wrong), and then until no
// webhook is left on its way.
func (s *stack) settle(msgs []*message, timeout time.Duration) {
	s.t.Helper()
	left := slices.Clone(msgs)
	err := poll(timeout, 250*time.Millisecond, func() (bool, error) {
		recs, err := s.records(left)
		if err != nil {
			// Redis may be on its way back; the deadline decides.
			return false, nil
		}
		var still []*message
		for i, r := range recs {
			if r == nil || r.Status != left[i].want {
				still = append(still, left[i])
			}
		}
		left = still
		return len(left) == 0, nil
	})
	if err != nil {
		s.t.Errorf("%d of %d messages not in their final status after %s", len(left), len(msgs), timeout)
	}
	if err := s.quiet(30 * time.Second); err != nil {
		s.t.Errorf("webhooks still on their way: %v", err)
	}
}

// outcome is what a case's evaluation found.
type outcome struct {
	sent, lost, duplicated, mismatched, backwards int
	// records are the messages' records, in order, for case-specific
	// checks.
	records []*store.Record
	// problems describes the first faults found.
	problems []string
}

func (o *outcome) problem(format string, args ...any) {
	if len(o.problems) < 20 {
		o.problems = append(o.problems, fmt.Sprintf(format, args...))
	}
}

// evaluate compares what became of msgs with what should have: lost is a
// message acknowledged by the API that never reached a final status or
// that the sandbox never accepted; duplicated is the sandbox's count of
// payloads accepted more than once; mismatched is a message in another
// status than its destination calls for, or whose provider id is not one
// the sandbox gave for its body; backwards is a record whose history moved
// back after submitted.
func (s *stack) evaluate(msgs []*message) outcome {
	s.t.Helper()
	o := outcome{sent: len(msgs)}
	recs, err := s.records(msgs)
	if err != nil {
		s.t.Fatalf("read records: %v", err)
	}
	o.records = recs
	list, err := s.sandboxMessages()
	if err != nil {
		s.t.Fatalf("read the sandbox's messages: %v", err)
	}
	stats, err := s.sandboxStats()
	if err != nil {
		s.t.Fatal(err)
	}
	o.duplicated = int(stats.Duplicates)
	if stats.WebhooksFailed > 0 || stats.WebhooksDropped > 0 {
		s.t.Errorf("the sandbox gave up %d webhooks and dropped %d", stats.WebhooksFailed, stats.WebhooksDropped)
	}
	if s.relay != nil && s.relay.lost.Load() > 0 {
		s.t.Errorf("the relay gave up %d webhooks", s.relay.lost.Load())
	}
	byText := map[string][]string{}
	for _, a := range list {
		var p struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(a.Payload, &p) == nil {
			byText[p.Message] = append(byText[p.Message], a.MessageID)
		}
	}
	for i, m := range msgs {
		r := recs[i]
		ids := byText[m.text]
		switch {
		case m.id == "":
			o.lost++
			o.problem("%s: never acknowledged", m.key)
			continue
		case r == nil:
			o.lost++
			o.problem("%s (%s): record gone", m.key, m.id)
			continue
		case !r.Status.Final():
			o.lost++
			o.problem("%s (%s): still %s: %s; %s", m.key, m.id, r.Status, historyString(r.History), s.recovery(r))
		case m.accepted && len(ids) == 0:
			o.lost++
			o.problem("%s (%s): %s, but the sandbox never accepted it", m.key, m.id, r.Status)
		case !m.accepted && len(ids) > 0:
			o.mismatched++
			o.problem("%s (%s): accepted by the sandbox, but %s refuses it", m.key, m.id, m.dest)
		case r.Status != m.want:
			o.mismatched++
			o.problem("%s (%s) to %s: %s, want %s", m.key, m.id, m.dest, r.Status, m.want)
		case m.accepted && (r.ProviderMessageID == nil || !slices.Contains(ids, *r.ProviderMessageID)):
			o.mismatched++
			o.problem("%s (%s): provider id %v is none of the sandbox's %v", m.key, m.id, r.ProviderMessageID, ids)
		}
		if why := backwards(r.History); why != "" {
			o.backwards++
			o.problem("%s (%s): %s in %s", m.key, m.id, why, historyString(r.History))
		}
	}
	for _, p := range o.problems {
		s.t.Log(p)
	}
	return o
}

// deliveryRank orders the delivery phase; failed stands apart.
var deliveryRank = map[store.Status]int{store.Submitted: 1, store.Enqueued: 2, store.Sent: 3, store.Delivered: 4, store.Read: 5}

// backwards checks the statuses a history applied (entries without a note:
// a note marks an event kept but not applied, or an annotation) and says
// how they moved back, or "" if they never did: after submitted, each
// applied status ranks above the one before; failed only follows a status
// below delivered, and only delivered or read follow failed.
func backwards(history []store.HistoryEntry) string {
	rank, submitted, failed := 0, false, false
	for _, e := range history {
		if e.Note != "" {
			continue
		}
		if !submitted {
			if e.Status == store.Submitted {
				submitted, rank = true, deliveryRank[store.Submitted]
			}
			continue
		}
		r, ranked := deliveryRank[e.Status]
		switch {
		case e.Status == store.Failed:
			if failed || rank >= deliveryRank[store.Delivered] {
				return fmt.Sprintf("failed applied after %s", statusOfRank(rank, failed))
			}
			failed = true
		case !ranked:
			return fmt.Sprintf("%s applied after submitted", e.Status)
		case failed && r < deliveryRank[store.Delivered]:
			return fmt.Sprintf("%s applied after failed", e.Status)
		case r <= rank:
			return fmt.Sprintf("%s applied after %s", e.Status, statusOfRank(rank, failed))
		default:
			failed, rank = false, r
		}
	}
	return ""
}

func statusOfRank(rank int, failed bool) store.Status {
	if failed {
		return store.Failed
	}
	for st, r := range deliveryRank {
		if r == rank {
			return st
		}
	}
	return ""
}

func historyString(h []store.HistoryEntry) string {
	parts := make([]string, len(h))
	for i, e := range h {
		parts[i] = string(e.Status)
		if e.Note != "" {
			parts[i] += "(" + e.Note + ")"
		}
	}
	return strings.Join(parts, " > ")
}

// report is one row of the suite's table.
type report struct {
	name string
	outcome
	// bound is the most duplicates the case allows, and why.
	bound     int
	boundWhy  string
	took      time.Duration
	notes     []string
	completed bool
	passed    bool
	skipped   bool
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// check fails t when a bound is broken.
func (r *report) check(t *testing.T) {
	t.Helper()
	if r.lost > 0 {
		t.Errorf("%d messages lost", r.lost)
	}
	if r.duplicated > r.bound {
		t.Errorf("%d duplicates, more than the bound of %d (%s)", r.duplicated, r.bound, r.boundWhy)
	}
	if r.mismatched > 0 {
		t.Errorf("%d messages in the wrong final status", r.mismatched)
	}
	if r.backwards > 0 {
		t.Errorf("%d records whose status moved backwards", r.backwards)
	}
}

// printTable writes the suite's summary.
func printTable(w io.Writer, reports []*report) {
	fmt.Fprintf(w, "\nchatq fault suite\n\n")
	fmt.Fprintf(w, "%-30s %6s %5s %19s %10s %9s %6s  %s\n", "case", "sent", "lost", "duplicated (bound)", "mismatched", "backwards", "took", "result")
	for _, r := range reports {
		result := "ok"
		switch {
		case r.skipped:
			result = "skipped"
		case !r.completed:
			result = "DID NOT FINISH"
		case !r.passed:
			result = "FAIL"
		}
		dup := fmt.Sprintf("%d (<= %d)", r.duplicated, r.bound)
		fmt.Fprintf(w, "%-30s %6d %5d %19s %10d %9d %5.0fs  %s\n", r.name, r.sent, r.lost, dup, r.mismatched, r.backwards, r.took.Seconds(), result)
	}
	fmt.Fprintln(w)
	for _, r := range reports {
		fmt.Fprintf(w, "%s: duplicate bound: %s\n", r.name, r.boundWhy)
		for _, n := range r.notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	fmt.Fprintln(w)
}

// recovery describes what chatq's recovery knows of a pending record: its
// task and owner, its due entry and its task's state in asynq.
func (s *stack) recovery(r *store.Record) string {
	due, err := s.rdb.ZScore(s.ctx, "chatq:due", r.ID).Result()
	entry := "no due entry"
	if err == nil {
		entry = "due " + time.Until(time.UnixMilli(int64(due))).Round(time.Millisecond).String() + " from now"
	}
	state := "no task"
	if info, err := asynq.NewInspectorFromRedisClient(s.rdb).GetTaskInfo(r.Queue, r.TaskID); err == nil {
		state = fmt.Sprintf("task %s, orphaned %v", info.State, info.IsOrphaned)
	}
	alive, _ := s.store.Alive(s.ctx, []string{r.Owner})
	return fmt.Sprintf("task %s, owner %q (alive %v), on the wire %v, %s, %s", r.TaskID, r.Owner, alive[r.Owner], r.OnWire, entry, state)
}
