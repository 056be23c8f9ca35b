package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/chatq/chatq/enqueue"
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
		status = http.StatusOK
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
	Error   *Error         `json:"error,omitempty"`
}

func (s *Server) sendBatch(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, MaxBatchBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var req struct {
		Messages []json.RawMessage `json:"messages"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, &enqueue.ValidationError{Field: "body", Reason: "must be {\"messages\":[...]}: " + err.Error()}, s.log)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, &enqueue.ValidationError{Field: "body", Reason: "must be {\"messages\":[...]} alone: unexpected data after it"}, s.log)
		return
	}
	switch n := len(req.Messages); {
	case n == 0:
		writeError(w, &enqueue.ValidationError{Field: "messages", Reason: "must hold at least one message"}, s.log)
		return
	case n > MaxBatchSize:
		writeError(w, &enqueue.ValidationError{Field: "messages", Reason: "must hold at most 1000 messages"}, s.log)
		return
	}
	items := make([]batchItem, len(req.Messages))
	msgs := make([]*enqueue.Message, 0, len(req.Messages))
	index := make([]int, 0, len(req.Messages))
	for i, raw := range req.Messages {
		items[i].Index = i
		m, err := enqueue.DecodeMessage(raw)
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
		it.ID, it.Status, it.Created = rr.Record.ID, rr.Record.Status, &created
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) {
	rec, err := s.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) cancelMessage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
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
