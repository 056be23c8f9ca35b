package store

import "context"

// Correlate returns the id of the record a delivery event's ids name (its
// id, then its gsId), "" while none is known: what forwards an event that
// arrived before the record knew its provider id, once it does.
func (s *Store) Correlate(ctx context.Context, id, gsID string) (string, error) {
	if id == "" && gsID == "" {
		return "", nil
	}
	if id == "" {
		id = gsID
	}
	return s.lookup(ctx, Event{ID: id, GsID: gsID})
}
