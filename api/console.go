package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/hibiken/asynq"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/stats"
)

// The read-only routes the console needs beside the rest of the API (the
// per-minute counts, queue sizes, the campaign listing, validation without
// sending), and the console itself at /console/.

// statsMinutes is how many minutes GET /v1/stats tells by default, and
// the most it tells: what stats.Retention keeps, less a margin.
const (
	statsMinutes    = 60
	maxStatsMinutes = 110
)

// consoleRoutes are the routes the console reads (any key, each seeing its
// tenant's), and the console itself when configured.
func (s *Server) consoleRoutes() []route {
	inspector := asynq.NewInspectorFromRedisClient(s.rdb)
	t := []route{
		{"GET", "/v1/stats", guardBearer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.stats(w, r, inspector) })},
		{"GET", "/v1/batches", guardBearer, http.HandlerFunc(s.listBatches)},
		{"POST", "/v1/messages/validate", guardBearer, http.HandlerFunc(s.validateMessages)},
	}
	if s.cfg.Console != nil {
		// The console's files are open: it signs in with an API key, which
		// its calls to /v1/ carry. The mux redirects /console here.
		t = append(t, route{"", "/console/", guardNone, s.cfg.Console})
	}
	return t
}

// queueSize is one asynq queue's tasks by state.
type queueSize struct {
	Queue     string `json:"queue"`
	Size      int    `json:"size"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	Paused    bool   `json:"paused"`
}

// overviewSender is a sender as the overview shows it, to tenant keys
// too: its state and limits, nothing of its app or its webhook.
type overviewSender struct {
	Number              string  `json:"number"`
	Tenant              string  `json:"tenant"`
	Portfolio           string  `json:"portfolio"`
	RatePerSecond       float64 `json:"rate_per_second"`
	RateBurst           int     `json:"rate_burst"`
	PairInterval        string  `json:"pair_interval"`
	PairBurst           int     `json:"pair_burst"`
	DailyRecipientLimit int     `json:"daily_recipient_limit"`
	Default             bool    `json:"default"`
	State               string  `json:"state"`
}

// overviewSenders returns the senders p may see, with their live state.
func (s *Server) overviewSenders(r *http.Request, p principal) []overviewSender {
	out := []overviewSender{}
	if s.cfg.Senders == nil {
		return out
	}
	all := s.cfg.Senders.All()
	if !p.admin {
		all = s.cfg.Senders.OfTenant(p.tenant)
	}
	for _, v := range s.views(r.Context(), all) {
		out = append(out, overviewSender{Number: v.Number, Tenant: v.Tenant, Portfolio: v.Portfolio, RatePerSecond: v.RatePerSecond,
			RateBurst: v.RateBurst, PairInterval: v.PairInterval, PairBurst: v.PairBurst, DailyRecipientLimit: v.DailyRecipientLimit,
			Default: v.Default, State: v.State})
	}
	return out
}

// stats answers the console's overview. An admin key gets the status
// changes per minute, the queue sizes and every sender; a tenant key its
// tenant's senders alone: the counts and the queues are the whole
// deployment's, every tenant's traffic in one figure.
func (s *Server) stats(w http.ResponseWriter, r *http.Request, inspector *asynq.Inspector) {
	q, err := query(r, "minutes")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	n := statsMinutes
	if v := q.Get("minutes"); v != "" {
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > maxStatsMinutes {
			writeError(w, &enqueue.ValidationError{Field: "minutes", Reason: fmt.Sprintf("must be a number from 1 to %d", maxStatsMinutes)}, s.log)
			return
		}
	}
	p := caller(r)
	if !p.admin {
		writeJSON(w, http.StatusOK, map[string]any{"admin": false, "tenant": p.tenant, "senders": s.overviewSenders(r, p)})
		return
	}
	minutes, err := stats.Read(r.Context(), s.rdb, s.now(), n)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	names, err := inspector.Queues()
	if err != nil {
		writeError(w, fmt.Errorf("list queues: %w", err), s.log)
		return
	}
	queues := make([]queueSize, 0, len(names))
	for _, name := range names {
		info, err := inspector.GetQueueInfo(name)
		if err != nil {
			writeError(w, fmt.Errorf("read queue %s: %w", name, err), s.log)
			return
		}
		queues = append(queues, queueSize{Queue: name, Size: info.Size, Pending: info.Pending, Active: info.Active,
			Scheduled: info.Scheduled, Retry: info.Retry, Archived: info.Archived, Paused: info.Paused})
	}
	writeJSON(w, http.StatusOK, map[string]any{"admin": true, "minutes": minutes, "queues": queues, "senders": s.overviewSenders(r, p)})
}

func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "cursor", "limit", "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	cursor, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	tenant, err := tenantOf(r, q, false)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	p, err := s.store.ListBatches(r.Context(), tenant, cursor, limit)
	if err != nil {
		writeError(w, listError(err), s.log)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"batches": nonNil(p.Batches), "next_cursor": nextCursor(p.Next)})
}

// validateItem is one entry of a validation answer.
type validateItem struct {
	Index int    `json:"index"`
	Valid bool   `json:"valid"`
	Error *Error `json:"error,omitempty"`
}

// validateMessages runs POST /v1/messages/batch's checks (each message's
// validation, its sender for the key's tenant, and the conversation
// policy) on a batch and answers what the batch would answer for each
// message, storing and sending nothing: the console shows a campaign's
// every bad row before anything is sent.
func (s *Server) validateMessages(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, err, s.log)
		return
	}
	raws, err := readBatch(w, r)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	items := make([]validateItem, len(raws))
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
			items[i].Error = toError(err, requestLog(w, s.log))
			continue
		}
		msgs = append(msgs, m)
		index = append(index, i)
	}
	errs, err := s.client.Check(r.Context(), msgs)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	for j, e := range errs {
		it := &items[index[j]]
		if e != nil {
			it.Error = toError(e, requestLog(w, s.log))
			continue
		}
		it.Valid = true
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": items})
}
