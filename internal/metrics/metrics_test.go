package metrics_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/redistest"
)

// exposed returns the metric names m serves, each series of every metric
// touched once, in Prometheus's text format (which the parse checks).
func exposed(t *testing.T, m *metrics.Metrics) map[string]bool {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text format: %v", err)
	}
	names := make(map[string]bool)
	for name := range families {
		names[name] = true
	}
	return names
}

// dashboardMetrics returns the metric names the Grafana dashboard queries.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if len(exprs) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	name := regexp.MustCompile(`\b(?:chatq|asynq)_[a-z_]+\b`)
	var names []string
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				n = strings.TrimSuffix(n, suffix)
			}
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// The Grafana dashboard queries only metrics chatq serves.
func TestGrafanaDashboardMatchesTheMetrics(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	if srv.Real() {
		// asynq's collector reports a queue once it exists.
		c := asynq.NewClientFromRedisClient(rdb)
		if _, err := c.EnqueueContext(context.Background(), asynq.NewTask("message:send", []byte("x")), asynq.Queue("transactional")); err != nil {
			t.Fatal(err)
		}
	}
	m := metrics.New(asynq.NewInspectorFromRedisClient(rdb))
	// A vector without series is not served: give each one.
	m.Enqueued("transactional")
	m.Submitted("transactional", time.Second)
	m.Dead("permanent", "http_400")
	m.DeliveryFailed("permanent", "131026")
	m.Retry("retryable", true)
	m.PossibleDuplicate()
	m.SendDuration("submitted", time.Millisecond)
	m.LimitWait("rate", time.Millisecond)
	m.WebhookEvent("message-event.read", "matched")
	m.CircuitOpen(false)
	m.Callback("delivered")
	m.SenderSent("15550001234")
	m.SenderRetry("15550001234", "retryable")
	m.SenderDead("15550001234", "permanent")
	m.SenderCircuitOpen("15550001234", false)
	served := exposed(t, m)
	for _, name := range dashboardMetrics(t) {
		if strings.HasPrefix(name, "asynq_") && !srv.Real() {
			continue // asynq's collector needs a real Redis
		}
		if !served[name] {
			t.Errorf("docs/grafana-dashboard.json queries %s, which chatq does not serve", name)
		}
	}
}

// A nil *Metrics counts nothing and does not panic: tests and library
// users need not build one.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.Enqueued("bulk")
	m.Submitted("bulk", time.Second)
	m.Dead("permanent", "http_400")
	m.DeliveryFailed("permanent", "131026")
	m.Retry("retryable", true)
	m.PossibleDuplicate()
	m.SendDuration("submitted", time.Millisecond)
	m.LimitWait("pair", time.Second)
	m.WebhookEvent("other", "ignored")
	m.CircuitOpen(true)
	m.Callback("failed")
	m.SenderSent("15550001234")
	m.SenderRetry("15550001234", "retryable")
	m.SenderDead("15550001234", "permanent")
	m.SenderCircuitOpen("15550001234", true)
	m.Billable("marketing")
}

// Billable messages are counted by category, and a category nobody knows
// counts as "other": a webhook cannot add label values at will.
func TestBillableByCategory(t *testing.T) {
	m := metrics.New(nil)
	for _, c := range []string{"marketing", "marketing", "utility", "authentication", "made_up_category"} {
		m.Billable(c)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range families["chatq_billable_messages_total"].GetMetric() {
		got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
	}
	want := map[string]float64{"marketing": 2, "utility": 1, "authentication": 1, "other": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("chatq_billable_messages_total{category=%q} = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
}
