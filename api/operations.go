package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/deadletter"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/internal/tenants"
)

// Operations: listing and cancelling a campaign's messages, and the dead
// letters. The routes are in routes() (server.go).

const (
	// defaultPage is the page size of a listing without limit.
	defaultPage = 100
	// maxRetryIDs bounds the ids of one POST /v1/dead-letters/retry.
	maxRetryIDs = 1000
	// maxOperationBody bounds the body of an operations route.
	maxOperationBody = 256 << 10
)

// query reads a request's query parameters, refusing those the route does
// not know: a misspelt filter must not widen what a listing, a retry or a
// cancellation touches.
func query(r *http.Request, known ...string) (url.Values, error) {
	q := r.URL.Query()
	for name := range q {
		ok := false
		for _, k := range known {
			ok = ok || name == k
		}
		if !ok {
			return nil, &enqueue.ValidationError{Field: name, Reason: "is not a parameter of this route (it takes " + strings.Join(known, ", ") + ")"}
		}
	}
	return q, nil
}

// pageParams reads cursor and limit.
func pageParams(q url.Values) (cursor string, limit int, err error) {
	limit = defaultPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPage {
			return "", 0, &enqueue.ValidationError{Field: "limit", Reason: "must be a number from 1 to 1000"}
		}
		limit = n
	}
	return q.Get("cursor"), limit, nil
}

// listError names the cursor when it is the listing's problem.
func listError(err error) error {
	if errors.Is(err, store.ErrInvalidCursor) {
		return &enqueue.ValidationError{Field: "cursor", Reason: "must be a cursor from an earlier page"}
	}
	return err
}

// nextCursor is a page's next_cursor: null on the last page.
func nextCursor(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

// tenantOf is the tenant whose campaigns, recipients' messages and dead
// letters a request reads: the key's own for a tenant key; for an admin
// key, the tenant query parameter, or without one tenant default (each
// tenant has its own indexes), unless all says the route then acts on
// every tenant (a retry of dead letters by their ids). A tenant key naming
// another tenant is refused.
func tenantOf(r *http.Request, q url.Values, all bool) (string, error) {
	p, t := caller(r), q.Get("tenant")
	switch {
	case !p.admin && t != "" && t != p.tenant:
		return "", errorf(http.StatusForbidden, "forbidden", "a tenant key reads its own tenant only; leave out the tenant parameter")
	case !p.admin:
		return p.tenant, nil
	case t != "":
		return t, tenants.Validate("tenant", t)
	case all:
		return "", nil
	}
	return store.DefaultTenant, nil
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "batch_id", "status", "destination", "waiting", "cursor", "limit", "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	tenant, err := tenantOf(r, q, false)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	f := store.MessageFilter{Tenant: tenant, BatchID: q.Get("batch_id"), Destination: q.Get("destination"), Waiting: store.WaitReason(q.Get("waiting"))}
	if f.Waiting != "" && !f.Waiting.Valid() {
		writeError(w, &enqueue.ValidationError{Field: "waiting", Reason: "must be one of " + waitReasonList() + "; not " + strconv.Quote(string(f.Waiting))}, s.log)
		return
	}
	if f.BatchID == "" && f.Destination == "" && f.Waiting == "" {
		writeError(w, &enqueue.ValidationError{Field: "batch_id", Reason: "is required, or destination, or waiting: messages are listed by campaign, by recipient or by what they wait for"}, s.log)
		return
	}
	if f.Destination != "" {
		if err := enqueue.ValidateDestination("destination", f.Destination); err != nil {
			writeError(w, err, s.log)
			return
		}
	}
	if v := q.Get("status"); v != "" {
		for _, name := range strings.Split(v, ",") {
			st := store.Status(strings.TrimSpace(name))
			if !st.Valid() {
				writeError(w, &enqueue.ValidationError{Field: "status", Reason: "must be statuses separated by commas, such as queued,retrying; not " + strconv.Quote(string(st))}, s.log)
				return
			}
			f.Statuses = append(f.Statuses, st)
		}
	}
	cursor, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	// Each sender's state is read once for the request: to choose the
	// lanes, and to show the waits of the messages listed.
	reasons := laneReasons{}
	if f.Waiting != "" {
		if f.Lanes, err = s.lanesWaiting(r.Context(), tenant, f.Waiting, reasons); err != nil {
			writeError(w, err, s.log)
			return
		}
	}
	p, err := s.store.ListMessages(r.Context(), f, cursor, limit)
	if err != nil {
		writeError(w, listError(err), s.log)
		return
	}
	// A listing shows the waits GET /v1/messages/{id} does.
	if err := s.laneWaits(r.Context(), p.Records, reasons); err != nil {
		writeError(w, err, s.log)
		return
	}
	if f.Waiting != "" {
		// A message whose wait is written but which is back in its
		// sender's lane waits as its lane does.
		p.Records = slices.DeleteFunc(p.Records, func(rec *store.Record) bool {
			return rec.Waiting == nil || rec.Waiting.Reason != f.Waiting
		})
	}
	writeJSON(w, http.StatusOK, struct {
		Messages   []*store.Record `json:"messages"`
		NextCursor *string         `json:"next_cursor"`
	}{nonNil(p.Records), nextCursor(p.Next)})
}

// waitReasonList names the reasons a message may wait for, for an error.
func waitReasonList() string {
	names := make([]string, 0, len(store.WaitReasons()))
	for _, r := range store.WaitReasons() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// nonNil makes an empty list [] in JSON, not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "batch_id", "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	tenant, err := tenantOf(r, q, false)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	batch := q.Get("batch_id")
	if batch == "" {
		writeError(w, &enqueue.ValidationError{Field: "batch_id", Reason: "is required: DELETE /v1/messages cancels a campaign (DELETE /v1/messages/{id} cancels one message)"}, s.log)
		return
	}
	canceled, tooLate, err := s.store.CancelBatchOf(r.Context(), tenant, batch, s.now())
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	if canceled+tooLate == 0 {
		writeError(w, errorf(http.StatusNotFound, "not_found", "no messages with this batch_id"), s.log)
		return
	}
	s.logger(r.Context()).Info("batch canceled by the application", zap.String("tenant", tenant), zap.String("batch_id", batch), zap.Int("canceled", canceled), zap.Int("too_late", tooLate))
	writeJSON(w, http.StatusOK, map[string]any{"batch_id": batch, "canceled": canceled, "too_late": tooLate})
}

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	tenant, err := tenantOf(r, q, false)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	batch := r.PathValue("batch_id")
	c, err := s.store.BatchCountsOf(r.Context(), tenant, batch)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	if c.Total == 0 {
		writeError(w, errorf(http.StatusNotFound, "not_found", "no messages with this batch_id"), s.log)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"batch_id": batch, "total": c.Total, "counts": c.Status, "billable": c.Billable})
}

// deadFilterParams are the filter parameters of the dead-letter routes.
func deadFilterParams() []string {
	return []string{"queue", "class", "code", "batch_id", "older_than", "newer_than"}
}

func deadParams(q url.Values) deadletter.Params {
	return deadletter.Params{
		Queue: q.Get("queue"), Class: q.Get("class"), Code: q.Get("code"), BatchID: q.Get("batch_id"),
		OlderThan: q.Get("older_than"), NewerThan: q.Get("newer_than"),
	}
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, append([]string{"cursor", "limit", "tenant"}, deadFilterParams()...)...)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	f, err := deadParams(q).Filter(s.now())
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	if f.Tenant, err = tenantOf(r, q, false); err != nil {
		writeError(w, err, s.log)
		return
	}
	cursor, limit, err := pageParams(q)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	p, err := s.dead.List(r.Context(), f, cursor, limit)
	if err != nil {
		writeError(w, listError(err), s.log)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		DeadLetters []store.DeadLetter `json:"dead_letters"`
		NextCursor  *string            `json:"next_cursor"`
	}{nonNil(p.DeadLetters), nextCursor(p.Next)})
}

// retryRequest is POST /v1/dead-letters/retry's body: ids, or a filter.
type retryRequest struct {
	IDs    []string           `json:"ids"`
	Filter *deadletter.Params `json:"filter"`
}

func (s *Server) retryDeadLetters(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "tenant")
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	tenant, err := tenantOf(r, q, true)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	body, err := readBody(w, r, maxOperationBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var req retryRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, &enqueue.ValidationError{Field: "body", Reason: `must be {"ids":[...]} or {"filter":{...}}: ` + err.Error()}, s.log)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, &enqueue.ValidationError{Field: "body", Reason: "must hold one JSON object: unexpected data after it"}, s.log)
		return
	}
	var rep deadletter.Report
	switch {
	case req.Filter != nil && req.IDs != nil:
		writeError(w, &enqueue.ValidationError{Field: "ids", Reason: "give ids or a filter, not both"}, s.log)
		return
	case req.Filter != nil:
		f, ferr := req.Filter.Filter(s.now())
		if ferr != nil {
			var ve *enqueue.ValidationError
			if errors.As(ferr, &ve) {
				ferr = &enqueue.ValidationError{Field: "filter." + ve.Field, Reason: ve.Reason}
			}
			writeError(w, ferr, s.log)
			return
		}
		// Without a tenant, an admin key's filter retries tenant
		// default's dead letters: a filter reads one tenant's index.
		f.Tenant = tenant
		rep, err = s.dead.RetryMatching(r.Context(), f)
	case len(req.IDs) == 0:
		writeError(w, &enqueue.ValidationError{Field: "ids", Reason: `is required: {"ids":[...]}, or {"filter":{...}} ({"filter":{}} retries every dead letter)`}, s.log)
		return
	case len(req.IDs) > maxRetryIDs:
		writeError(w, &enqueue.ValidationError{Field: "ids", Reason: "must hold at most 1000 ids; retry more by filter"}, s.log)
		return
	default:
		for i, id := range req.IDs {
			if id == "" {
				writeError(w, &enqueue.ValidationError{Field: "ids[" + strconv.Itoa(i) + "]", Reason: "must not be empty"}, s.log)
				return
			}
		}
		rep, err = s.retryOwn(r.Context(), tenant, req.IDs)
	}
	if rep.Done > 0 {
		s.logger(r.Context()).Info("dead letters retried by an operator", zap.Int("retried", rep.Done), zap.Int("not_dead", rep.NotDead), zap.Int("not_found", rep.NotFound))
	}
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Retried  int                 `json:"retried"`
		NotDead  int                 `json:"not_dead"`
		NotFound int                 `json:"not_found"`
		Results  []deadletter.Result `json:"results,omitempty"`
	}{rep.Done, rep.NotDead, rep.NotFound, rep.Results})
}

// retryOwn retries the dead letters of ids that belong to tenant (any
// tenant when ""); another tenant's id is reported not_found, exactly as
// an unknown one, and left alone.
func (s *Server) retryOwn(ctx context.Context, tenant string, ids []string) (deadletter.Report, error) {
	if tenant == "" {
		return s.dead.Retry(ctx, ids)
	}
	recs, err := s.store.GetMany(ctx, ids)
	if err != nil {
		return deadletter.Report{}, err
	}
	var own []string
	foreign := map[string]bool{}
	for i, rec := range recs {
		if rec != nil && rec.Tenant == tenant {
			own = append(own, ids[i])
		} else {
			foreign[ids[i]] = true
		}
	}
	rep, err := s.dead.Retry(ctx, own)
	// The report keeps the order of ids.
	byID := map[string]deadletter.Result{}
	for _, res := range rep.Results {
		byID[res.ID] = res
	}
	rep.Results = rep.Results[:0]
	for _, id := range ids {
		if foreign[id] {
			rep.NotFound++
			rep.Results = append(rep.Results, deadletter.Result{ID: id, Outcome: deadletter.NotFound})
			continue
		}
		rep.Results = append(rep.Results, byID[id])
	}
	return rep, err
}

// metrics serves /metrics, with the circuit breaker's state read first:
// the API process sends nothing, so only Redis knows whether it is open.
func (s *Server) metrics() http.Handler {
	h := s.cfg.Metrics.Handler()
	if s.cfg.Circuit == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		st, err := s.cfg.Circuit.State(ctx)
		cancel()
		if err == nil {
			s.cfg.Metrics.CircuitOpen(st.IsOpen())
		}
		h.ServeHTTP(w, r)
	})
}
