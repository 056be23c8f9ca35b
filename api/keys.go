package api

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/jsontime"
)

// maxKeyBody bounds POST /v1/keys's body.
const maxKeyBody = 4 << 10

// keyRoutes are the tenant key routes: keys are the deployment's, so admin
// keys alone manage them.
func (s *Server) keyRoutes() []route {
	return []route{
		{"POST", "/v1/keys", guardAdmin, http.HandlerFunc(s.createKey)},
		{"GET", "/v1/keys", guardAdmin, http.HandlerFunc(s.listKeys)},
		{"DELETE", "/v1/keys/{id}", guardAdmin, http.HandlerFunc(s.revokeKey)},
	}
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxKeyBody)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	var req struct {
		Tenant string `json:"tenant"`
		Name   string `json:"name"`
	}
	if err := decodeObject(body, &req); err != nil {
		writeError(w, err, s.log)
		return
	}
	k, secret, err := s.cfg.Keys.Create(r.Context(), req.Tenant, req.Name)
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("tenant key created", zap.String("key_id", k.ID), zap.String("tenant", k.Tenant))
	// The only answer that holds the key: it is stored as a hash.
	writeJSON(w, http.StatusCreated, map[string]any{"id": k.ID, "key": secret, "tenant": k.Tenant, "name": k.Name, "created_at": jsontime.Time(k.CreatedAt)})
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, err, s.log)
		return
	}
	keys, err := s.cfg.Keys.List(r.Context())
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.cfg.Keys.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err, s.log)
		return
	}
	s.logger(r.Context()).Info("tenant key revoked", zap.String("key_id", k.ID), zap.String("tenant", k.Tenant))
	w.WriteHeader(http.StatusNoContent)
}
