package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/sandbox"
	"github.com/chatq/chatq/internal/store"
	"github.com/chatq/chatq/worker"
)

// An upstream that answers 200 without a messageId may have taken the
// message: the retry is counted and logged as a possible duplicate.
func TestSuccessWithoutMessageIDIsAPossibleDuplicate(t *testing.T) {
	b := setup(t, sandbox.Config{}, false)
	var calls atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			_, _ = io.WriteString(w, `{}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"submitted","messageId":"ee4a68a0-1203-4c85-8dc3-49d0b3226a35"}`)
	}))
	t.Cleanup(upstream.Close)
	ca := chatarchitect.New(chatarchitect.Config{BaseURL: upstream.URL, AppID: "app", AppSecret: "secret", Timeout: 2 * time.Second}, nil)
	core, logs := observer.New(zapcore.WarnLevel)
	b.log = zap.New(core)
	m := metrics.New(nil)
	b.worker(t, ca, worker.Config{Concurrency: 2, Metrics: m})

	rec, err := b.client.Send(context.Background(), text("447700900123", "hi"))
	if err != nil {
		t.Fatal(err)
	}
	got := b.waitAll(t, []string{rec.ID}, 20*time.Second, func(r *store.Record) bool { return r.Status == store.Submitted })[0]
	if got.Attempts != 2 {
		t.Errorf("attempts %d, want 2", got.Attempts)
	}
	if n := logs.FilterField(zap.Bool("possible_duplicate", true)).Len(); n != 1 {
		t.Errorf("%d possible_duplicate log lines, want 1; logs: %v", n, logs.All())
	}
	res := httptest.NewRecorder()
	m.Handler().ServeHTTP(res, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(res.Body.String(), "\nchatq_possible_duplicates_total{cause=\"timeout\"} 1\n") {
		t.Errorf("chatq_possible_duplicates_total is not 1:\n%s", grepLines(res.Body.String(), "chatq_possible_duplicates_total"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
