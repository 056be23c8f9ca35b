package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/senders"
	"github.com/chatq/chatq/internal/store"
)

func (s *Server) sendMessage(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, MaxMessageBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	m, err := enqueue.DecodeMessage(body)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if m.IdempotencyKey != "" && m.IdempotencyKey != key {
			writeError(w, &enqueue.ValidationError{Field: "idempotency_key", Reason: "differs from the Idempotency-Key header"}, s.log)
			return
		}
		m.IdempotencyKey = key
	}
	if err := s.router(r).route(r.Context(), m); err != nil {
		writeError(w, err, s.log)
		return
	}
	res, err := s.client.SendBatch(r.Context(), []*enqueue.Message{m})
	if err == nil {
		err = res[0].Err
	}
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	status := http.StatusAccepted
	if !res[0].Created {
		// A repeated idempotency key: the first record answers, and the
		// header says so, as Stripe's does.
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	} else {
		s.cfg.Metrics.Enqueued(res[0].Record.Priority)
	}
	writeJSON(w, status, res[0].Record)
}

// batchItem is one entry of a batch answer.
type batchItem struct {
	Index   int            `json:"index"`
	ID      string         `json:"id,omitempty"`
	Status  enqueue.Status `json:"status,omitempty"`
	Created *bool          `json:"created,omitempty"`
	// Replayed is true when a repeated idempotency key found the record,
	// and absent otherwise.
	Replayed bool   `json:"replayed,omitempty"`
	Error    *Error `json:"error,omitempty"`
}

func (s *Server) sendBatch(w http.ResponseWriter, r *http.Request) {
	raws, err := readBatch(w, r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	items := make([]batchItem, len(raws))
	msgs := make([]*enqueue.Message, 0, len(raws))
	index := make([]int, 0, len(raws))
	rt := s.router(r)
	for i, raw := range raws {
		items[i].Index = i
		m, err := enqueue.DecodeMessage(raw)
		if err == nil {
			err = rt.route(r.Context(), m)
		}
		if err != nil {
			items[i].Error = toError(err, s.logger(r.Context()))
			continue
		}
		msgs = append(msgs, m)
		index = append(index, i)
	}
	res, err := s.client.SendBatch(r.Context(), msgs)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	for j, rr := range res {
		it := &items[index[j]]
		if rr.Err != nil {
			it.Error = toError(rr.Err, s.logger(r.Context()))
			continue
		}
		created := rr.Created
		if created {
			s.cfg.Metrics.Enqueued(rr.Record.Priority)
		}
		it.ID, it.Status, it.Created, it.Replayed = rr.Record.ID, rr.Record.Status, &created, !created
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}

// router routes the messages of one request. A sender the registry does
// not know may have been added through another process since this one's
// last reload: the first such miss of a request refreshes the registry,
// the next ones of the same request do not, so that a batch naming a
// thousand unknown numbers reads Redis once, not a thousand times.
type router struct {
	s         *Server
	p         principal
	refreshed bool
}

func (s *Server) router(r *http.Request) *router { return &router{s: s, p: caller(r)} }

// refresh refreshes the sender registry unless the request did already;
// again reports whether it did now.
func (rt *router) refresh(ctx context.Context) (again bool, err error) {
	if rt.refreshed || rt.s.cfg.Senders == nil {
		return false, nil
	}
	if err := rt.s.cfg.Senders.Refresh(ctx); err != nil {
		return false, err
	}
	rt.refreshed = true
	return true, nil
}

// route sets whose a message is and the sender it goes from: the tenant is
// the key's (an admin's message is the tenant's of the sender it names, or
// tenant default), never the body's; a sender the message names must be
// one of that tenant's, else the message is refused as unknown_sender,
// exactly as a number nobody knows; without one, the Chooser picks one of
// the tenant's. Tenant default without senders sends as before: from the
// CHATQ_CA_ credentials, the record naming no sender.
func (rt *router) route(ctx context.Context, m *enqueue.Message) error {
	s, p := rt.s, rt.p
	tenant := p.tenant
	if p.admin {
		tenant = store.DefaultTenant
	}
	m.Tenant, m.ChosenSender = tenant, ""
	if m.Sender != "" {
		if enqueue.ValidateDestination("sender", m.Sender) != nil {
			return nil // Validate names the field
		}
		var x senders.Sender
		ok := false
		if s.cfg.Senders != nil {
			if x, ok = s.cfg.Senders.Lookup(m.Sender); !ok {
				again, err := rt.refresh(ctx)
				if err != nil {
					return err
				}
				if again {
					x, ok = s.cfg.Senders.Lookup(m.Sender)
				}
			}
		}
		if !ok || !p.sees(x.Tenant) {
			return &enqueue.PolicyError{Code: "unknown_sender", Field: "sender", Reason: "is not a sender of this key's tenant"}
		}
		m.Tenant, m.Sender = x.Tenant, x.Number
		return nil
	}
	if s.cfg.Chooser == nil {
		if tenant != store.DefaultTenant {
			return &enqueue.PolicyError{Code: "unknown_sender", Field: "sender", Reason: "cannot be chosen: tenant " + tenant + " has no sender"}
		}
		return nil
	}
	x, err := s.cfg.Chooser.Choose(ctx, tenant, m.Destination)
	if errors.Is(err, senders.ErrNoSender) && tenant != store.DefaultTenant {
		// The tenant's first sender may have been added through another
		// process since this one's last reload.
		again, rerr := rt.refresh(ctx)
		if rerr != nil {
			return rerr
		}
		if again {
			x, err = s.cfg.Chooser.Choose(ctx, tenant, m.Destination)
		}
	}
	switch {
	case errors.Is(err, senders.ErrNoSender) && tenant == store.DefaultTenant:
		return nil
	case errors.Is(err, senders.ErrNoSender):
		return &enqueue.PolicyError{Code: "unknown_sender", Field: "sender", Reason: "cannot be chosen: tenant " + tenant + " has no sender (POST /v1/senders adds one)"}
	case err != nil:
		return err
	}
	m.ChosenSender = x.Number
	return nil
}

// visible returns the record of id if the caller may see it; another
// tenant's record is ErrNotFound, exactly as an unknown id.
func (s *Server) visible(r *http.Request, id string) (*store.Record, error) {
	rec, err := s.store.Get(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !caller(r).sees(rec.Tenant) {
		return nil, fmt.Errorf("get record %s: %w", id, store.ErrNotFound)
	}
	return rec, nil
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) {
	rec, err := s.visible(r, r.PathValue("id"))
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	if err := s.laneWaits(r.Context(), []*store.Record{rec}, laneReasons{}); err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// laneWaits shows the waits of the bulk messages of recs that are in their
// sender's lane (their task not written yet: see enqueue's lane.go). They
// are computed here, when records are read, rather than written by the
// feeder on every message it holds back: a ZSCORE per message read (one
// round trip for a page) against a write per held message, and they cannot
// go stale. The reason is the sender's state (LaneReasons), read once per
// sender into reasons, for every sender of the page at once.
func (s *Server) laneWaits(ctx context.Context, recs []*store.Record, reasons laneReasons) error {
	var laned []*store.Record
	for _, rec := range recs {
		if rec.Priority == string(enqueue.Bulk) && rec.Status.Pending() && rec.Status != store.Sending {
			laned = append(laned, rec)
		}
	}
	if len(laned) == 0 {
		return nil
	}
	ats, err := s.store.InLanes(ctx, laned)
	if err != nil {
		return err
	}
	now := time.Now()
	// waiting are the places in laned of the messages that may go now.
	var waiting []int
	var numbers []string
	for i, rec := range laned {
		if at := ats[i]; at.IsZero() || at.After(now) {
			continue
		}
		waiting = append(waiting, i)
		numbers = append(numbers, rec.Sender)
	}
	if err := s.readLaneReasons(ctx, numbers, reasons); err != nil {
		return err
	}
	for _, i := range waiting {
		rec, since := laned[i], ats[i]
		reason := reasons[rec.Sender]
		if w := rec.Waiting; w != nil && w.Reason == reason && w.Since.Before(since) {
			since = w.Since // the same wait goes on
		}
		rec.Waiting = &store.Waiting{Reason: reason, Since: since}
	}
	return nil
}

// laneReasons are what the messages in each sender's lane wait for, by
// sender number ("" for the lane "default"), as one request read them.
type laneReasons map[string]store.WaitReason

// readLaneReasons adds to reasons those of the numbers it lacks.
func (s *Server) readLaneReasons(ctx context.Context, numbers []string, reasons laneReasons) error {
	var missing []string
	for _, n := range numbers {
		if _, ok := reasons[n]; !ok && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	got, err := LaneReasons(ctx, s.cfg.Senders, s.cfg.SenderStates, missing)
	if err != nil {
		return err
	}
	maps.Copy(reasons, got)
	return nil
}

// LaneReasons returns what the messages in the lanes of the sender numbers
// ("" for the lane "default") wait for: a sender's pause, its open circuit,
// its throttle, else its rate. The states of those not paused are read at
// once; without reg or states a sender waits for its rate.
func LaneReasons(ctx context.Context, reg *senders.Registry, states SenderStates, numbers []string) (map[string]store.WaitReason, error) {
	out := make(map[string]store.WaitReason, len(numbers))
	var live []string
	for _, n := range numbers {
		out[n] = store.WaitSenderRate
		if reg != nil {
			if x, known := reg.Lookup(n); known && x.Paused {
				out[n] = store.WaitPaused
				continue
			}
		}
		live = append(live, n)
	}
	if states == nil || len(live) == 0 {
		return out, nil
	}
	st, err := states.States(ctx, live)
	if err != nil {
		return nil, fmt.Errorf("states of the senders of %d lanes: %w", len(live), err)
	}
	for i, n := range live {
		switch st[i] {
		case StateCircuitOpen:
			out[n] = store.WaitCircuitOpen
		case StateThrottled:
			out[n] = store.WaitThrottled
		}
	}
	return out, nil
}

// lanesWaiting names the lanes of a tenant's senders whose messages wait
// for reason now (none for a reason a lane never shows), and keeps the
// state of each sender it read in reasons.
func (s *Server) lanesWaiting(ctx context.Context, tenant string, reason store.WaitReason, reasons laneReasons) ([]string, error) {
	switch reason {
	case store.WaitSenderRate, store.WaitPaused, store.WaitCircuitOpen, store.WaitThrottled:
	default:
		return nil, nil
	}
	var numbers []string
	if s.cfg.Senders != nil {
		for _, x := range s.cfg.Senders.OfTenant(tenant) {
			numbers = append(numbers, x.Number)
		}
	}
	if tenant == store.DefaultTenant {
		// Messages of before senders, and of the environment's sender,
		// name none: their lane is "default".
		numbers = append(numbers, "")
	}
	if err := s.readLaneReasons(ctx, numbers, reasons); err != nil {
		return nil, err
	}
	var lanes []string
	for _, n := range numbers {
		if reasons[n] == reason {
			lanes = append(lanes, store.LaneOf(n))
		}
	}
	return lanes, nil
}

func (s *Server) cancelMessage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.visible(r, id); err != nil {
		writeError(w, err, s.log)
		return
	}
	if _, err := s.store.Cancel(r.Context(), id, s.now()); err != nil {
		writeError(w, err, s.log)
		return
	}
	rec, err := s.store.Get(r.Context(), id)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// readBatch reads the body of the batch and validation routes,
// {"messages":[...]} with 1 to MaxBatchSize messages.
func readBatch(w http.ResponseWriter, r *http.Request) ([]json.RawMessage, error) {
	body, err := readBody(w, r, MaxBatchBody)
	if err != nil {
		return nil, err
	}
	var req struct {
		Messages []json.RawMessage `json:"messages"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, &enqueue.ValidationError{Field: "body", Reason: "must be {\"messages\":[...]}: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &enqueue.ValidationError{Field: "body", Reason: "must be {\"messages\":[...]} alone: unexpected data after it"}
	}
	switch n := len(req.Messages); {
	case n == 0:
		return nil, &enqueue.ValidationError{Field: "messages", Reason: "must hold at least one message"}
	case n > MaxBatchSize:
		return nil, &enqueue.ValidationError{Field: "messages", Reason: "must hold at most 1000 messages"}
	}
	return req.Messages, nil
}
