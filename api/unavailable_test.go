package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/redistest"
)

// TestAsynqErrorsOfAnUnreachableRedisAre503 is a regression test: asynq
// passes the errors of its scripts on as text, so a task that could not be
// enqueued because Redis had just gone away (its record written a moment
// before) was answered 500 instead of 503.
func TestAsynqErrorsOfAnUnreachableRedisAre503(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a private redis-server")
	}
	q := asynq.NewClientFromRedisClient(srv.Client(t))
	ctx := context.Background()
	// The first enqueue registers the queue; later ones only run a script.
	if _, err := q.EnqueueContext(ctx, asynq.NewTask("message:send", []byte("01J1")), asynq.TaskID("01J1")); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	_, err := q.EnqueueContext(ctx, asynq.NewTask("message:send", []byte("01J2")), asynq.TaskID("01J2"))
	if err == nil {
		t.Fatal("enqueue with Redis gone succeeded")
	}
	if e := toError(fmt.Errorf("enqueue 01J2: %w", err), zaptest.NewLogger(t)); e.Status != http.StatusServiceUnavailable {
		t.Errorf("%v answered %d %s, want 503", err, e.Status, e.Code)
	}
}
